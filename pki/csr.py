"""Validation of an uploaded certificate signing request, before anything is stored.

The upload is checked on its raw bytes first: ``cryptography`` silently ignores a private key
pasted after a CSR and every PEM block after the first, so size, private keys and block count
are decided before any parser sees the input (docs/pki.md, "CSR validation"). Only a single,
well-formed CSR of an allowed key type, signed with an allowed algorithm by the key it carries,
comes out as a :class:`ParsedCsr`; everything else raises :class:`CsrRejected` with a stable
code.

Requested extensions (basicConstraints CA:TRUE, extra SANs, other EKUs, ...) are **ignored**,
never rejected: the certificate profile takes only the public key from the CSR, and the
requested extensions are kept on the request row for the officer to see.
"""

import hashlib
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import SignatureAlgorithmOID

from kernel.errors import Conflict, Invalid
from pki.crypto import PublicKey, describe_public_key, spki_der

MAX_CSR_BYTES = 64 * 1024

CSR_EMPTY = "CSR_EMPTY"
CSR_TOO_LARGE = "CSR_TOO_LARGE"
CSR_MALFORMED = "CSR_MALFORMED"
CSR_MULTIPLE_OBJECTS = "CSR_MULTIPLE_OBJECTS"
CSR_CONTAINS_PRIVATE_KEY = "CSR_CONTAINS_PRIVATE_KEY"
CSR_IS_CERTIFICATE = "CSR_IS_CERTIFICATE"
CSR_BAD_SIGNATURE = "CSR_BAD_SIGNATURE"
CSR_KEY_NOT_ALLOWED = "CSR_KEY_NOT_ALLOWED"
CSR_WEAK_SIGNATURE = "CSR_WEAK_SIGNATURE_ALGORITHM"
CSR_SIGNATURE_NOT_ALLOWED = "CSR_SIGNATURE_ALGORITHM_NOT_ALLOWED"
CSR_KEY_REUSED = "CSR_KEY_REUSED"
CSR_KEY_COMPROMISED = "CSR_KEY_COMPROMISED"
CSR_ALREADY_SUBMITTED = "CSR_ALREADY_SUBMITTED"

MESSAGES = {
    CSR_EMPTY: "The upload is empty. Paste or upload the CSR file (it starts with "
    "'-----BEGIN CERTIFICATE REQUEST-----').",
    CSR_TOO_LARGE: f"The upload is larger than {MAX_CSR_BYTES // 1024} KiB; a CSR is a few "
    "hundred bytes to a few KiB. Upload only the .csr file.",
    CSR_MALFORMED: "This is not a readable certificate signing request. Upload the .csr file "
    "exactly as openssl wrote it, with nothing before or after the PEM block.",
    CSR_MULTIPLE_OBJECTS: "The upload holds more than one object. Upload exactly one "
    "certificate signing request and nothing else.",
    CSR_CONTAINS_PRIVATE_KEY: "The upload contains a private key. It was rejected and not "
    "stored. Keep your private key on your own machine, never send it to anyone, and upload "
    "only the CSR. If this key may have been exposed, generate a new key and a new CSR.",
    CSR_IS_CERTIFICATE: "This is a certificate, not a certificate signing request. Upload "
    "the .csr file made with 'openssl req -new'.",
    CSR_BAD_SIGNATURE: "The CSR's signature does not verify: it was altered after it was "
    "made, or signed with a different key. Generate the CSR again from your key.",
    CSR_KEY_NOT_ALLOWED: "This key type or size is not accepted. Use EC P-256 or P-384, "
    "Ed25519, or RSA of 2048 to 4096 bits with exponent 65537.",
    CSR_WEAK_SIGNATURE: "The CSR is signed with SHA-1 or MD5, which are broken. Sign it "
    "with SHA-256 ('openssl req -new -sha256').",
    CSR_SIGNATURE_NOT_ALLOWED: "The CSR's signature algorithm is not accepted. Sign it with "
    "SHA-256, SHA-384 or SHA-512 (or Ed25519).",
    CSR_KEY_REUSED: "This public key has been certified before. Every certificate needs a "
    "new key: generate a new key and CSR.",
    CSR_KEY_COMPROMISED: "This public key was reported compromised and can never be "
    "certified again. Generate a new key and CSR on a clean machine.",
    CSR_ALREADY_SUBMITTED: "A request with this public key is already waiting for a "
    "decision; there is no need to upload it again.",
}

_PRIVATE_KEY_MARKERS = re.compile(
    rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----|PuTTY-User-Key-File-|-----BEGIN PKCS12-----"
)
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_CSR_LABELS = {"CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"}
_CERT_LABELS = {"CERTIFICATE", "TRUSTED CERTIFICATE", "X509 CERTIFICATE"}
# DER PKCS#12: SEQUENCE { INTEGER 3, SEQUENCE { OID pkcs7-data, ... } }
_PKCS12_PREFIX = bytes.fromhex("020103")
_PKCS7_DATA_OID = bytes.fromhex("06092a864886f70d010701")

_WEAK_SIGNATURES = {
    SignatureAlgorithmOID.RSA_WITH_MD5,
    SignatureAlgorithmOID.RSA_WITH_SHA1,
    SignatureAlgorithmOID._RSA_WITH_SHA1,
    SignatureAlgorithmOID.ECDSA_WITH_SHA1,
    SignatureAlgorithmOID.DSA_WITH_SHA1,
    x509.ObjectIdentifier("1.2.840.113549.1.1.2"),  # md2WithRSAEncryption
    x509.ObjectIdentifier("1.2.840.113549.1.1.3"),  # md4WithRSAEncryption
}
_ALLOWED_SIGNATURES = {
    SignatureAlgorithmOID.RSA_WITH_SHA256,
    SignatureAlgorithmOID.RSA_WITH_SHA384,
    SignatureAlgorithmOID.RSA_WITH_SHA512,
    SignatureAlgorithmOID.RSASSA_PSS,
    SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    SignatureAlgorithmOID.ED25519,
}
_ALLOWED_CURVES = {"secp256r1", "secp384r1"}


class CsrRejected(Invalid):
    """A CSR that will not be certified. ``code`` is one of the ``CSR_*`` constants."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code, MESSAGES[code], {"detail": detail} if detail else None)


class CsrKeyRejected(CsrRejected, Conflict):
    """The key is acceptable in itself but conflicts with an earlier certificate (409)."""

    status_code = 409


@dataclass(frozen=True)
class ParsedCsr:
    csr: x509.CertificateSigningRequest
    pem: str
    spki_sha256: str
    key_description: str
    requested_subject: str
    requested_extensions: list[str] = field(default_factory=list)

    @property
    def public_key(self) -> CertificatePublicKeyTypes:
        return self.csr.public_key()


def _printable(text: str) -> str:
    # Hostile subjects carry NUL, CR/LF and other controls; PostgreSQL refuses NUL in text.
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _looks_like_der_private_key(data: bytes) -> bool:
    if data[:1] != b"\x30":
        return False
    head = data[:64]
    if _PKCS12_PREFIX in head[:8] and _PKCS7_DATA_OID in head:
        return True
    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:  # an encrypted PKCS#8 key: "password was not given"
        return True
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def _parse_pem(text: str) -> x509.CertificateSigningRequest:
    blocks = list(_PEM_BLOCK.finditer(text))
    begin_count = text.count("-----BEGIN ")
    labels = [m.group(1) for m in blocks]
    if begin_count > 1 or len(blocks) > 1:
        raise CsrRejected(CSR_MULTIPLE_OBJECTS, f"{max(begin_count, len(blocks))} PEM blocks")
    if not blocks:
        raise CsrRejected(CSR_MALFORMED, "incomplete PEM block")
    if labels[0] in _CERT_LABELS:
        raise CsrRejected(CSR_IS_CERTIFICATE)
    if labels[0] not in _CSR_LABELS:
        raise CsrRejected(CSR_MALFORMED, f"found a {labels[0]} block")
    outside = text[: blocks[0].start()] + text[blocks[0].end() :]
    if outside.strip():
        raise CsrRejected(CSR_MALFORMED, "text before or after the PEM block")
    block = blocks[0].group(0).replace("NEW CERTIFICATE REQUEST", "CERTIFICATE REQUEST")
    try:
        return x509.load_pem_x509_csr(block.encode("ascii"))
    except ValueError as exc:
        raise CsrRejected(CSR_MALFORMED, "the PEM block does not decode to a CSR") from exc


def _parse_der(data: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_der_x509_csr(data)
    except ValueError:
        pass
    try:
        x509.load_der_x509_certificate(data)
    except ValueError:
        raise CsrRejected(CSR_MALFORMED) from None
    raise CsrRejected(CSR_IS_CERTIFICATE)


def _check_key(csr: x509.CertificateSigningRequest) -> PublicKey:
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrRejected(CSR_KEY_NOT_ALLOWED, "unsupported public key algorithm") from exc
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        if not 2048 <= public_key.key_size <= 4096:
            raise CsrRejected(CSR_KEY_NOT_ALLOWED, f"RSA-{public_key.key_size}")
        if numbers.e != 65537:
            raise CsrRejected(CSR_KEY_NOT_ALLOWED, f"RSA exponent {numbers.e}")
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in _ALLOWED_CURVES:
            raise CsrRejected(CSR_KEY_NOT_ALLOWED, f"EC {public_key.curve.name}")
    elif not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise CsrRejected(CSR_KEY_NOT_ALLOWED, describe_public_key(public_key))
    return public_key


def _requested_extensions(csr: x509.CertificateSigningRequest) -> list[str]:
    try:
        return [
            f"{getattr(ext.oid, '_name', None) or ext.oid.dotted_string}"
            + (" (critical)" if ext.critical else "")
            for ext in csr.extensions
        ]
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return ["(unparsable extensions)"]


def csr_parse(data: bytes | str) -> ParsedCsr:
    """Validate an uploaded CSR (PEM or DER); return it parsed or raise :class:`CsrRejected`.

    Key history (reuse, compromise) needs the database and is checked by the service.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", errors="replace")
    if len(data) > MAX_CSR_BYTES:
        raise CsrRejected(CSR_TOO_LARGE, f"{len(data)} bytes")
    if not data.strip():
        raise CsrRejected(CSR_EMPTY)
    if _PRIVATE_KEY_MARKERS.search(data) or _looks_like_der_private_key(data):
        # Never echo, store or log any part of this upload.
        raise CsrRejected(CSR_CONTAINS_PRIVATE_KEY)

    if b"-----BEGIN" in data or b"-----END" in data:
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise CsrRejected(CSR_MALFORMED, "non-ASCII bytes in a PEM upload") from None
        csr = _parse_pem(text)
    else:
        csr = _parse_der(data)

    public_key = _check_key(csr)
    algorithm = csr.signature_algorithm_oid
    if algorithm in _WEAK_SIGNATURES:
        raise CsrRejected(CSR_WEAK_SIGNATURE, algorithm.dotted_string)
    if algorithm not in _ALLOWED_SIGNATURES:
        raise CsrRejected(CSR_SIGNATURE_NOT_ALLOWED, algorithm.dotted_string)
    try:
        signature_ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        signature_ok = False
    if not signature_ok:
        raise CsrRejected(CSR_BAD_SIGNATURE)

    try:
        subject = csr.subject.rfc4514_string()
    except ValueError:
        subject = "(unparsable subject)"
    return ParsedCsr(
        csr=csr,
        pem=csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        spki_sha256=hashlib.sha256(spki_der(public_key)).hexdigest(),
        key_description=describe_public_key(public_key),
        requested_subject=_printable(subject)[:1000],
        requested_extensions=_requested_extensions(csr),
    )
