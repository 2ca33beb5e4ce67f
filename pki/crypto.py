"""Pure ``cryptography`` builders for the certificate profiles in docs/pki.md.

No ORM and no file access here: every function takes keys, names and dates and returns
``cryptography`` objects, so the profiles can be tested directly against openssl and pkilint.
"""

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-3072")
# Leaves start a little in the past so that a relying party whose clock is slightly behind
# does not see a "not yet valid" certificate.
BACKDATE = timedelta(minutes=5)

CaPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def generate_key(key_type: str) -> CaPrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def signature_hash(key: CaPrivateKey) -> hashes.SHA256 | hashes.SHA384:
    # Match the hash to the key's strength (SHA-384 with P-384), SHA-256 otherwise.
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def random_serial() -> int:
    """A positive serial of 159 CSPRNG bits (RFC 5280 §4.1.2.2; CA/B BR §7.1: ≥ 64 bits)."""
    return x509.random_serial_number()


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def serial_normalize(text: str) -> str | None:
    """A serial as people and tools write it (openssl's upper case, colons, 0x, leading
    zeros) in our stored form (:func:`serial_hex`), or None when it is not one."""
    digits = text.strip().lower().replace(":", "").removeprefix("0x")
    try:
        value = int(digits, 16)
    except ValueError:
        return None
    return serial_hex(value) if 0 <= value < 1 << 160 else None  # RFC 5280: ≤ 20 octets


def spki_der(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_sha256(public_key: PublicKey) -> str:
    return hashlib.sha256(spki_der(public_key)).hexdigest()


def fingerprint_sha256(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def to_pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def describe_public_key(public_key: object) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA-{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC-{public_key.curve.name}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(public_key).__name__.removeprefix("_").replace("PublicKey", "") or "unknown"


def public_key_of(source: x509.Certificate | x509.CertificateSigningRequest) -> PublicKey:
    """The public key of one of our certificates or of a CSR that :func:`pki.csr.csr_parse`
    accepted: EC, RSA or Ed25519, the kinds the profiles take. Raises ``TypeError`` for any
    other kind, which only a certificate or CSR from elsewhere can carry."""
    key = source.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        return key
    raise TypeError(f"unsupported public key {describe_public_key(key)}")


def name(*, common_name: str, organization: str, country: str = "") -> x509.Name:
    attributes = []
    if country:
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    # RFC 5280 Appendix A upper bounds: organizationName and commonName are at most 64.
    attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization[:64]))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]))
    return x509.Name(attributes)


@dataclass(frozen=True)
class Issuer:
    """What a builder needs to know about the issuing CA (never its private key), including
    the distribution URLs it writes: a certificate carries its issuer's URLs (each profile
    picks which), so callers fill them from the CA's record and never from elsewhere."""

    name: x509.Name
    public_key: PublicKey
    not_after: datetime
    crl_url: str | None = None
    ocsp_url: str | None = None
    ca_issuers_url: str | None = None


def _builder(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    issuer: Issuer | None,
    not_before: datetime,
    not_after: datetime,
    serial: int,
) -> x509.CertificateBuilder:
    if issuer is not None:
        # A certificate never outlives its issuer.
        not_after = min(not_after, issuer.not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.name if issuer else subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        # RFC 5280 §4.2.1.1: AKI in every certificate that is not self-signed, non-critical.
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key),
            critical=False,
        )
        if issuer.crl_url:
            builder = builder.add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(issuer.crl_url)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
                critical=False,
            )
    return builder


def _aia(*, ocsp_url: str | None, ca_issuers_url: str | None) -> x509.AuthorityInformationAccess:
    descriptions = []
    if ocsp_url:
        descriptions.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
            )
        )
    if ca_issuers_url:
        descriptions.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(ca_issuers_url),
            )
        )
    return x509.AuthorityInformationAccess(descriptions)


def _key_usage(**flags: bool) -> x509.KeyUsage:
    fields = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    fields.update(flags)
    return x509.KeyUsage(**fields)


def build_root(
    *, subject: x509.Name, public_key: PublicKey, not_before: datetime, not_after: datetime
) -> x509.CertificateBuilder:
    """Self-signed root: signs only intermediates and its own CRL (the ARL). It carries an
    AKI equal to its SKI (RFC 5280 §4.2.1.1 allows omitting it; path builders and pkilint,
    which cannot tell a pre-issuance lint copy is self-signed, prefer it present)."""
    return (
        _builder(
            subject=subject,
            public_key=public_key,
            issuer=None,
            not_before=not_before,
            not_after=not_after,
            serial=random_serial(),
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
    )


def build_intermediate(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    issuer: Issuer,
    not_before: datetime,
    not_after: datetime,
    purposes: list[x509.ObjectIdentifier],
) -> x509.CertificateBuilder:
    """An issuing CA constrained to ``purposes``: OpenSSL applies an intermediate's EKU to its
    leaves, which keeps the client CA from issuing usable server certificates and vice versa."""
    return (
        _builder(
            subject=subject,
            public_key=public_key,
            issuer=issuer,
            not_before=not_before,
            not_after=not_after,
            serial=random_serial(),
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
        .add_extension(_aia(ocsp_url=None, ca_issuers_url=issuer.ca_issuers_url), critical=False)
    )


def build_client(
    *,
    subject: x509.Name,
    san_uri: str,
    public_key: PublicKey,
    issuer: Issuer,
    not_before: datetime,
    not_after: datetime,
    serial: int,
) -> x509.CertificateBuilder:
    """A participant's certificate. Nothing here comes from the CSR but the public key; the
    CRL, OCSP and caIssuers URLs are the issuer's."""
    return (
        _builder(
            subject=subject,
            public_key=public_key,
            issuer=issuer,
            not_before=not_before,
            not_after=not_after,
            serial=serial,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san_uri)]),
            critical=False,
        )
        .add_extension(
            _aia(ocsp_url=issuer.ocsp_url, ca_issuers_url=issuer.ca_issuers_url),
            critical=False,
        )
    )


def build_server(
    *,
    subject: x509.Name,
    dns_names: list[str],
    ip_addresses: list[str],
    public_key: PublicKey,
    issuer: Issuer,
    not_before: datetime,
    not_after: datetime,
    serial: int,
) -> x509.CertificateBuilder:
    general_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    general_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    key_usage = (
        _key_usage(digital_signature=True, key_encipherment=True)
        if isinstance(public_key, rsa.RSAPublicKey)
        else _key_usage(digital_signature=True)
    )
    return (
        _builder(
            subject=subject,
            public_key=public_key,
            issuer=issuer,
            not_before=not_before,
            not_after=not_after,
            serial=serial,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(general_names), critical=False)
        .add_extension(_aia(ocsp_url=None, ca_issuers_url=issuer.ca_issuers_url), critical=False)
    )


def build_ocsp_responder(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    issuer: Issuer,
    not_before: datetime,
    not_after: datetime,
    serial: int,
) -> x509.CertificateBuilder:
    """RFC 6960 §4.2.2.2 delegate: issued directly by the CA whose certificates it answers
    for, with id-kp-OCSPSigning and id-pkix-ocsp-nocheck (§4.2.2.2.1), hence short-lived."""
    return (
        _builder(
            subject=subject,
            public_key=public_key,
            issuer=Issuer(
                name=issuer.name, public_key=issuer.public_key, not_after=issuer.not_after
            ),
            not_before=not_before,
            not_after=not_after,
            serial=serial,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
    )


def sign(builder: x509.CertificateBuilder, key: CaPrivateKey) -> x509.Certificate:
    return builder.sign(key, signature_hash(key))
