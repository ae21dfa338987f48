"""The house's rule, read from the code's own imports (docs/DESIGN.md, "The map"):

    dodo.py -> tasks/X.py -> outpost/steps/X.py -> runners and builders (outpost/commands/X.py)

- nothing imports tasks/ but dodo.py, and no task module imports another;
- a runner (outpost.remote, outpost.openssh, outpost.probe, outpost.gcore, outpost.interrupt, outpost.fleet,
  and remote's own: outpost.sshconnect, outpost.channels, outpost.relay, outpost.keeper) imports no step;
- a builder (outpost.commands) imports no runner and no step;
- the other modules of outpost/ (the libraries) import no step and no runner;
- no import circle anywhere, imports inside functions included;
- no module of outpost/ is over 400 lines, the stand-ins aside.
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNERS = ("outpost.remote", "outpost.openssh", "outpost.probe", "outpost.gcore", "outpost.interrupt",
           "outpost.fleet", "outpost.sshconnect", "outpost.channels", "outpost.relay",
           "outpost.keeper")
MAX_LINES = 400


def module_files(root: Path) -> dict[str, Path]:
    """Module name -> file, for dodo.py, tasks/ and outpost/."""
    files = {"dodo": root / "dodo.py"}
    for path in sorted([*root.glob("tasks/**/*.py"), *root.glob("outpost/**/*.py")]):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that this module imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # `from a import b`: the module a.b when there is one, else a itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a package: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def kind(name: str) -> str:
    if name == "dodo":
        return "dodo"
    if name.split(".")[0] == "tasks":
        return "task"
    if name == "outpost.steps" or name.startswith("outpost.steps."):
        return "step"
    if name == "outpost.commands" or name.startswith("outpost.commands."):
        return "builder"
    if any(name == r or name.startswith(r + ".") for r in RUNNERS):
        return "runner"
    return "library"


ALLOWED = {  # what each kind may import
    "dodo": {"task", "step", "runner", "builder", "library"},
    "task": {"step", "runner", "builder", "library"},
    "step": {"step", "runner", "builder", "library"},
    "runner": {"runner", "builder", "library"},
    "builder": {"builder", "library"},
    "library": {"builder", "library"},
}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def problems(root: Path) -> list[str]:
    files = module_files(root)
    graph = {name: imports(name, path, set(files)) for name, path in files.items()}
    found = [f"circle: {' -> '.join(group)}" for group in circles(graph)]
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if kind(target) not in ALLOWED[kind(name)]:
                found.append(f"{name} ({kind(name)}) imports {target} ({kind(target)})")
    for name, path in sorted(files.items()):
        lines = len(path.read_text().splitlines())
        if name.startswith("outpost.") and not name.startswith("outpost.standins") \
                and lines > MAX_LINES:
            found.append(f"{path.relative_to(root)}: {lines} lines (at most {MAX_LINES})")
    return found


def test_the_house_keeps_its_layers_and_has_no_circle():
    assert problems(REPO) == []


def copy_of_the_house(tmp_path: Path) -> Path:
    for path in [REPO / "dodo.py", *REPO.glob("tasks/**/*.py"), *REPO.glob("outpost/**/*.py")]:
        target = tmp_path / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    return tmp_path


def test_a_back_import_from_a_builder_to_a_step_is_found(tmp_path):
    root = copy_of_the_house(tmp_path)
    builder = root / "outpost" / "commands" / "dns.py"
    builder.write_text(builder.read_text() + "\n\ndef late():\n    from outpost.steps import dns\n")
    assert "outpost.commands.dns (builder) imports outpost.steps.dns (step)" in problems(root)
    # ... and the circle it makes.
    assert any(p.startswith("circle:") and "outpost.commands.dns" in p for p in problems(root))


def test_a_library_that_imports_a_runner_and_a_task_that_imports_a_task_are_found(tmp_path):
    root = copy_of_the_house(tmp_path)
    (root / "outpost" / "errors.py").write_text(
        (root / "outpost" / "errors.py").read_text() + "\nfrom outpost import remote\n")
    (root / "tasks" / "sync.py").write_text(
        (root / "tasks" / "sync.py").read_text() + "\nfrom tasks import check\n")
    found = problems(root)
    assert "outpost.errors (library) imports outpost.remote (runner)" in found
    assert "tasks.sync (task) imports tasks.check (task)" in found
