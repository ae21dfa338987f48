"""outpost.apk: a pure-Python writer, reader and verifier of apk v2 packages and of a signed APKINDEX.tar.gz.

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

The package's modules: model (the data, the version order), tar (the members the formats are
made of), keys (the signing key), write, read (and verify). What callers use is here.
"""
from outpost.apk.keys import generate_key, public_key_path
from outpost.apk.model import FileEntry, IndexEntry, Package, PackageInfo, VerifyError, version_key
from outpost.apk.read import read_index, read_package, verify_index, verify_package
from outpost.apk.write import index_entry_text, index_fields, pkginfo_text, write_index, write_package

__all__ = ["FileEntry", "IndexEntry", "Package", "PackageInfo", "VerifyError", "generate_key",
           "index_entry_text", "index_fields", "pkginfo_text", "public_key_path", "read_index",
           "read_package", "verify_index", "verify_package", "version_key", "write_index",
           "write_package"]
