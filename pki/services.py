"""PKI services: setting up the CA, taking CSRs, issuing certificates, renewing the OCSP
delegate.

Only this module (and ``pki.revocation``, for statuses and CRLs) writes ``pki`` tables or loads
a CA key. Every entry point audits inside its own transaction; key files are written before the
rows that name them, so a failed commit can leave an unused key file but never a row without
its key. Issuance announces the new certificates when it commits
(``pki.events.certificates_issued``); ``pki.propagation`` has their OCSP answers pre-signed.
"""

import functools
import getpass
import ipaddress
import logging
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from kernel.audit import Actor, AuditEntry, audit_record, audit_record_many
from kernel.errors import Conflict, DomainError, Invalid, NotFound
from kernel.models import Participant
from pki import crypto, events
from pki.conf import ca_passphrase, pki_settings, url_path, url_problem
from pki.csr import (
    CSR_ALREADY_SUBMITTED,
    CSR_KEY_COMPROMISED,
    CSR_KEY_REUSED,
    CsrKeyRejected,
    CsrRejected,
    csr_parse,
)
from pki.keystore import (
    atomic_write,
    ca_dir,
    ca_key_load,
    ca_key_write,
    ocsp_key_load,
    ocsp_key_write,
    ocsp_responder_key_file,
)
from pki.lint import Finding, lint_certificate_der
from pki.models import Certificate, CertificateAuthority, CertificateRequest
from pki.selectors import (
    ca_certificate,
    ca_get_active,
    ca_list_active,
    certificate_key_history,
    ocsp_responder_current,
)

logger = logging.getLogger(__name__)

ROOT_VALIDITY = timedelta(days=20 * 365)
INTERMEDIATE_VALIDITY = timedelta(days=10 * 365)
CERT_FILES: dict[str, str] = {
    CertificateAuthority.Kind.ROOT: "root.pem",
    CertificateAuthority.Kind.CLIENT: "client-ca.pem",
    CertificateAuthority.Kind.SERVER: "server-ca.pem",
}
CA_SLUGS: dict[str, str] = {
    CertificateAuthority.Kind.ROOT: "root",
    CertificateAuthority.Kind.CLIENT: "client-ca",
    CertificateAuthority.Kind.SERVER: "server-ca",
}
OCSP_RESPONDER_FILE = "ocsp-responder.pem"
# The CAs whose certificates name an OCSP responder: pki.ocsp answers for the client CA only
# (the server CA's and the root's certificates are checked by CRL).
OCSP_KINDS = frozenset({CertificateAuthority.Kind.CLIENT})


class CertificateLintFailed(DomainError):
    """pkilint found a problem in a to-be-signed certificate: a defect in our profile, so
    nothing was signed (500)."""

    status_code = 500

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__(
            "CERTIFICATE_LINT_FAILED",
            "pre-issuance lint refused the certificate: " + "; ".join(map(str, findings)),
            {"findings": [str(f) for f in findings]},
        )


def command_actor(command: str) -> Actor:
    """The audit actor of a management command: the system, labelled with the command and
    the operating-system user who ran it. Raises only what ``getpass.getuser`` raises for a
    user without a name."""
    return Actor.system(f"manage.py {command} (os user {getpass.getuser()})")


# --- signing -------------------------------------------------------------------------------


@functools.cache
def _throwaway_key(key_type: str) -> crypto.CaPrivateKey:
    return crypto.generate_key(key_type)


def _key_type_of(key: crypto.CaPrivateKey) -> str:
    description = crypto.describe_public_key(key.public_key())
    return {"EC-secp256r1": "ec-p256", "EC-secp384r1": "ec-p384"}.get(description, "rsa-3072")


def _lint_findings(builder: x509.CertificateBuilder, key_type: str) -> list[Finding]:
    """pkilint's findings on ``builder`` signed by a throwaway key of ``key_type``."""
    candidate = crypto.sign(builder, _throwaway_key(key_type))
    return lint_certificate_der(candidate.public_bytes(serialization.Encoding.DER))


def _sign_linted(builder: x509.CertificateBuilder, key: crypto.CaPrivateKey) -> x509.Certificate:
    """Lint the to-be-signed certificate (signed by a throwaway key of the same type, as
    Boulder does), and sign with the real key only if it is clean."""
    if pki_settings().lint_before_signing:
        findings = _lint_findings(builder, _key_type_of(key))
        if findings:
            logger.error("pre-issuance lint refused a certificate: %s", findings)
            raise CertificateLintFailed(findings)
    return crypto.sign(builder, key)


def _crl_url(base: str, slug: str) -> str:
    return f"{base.rstrip('/')}/{slug}.crl"


def _ca_issuers_url(base: str, slug: str) -> str:
    return f"{base.rstrip('/')}/{slug}.crt"


@dataclass(frozen=True)
class CaUrls:
    """The distribution URLs one CA writes into the certificates it issues, as on its row."""

    crl_url: str
    ocsp_url: str  # "" for a CA that no OCSP responder answers for
    ca_issuers_url: str

    @classmethod
    def of(cls, ca: CertificateAuthority) -> "CaUrls":
        return cls(crl_url=ca.crl_url, ocsp_url=ca.ocsp_url, ca_issuers_url=ca.ca_issuers_url)

    @classmethod
    def derive(
        cls, *, kind: str, slug: str, crl_base_url: str, ocsp_url: str, ca_issuers_base_url: str
    ) -> "CaUrls":
        """The URLs of the CA ``slug`` under these bases (the settings' layout: ``<CRL
        base>/<slug>.crl``, ``<caIssuers base>/<slug>.crt``, the OCSP URL for the client CA)."""
        return cls(
            crl_url=_crl_url(crl_base_url, slug),
            ocsp_url=ocsp_url if kind in OCSP_KINDS else "",
            ca_issuers_url=_ca_issuers_url(ca_issuers_base_url, slug),
        )

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def written(self) -> frozenset[str]:
        """Every URL that a certificate of this CA may carry."""
        return frozenset(url for url in (self.crl_url, self.ocsp_url, self.ca_issuers_url) if url)


def _urls_from_settings(kind: str) -> CaUrls:
    """What ``init_ca`` records on a new CA: the settings of the process that creates it."""
    conf = pki_settings()
    return CaUrls.derive(
        kind=kind,
        slug=CA_SLUGS[kind],
        crl_base_url=conf.crl_base_url,
        ocsp_url=conf.ocsp_url,
        ca_issuers_base_url=conf.ca_issuers_base_url,
    )


def _issuer_of(cert: x509.Certificate, urls: CaUrls) -> crypto.Issuer:
    return crypto.Issuer(
        name=cert.subject,
        public_key=crypto.public_key_of(cert),
        not_after=cert.not_valid_after_utc,
        crl_url=urls.crl_url,
        ocsp_url=urls.ocsp_url or None,
        ca_issuers_url=urls.ca_issuers_url,
    )


def _issuer(ca: CertificateAuthority) -> crypto.Issuer:
    """The issuing CA as the certificate builders see it: its certificate and the URLs on its
    row. Never the settings: a signing process's environment (a shell without the platform's
    port, say) must not decide where relying parties look for revocation data."""
    return _issuer_of(ca_certificate(ca), CaUrls.of(ca))


def _certificate_fields(cert: x509.Certificate) -> dict[str, Any]:
    try:
        san = [
            str(getattr(n, "value", n))
            for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ]
    except x509.ExtensionNotFound:
        san = []
    return {
        "serial": crypto.serial_hex(cert.serial_number),
        "fingerprint_sha256": crypto.fingerprint_sha256(cert),
        "spki_sha256": crypto.spki_sha256(crypto.public_key_of(cert)),
        "subject": cert.subject.rfc4514_string(),
        "san": san,
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "pem": crypto.to_pem(cert),
    }


# --- the CA --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaSet:
    """The three active CAs of a hierarchy: the root and the two issuing CAs below it."""

    root: CertificateAuthority
    client: CertificateAuthority
    server: CertificateAuthority


def _ca_row(
    *,
    kind: str,
    slug: str,
    cert: x509.Certificate,
    key_type: str,
    key_file: str,
    parent: CertificateAuthority | None,
    urls: CaUrls,
) -> CertificateAuthority:
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    return CertificateAuthority.objects.create(
        kind=kind,
        slug=slug,
        crl_url=urls.crl_url,
        ocsp_url=urls.ocsp_url,
        ca_issuers_url=urls.ca_issuers_url,
        # A str (cryptography types attribute values str | bytes: bytes only for bit strings).
        name=str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value),
        parent=parent,
        key_type=key_type,
        key_file=key_file,
        serial=crypto.serial_hex(cert.serial_number),
        subject=cert.subject.rfc4514_string(),
        ski=ski.hex(),
        fingerprint_sha256=crypto.fingerprint_sha256(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        certificate_pem=crypto.to_pem(cert),
    )


def ca_export_files() -> None:
    """Write the active CA certificates (public) to ``<CA dir>/certs/`` for nginx and
    operators: one file per CA, plus ``client-chain.pem`` and ``server-chain.pem``.

    Each file is replaced atomically, so a reader never sees half of one. Raises ``OSError``
    when the directory cannot be written, ``ImproperlyConfigured`` for invalid PKI settings.
    """
    certs = ca_dir() / "certs"
    active = {ca.kind: ca for ca in CertificateAuthority.objects.filter(is_active=True)}
    for kind, filename in CERT_FILES.items():
        if kind in active:
            atomic_write(certs / filename, active[kind].certificate_pem.encode())
    root = active.get(CertificateAuthority.Kind.ROOT)
    for kind in (CertificateAuthority.Kind.CLIENT, CertificateAuthority.Kind.SERVER):
        if root and kind in active:
            chain = active[kind].certificate_pem + root.certificate_pem
            atomic_write(certs / f"{kind}-chain.pem", chain.encode())


def ca_init(*, key_type: str = "ec-p256", force: bool = False, actor: Actor) -> CaSet:
    """Create the root CA, the client issuing CA, the server CA and the OCSP delegate.

    Refuses (409 ``CA_EXISTS``) when a CA is active, unless ``force``: then the old CAs are
    deactivated (kept for their certificates and CRLs) and a new hierarchy replaces them.
    Each new CA records its distribution URLs from this process's settings; from then on they
    are the CA's (``ca_urls_plan`` / ``ca_urls_apply`` change them), and the intermediates
    are signed with the root's, exactly as its row records them.

    The keys are written before the rows that name them, and the rows commit together: a
    failure leaves at most unused key files. Raises ``Invalid`` (``CA_KEY_TYPE``) for an
    unknown key type and ``Conflict`` (``CA_EXISTS``), both before anything is made;
    ``ImproperlyConfigured`` without the CA passphrase (checked before any key is generated);
    :class:`CertificateLintFailed` when pkilint refuses a CA certificate (nothing written).
    The OCSP delegate is issued after the CAs commit: if that fails (no OCSP key passphrase,
    say), its error is raised and the CAs stay, for ``renew_ocsp_responder`` to complete.
    """
    if key_type not in crypto.KEY_TYPES:
        raise Invalid("CA_KEY_TYPE", f"key type must be one of {', '.join(crypto.KEY_TYPES)}")
    if CertificateAuthority.objects.filter(is_active=True).exists() and not force:
        raise Conflict("CA_EXISTS", "A CA is already initialised; pass --force to replace it.")
    ca_passphrase()  # fail before generating anything
    conf = pki_settings()
    org, country = conf.organization, conf.country
    now = timezone.now()
    generation = uuid.uuid4().hex[:12]
    urls = {kind: _urls_from_settings(kind) for kind in CA_SLUGS}

    root_key = crypto.generate_key(key_type)
    root_cert = _sign_linted(
        crypto.build_root(
            subject=crypto.name(common_name=f"{org} Root CA", organization=org, country=country),
            public_key=root_key.public_key(),
            not_before=now,
            not_after=now + ROOT_VALIDITY,
        ),
        root_key,
    )
    root_issuer = _issuer_of(root_cert, urls[CertificateAuthority.Kind.ROOT])
    intermediates = {}
    for kind, label, purposes in (
        (
            CertificateAuthority.Kind.CLIENT,
            "Client Issuing CA",
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.OCSP_SIGNING],
        ),
        (CertificateAuthority.Kind.SERVER, "Server CA", [ExtendedKeyUsageOID.SERVER_AUTH]),
    ):
        key = crypto.generate_key(key_type)
        cert = _sign_linted(
            crypto.build_intermediate(
                subject=crypto.name(
                    common_name=f"{org} {label}", organization=org, country=country
                ),
                public_key=key.public_key(),
                issuer=root_issuer,
                not_before=now,
                not_after=now + INTERMEDIATE_VALIDITY,
                purposes=purposes,
            ),
            root_key,
        )
        intermediates[kind] = (key, cert)

    key_files = {CertificateAuthority.Kind.ROOT: f"keys/{generation}-root.key.pem"}
    ca_key_write(key_files[CertificateAuthority.Kind.ROOT], root_key)
    for kind, (key, _cert) in intermediates.items():
        key_files[kind] = f"keys/{generation}-{kind}.key.pem"
        ca_key_write(key_files[kind], key)

    with transaction.atomic():
        replaced = list(
            CertificateAuthority.objects.select_for_update()
            .filter(is_active=True)
            .values_list("fingerprint_sha256", flat=True)
        )
        CertificateAuthority.objects.filter(is_active=True).update(is_active=False)
        root = _ca_row(
            kind=CertificateAuthority.Kind.ROOT,
            slug=CA_SLUGS[CertificateAuthority.Kind.ROOT],
            cert=root_cert,
            key_type=key_type,
            key_file=key_files[CertificateAuthority.Kind.ROOT],
            parent=None,
            urls=urls[CertificateAuthority.Kind.ROOT],
        )
        rows = {
            kind: _ca_row(
                kind=kind,
                slug=CA_SLUGS[kind],
                cert=cert,
                key_type=key_type,
                key_file=key_files[kind],
                parent=root,
                urls=urls[kind],
            )
            for kind, (_key, cert) in intermediates.items()
        }
        audit_record(
            event="ca.initialised",
            actor=actor,
            target=root,
            key_type=key_type,
            replaced=replaced,
            fingerprints={
                "root": root.fingerprint_sha256,
                **{k: r.fingerprint_sha256 for k, r in rows.items()},
            },
            urls={ca.slug: CaUrls.of(ca).as_dict() for ca in (root, *rows.values())},
        )
    ca_export_files()
    ocsp_responder_renew(actor=actor, force=True)
    return CaSet(
        root=root,
        client=rows[CertificateAuthority.Kind.CLIENT],
        server=rows[CertificateAuthority.Kind.SERVER],
    )


# --- the CAs' distribution URLs ------------------------------------------------------------

CA_CHOICES = ("root", "client", "server", "all")
URL_CHECK_NAME = "URL check"


@dataclass(frozen=True)
class StaleCertificate:
    """A live certificate that carries URLs its CA no longer writes (until it is renewed)."""

    serial: str
    subject: str
    not_after: datetime
    urls: tuple[str, ...]  # the URLs it carries that are not among the CA's new ones


@dataclass(frozen=True)
class CaUrlsChange:
    """What setting new URLs on one CA does: its URLs before and after, and the live
    certificates it issued that will keep pointing elsewhere (``stale_count`` in all, the
    first ``stale`` of them listed, those that stay valid longest first)."""

    ca: CertificateAuthority
    before: CaUrls
    after: CaUrls
    stale_count: int
    stale: tuple[StaleCertificate, ...]

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _carried_urls(pem: str) -> frozenset[str]:
    """The CRL distribution point and AIA (OCSP, caIssuers) URLs written in a certificate."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    urls: set[str] = set()
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        points = x509.CRLDistributionPoints([])
    for point in points:
        urls.update(
            n.value for n in point.full_name or [] if isinstance(n, x509.UniformResourceIdentifier)
        )
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        access = x509.AuthorityInformationAccess([])
    urls.update(
        d.access_location.value
        for d in access
        if isinstance(d.access_location, x509.UniformResourceIdentifier)
    )
    return frozenset(urls)


def _stale_certificates(
    ca: CertificateAuthority, urls: CaUrls, sample: int
) -> tuple[int, tuple[StaleCertificate, ...]]:
    """The live certificates issued by ``ca`` that carry a URL other than ``urls``: for the
    root, the active intermediates; otherwise its leaves (OCSP delegates carry no URL). Each
    certificate is read, not assumed: one signed before by a misconfigured process shows up
    with whatever it carries."""
    now = timezone.now()
    rows: QuerySet[Any, tuple[str, str, datetime, str]]
    if ca.kind == CertificateAuthority.Kind.ROOT:
        rows = CertificateAuthority.objects.filter(
            parent=ca, is_active=True, not_before__lte=now, not_after__gt=now
        ).values_list("serial", "subject", "not_after", "certificate_pem")
    else:
        rows = (
            Certificate.objects.live(now)
            .filter(issuer=ca)
            .exclude(kind=Certificate.Kind.OCSP_RESPONDER)
            .values_list("serial", "subject", "not_after", "pem")
        )
    written = urls.written()
    count = 0
    listed: list[StaleCertificate] = []
    rows = rows.order_by("-not_after", "pk")
    for serial, subject, not_after, pem in rows.iterator(chunk_size=2000):
        other = _carried_urls(pem) - written
        if other:
            count += 1
            if len(listed) < sample:
                listed.append(StaleCertificate(serial, subject, not_after, tuple(sorted(other))))
    return count, tuple(listed)


def _lint_urls(ca: CertificateAuthority, urls: CaUrls) -> list[Finding]:
    """pkilint's findings on a certificate of the kind ``ca`` issues, carrying ``urls``:
    checked when the URLs change, so that a URL pkilint refuses is refused then, not by every
    issuance afterwards (``CERTIFICATE_LINT_FAILED``)."""
    conf = pki_settings()
    issuer = _issuer_of(ca_certificate(ca), urls)
    subject = crypto.name(
        common_name=URL_CHECK_NAME, organization=conf.organization, country=conf.country
    )
    public_key = _throwaway_key("ec-p256").public_key()
    now = timezone.now()
    until = now + timedelta(days=1)
    if ca.kind == CertificateAuthority.Kind.ROOT:
        builder = crypto.build_intermediate(
            subject=subject,
            public_key=public_key,
            issuer=issuer,
            not_before=now,
            not_after=until,
            purposes=[ExtendedKeyUsageOID.SERVER_AUTH],
        )
    elif ca.kind == CertificateAuthority.Kind.CLIENT:
        builder = crypto.build_client(
            subject=subject,
            san_uri="urn:keyline:firm:00000000000000000000:trader:url-check",
            public_key=public_key,
            issuer=issuer,
            not_before=now,
            not_after=until,
            serial=crypto.random_serial(),
        )
    else:
        builder = crypto.build_server(
            subject=subject,
            dns_names=["localhost"],
            ip_addresses=[],
            public_key=public_key,
            issuer=issuer,
            not_before=now,
            not_after=until,
            serial=crypto.random_serial(),
        )
    return _lint_findings(builder, ca.key_type)


def _check_new_urls(ca: CertificateAuthority, before: CaUrls, after: CaUrls) -> None:
    """Refuse (``Invalid``) URLs that cannot go into ``ca``'s certificates."""
    for label, value in (
        ("CRL URL", after.crl_url),
        ("OCSP URL", after.ocsp_url),
        ("caIssuers URL", after.ca_issuers_url),
    ):
        if value and (problem := url_problem(value)):
            raise Invalid("CA_URL_INVALID", f"{ca.slug}: the {label} {problem}, got {value!r}")
    served = pki_settings().ocsp_path
    if after.ocsp_url != before.ocsp_url and url_path(after.ocsp_url) != served:
        # Serving is this deployment's configuration (keyline.wsgi, pki.ocsp_asgi and nginx
        # route KEYLINE_OCSP_URL's path): a CA URL on another path would go unanswered.
        raise Invalid(
            "CA_OCSP_URL_NOT_SERVED",
            f"{ca.slug}: the OCSP responder answers at {served} (the path of KEYLINE_OCSP_URL), "
            f"so {after.ocsp_url!r} would go unanswered; keep that path, or move "
            "KEYLINE_OCSP_URL and nginx first",
        )
    if pki_settings().lint_before_signing and (findings := _lint_urls(ca, after)):
        raise Invalid(
            "CA_URL_INVALID",
            f"{ca.slug}: pkilint refuses a certificate with these URLs: "
            + "; ".join(map(str, findings)),
        )


def ca_urls_plan(
    *,
    ca: str = "all",
    pki_url: str | None = None,
    crl_base_url: str | None = None,
    ocsp_url: str | None = None,
    ca_issuers_base_url: str | None = None,
    sample: int = 10,
) -> list[CaUrlsChange]:
    """What giving the active CA ``ca`` (or all of them) new distribution URLs would change,
    without changing anything: validated like the settings, then checked against the
    certificates already out there.

    ``pki_url`` is the PKI's public base and gives every URL in the settings' layout
    (``<pki>/crl/<slug>.crl``, ``<pki>/ocsp``, ``<pki>/ca/<slug>.crt``); ``crl_base_url``,
    ``ocsp_url`` and ``ca_issuers_base_url`` override one part each; what is not given stays.
    Returns one change per CA concerned, changed or not.

    Changes nothing, whatever happens. Raises ``Invalid`` for an unknown ``ca``
    (``CA_UNKNOWN``), no URL at all (``CA_URLS_MISSING``), a bad URL, one pkilint refuses or
    an OCSP URL for a CA that names none (``CA_URL_INVALID``), or an OCSP path this deployment
    does not answer at (``CA_OCSP_URL_NOT_SERVED``); ``NotFound`` (``CA_NOT_INITIALISED``)
    before ``init_ca``.
    """
    if ca not in CA_CHOICES:
        raise Invalid("CA_UNKNOWN", f"unknown CA {ca!r}; use one of {', '.join(CA_CHOICES)}")
    given = (
        ("PKI URL", pki_url, False),
        ("CRL base URL", crl_base_url, False),
        ("OCSP URL", ocsp_url, True),
        ("caIssuers base URL", ca_issuers_base_url, False),
    )
    if all(value is None for _label, value, _own in given):
        raise Invalid(
            "CA_URLS_MISSING", "give the PKI URL or a CRL base, OCSP or caIssuers base URL"
        )
    for label, value, own_path in given:
        if value is not None and (problem := url_problem(value, own_path=own_path)):
            raise Invalid("CA_URL_INVALID", f"the {label} {problem}, got {value!r}")
    base = pki_url.rstrip("/") if pki_url is not None else None
    crl_base = crl_base_url or (f"{base}/crl" if base else None)
    ocsp = ocsp_url or (f"{base}/ocsp" if base else None)
    issuers_base = ca_issuers_base_url or (f"{base}/ca" if base else None)

    cas = [c for c in ca_list_active() if ca in ("all", c.kind)]
    if not cas:
        raise NotFound("CA_NOT_INITIALISED", "No active CA; run 'manage.py init_ca'.")
    if ocsp_url is not None and not any(c.kind in OCSP_KINDS for c in cas):
        raise Invalid(
            "CA_URL_INVALID",
            "only the client CA's certificates name an OCSP responder; "
            "an OCSP URL applies to the client CA (or all)",
        )
    planned = []
    for authority in cas:
        before = CaUrls.of(authority)
        slug = authority.slug
        after = CaUrls(
            crl_url=_crl_url(crl_base, slug) if crl_base else before.crl_url,
            ocsp_url=(ocsp or before.ocsp_url) if authority.kind in OCSP_KINDS else "",
            ca_issuers_url=(
                _ca_issuers_url(issuers_base, slug) if issuers_base else before.ca_issuers_url
            ),
        )
        if after != before:
            _check_new_urls(authority, before, after)
        planned.append((authority, before, after))
    changes = []
    for authority, before, after in planned:
        count, stale = _stale_certificates(authority, after, sample) if after != before else (0, ())
        changes.append(CaUrlsChange(authority, before, after, count, stale))
    return changes


def ca_urls_apply(changes: list[CaUrlsChange], *, actor: Actor) -> list[CaUrlsChange]:
    """Record the planned URLs on their CA rows, each change audited (``ca.urls_changed``:
    before, after, and how many live certificates keep other URLs), all or none. Every
    certificate signed after the commit carries them, in every process: signing reads the
    row each time. Returns the changes applied (those that changed anything).

    Raises ``Conflict`` (``CA_URLS_CHANGED_CONCURRENTLY``, nothing changes) when a row no
    longer has the URLs the plan started from."""
    applied = [change for change in changes if change.changed]
    if not applied:
        return []
    with transaction.atomic():
        rows = {
            row.pk: row
            for row in CertificateAuthority.objects.select_for_update()
            .filter(pk__in=[change.ca.pk for change in applied])
            .order_by("pk")
        }
        for change in applied:
            row = rows.get(change.ca.pk)
            if row is None or not row.is_active or CaUrls.of(row) != change.before:
                raise Conflict(
                    "CA_URLS_CHANGED_CONCURRENTLY",
                    f"{change.ca.slug} changed while this ran; nothing was changed, run it again",
                )
            row.crl_url = change.after.crl_url
            row.ocsp_url = change.after.ocsp_url
            row.ca_issuers_url = change.after.ca_issuers_url
            row.save(update_fields=["crl_url", "ocsp_url", "ca_issuers_url"])
        audit_record_many(
            [
                AuditEntry(
                    "ca.urls_changed",
                    actor,
                    rows[change.ca.pk],
                    details={
                        "ca": change.ca.slug,
                        "before": change.before.as_dict(),
                        "after": change.after.as_dict(),
                        "live_certificates_with_other_urls": change.stale_count,
                        "listed": [stale.serial for stale in change.stale],
                    },
                )
                for change in applied
            ]
        )
    return applied


# --- OCSP delegate -------------------------------------------------------------------------


def _ocsp_key_usable(delegate: Certificate) -> bool:
    try:
        ocsp_key_load(ocsp_responder_key_file(delegate.serial))
    except (OSError, ValueError, TypeError):
        return False
    return True


def ocsp_responder_renew(*, actor: Actor, force: bool = False) -> Certificate | None:
    """Issue a new delegated OCSP responder certificate when the current one has less than a
    third of its life left (or none exists, or its key does not open with the OCSP key
    passphrase, or ``force``). Returns the new one, or None when nothing was due. Its key is
    stored like a CA key but under its own passphrase: it signs statuses for the whole CA.

    The key file is written before the row (a failure leaves at most an unused key file); the
    row and its audit record commit together. Raises ``NotFound`` (``CA_NOT_INITIALISED``)
    without an active client CA, ``ImproperlyConfigured`` without the CA or the OCSP key
    passphrase, ``ValueError`` when the CA key does not open, ``OSError`` for the key and
    certificate files, :class:`CertificateLintFailed` when pkilint refuses the certificate.
    """
    conf = pki_settings()
    lifetime = timedelta(days=conf.ocsp_responder_days)
    now = timezone.now()
    current = ocsp_responder_current()
    if current and not force and current.not_after - now > lifetime / 3:
        if _ocsp_key_usable(current):
            return None
        logger.warning("OCSP delegate %s: its key does not open; renewing", current.serial)
    client_ca = ca_get_active(CertificateAuthority.Kind.CLIENT)
    ca_key = ca_key_load(client_ca.key_file)
    key = crypto.generate_key("ec-p256")
    cert = _sign_linted(
        crypto.build_ocsp_responder(
            subject=crypto.name(
                common_name=f"{conf.organization} OCSP Responder",
                organization=conf.organization,
                country=conf.country,
            ),
            public_key=key.public_key(),
            issuer=_issuer(client_ca),
            not_before=now - crypto.BACKDATE,
            not_after=now + lifetime,
            serial=crypto.random_serial(),
        ),
        ca_key,
    )
    fields = _certificate_fields(cert)
    ocsp_key_write(ocsp_responder_key_file(fields["serial"]), key)
    with transaction.atomic():
        row = Certificate.objects.create(
            kind=Certificate.Kind.OCSP_RESPONDER, issuer=client_ca, **fields
        )
        audit_record(
            event="ocsp_responder.issued",
            actor=actor,
            target=row,
            serial=row.serial,
            not_after=row.not_after,
            replaces=current.serial if current else None,
        )
    atomic_write(ca_dir() / "certs" / OCSP_RESPONDER_FILE, row.pem.encode())
    return row


# --- client certificates -------------------------------------------------------------------


def _key_rejection(revocation_reasons: set[str]) -> CsrKeyRejected | None:
    """Why a key with these earlier certificates (their revocation reasons, "" when not
    revoked) may not be certified again, or None when it has none."""
    if Certificate.Reason.KEY_COMPROMISE in revocation_reasons:
        return CsrKeyRejected(CSR_KEY_COMPROMISED)
    if revocation_reasons:
        return CsrKeyRejected(CSR_KEY_REUSED)
    return None


def _key_history_rejection(spki_sha256: str) -> CsrKeyRejected | None:
    """:func:`_key_rejection` for one key, in one query."""
    history = certificate_key_history(spki_sha256).values_list("revocation_reason", flat=True)
    return _key_rejection(set(history))


def _audit_rejection(
    *, rejection: CsrRejected, participant: Participant, actor: Actor, size: int
) -> None:
    # Only the code, the size and our own detail text: never any part of the upload itself.
    audit_record(
        event="csr.rejected",
        actor=actor,
        target=participant,
        code=rejection.code,
        size=size,
        trader_id=participant.trader_id,
        detail=rejection.details.get("detail", ""),
    )


def csr_submit(
    *,
    participant: Participant,
    data: bytes | str,
    actor: Actor,
    renewal_of: Certificate | None = None,
) -> CertificateRequest:
    """Validate an uploaded CSR for ``participant`` and store it as submitted (for EST
    re-enrollment, as the renewal of ``renewal_of``).

    Only a well-formed CSR with an allowed key and a valid signature, for a key never
    certified, never compromised and not already waiting in another request, is stored; the
    request and its audit record commit together. Raises :class:`pki.csr.CsrRejected` (400)
    or :class:`pki.csr.CsrKeyRejected` (409); a rejected upload stores nothing but an audit
    record, which never holds any part of the upload.
    """
    size = len(data)
    try:
        parsed = csr_parse(data)
        if rejection := _key_history_rejection(parsed.spki_sha256):
            raise rejection
        if CertificateRequest.objects.filter(
            spki_sha256=parsed.spki_sha256, status=CertificateRequest.Status.SUBMITTED
        ).exists():
            raise CsrKeyRejected(CSR_ALREADY_SUBMITTED)
    except CsrRejected as rejection:
        _audit_rejection(rejection=rejection, participant=participant, actor=actor, size=size)
        raise
    with transaction.atomic():
        request = CertificateRequest.objects.create(
            participant=participant,
            csr_pem=parsed.pem,
            spki_sha256=parsed.spki_sha256,
            key_description=parsed.key_description,
            requested_subject=parsed.requested_subject,
            requested_extensions=parsed.requested_extensions,
            submitted_by=actor.label,
            renewal_of=renewal_of,
        )
        audit_record(
            event="csr.submitted",
            actor=actor,
            target=request,
            trader_id=participant.trader_id,
            spki_sha256=parsed.spki_sha256,
            key=parsed.key_description,
            requested_extensions_ignored=parsed.requested_extensions,
            **({"renewal_of": renewal_of.serial} if renewal_of else {}),
        )
    return request


@dataclass(frozen=True)
class IssueOutcome:
    """What became of one request in :func:`certificates_issue`: a certificate or an error."""

    request_id: int
    certificate: Certificate | None = None
    error: DomainError | None = None


def certificate_issue(
    *, request: CertificateRequest, actor: Actor, validity_days: int | None = None
) -> Certificate:
    """Sign one submitted request with the client issuing CA.

    Subject and SAN come from the participant's verified records, never from the CSR; the
    serial is 159 random bits; validity defaults to ``KEYLINE_CLIENT_CERT_DAYS``. Raises
    ``Conflict`` when the request is not pending or the participant or firm is not active,
    and :class:`pki.csr.CsrKeyRejected` when the key was certified before or compromised; the
    request is then marked rejected (committed) before the error is raised. Also raises
    ``NotFound`` (``CSR_NOT_FOUND`` for a request that is gone, ``CA_NOT_INITIALISED``),
    ``ImproperlyConfigured`` or ``ValueError`` when the CA key cannot be opened, and
    :class:`CertificateLintFailed` (nothing signed or changed).
    """
    (outcome,) = certificates_issue(requests=[request], actor=actor, validity_days=validity_days)
    if outcome.error is not None:
        raise outcome.error
    if outcome.certificate is None:  # an outcome carries one or the other
        raise RuntimeError(f"request {request.pk}: neither a certificate nor an error")
    return outcome.certificate


def client_subject(participant: Participant) -> x509.Name:
    """The subject a participant's client certificate gets: from the verified identity (the
    trader id, the firm's legal name and jurisdiction), never from the CSR."""
    firm = participant.firm
    return crypto.name(
        common_name=participant.trader_id, organization=firm.legal_name, country=firm.jurisdiction
    )


def certificates_issue(
    *, requests: list[CertificateRequest], actor: Actor, validity_days: int | None = None
) -> list[IssueOutcome]:
    """Sign many submitted requests in one transaction: the signing worker's path when it
    drains a queue of approved requests. One outcome per request, in order; a request that
    cannot be signed changes nothing (or is marked rejected, for a key that was certified
    before or compromised) and does not hold up the others.

    Per-request refusals are outcomes, not exceptions: ``CSR_NOT_FOUND``, ``CSR_NOT_PENDING``,
    ``PARTICIPANT_INACTIVE``, :class:`pki.csr.CsrKeyRejected`. A key is never certified twice:
    when another transaction certified it meanwhile (constraint
    ``pki_client_key_certified_once``), the batch is redone one request at a time and the
    loser's outcome is :class:`pki.csr.CsrKeyRejected`. Raises only what stops a batch (its
    transaction rolls back): no active client CA (``NotFound``), a CA key that does not open
    (``ImproperlyConfigured``, ``ValueError``), :class:`CertificateLintFailed`, a database
    error."""
    try:
        return _certificates_issue(requests=requests, actor=actor, validity_days=validity_days)
    except IntegrityError:
        # A concurrent transaction certified one of these keys in between (constraint
        # pki_client_key_certified_once) and this transaction wrote nothing. One at a time,
        # the key-history check now names the loser.
        if len(requests) == 1:
            return [IssueOutcome(requests[0].pk, error=CsrKeyRejected(CSR_KEY_REUSED))]
        return [
            _certificates_issue(requests=[r], actor=actor, validity_days=validity_days)[0]
            for r in requests
        ]


@transaction.atomic
def _certificates_issue(
    *, requests: list[CertificateRequest], actor: Actor, validity_days: int | None
) -> list[IssueOutcome]:
    ids = [r.pk for r in requests]
    locked = {
        r.pk: r
        for r in CertificateRequest.objects.select_for_update(of=("self",))
        .select_related("participant__firm")
        .filter(pk__in=ids)
        .order_by("pk")  # a fixed lock order: concurrent batches cannot deadlock
    }
    history: dict[str, set[str]] = {}
    for spki, reason in Certificate.objects.filter(
        spki_sha256__in={r.spki_sha256 for r in locked.values()}
    ).values_list("spki_sha256", "revocation_reason"):
        history.setdefault(spki, set()).add(reason)
    conf = pki_settings()
    ca = ca_get_active(CertificateAuthority.Kind.CLIENT)
    issuer, ca_key = _issuer(ca), ca_key_load(ca.key_file)
    now = timezone.now()
    not_after = now + timedelta(days=validity_days or conf.client_cert_days)

    outcomes: list[IssueOutcome] = []
    certificates: list[Certificate] = []
    decided: list[CertificateRequest] = []
    entries: list[AuditEntry] = []
    for request_id in ids:
        request = locked.get(request_id)
        if request is None:
            outcomes.append(
                IssueOutcome(request_id, error=NotFound("CSR_NOT_FOUND", "No such request."))
            )
            continue
        if request.status != CertificateRequest.Status.SUBMITTED:
            error = Conflict("CSR_NOT_PENDING", f"This request is already {request.status}.")
            outcomes.append(IssueOutcome(request_id, error=error))
            continue
        if rejection := _key_rejection(history.get(request.spki_sha256, set())):
            request.status = CertificateRequest.Status.REJECTED
            request.rejection_code, request.rejection_reason = rejection.code, rejection.message
            request.decided_by, request.decided_at = actor.label, now
            decided.append(request)
            entries.append(
                AuditEntry("csr.rejected", actor, request, details={"code": rejection.code})
            )
            outcomes.append(IssueOutcome(request_id, error=rejection))
            continue
        participant = request.participant
        if not participant.can_hold_certificate:
            error = Conflict(
                "PARTICIPANT_INACTIVE",
                "Certificates are issued only to active participants of approved firms.",
            )
            outcomes.append(IssueOutcome(request_id, error=error))
            continue
        firm = participant.firm
        cert = _sign_linted(
            crypto.build_client(
                subject=client_subject(participant),
                san_uri=participant.san_uri,
                public_key=crypto.public_key_of(x509.load_pem_x509_csr(request.csr_pem.encode())),
                issuer=issuer,
                not_before=now - crypto.BACKDATE,
                not_after=not_after,
                serial=crypto.random_serial(),
            ),
            ca_key,
        )
        certificate = Certificate(
            kind=Certificate.Kind.CLIENT,
            issuer=ca,
            participant=participant,
            request=request,
            **_certificate_fields(cert),
        )
        history[request.spki_sha256] = {""}  # a second request for this key in the batch loses
        request.status = CertificateRequest.Status.ISSUED
        request.decided_by, request.decided_at = actor.label, now
        decided.append(request)
        certificates.append(certificate)
        outcomes.append(IssueOutcome(request_id, certificate=certificate))
        entries.append(
            AuditEntry(
                "certificate.issued",
                actor,
                certificate,  # its primary key is set by bulk_create before the audit
                details={
                    "serial": certificate.serial,
                    "fingerprint_sha256": certificate.fingerprint_sha256,
                    "trader_id": participant.trader_id,
                    "firm_lei": firm.lei,
                    "not_after": certificate.not_after,
                    "request_id": request.pk,
                },
            )
        )

    Certificate.objects.bulk_create(certificates)
    CertificateRequest.objects.bulk_update(
        decided, ["status", "rejection_code", "rejection_reason", "decided_by", "decided_at"]
    )
    if entries:
        audit_record_many(entries)
    if certificates:
        # pki.propagation receives it and has the signing worker pre-sign their OCSP answers.
        transaction.on_commit(
            lambda: events.certificates_issued.send(sender=Certificate, certificates=certificates)
        )
    return outcomes


# --- the terminator's server certificate ---------------------------------------------------

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _check_dns_name(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise Invalid("SERVER_NAME_INVALID", f"{value!r} is not a valid DNS name")
    return name


@dataclass(frozen=True)
class ServerCertificate:
    """A server certificate just issued, with its key (for the venue's own TLS servers only:
    participants' keys never reach the server) and the chain to install beside it."""

    certificate: Certificate
    private_key_pem: bytes
    chain_pem: str  # the server CA
    root_pem: str


def server_certificate_issue(
    *, dns_names: list[str], ip_addresses: list[str], actor: Actor, days: int | None = None
) -> ServerCertificate:
    """Issue the nginx terminator's certificate (serverAuth) from the server CA. The key is
    the venue's own and generated here; the caller writes it out (mode 0600).

    The row and its audit record commit together; the key is returned, never stored. Raises
    ``Invalid`` for a bad DNS name (``SERVER_NAME_INVALID``) or IP address
    (``SERVER_IP_INVALID``) or neither given (``SERVER_NAME_MISSING``), ``NotFound``
    (``CA_NOT_INITIALISED``) without the server or root CA, ``ImproperlyConfigured`` or
    ``ValueError`` when the server CA key cannot be opened, :class:`CertificateLintFailed`.
    """
    names = [_check_dns_name(d) for d in dns_names]
    try:
        addresses = [str(ipaddress.ip_address(a.strip())) for a in ip_addresses]
    except ValueError as exc:
        raise Invalid("SERVER_IP_INVALID", str(exc)) from exc
    if not names and not addresses:
        raise Invalid("SERVER_NAME_MISSING", "give at least one --dns name or --ip address")
    conf = pki_settings()
    ca = ca_get_active(CertificateAuthority.Kind.SERVER)
    root = ca_get_active(CertificateAuthority.Kind.ROOT)
    key = crypto.generate_key("ec-p256")
    now = timezone.now()
    cert = _sign_linted(
        crypto.build_server(
            subject=crypto.name(
                common_name=(names or addresses)[0],
                organization=conf.organization,
                country=conf.country,
            ),
            dns_names=names,
            ip_addresses=addresses,
            public_key=key.public_key(),
            issuer=_issuer(ca),
            not_before=now - crypto.BACKDATE,
            not_after=now + timedelta(days=days or conf.server_cert_days),
            serial=crypto.random_serial(),
        ),
        ca_key_load(ca.key_file),
    )
    with transaction.atomic():
        row = Certificate.objects.create(
            kind=Certificate.Kind.SERVER, issuer=ca, **_certificate_fields(cert)
        )
        audit_record(
            event="server_certificate.issued",
            actor=actor,
            target=row,
            serial=row.serial,
            dns=names,
            ip=addresses,
            not_after=row.not_after,
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ServerCertificate(row, key_pem, ca.certificate_pem, root.certificate_pem)
