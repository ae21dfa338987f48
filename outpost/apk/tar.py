"""The tar and gzip members apk's formats are made of (see outpost.apk)."""
import gzip
import io
import tarfile
import zlib
from pathlib import Path

from outpost.apk.model import VerifyError


# ---------------------------------------------------------------- tar and gzip


def _member(name: str, type_: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = type_
    member.mode = mode
    member.mtime = int(mtime)
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    return member


def _tar(entries, tar_format: int, cut: bool) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        for member, content in entries:
            if content is not None:
                member.size = len(content)
            tar.addfile(member, io.BytesIO(content) if content is not None else None)
        end_of_entries = tar.offset
    data = buffer.getvalue()
    return data[:end_of_entries] if cut else data


def _gzip(data: bytes) -> bytes:
    # mtime 0 and no file name in the header, like `gzip -n -9`.
    return gzip.compress(data, compresslevel=9, mtime=0)


def _gzip_members(path: Path, data: bytes) -> list[tuple[bytes, bytes]]:
    """Split concatenated gzip members: [(compressed bytes, decompressed bytes), ...]."""
    members, rest = [], data
    while rest:
        inflater = zlib.decompressobj(wbits=31)  # gzip framing; checks CRC32 and length
        try:
            plain = inflater.decompress(rest) + inflater.flush()
        except zlib.error as e:
            raise VerifyError(f"{path}: gzip member {len(members) + 1} is corrupt ({e})") from None
        if not inflater.eof:
            raise VerifyError(f"{path}: gzip member {len(members) + 1} is truncated")
        used = len(rest) - len(inflater.unused_data)
        members.append((rest[:used], plain))
        rest = inflater.unused_data
    return members


def _tar_entries(path: Path, what: str, data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]
    except (tarfile.TarError, EOFError) as e:
        raise VerifyError(f"{path}: the {what} is not a valid tar ({e})") from None
