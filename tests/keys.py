"""Client-side helpers for the tests: keys and CSRs made the way a trader makes them."""

import functools

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


@functools.cache
def rsa_key(bits: int, exponent: int = 65537) -> rsa.RSAPrivateKey:
    # Cached: big RSA keys take a while to generate and the tests only need one of each.
    return rsa.generate_private_key(public_exponent=exponent, key_size=bits)


@functools.cache
def dsa_key() -> dsa.DSAPrivateKey:
    return dsa.generate_private_key(key_size=2048)


def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def make_csr(
    key=None,
    *,
    common_name: str = "requested-name",
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
    encoding: serialization.Encoding = serialization.Encoding.PEM,
) -> bytes:
    key = key or ec_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    for extension, critical in extensions or []:
        builder = builder.add_extension(extension, critical=critical)
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        algorithm = None
    elif algorithm is None:
        algorithm = hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(encoding)


def key_pem(key, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
