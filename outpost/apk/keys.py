"""The repository's signing key: made once, loaded to sign (see outpost.apk)."""
import os
import tarfile
from pathlib import Path

from outpost.apk.model import KEY_BITS, SIGNATURE_HASHES, SIGNATURE_TYPE
from outpost.apk.tar import _gzip, _member, _tar
from outpost.errors import OutpostError


# ---------------------------------------------------------------- keys

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


def _hash(sig_type: str):
    """The hash of a signature entry type ("RSA256" -> SHA256())."""
    from cryptography.hazmat.primitives import hashes

    return getattr(hashes, SIGNATURE_HASHES[sig_type])()
