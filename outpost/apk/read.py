"""Reading and verifying apk v2 packages and indexes (see outpost.apk)."""
import hashlib
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path

from outpost.apk.keys import _hash
from outpost.apk.model import (LIST_KEYS, PAX_CHECKSUM, SIGNATURE_HASHES, FileEntry, IndexEntry,
                                Package, VerifyError)
from outpost.apk.tar import _gzip_members, _tar_entries


# ---------------------------------------------------------------- reading


def read_package(path: Path) -> Package:
    """Parse an apk v2 package. Checks the format, not the signature: see verify_package."""
    path = Path(path)
    members = _gzip_members(path, _read(path))
    if len(members) != 3:
        raise VerifyError(f"{path}: an apk v2 package has 3 gzip members "
                          f"(signature, control, data), this file has {len(members)}")
    (signature_gz, signature_tar), (control_gz, control_tar), (data_gz, data_tar) = members

    signatures = []
    for member, content in _tar_entries(path, "signature member", signature_tar):
        if not member.name.startswith(".SIGN."):
            raise VerifyError(f"{path}: unexpected {member.name!r} in the signature member")
        signatures.append((member.name, content))

    pkginfo = next((content for member, content
                    in _tar_entries(path, "control member", control_tar)
                    if member.name == ".PKGINFO"), None)
    if pkginfo is None:
        raise VerifyError(f"{path}: the control member has no .PKGINFO")

    files = []
    for member, content in _tar_entries(path, "data member", data_tar):
        kind = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink"}.get(member.type, "file")
        if kind == "file" and not member.isreg():
            raise VerifyError(f"{path}: {member.name}: unsupported tar entry type {member.type!r}")
        files.append(FileEntry(path=member.name.rstrip("/"), type=kind, mode=member.mode,
                               size=member.size, sha1=member.pax_headers.get(PAX_CHECKSUM),
                               link_target=member.linkname if kind == "symlink" else None,
                               content=content if kind == "file" else None))
    return Package(path=path, info=parse_pkginfo(path, pkginfo), files=files,
                   signatures=signatures, signature_gz=signature_gz, control_gz=control_gz,
                   data_gz=data_gz)


def parse_pkginfo(path: Path, data: bytes) -> dict:
    info: dict = {}
    for line in data.decode(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(" = ")
        if not sep:
            raise VerifyError(f"{path}: .PKGINFO line {line!r} is not 'key = value'")
        if key in LIST_KEYS:
            info.setdefault(key, []).append(value)
        else:
            info[key] = value
    return info


def read_index(path: Path) -> list[IndexEntry]:
    """Parse an APKINDEX.tar.gz (signed or not). Checks the format only: see verify_index."""
    path = Path(path)
    return _parse_index(path, _index_tar(path, _gzip_members(path, _read(path))[-1][1]))


def _index_tar(path: Path, tar_data: bytes) -> bytes:
    for member, content in _tar_entries(path, "index", tar_data):
        if member.name == "APKINDEX":
            return content
    raise VerifyError(f"{path}: no APKINDEX entry in the index")


def _parse_index(path: Path, text: bytes) -> list[IndexEntry]:
    entries, fields = [], {}
    for line in text.decode(errors="replace").split("\n"):
        if not line:
            if fields:
                entries.append(IndexEntry(fields))
            fields = {}
            continue
        key, sep, value = line.partition(":")
        if not sep or len(key) != 1:
            raise VerifyError(f"{path}: APKINDEX line {line!r} is not 'X:value'")
        fields[key] = value
    if fields:
        entries.append(IndexEntry(fields))
    return entries


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise VerifyError(f"{path}: cannot read: {e.strerror}") from None


# ---------------------------------------------------------------- verifying


def verify_package(path: Path, keys) -> Package:
    """Read a package and check it as apk does: a signature by a trusted key (matched by name)
    over the control member, the data member against .PKGINFO's datahash, and every file
    against its PAX checksum. `keys` is a keys directory or {key name: public PEM}."""
    package = read_package(path)
    _check_signature(package.path, package.signatures, package.control_gz, keys,
                     "the control member")
    datahash = package.info.get("datahash")
    if datahash is None:
        raise VerifyError(f"{path}: .PKGINFO has no datahash (apk 3 refuses such packages)")
    if hashlib.sha256(package.data_gz).hexdigest() != datahash:
        raise VerifyError(f"{path}: the data member does not match the datahash in .PKGINFO")
    for entry in package.files:
        if entry.type == "dir":
            continue
        if entry.sha1 is None:
            raise VerifyError(f"{path}: {entry.path} has no {PAX_CHECKSUM} header")
        hashed = entry.content if entry.type == "file" else os.fsencode(entry.link_target)
        if hashlib.sha1(hashed).hexdigest() != entry.sha1:
            raise VerifyError(f"{path}: {entry.path} does not match its {PAX_CHECKSUM}")
    return package


def verify_index(path: Path, keys) -> list[IndexEntry]:
    """Read an APKINDEX.tar.gz and check its signature over everything after the signature
    member, by a trusted key matched by name. `keys` as for verify_package."""
    path = Path(path)
    members = _gzip_members(path, _read(path))
    if len(members) != 2:
        raise VerifyError(f"{path}: a signed index has 2 gzip members (signature, index), "
                          f"this file has {len(members)}")
    (signature_gz, signature_tar), (index_gz, index_tar) = members
    signatures = []
    for member, content in _tar_entries(path, "signature member", signature_tar):
        if not member.name.startswith(".SIGN."):
            raise VerifyError(f"{path}: unexpected {member.name!r} in the signature member")
        signatures.append((member.name, content))
    _check_signature(path, signatures, index_gz, keys, "the index")
    return _parse_index(path, _index_tar(path, index_tar))


def _check_signature(path: Path, signatures, signed: bytes, keys, what: str) -> None:
    """Use the first signature whose key name is trusted, as apk does (src/extract_v2.c)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    if not signatures:
        raise VerifyError(f"{path}: not signed (no .SIGN entry)")
    names = []
    for entry_name, signature in signatures:
        sig_type, _, key_name = entry_name[len(".SIGN."):].partition(".")
        if sig_type not in SIGNATURE_HASHES:
            continue
        names.append(key_name)
        public_pem = _trusted_key(path, keys, key_name)
        if public_pem is None:
            continue
        try:
            public_key = serialization.load_pem_public_key(public_pem)
            public_key.verify(signature, signed, padding.PKCS1v15(), _hash(sig_type))
        except (ValueError, TypeError, InvalidSignature):
            raise VerifyError(f"{path}: signature {entry_name} does not verify {what} with the "
                              f"trusted key {key_name!r}: the file was changed or signed by "
                              "another key of that name") from None
        return
    raise VerifyError(f"{path}: signed by {', '.join(names) or 'no known signature type'}, "
                      f"which is not a trusted key in {_describe(keys)}")


def _trusted_key(path: Path, keys, key_name: str) -> bytes | None:
    if isinstance(keys, Mapping):
        return keys.get(key_name)
    key_file = Path(keys) / key_name
    if "/" in key_name or not key_file.is_file():
        return None
    try:
        return key_file.read_bytes()
    except OSError as e:
        raise VerifyError(f"{path}: cannot read trusted key {key_file}: {e.strerror}") from None


def _describe(keys) -> str:
    if isinstance(keys, Mapping):
        return "{" + ", ".join(sorted(keys)) + "}"
    return str(keys)
