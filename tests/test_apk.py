"""outpost.apk against the apk v2 formats (FACTS.md "apk v2 formats").

Expected values are worked out here from the format, with this file's own gzip splitter,
hashlib, tarfile and the openssl CLI; never with outpost.apk's helpers.
"""

import base64
import hashlib
import io
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from outpost import apk
from outpost.errors import OutpostError

BUILDDATE = 1700000000
SCRIPT = b"#!/usr/bin/python3\nprint('linkedlist')\n"
SERVICE = b"type = process\ncommand = /usr/bin/linkedlistd\n"
SYSUSERS = b""  # an empty file: its content hash is sha1 of nothing

# Bytes of the signature member's gzip header that nothing covers, in apk either: its mtime
# (4-7), XFL (8) and OS (9). That member is not signed, and gzip does not check these fields.
UNPROTECTED = set(range(4, 10))


# ---------------------------------------------------------------- the test's own format readers


def gzip_members(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split concatenated gzip members by parsing RFC 1952 framing by hand:
    [(compressed member bytes, decompressed bytes)]."""
    members, pos = [], 0
    while pos < len(data):
        start = pos
        assert data[pos:pos + 3] == b"\x1f\x8b\x08", f"no gzip member at {pos}"
        flags = data[pos + 3]
        pos += 10
        if flags & 4:  # FEXTRA
            pos += 2 + struct.unpack("<H", data[pos:pos + 2])[0]
        for flag in (8, 16):  # FNAME, FCOMMENT: zero-terminated
            if flags & flag:
                pos = data.index(b"\0", pos) + 1
        if flags & 2:  # FHCRC
            pos += 2
        raw = zlib.decompressobj(-15)  # bare deflate, no framing
        plain = raw.decompress(data[pos:])
        assert raw.eof
        pos = len(data) - len(raw.unused_data)
        crc, isize = struct.unpack("<II", data[pos:pos + 8])
        assert crc == zlib.crc32(plain) and isize == len(plain) % 2**32
        pos += 8
        members.append((data[start:pos], plain))
    return members


def tar_members(plain: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]


def openssl_verify(tmp_path: Path, public_pem: Path, signature: bytes, signed: bytes,
                   digest: str = "-sha256") -> subprocess.CompletedProcess:
    (tmp_path / "sig").write_bytes(signature)
    (tmp_path / "signed").write_bytes(signed)
    return subprocess.run(["openssl", "dgst", digest, "-verify", str(public_pem),
                           "-signature", str(tmp_path / "sig"), str(tmp_path / "signed")],
                          capture_output=True, text=True)


def real_apk() -> str | None:
    """Real apk-tools if it is on PATH (not a stand-in): its checks then run as well."""
    found = shutil.which("apk")
    if found is None:
        return None
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    return found if version.startswith("apk-tools ") else None


def apk_verify(path: Path, keys_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([real_apk(), "--keys-dir", str(keys_dir.resolve()), "verify",
                           str(path)], capture_output=True, text=True)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """outpost.rsa in keys/, and another key with the SAME name in other/."""
    base = tmp_path_factory.mktemp("keys")
    private, public = apk.generate_key(base / "keys" / "outpost.rsa")
    apk.generate_key(base / "other" / "outpost.rsa")
    return {"private": private, "public": public, "dir": private.parent,
            "other_dir": base / "other"}


def make_destdir(root: Path) -> Path:
    dest = root / "dest"
    (dest / "usr/bin").mkdir(parents=True)
    (dest / "usr/lib/dinit.d").mkdir(parents=True)
    (dest / "usr/lib/sysusers.d").mkdir(parents=True)
    (dest / "usr/share/linkedlist").mkdir(parents=True)
    (dest / "usr/bin/linkedlistd").write_bytes(SCRIPT)
    (dest / "usr/bin/linkedlistd").chmod(0o755)
    (dest / "usr/lib/dinit.d/linkedlistd").write_bytes(SERVICE)
    (dest / "usr/lib/dinit.d/linkedlistd").chmod(0o644)
    (dest / "usr/lib/sysusers.d/linkedlist.conf").write_bytes(SYSUSERS)
    (dest / "usr/lib/sysusers.d/linkedlist.conf").chmod(0o600)
    (dest / "usr/bin/ll").symlink_to("linkedlistd")
    for d in ("usr", "usr/bin", "usr/lib", "usr/lib/dinit.d", "usr/lib/sysusers.d"):
        (dest / d).chmod(0o755)
    (dest / "usr/share/linkedlist").chmod(0o750)
    (dest / "usr/share").chmod(0o755)
    return dest


def info(**changes) -> apk.PackageInfo:
    fields = dict(pkgname="linkedlist", pkgver="1.2.3-r4", pkgdesc="A small link blog",
                  url="https://example.org/linkedlist", builddate=BUILDDATE,
                  packager="Outpost <outpost@example.org>", arch="noarch", license="MIT",
                  origin="linkedlist", commit="0123abcd", depends=("python-python3", "dinit"),
                  provides=("cmd:linkedlistd=1.2.3-r4",), maintainer="Ann <ann@example.org>")
    fields.update(changes)
    return apk.PackageInfo(**fields)


@pytest.fixture
def package(tmp_path, keys):
    dest = make_destdir(tmp_path)
    return apk.write_package(tmp_path / "out" / "linkedlist-1.2.3-r4.apk", info(), dest,
                             keys["private"])


# ---------------------------------------------------------------- package layout


def test_package_is_three_gzip_members_without_name_or_mtime(package):
    members = gzip_members(package.read_bytes())
    assert len(members) == 3
    for compressed, _ in members:
        flags, mtime = compressed[3], struct.unpack("<I", compressed[4:8])[0]
        assert flags == 0, "no file name (or other extras) in the gzip header"
        assert mtime == 0


def test_pkginfo_lines_follow_abuild(package):
    members = gzip_members(package.read_bytes())
    (pkginfo_member, pkginfo), = tar_members(members[1][1])
    assert pkginfo_member.name == ".PKGINFO"
    datahash = hashlib.sha256(members[2][0]).hexdigest()
    installed = len(SCRIPT) + len(SERVICE) + len(SYSUSERS)  # regular files only
    assert pkginfo.decode() == (
        "pkgname = linkedlist\n"
        "pkgver = 1.2.3-r4\n"
        "pkgdesc = A small link blog\n"
        "url = https://example.org/linkedlist\n"
        f"builddate = {BUILDDATE}\n"
        "packager = Outpost <outpost@example.org>\n"
        f"size = {installed}\n"
        "arch = noarch\n"
        "origin = linkedlist\n"
        "commit = 0123abcd\n"
        "maintainer = Ann <ann@example.org>\n"
        "license = MIT\n"
        "depend = python-python3\n"
        "depend = dinit\n"
        "provides = cmd:linkedlistd=1.2.3-r4\n"
        f"datahash = {datahash}\n")


def test_optional_pkginfo_lines_are_left_out(tmp_path, keys):
    path = apk.write_package(tmp_path / "x.apk", info(commit=None, maintainer=None, depends=(),
                                                      provides=()),
                             make_destdir(tmp_path), keys["private"])
    pkginfo = tar_members(gzip_members(path.read_bytes())[1][1])[0][1].decode()
    keys_written = [line.split(" = ")[0] for line in pkginfo.splitlines()]
    assert keys_written == ["pkgname", "pkgver", "pkgdesc", "url", "builddate", "packager",
                            "size", "arch", "origin", "license", "datahash"]


def test_pax_checksum_records(package):
    data_tar = gzip_members(package.read_bytes())[2][1]
    script_sha1 = hashlib.sha1(SCRIPT).hexdigest()
    # A PAX record is "<len> <key>=<value>\n", len counting itself: 2 digits + 1 space
    # + 24 for "APK-TOOLS.checksum.SHA1=" + 40 hex digits + 1 newline = 68.
    assert f"68 APK-TOOLS.checksum.SHA1={script_sha1}\n".encode() in data_tar
    service_sha1 = hashlib.sha1(SERVICE).hexdigest()
    assert f"68 APK-TOOLS.checksum.SHA1={service_sha1}\n".encode() in data_tar
    empty_sha1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"  # sha1 of no bytes
    assert f"68 APK-TOOLS.checksum.SHA1={empty_sha1}\n".encode() in data_tar
    # For a symlink, the SHA1 of its target.
    link_sha1 = hashlib.sha1(b"linkedlistd").hexdigest()
    assert f"68 APK-TOOLS.checksum.SHA1={link_sha1}\n".encode() in data_tar

    by_name = {m.name: m for m, _ in tar_members(data_tar)}
    assert by_name["usr/bin/linkedlistd"].pax_headers["APK-TOOLS.checksum.SHA1"] == script_sha1
    assert by_name["usr/bin/ll"].pax_headers["APK-TOOLS.checksum.SHA1"] == link_sha1
    assert "APK-TOOLS.checksum.SHA1" not in by_name["usr/bin"].pax_headers


def test_data_tar_entries_sorted_root_owned_with_builddate_and_modes(package):
    entries = tar_members(gzip_members(package.read_bytes())[2][1])
    assert [m.name for m, _ in entries] == [
        "usr", "usr/bin", "usr/bin/linkedlistd", "usr/bin/ll", "usr/lib", "usr/lib/dinit.d",
        "usr/lib/dinit.d/linkedlistd", "usr/lib/sysusers.d",
        "usr/lib/sysusers.d/linkedlist.conf", "usr/share", "usr/share/linkedlist"]
    for member, _ in entries:
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "root", "root")
        assert member.mtime == BUILDDATE
    by_name = {m.name: (m, content) for m, content in entries}
    script, content = by_name["usr/bin/linkedlistd"]
    assert script.isreg() and script.mode == 0o755 and content == SCRIPT
    assert by_name["usr/lib/sysusers.d/linkedlist.conf"][0].mode == 0o600
    assert by_name["usr/share/linkedlist"][0].isdir()
    assert by_name["usr/share/linkedlist"][0].mode == 0o750
    link = by_name["usr/bin/ll"][0]
    assert link.issym() and link.linkname == "linkedlistd"


def test_data_keeps_end_of_archive_control_and_signature_are_cut(package, keys):
    signature, control, data = (plain for _, plain in gzip_members(package.read_bytes()))
    assert data.endswith(b"\0" * 1024)
    (_, pkginfo), = tar_members(control)
    # one header block + the content padded to 512, and nothing after it
    assert len(control) == 512 + (len(pkginfo) + 511) // 512 * 512
    assert control[-512:] != b"\0" * 512
    # 2048-bit RSA: a 256-byte signature, one header + one data block
    assert len(signature) == 512 + 512
    assert signature[-512:] != b"\0" * 512


def test_datahash_is_sha256_of_compressed_data_member(package):
    members = gzip_members(package.read_bytes())
    pkginfo = tar_members(members[1][1])[0][1].decode()
    assert f"datahash = {hashlib.sha256(members[2][0]).hexdigest()}\n" in pkginfo


def test_signature_entry_name_and_openssl_verifies_it(package, keys, tmp_path):
    members = gzip_members(package.read_bytes())
    (sig_member, signature), = tar_members(members[0][1])
    assert sig_member.name == ".SIGN.RSA256.outpost.rsa.pub"
    assert (sig_member.uid, sig_member.gid, sig_member.mtime) == (0, 0, BUILDDATE)
    control_gz = members[1][0]
    ok = openssl_verify(tmp_path, keys["public"], signature, control_gz)
    assert ok.returncode == 0 and "Verified OK" in ok.stdout
    # The same check fails on a changed control member, so the one above means something.
    changed = control_gz[:-1] + bytes([control_gz[-1] ^ 1])
    bad = openssl_verify(tmp_path, keys["public"], signature, changed)
    assert bad.returncode != 0
    if real_apk():
        verified = apk_verify(package, keys["dir"])
        assert verified.returncode == 0, verified.stdout + verified.stderr


def test_reader_sees_what_the_format_holds(package):
    read = apk.read_package(package)
    members = gzip_members(package.read_bytes())
    assert (read.signature_gz, read.control_gz) == (members[0][0], members[1][0])
    assert read.data_gz == members[2][0]
    assert read.info["pkgname"] == "linkedlist"
    assert read.info["depend"] == ["python-python3", "dinit"]
    assert read.info["provides"] == ["cmd:linkedlistd=1.2.3-r4"]
    assert [name for name, _ in read.signatures] == [".SIGN.RSA256.outpost.rsa.pub"]
    files = {f.path: f for f in read.files}
    assert files["usr/bin/linkedlistd"].content == SCRIPT
    assert files["usr/bin/linkedlistd"].sha1 == hashlib.sha1(SCRIPT).hexdigest()
    assert files["usr/bin/ll"].type == "symlink"
    assert files["usr/bin/ll"].link_target == "linkedlistd"
    assert files["usr/share/linkedlist"].type == "dir"


# ---------------------------------------------------------------- reproducibility


def test_same_inputs_same_bytes(tmp_path, keys):
    first = apk.write_package(tmp_path / "a.apk", info(), make_destdir(tmp_path / "1"),
                              keys["private"])
    second_dest = make_destdir(tmp_path / "2")
    # Different file mtimes on disk must not matter: builddate is the only time used.
    for path in second_dest.rglob("*"):
        os.utime(path, (1234, 1234), follow_symlinks=False)
    second = apk.write_package(tmp_path / "b.apk", info(), second_dest, keys["private"])
    assert first.read_bytes() == second.read_bytes()


def test_different_builddate_different_bytes(tmp_path, keys):
    dest = make_destdir(tmp_path)
    first = apk.write_package(tmp_path / "a.apk", info(), dest, keys["private"])
    second = apk.write_package(tmp_path / "b.apk", info(builddate=BUILDDATE + 1), dest,
                               keys["private"])
    assert first.read_bytes() != second.read_bytes()
    assert gzip_members(first.read_bytes())[2][0] != gzip_members(second.read_bytes())[2][0]


def test_write_replaces_atomically_and_leaves_no_temp_files(tmp_path, keys):
    out = tmp_path / "out" / "x.apk"
    out.parent.mkdir()
    out.write_bytes(b"old")
    apk.write_package(out, info(), make_destdir(tmp_path), keys["private"])
    assert out.read_bytes() != b"old"
    assert [p.name for p in out.parent.iterdir()] == ["x.apk"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


# ---------------------------------------------------------------- package verification


def test_verify_accepts_with_keys_dir_and_dict(package, keys):
    assert apk.verify_package(package, keys["dir"]).info["pkgver"] == "1.2.3-r4"
    trusted = {"outpost.rsa.pub": keys["public"].read_bytes()}
    assert apk.verify_package(package, trusted).info["pkgname"] == "linkedlist"


def missed_flips(data: bytes, flipped, verify) -> set[int]:
    """The offsets where flipping one byte of data (written to `flipped`) passes verify; every
    refusal must name the file."""
    missed = set()
    for i in range(len(data)):
        changed = bytearray(data)
        changed[i] ^= 0xFF
        flipped.write_bytes(changed)
        try:
            verify(flipped)
        except apk.VerifyError as e:
            assert str(flipped) in str(e)
        else:
            missed.add(i)
    return missed


def test_every_flipped_byte_is_caught(package, keys, tmp_path):
    missed = missed_flips(package.read_bytes(), tmp_path / "flipped.apk",
                          lambda path: apk.verify_package(path, keys["dir"]))
    assert missed == UNPROTECTED


def test_flipped_byte_in_control_names_signature(package, keys, tmp_path):
    data = bytearray(package.read_bytes())
    signature_len = len(gzip_members(bytes(data))[0][0])
    data[signature_len + 4] ^= 0x01  # the control member's gzip mtime: only the signature sees it
    flipped = tmp_path / "flipped.apk"
    flipped.write_bytes(data)
    with pytest.raises(apk.VerifyError, match="signature .SIGN.RSA256.outpost.rsa.pub "
                                              "does not verify"):
        apk.verify_package(flipped, keys["dir"])


def test_another_key_with_the_same_name_fails(package, keys):
    with pytest.raises(apk.VerifyError) as e:
        apk.verify_package(package, keys["other_dir"])
    assert str(package) in str(e.value)
    assert "does not verify" in str(e.value) and "'outpost.rsa.pub'" in str(e.value)
    if real_apk():
        assert apk_verify(package, keys["other_dir"]).returncode != 0


def test_unknown_key_name_fails(package, keys):
    trusted = {"someone-else.rsa.pub": keys["public"].read_bytes()}
    with pytest.raises(apk.VerifyError) as e:
        apk.verify_package(package, trusted)
    message = str(e.value)
    assert str(package) in message
    assert "signed by outpost.rsa.pub, which is not a trusted key" in message


def test_data_swapped_under_a_valid_signature_fails_datahash(tmp_path, keys):
    dest = make_destdir(tmp_path)
    good = apk.write_package(tmp_path / "good.apk", info(), dest, keys["private"])
    (dest / "usr/bin/linkedlistd").write_bytes(b"#!/bin/sh\necho evil\n")
    evil = apk.write_package(tmp_path / "evil.apk", info(), dest, keys["private"])
    good_members, evil_members = gzip_members(good.read_bytes()), gzip_members(evil.read_bytes())
    spliced = tmp_path / "spliced.apk"
    spliced.write_bytes(good_members[0][0] + good_members[1][0] + evil_members[2][0])
    with pytest.raises(apk.VerifyError, match="spliced.apk: the data member does not match "
                                              "the datahash"):
        apk.verify_package(spliced, keys["dir"])


def _hand_made_package(tmp_path: Path, keys, pax_sha1: str) -> Path:
    """A package built here from the format alone (tarfile + openssl), with a chosen PAX SHA1."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        member = tarfile.TarInfo("hello")
        member.size, member.mtime = len(b"hello\n"), BUILDDATE
        member.pax_headers = {"APK-TOOLS.checksum.SHA1": pax_sha1}
        tar.addfile(member, io.BytesIO(b"hello\n"))
    data_gz = zlib_gzip(data.getvalue())
    pkginfo = (f"pkgname = hello\npkgver = 1-r0\nsize = 6\narch = noarch\n"
               f"datahash = {hashlib.sha256(data_gz).hexdigest()}\n").encode()
    control_gz = zlib_gzip(cut_tar(".PKGINFO", pkginfo))
    (tmp_path / "control.tar.gz").write_bytes(control_gz)
    subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(keys["private"]), "-out",
                    str(tmp_path / "sig"), str(tmp_path / "control.tar.gz")], check=True)
    signature_gz = zlib_gzip(cut_tar(".SIGN.RSA256.outpost.rsa.pub",
                                     (tmp_path / "sig").read_bytes()))
    path = tmp_path / "hand.apk"
    path.write_bytes(signature_gz + control_gz + data_gz)
    return path


def cut_tar(name: str, content: bytes) -> bytes:
    member = tarfile.TarInfo(name)
    member.size, member.mtime = len(content), BUILDDATE
    return member.tobuf(tarfile.USTAR_FORMAT) + content + b"\0" * (-len(content) % 512)


def zlib_gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def test_hand_made_package_verifies(tmp_path, keys):
    path = _hand_made_package(tmp_path, keys, hashlib.sha1(b"hello\n").hexdigest())
    package = apk.verify_package(path, keys["dir"])
    assert [f.path for f in package.files] == ["hello"]


def test_file_not_matching_its_pax_checksum_fails(tmp_path, keys):
    path = _hand_made_package(tmp_path, keys, hashlib.sha1(b"other\n").hexdigest())
    with pytest.raises(apk.VerifyError, match="hand.apk: hello does not match its "
                                              "APK-TOOLS.checksum.SHA1"):
        apk.verify_package(path, keys["dir"])


# ---------------------------------------------------------------- writer input errors


def test_writer_rejects_bad_input_with_clear_messages(tmp_path, keys):
    dest = make_destdir(tmp_path)
    out = tmp_path / "x.apk"
    with pytest.raises(OutpostError, match="pkgver '1.2.3' must be the full apk version"):
        apk.write_package(out, info(pkgver="1.2.3"), dest, keys["private"])
    with pytest.raises(OutpostError, match="pkgdesc must be a single line"):
        apk.write_package(out, info(pkgdesc="two\nlines"), dest, keys["private"])
    with pytest.raises(OutpostError, match="depends value 'a b' must be non-empty"):
        apk.write_package(out, info(depends=("a b",)), dest, keys["private"])
    with pytest.raises(OutpostError, match=f"{tmp_path / 'nowhere'}: the package's destdir"):
        apk.write_package(out, info(), tmp_path / "nowhere", keys["private"])
    with pytest.raises(OutpostError, match=f"{tmp_path / 'missing.rsa'}: cannot read"):
        apk.write_package(out, info(), dest, tmp_path / "missing.rsa")
    os.mkfifo(dest / "usr/bin/fifo")
    with pytest.raises(OutpostError, match="usr/bin/fifo: only directories, regular files"):
        apk.write_package(out, info(), dest, keys["private"])
    assert not out.exists()


# ---------------------------------------------------------------- index


@pytest.fixture
def repo(tmp_path, keys):
    """Two packages and their index, packages given in reverse name order."""
    dest = make_destdir(tmp_path)
    late = apk.write_package(tmp_path / "repo/linkedlist-1.2.3-r4.apk", info(), dest,
                             keys["private"])
    early = apk.write_package(tmp_path / "repo/aardvark-0.1-r0.apk",
                              info(pkgname="aardvark", pkgver="0.1-r0", origin="aardvark",
                                   pkgdesc="First", commit=None, maintainer=None, depends=(),
                                   provides=(), builddate=BUILDDATE - 100), dest,
                              keys["private"])
    index = apk.write_index(tmp_path / "repo/APKINDEX.tar.gz", [late, early], keys["private"],
                            description="outpost test repo")
    return {"index": index, "early": early, "late": late}


def q1(apk_path: Path) -> str:
    control_gz = gzip_members(apk_path.read_bytes())[1][0]
    return "Q1" + base64.b64encode(hashlib.sha1(control_gz).digest()).decode()


def test_index_text_follows_the_format(repo):
    signature, unsigned = gzip_members(repo["index"].read_bytes())
    members = tar_members(unsigned[1])
    assert [m.name for m, _ in members] == ["DESCRIPTION", "APKINDEX"]
    assert members[0][1] == b"outpost test repo"
    installed = len(SCRIPT) + len(SERVICE) + len(SYSUSERS)
    early, late = repo["early"], repo["late"]
    assert members[1][1].decode() == (
        f"C:{q1(early)}\n"
        "P:aardvark\nV:0.1-r0\nA:noarch\n"
        f"S:{early.stat().st_size}\nI:{installed}\n"
        "T:First\nU:https://example.org/linkedlist\nL:MIT\no:aardvark\n"
        f"t:{BUILDDATE - 100}\n"
        "\n"
        f"C:{q1(late)}\n"
        "P:linkedlist\nV:1.2.3-r4\nA:noarch\n"
        f"S:{late.stat().st_size}\nI:{installed}\n"
        "T:A small link blog\nU:https://example.org/linkedlist\nL:MIT\no:linkedlist\n"
        "m:Ann <ann@example.org>\n"
        f"t:{BUILDDATE}\n"
        "c:0123abcd\n"
        "D:python-python3 dinit\n"
        "p:cmd:linkedlistd=1.2.3-r4\n"
        "\n")
    # The index tar keeps its end-of-archive blocks (apk index writes them).
    assert unsigned[1].endswith(b"\0" * 1024)


def test_index_signature_covers_the_unsigned_file(repo, keys, tmp_path):
    (signature_gz, _), (unsigned_gz, _) = gzip_members(repo["index"].read_bytes())
    (sig_member, signature), = tar_members(gzip_members(signature_gz)[0][1])
    assert sig_member.name == ".SIGN.RSA256.outpost.rsa.pub"
    ok = openssl_verify(tmp_path, keys["public"], signature, unsigned_gz)
    assert ok.returncode == 0 and "Verified OK" in ok.stdout
    assert openssl_verify(tmp_path, keys["public"], signature, unsigned_gz + b"\0").returncode
    if real_apk():
        verified = apk_verify(repo["index"], keys["dir"])
        assert verified.returncode == 0, verified.stdout + verified.stderr


def test_real_apk_installs_from_the_repository(tmp_path, keys):
    """With real apk-tools on PATH: `apk add` from our signed index into a fresh root.
    Without it this test checks only that the repository verifies with outpost's verifier."""
    arch = (subprocess.run([real_apk(), "--print-arch"], capture_output=True, text=True)
            .stdout.strip() if real_apk() else "x86_64")
    # A noarch package in the arch folder, as the repository layout has it.
    package = apk.write_package(tmp_path / "repo" / arch / "linkedlist-1.2.3-r4.apk",
                                info(depends=()), make_destdir(tmp_path), keys["private"])
    index = apk.write_index(tmp_path / "repo" / arch / "APKINDEX.tar.gz", [package],
                            keys["private"], arch=arch)
    assert [(e.fields["P"], e.fields["A"]) for e in apk.verify_index(index, keys["dir"])] == [
        ("linkedlist", arch)]
    apk.verify_package(package, keys["dir"])
    if not real_apk():
        return
    root = tmp_path / "root"
    root.mkdir()
    added = subprocess.run([real_apk(), "--root", str(root), "--initdb", "--keys-dir",
                            str(keys["dir"].resolve()), "--repository", str(tmp_path / "repo"),
                            "--no-cache", "add", "linkedlist"], capture_output=True, text=True)
    assert added.returncode == 0, added.stdout + added.stderr
    assert (root / "usr/bin/linkedlistd").read_bytes() == SCRIPT
    assert os.readlink(root / "usr/bin/ll") == "linkedlistd"


def test_index_reader_and_verifier(repo, keys):
    entries = apk.verify_index(repo["index"], keys["dir"])
    assert [e.fields["P"] for e in entries] == ["aardvark", "linkedlist"]
    assert entries[1].fields["C"] == q1(repo["late"])
    assert entries[1].fields["D"] == "python-python3 dinit"
    assert [e.fields for e in apk.read_index(repo["index"])] == [e.fields for e in entries]


def test_index_is_reproducible_and_order_independent(repo, keys, tmp_path):
    again = apk.write_index(tmp_path / "again.tar.gz", [repo["early"], repo["late"]],
                            keys["private"], description="outpost test repo")
    assert again.read_bytes() == repo["index"].read_bytes()


def test_index_every_flipped_byte_is_caught(repo, keys, tmp_path):
    missed = missed_flips(repo["index"].read_bytes(), tmp_path / "APKINDEX.tar.gz",
                          lambda path: apk.verify_index(path, keys["dir"]))
    assert missed == UNPROTECTED


def test_index_wrong_or_unknown_key_fails(repo, keys):
    with pytest.raises(apk.VerifyError, match="does not verify the index"):
        apk.verify_index(repo["index"], keys["other_dir"])
    with pytest.raises(apk.VerifyError, match="signed by outpost.rsa.pub, which is not a trusted"):
        apk.verify_index(repo["index"], {})


def test_index_arch_rewrites_noarch_and_refuses_other_arches(repo, keys, tmp_path):
    index = apk.write_index(tmp_path / "x86_64/APKINDEX.tar.gz", [repo["late"]],
                            keys["private"], arch="x86_64")
    text = tar_members(gzip_members(index.read_bytes())[1][1])[0][1].decode()
    assert "\nA:x86_64\n" in text and "noarch" not in text
    native = apk.write_package(tmp_path / "native.apk", info(arch="aarch64"),
                               make_destdir(tmp_path / "native"), keys["private"])
    with pytest.raises(OutpostError, match="native.apk: built for aarch64, so it does not "
                                           "belong in the x86_64 index"):
        apk.write_index(tmp_path / "x86_64/APKINDEX.tar.gz", [native], keys["private"],
                        arch="x86_64")


def test_index_refuses_the_same_package_twice(repo, keys, tmp_path):
    copy = tmp_path / "copy.apk"
    shutil.copy(repo["late"], copy)
    with pytest.raises(OutpostError, match="linkedlist-1.2.3-r4 is already in the index"):
        apk.write_index(tmp_path / "x.tar.gz", [repo["late"], copy], keys["private"])


# ---------------------------------------------------------------- keys


def test_generate_key_pem_pair_and_modes(tmp_path):
    private, public = apk.generate_key(tmp_path / "new" / "keys" / "me.rsa")
    assert public == tmp_path / "new" / "keys" / "me.rsa.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    # The public file is what openssl derives from the private key.
    derived = subprocess.run(["openssl", "rsa", "-in", str(private), "-pubout"],
                             capture_output=True, check=True).stdout
    assert public.read_bytes() == derived
    text = subprocess.run(["openssl", "rsa", "-in", str(private), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "Private-Key: (2048 bit" in text


def test_generate_key_never_overwrites(tmp_path):
    private, public = apk.generate_key(tmp_path / "k.rsa")
    before = private.read_bytes(), public.read_bytes()
    with pytest.raises(OutpostError, match=f"{private}: a signing key already exists"):
        apk.generate_key(private)
    assert (private.read_bytes(), public.read_bytes()) == before
    private.unlink()
    with pytest.raises(OutpostError, match=f"{public}: a signing key already exists"):
        apk.generate_key(private)
    assert not private.exists()
