"""The first half of the pipeline: signing key -> packages per arch -> signed index per arch."""
import os

from doit.tools import config_changed

from outpost import repo
from outpost.steps import build as build_step
from outpost.steps.common import fail
from outpost.taskutil import action, files_under, remove


def keygen(inventory):
    key = inventory.repository.signing_key
    return {
        "actions": [action(build_step.make_builder(inventory).make_key, key)],
        "targets": [str(key), str(inventory.repository.public_key)],
        # Never made again once it exists, and `doit clean` keeps it (no "clean" here).
        "uptodate": [True],
        "doc": f"Make the signing key {os.path.relpath(key, inventory.root)} (never overwrites one)",
    }


def _broken(inventory, task, names, what):
    """Tasks that fail with the template's problem, so only what needs the package stops."""
    problem = build_step.broken_template(inventory)
    for name in names if problem else ():
        yield {"name": name, "doc": f"{what} (a template is broken: `doit {task}:{name}` says how)",
               "actions": [action(fail, problem)], "uptodate": [False]}
    return problem is not None


def packages(inventory):
    builder = build_step.make_builder(inventory)
    key = inventory.repository.signing_key
    if (yield from _broken(inventory, "build", builder.build_arches(inventory.arches),
                           "Build the packages")):
        return
    for arch in builder.build_arches(inventory.arches):
        targets = builder.targets(arch)
        yield {
            "name": arch,
            "doc": f"Build the {arch} packages with the {inventory.builder.kind} builder",
            "actions": [action(builder.build, arch)],
            "file_dep": [f for pkg in builder.packages(arch) for f in files_under(pkg.template_dir)]
            + [str(key)],
            "targets": [str(t) for t in targets],
            "uptodate": [config_changed(builder.settings())],
            "clean": [remove(*targets, builder.stage_dir(arch))],
        }


def index(inventory):
    builder = build_step.make_builder(inventory)
    key = inventory.repository.signing_key
    if (yield from _broken(inventory, "index", inventory.arches, "Publish the packages")):
        return
    for arch in inventory.arches:
        apks = [t for build_arch in builder.sources(arch) for t in builder.targets(build_arch)]
        repo_dir = repo.repo_dir(inventory, arch)
        yield {
            "name": arch,
            "doc": f"Publish the {arch} packages and sign the repository index",
            "actions": [action(repo.publish, arch, apks, repo_dir, builder, key,
                               inventory.repository.keep)],
            "file_dep": [str(a) for a in apks] + [str(key)],
            "targets": [str(repo_dir / "APKINDEX.tar.gz")],
            "uptodate": [config_changed({"keep": inventory.repository.keep})],
            "clean": [remove(repo_dir)],
        }
