"""A generated content tree in linkedlistd's format, for tests and bench/: entries/<slug>.txt
(valid headers, a few paragraphs each) and static/ files. Deterministic for a given seed, so
two runs (or the two sides of a benchmark) see the same bytes.

    make_tree(folder, entries=2000)          about 8 MB: 4 KB per entry on average
    edit_all(folder, tag)                    a change to every entry (same names)
"""
from __future__ import annotations

import random
from pathlib import Path

WORDS = ("deploy host release content mirror fleet cache nginx atomic switch rollback link "
         "manifest digest rsync package index signature service restart health check region "
         "latency origin edge server client request response header body entry feed static "
         "archive history version reader writer folder inode symlink rename").split()
STATIC_FILES = 40  # stylesheets, scripts and images beside the entries


def _paragraph(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def entry_text(number: int, rng: random.Random, tag: str = "") -> str:
    """One valid entry: the app's three header keys, a blank line, then commentary."""
    body = "\n\n".join(_paragraph(rng, rng.randint(60, 140)) for _ in range(rng.randint(4, 7)))
    month, day = 1 + number % 12, 1 + number % 28
    return (f"title: Generated entry {number}{tag}\n"
            f"url: https://example.org/{number}\n"
            f"date: 2024-{month:02d}-{day:02d}\n\n{body}\n")


def entry_path(folder: Path, number: int) -> Path:
    return folder / "entries" / f"entry-{number:05d}.txt"


def make_tree(folder: Path, entries: int = 2000, seed: int = 1) -> Path:
    """Write `entries` entries and STATIC_FILES static files into folder; returns it."""
    rng = random.Random(seed)
    (folder / "entries").mkdir(parents=True, exist_ok=True)
    (folder / "static" / "img").mkdir(parents=True, exist_ok=True)
    for number in range(entries):
        entry_path(folder, number).write_text(entry_text(number, rng))
    (folder / "static" / "style.css").write_text("body { font-family: serif; }\n")
    for number in range(STATIC_FILES - 1):
        (folder / "static" / "img" / f"dot-{number:03d}.bin").write_bytes(
            rng.randbytes(rng.randint(1000, 8000)))
    return folder


def edit_all(folder: Path, tag: str, seed: int = 1) -> list[Path]:
    """Rewrite every entry with `tag` in its title (other bytes as make_tree wrote them)."""
    rng = random.Random(seed)
    changed = sorted((folder / "entries").glob("entry-*.txt"))
    for path in changed:
        number = int(path.stem.split("-")[1])
        path.write_text(entry_text(number, rng, tag))
    return changed


def add_entries(folder: Path, start: int, count: int, seed: int = 2) -> list[Path]:
    """Write entries start .. start+count-1 (new files)."""
    rng = random.Random(seed)
    added = [entry_path(folder, number) for number in range(start, start + count)]
    for number, path in zip(range(start, start + count), added):
        path.write_text(entry_text(number, rng))
    return added
