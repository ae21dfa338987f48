"""Pure-Python writer, reader and verifier of apk v2 packages and of a signed APKINDEX.tar.gz.

The formats follow abuild and apk-tools (see FACTS.md, "apk v2 formats"):

  package = gzip(signature tar, cut) + gzip(control tar with .PKGINFO, cut) + gzip(data tar)
  index   = gzip(signature tar, cut) + gzip(tar with DESCRIPTION? and APKINDEX)

"Cut" means the tar's end-of-archive blocks are left out, so that the concatenated members
read as one tar stream. Signatures are RSA PKCS#1 v1.5 over the compressed bytes that follow
the signature member, exactly what `openssl dgst -sha256 -sign KEY` produces.

We sign with RSA256 (sha256) only, not also with the legacy RSA (sha1) entry that abuild-sign
still defaults to: apk-tools reads RSA256 since 2.7 (2017) and apk 3 reads it too, and a second,
sha1 signature would let anyone who strips the sha256 one fall back to a weaker hash.

Everything written is byte-for-byte reproducible: tar mtimes come from `builddate`, owners are
root (0/0), entries are sorted, gzip headers carry mtime 0 and no file name, and PKCS#1 v1.5
signatures are deterministic.
"""

import base64
import gzip
import hashlib
import io
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import OutpostError
from outpost.files import write_atomic

# cryptography is imported by the functions that sign, verify or make keys, not at the top:
# the task definitions import this module, and a no-op deploy does none of that.

# cbuild keygen's default size (cports src/runner.py do_keygen); abuild-keygen uses 4096.
# 2048 keeps key generation fast in the test suite and is still a sound RSA size.
KEY_BITS = 2048

# Signature entry types apk-tools knows, in apk's order of preference (src/extract_v2.c),
# with the name of each one's hash in cryptography.hazmat.primitives.hashes.
SIGNATURE_HASHES = {"RSA512": "SHA512", "RSA256": "SHA256", "RSA": "SHA1"}
SIGNATURE_TYPE = "RSA256"

PAX_CHECKSUM = "APK-TOOLS.checksum.SHA1"

# .PKGINFO keys that may appear more than once (abuild prepare_metafiles).
LIST_KEYS = ("depend", "provides", "replaces")

# apk only reads a DESCRIPTION of up to 160 bytes (src/extract_v2.c).
MAX_DESCRIPTION = 160


class VerifyError(OutpostError):
    """A package or index is malformed, changed, or not signed by a trusted key."""


@dataclass
class PackageInfo:
    pkgname: str
    pkgver: str  # the full apk version, with the release: "2.0.12-r1"
    pkgdesc: str
    url: str
    builddate: int
    packager: str
    arch: str
    license: str
    origin: str
    commit: str | None = None
    depends: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    maintainer: str | None = None


@dataclass
class FileEntry:
    path: str
    type: str  # "dir", "file" or "symlink"
    mode: int
    size: int
    sha1: str | None  # the PAX APK-TOOLS.checksum.SHA1 as recorded in the package
    link_target: str | None = None
    content: bytes | None = None  # regular files only


@dataclass
class Package:
    path: Path
    info: dict  # .PKGINFO: key -> str, or list[str] for LIST_KEYS
    files: list[FileEntry]
    signatures: list[tuple[str, bytes]]  # (".SIGN.RSA256.<key>.rsa.pub", signature)
    signature_gz: bytes
    control_gz: bytes
    data_gz: bytes


@dataclass
class IndexEntry:
    fields: dict[str, str]  # one-letter APKINDEX field -> value ("C", "P", "V", ...)


# ---------------------------------------------------------------- keys


# apk's version order (apk-tools src/version.c): numbers, a letter, _suffixes, then -rN.
PRE_SUFFIXES = {"alpha": 0, "beta": 1, "pre": 2, "rc": 3}
POST_SUFFIXES = {"cvs": 5, "svn": 6, "git": 7, "hg": 8, "p": 9}
RELEASE = (4, 0)
VERSION = re.compile(r"(\d+(?:\.\d+)*)([a-z]?)((?:_[a-z]+\d*)*)(?:~[0-9a-f]+)?(?:-r(\d+))?")


def version_key(version: str) -> tuple:
    """A sort key ordering apk versions as apk does. ValueError for a malformed version."""
    match = VERSION.fullmatch(version)
    if not match:
        raise ValueError(f"package version is invalid: {version}")
    numbers, letter, suffixes, release = match.groups()
    ranks = []
    for suffix in filter(None, suffixes.split("_")):
        word, number = re.fullmatch(r"([a-z]+)(\d*)", suffix).groups()
        if word in PRE_SUFFIXES:
            ranks.append((PRE_SUFFIXES[word], int(number or 0)))
        elif word in POST_SUFFIXES:
            ranks.append((POST_SUFFIXES[word], int(number or 0)))
        else:
            raise ValueError(f"package version is invalid: {version}")
    return (tuple(int(n) for n in numbers.split(".")), letter, tuple(ranks) + (RELEASE,),
            int(release or 0))


def generate_key(private_path: Path) -> tuple[Path, Path]:
    """Make a PEM RSA key at private_path (mode 0600) and its public half at private_path.pub,
    as `cbuild keygen` does. Never overwrites an existing key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private_path = Path(private_path)
    public_path = public_key_path(private_path)
    for path in (private_path, public_path):
        if path.exists():
            raise OutpostError(f"{path}: a signing key already exists; refusing to overwrite it")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    _write_new(private_path, private_pem, 0o600)
    _write_new(public_path, _public_pem(key), 0o644)
    return private_path, public_path


def public_key_path(private_path: Path) -> Path:
    """keys/outpost.rsa -> keys/outpost.rsa.pub; its file name is the key's name in signatures."""
    return Path(private_path).with_name(Path(private_path).name + ".pub")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: a key that appeared since the check above is still never overwritten.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _public_pem(private_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_private_key(key_path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key_path = Path(key_path)
    try:
        data = key_path.read_bytes()
    except OSError as e:
        raise OutpostError(f"{key_path}: cannot read the signing key: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise OutpostError(f"{key_path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise OutpostError(f"{key_path}: the signing key must be an RSA key")
    return key


def _signature_member(signed: bytes, key_path: Path, mtime: int) -> bytes:
    """The gzipped, cut tar holding `.SIGN.RSA256.<key>.pub` over `signed` (abuild-sign)."""
    from cryptography.hazmat.primitives.asymmetric import padding

    key = _load_private_key(key_path)
    signature = key.sign(signed, padding.PKCS1v15(), _hash(SIGNATURE_TYPE))
    name = f".SIGN.{SIGNATURE_TYPE}.{public_key_path(key_path).name}"
    return _gzip(_tar([(_member(name, tarfile.REGTYPE, 0o644, mtime), signature)],
                      tarfile.USTAR_FORMAT, cut=True))


# ---------------------------------------------------------------- writing


def write_package(out_path: Path, info: PackageInfo, destdir: Path, key_path: Path) -> Path:
    """Write a signed apk v2 package of everything under destdir to out_path."""
    out_path, destdir = Path(out_path), Path(destdir)
    _check_info(info)
    data_gz, installed_size = _data_member(destdir, info.builddate)
    pkginfo = pkginfo_text(info, installed_size, hashlib.sha256(data_gz).hexdigest())
    control_gz = _gzip(_tar([(_member(".PKGINFO", tarfile.REGTYPE, 0o644, info.builddate),
                              pkginfo.encode())], tarfile.USTAR_FORMAT, cut=True))
    signature_gz = _signature_member(control_gz, key_path, info.builddate)
    write_atomic(out_path, signature_gz + control_gz + data_gz)
    return out_path


def pkginfo_text(info: PackageInfo, size: int, datahash: str) -> str:
    """The .PKGINFO, in abuild's field order (abuild.in prepare_metafiles, create_apks)."""
    lines = [("pkgname", info.pkgname), ("pkgver", info.pkgver), ("pkgdesc", info.pkgdesc),
             ("url", info.url), ("builddate", str(info.builddate)),
             ("packager", info.packager), ("size", str(size)), ("arch", info.arch),
             ("origin", info.origin)]
    if info.commit is not None:
        lines.append(("commit", info.commit))
    if info.maintainer is not None:
        lines.append(("maintainer", info.maintainer))
    lines.append(("license", info.license))
    lines += [("depend", d) for d in info.depends]
    lines += [("provides", p) for p in info.provides]
    lines.append(("datahash", datahash))
    return "".join(f"{key} = {value}\n" for key, value in lines)


def _check_info(info: PackageInfo) -> None:
    if not re.fullmatch(r"[^\s-][^\s]*-r[0-9]+", info.pkgver):
        raise OutpostError(f"package {info.pkgname!r}: pkgver {info.pkgver!r} must be the full "
                           "apk version with its release, such as '1.0-r0'")
    for name in ("pkgname", "pkgver", "pkgdesc", "url", "packager", "arch", "license", "origin",
                 "commit", "maintainer"):
        value = getattr(info, name)
        if value is not None and ("\n" in value or "\r" in value):
            raise OutpostError(f"package {info.pkgname!r}: {name} must be a single line")
    for name, values in (("pkgname", [info.pkgname]), ("arch", [info.arch]),
                         ("origin", [info.origin]), ("depends", info.depends),
                         ("provides", info.provides)):
        for value in values:
            if not value or any(c.isspace() for c in value):
                raise OutpostError(f"package {info.pkgname!r}: {name} value {value!r} "
                                   "must be non-empty and without spaces")


def _data_member(destdir: Path, builddate: int) -> tuple[bytes, int]:
    """The gzipped data tar (with its end-of-archive blocks) and the installed size."""
    if not destdir.is_dir():
        raise OutpostError(f"{destdir}: the package's destdir does not exist")
    entries, size, any_entry = [], 0, False
    for rel in _sorted_tree(destdir):
        path = destdir / rel
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        any_entry = True
        if stat.S_ISDIR(st.st_mode):
            entries.append((_member(rel, tarfile.DIRTYPE, mode, builddate), None))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            member = _member(rel, tarfile.SYMTYPE, mode, builddate)
            member.linkname = target
            member.pax_headers = {PAX_CHECKSUM: hashlib.sha1(os.fsencode(target)).hexdigest()}
            entries.append((member, None))
        elif stat.S_ISREG(st.st_mode):
            content = path.read_bytes()
            member = _member(rel, tarfile.REGTYPE, mode, builddate)
            member.pax_headers = {PAX_CHECKSUM: hashlib.sha1(content).hexdigest()}
            entries.append((member, content))
            size += len(content)
        else:
            raise OutpostError(f"{path}: only directories, regular files and symlinks "
                               "can go into a package")
    # apk-tools 2 treats a package of size 0 as virtual and extracts nothing (abuild.in).
    if size == 0 and any_entry:
        size = 1
    return _gzip(_tar(entries, tarfile.PAX_FORMAT, cut=False)), size


def _sorted_tree(root: Path) -> list[str]:
    """Every path below root, relative, in byte order (abuild: `LC_ALL=C sort -z`)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        found += [(base / name).as_posix() for name in dirnames + filenames]
    return sorted(found, key=os.fsencode)


def write_index(out_path: Path, apk_paths: list[Path], key_path: Path,
                description: str | None = None, arch: str | None = None) -> Path:
    """Write a signed APKINDEX.tar.gz listing the packages at apk_paths.

    arch: the repository folder's arch. apk (2 and 3) fetches a package from
    `URL/<its A: arch>/NAME-VER.apk`, so a noarch package listed as noarch in URL/x86_64/ is
    looked for in URL/noarch/. Given arch, every entry says A:<arch>, as abuild does with
    `apk index --rewrite-arch $CARCH`; packages built for another arch are refused."""
    out_path = Path(out_path)
    if description is not None and len(description.encode()) > MAX_DESCRIPTION:
        raise OutpostError(f"{out_path}: the index description is longer than "
                           f"{MAX_DESCRIPTION} bytes, which apk ignores")
    entries, seen = [], {}
    for apk_path in apk_paths:
        package = read_package(apk_path)
        fields = index_fields(package, Path(apk_path).stat().st_size)
        if arch is not None:
            if fields.get("A") not in ("noarch", arch):
                raise OutpostError(f"{apk_path}: built for {fields.get('A')}, "
                                   f"so it does not belong in the {arch} index {out_path}")
            fields["A"] = arch
        identity = (fields["P"], fields["V"], fields.get("A"))
        if identity in seen:
            raise OutpostError(f"{apk_path}: {fields['P']}-{fields['V']} is already in the index "
                               f"from {seen[identity]}")
        seen[identity] = apk_path
        entries.append(fields)
    # Sorted by name and version, as `apk index` lists them; independent of the argument order.
    entries.sort(key=lambda f: (f["P"], f["V"], f.get("A", "")))
    text = "".join(index_entry_text(f) for f in entries).encode()

    mtime = max((int(f.get("t", 0)) for f in entries), default=0)
    members = []
    if description is not None:
        members.append((_member("DESCRIPTION", tarfile.REGTYPE, 0o644, mtime),
                        description.encode()))
    members.append((_member("APKINDEX", tarfile.REGTYPE, 0o644, mtime), text))
    unsigned = _gzip(_tar(members, tarfile.USTAR_FORMAT, cut=False))
    write_atomic(out_path, _signature_member(unsigned, key_path, mtime) + unsigned)
    return out_path


# APKINDEX field order (apk-tools src/package.c apk_pkg_write_index_header).
INDEX_FIELDS = ("C", "P", "V", "A", "S", "I", "T", "U", "L", "o", "m", "t", "c", "k", "D", "p", "i")


def index_fields(package: Package, file_size: int) -> dict[str, str]:
    """The APKINDEX fields of one package."""
    info = package.info
    control_sha1 = hashlib.sha1(package.control_gz).digest()
    fields = {"C": "Q1" + base64.b64encode(control_sha1).decode(),
              "P": info.get("pkgname"), "V": info.get("pkgver"), "A": info.get("arch"),
              "S": str(file_size), "I": info.get("size"), "T": info.get("pkgdesc"),
              "U": info.get("url"), "L": info.get("license"), "o": info.get("origin"),
              "m": info.get("maintainer"), "t": info.get("builddate"),
              "c": info.get("commit"), "k": info.get("provider_priority"),
              "D": " ".join(info.get("depend", [])), "p": " ".join(info.get("provides", [])),
              "i": info.get("install_if")}
    for letter, key in (("P", "pkgname"), ("V", "pkgver"), ("I", "size")):
        if not fields[letter]:
            raise VerifyError(f"{package.path}: .PKGINFO has no {key}")
    return {k: v for k, v in fields.items() if v}


def index_entry_text(fields: Mapping[str, str]) -> str:
    return "".join(f"{k}:{fields[k]}\n" for k in INDEX_FIELDS if k in fields) + "\n"


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


def _hash(sig_type: str):
    """The hash of a signature entry type ("RSA256" -> SHA256())."""
    from cryptography.hazmat.primitives import hashes

    return getattr(hashes, SIGNATURE_HASHES[sig_type])()


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
