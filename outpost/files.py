"""Writing this machine's files so that a reader, or a run cut short, sees the old file or the
new one, never half of one: a sibling in the same folder, then one rename(2)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace path with data. The mode is set before a byte is written, so a key is never
    readable by others, not even briefly; a unique sibling, so threads writing the same file
    never share one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_if_changed(path: Path, text: str) -> bool:
    """write_atomic, only when the content differs, so an unchanged file keeps its mtime (doit
    and rsync see no change). True when it wrote."""
    data = text.encode()
    try:
        if Path(path).read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, data)
    return True
