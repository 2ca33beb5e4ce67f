"""CA key files (and the OCSP delegate's): PKCS#8, encrypted with the CA passphrase (the
delegate's with its own), mode 0600, in the CA directory.

Keys are never stored in the database. A loaded key is kept in memory for the life of the
process (the signing worker), keyed by file identity, so signing does not pay the key
derivation on every certificate.
"""

import functools
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pki.conf import ca_passphrase, ocsp_key_passphrase, pki_settings
from pki.crypto import CaPrivateKey

KEY_FILE_MODE = 0o600
DIR_MODE = 0o700


def ca_dir() -> Path:
    path = pki_settings().ca_dir
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so that readers
    (nginx, operators) never see a half-written file. The file is created with ``mode``."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encrypt_private_key(key: CaPrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def ca_key_write(relative: str, key: CaPrivateKey, passphrase: bytes | None = None) -> Path:
    """Store a key under the CA directory, encrypted with the CA passphrase (or the one
    given); refuses to replace an existing file."""
    path = ca_dir() / relative
    if path.exists():
        raise FileExistsError(f"{path} exists; keys are never overwritten")
    secret = passphrase if passphrase is not None else ca_passphrase()
    atomic_write(path, encrypt_private_key(key, secret), mode=KEY_FILE_MODE)
    return path


def ca_key_load(relative: str, passphrase: bytes | None = None) -> CaPrivateKey:
    path = ca_dir() / relative
    stat = path.stat()
    secret = passphrase if passphrase is not None else ca_passphrase()
    return _load(str(path), stat.st_ino, stat.st_mtime_ns, secret)


def ocsp_key_write(relative: str, key: CaPrivateKey) -> Path:
    return ca_key_write(relative, key, ocsp_key_passphrase())


def ocsp_key_load(relative: str) -> CaPrivateKey:
    """The OCSP delegate's key, opened with its own passphrase (never the CA's)."""
    return ca_key_load(relative, ocsp_key_passphrase())


def ocsp_responder_key_file(serial: str) -> str:
    """Where the delegate's key lives, relative to the CA directory (the responder loads it)."""
    return f"keys/ocsp-{serial}.key.pem"


@functools.lru_cache(maxsize=16)
def _load(path: str, inode: int, mtime_ns: int, passphrase: bytes) -> CaPrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=passphrase)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError(f"{path}: not an EC or RSA key")  # never: only those are written here
    return key
