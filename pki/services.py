"""PKI services: setting up the CA, taking CSRs, issuing certificates.

Only this module writes ``pki`` tables or loads a CA key. Every entry point audits inside its
own transaction; key files are written before the rows that name them, so a failed commit can
leave an unused key file but never a row without its key.
"""

import functools
import getpass
import ipaddress
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.db import IntegrityError, transaction
from django.utils import timezone

from pki import crypto
from pki.conf import ca_passphrase, pki_settings
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
)
from pki.lint import Finding, lint_certificate_der
from pki.models import Certificate, CertificateAuthority, CertificateRequest
from pki.selectors import ca_get_active, certificate_key_history
from portal.audit import Actor, AuditEntry, audit_record, audit_record_many
from portal.errors import Conflict, DomainError, Invalid, NotFound
from portal.models import Participant

logger = logging.getLogger(__name__)

ROOT_VALIDITY = timedelta(days=20 * 365)
INTERMEDIATE_VALIDITY = timedelta(days=10 * 365)
CERT_FILES = {
    CertificateAuthority.Kind.ROOT: "root.pem",
    CertificateAuthority.Kind.CLIENT: "client-ca.pem",
    CertificateAuthority.Kind.SERVER: "server-ca.pem",
}
OCSP_RESPONDER_FILE = "ocsp-responder.pem"


class CertificateLintFailed(DomainError):
    """pkilint found a problem in a to-be-signed certificate: a defect in our profile, so
    nothing was signed (500)."""

    status_code = 500

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__(
            "certificate_lint_failed",
            "pre-issuance lint refused the certificate: " + "; ".join(map(str, findings)),
            {"findings": [str(f) for f in findings]},
        )


def command_actor(command: str) -> Actor:
    return Actor.system(f"manage.py {command} (os user {getpass.getuser()})")


# --- signing -------------------------------------------------------------------------------


@functools.cache
def _throwaway_key(key_type: str) -> crypto.CaPrivateKey:
    return crypto.generate_key(key_type)


def _key_type_of(key: crypto.CaPrivateKey) -> str:
    description = crypto.describe_public_key(key.public_key())
    return {"EC-secp256r1": "ec-p256", "EC-secp384r1": "ec-p384"}.get(description, "rsa-3072")


def _sign_linted(builder: x509.CertificateBuilder, key: crypto.CaPrivateKey) -> x509.Certificate:
    """Lint the to-be-signed certificate (signed by a throwaway key of the same type, as
    Boulder does), and sign with the real key only if it is clean."""
    if pki_settings().lint_before_signing:
        candidate = crypto.sign(builder, _throwaway_key(_key_type_of(key)))
        findings = lint_certificate_der(candidate.public_bytes(serialization.Encoding.DER))
        if findings:
            logger.error("pre-issuance lint refused a certificate: %s", findings)
            raise CertificateLintFailed(findings)
    return crypto.sign(builder, key)


@functools.lru_cache(maxsize=32)
def _parsed_ca(fingerprint: str, pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def ca_certificate(ca: CertificateAuthority) -> x509.Certificate:
    return _parsed_ca(ca.fingerprint_sha256, ca.certificate_pem)


def _issuer(ca: CertificateAuthority) -> crypto.Issuer:
    cert = ca_certificate(ca)
    conf = pki_settings()
    return crypto.Issuer(
        name=cert.subject,
        public_key=cert.public_key(),  # type: ignore[arg-type]
        not_after=cert.not_valid_after_utc,
        crl_url=conf.crl_url(ca.slug),
        ca_issuers_url=conf.ca_issuers_url(ca.slug),
    )


def _certificate_fields(cert: x509.Certificate) -> dict:
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
        "spki_sha256": crypto.spki_sha256(cert.public_key()),  # type: ignore[arg-type]
        "subject": cert.subject.rfc4514_string(),
        "san": san,
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "pem": crypto.to_pem(cert),
    }


# --- the CA --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaSet:
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
) -> CertificateAuthority:
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    return CertificateAuthority.objects.create(
        kind=kind,
        slug=slug,
        name=cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value,
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
    operators: one file per CA, plus ``client-chain.pem`` and ``server-chain.pem``."""
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

    Refuses (409 ``ca_exists``) when a CA is active, unless ``force``: then the old CAs are
    deactivated (kept for their certificates and CRLs) and a new hierarchy replaces them.
    """
    if key_type not in crypto.KEY_TYPES:
        raise Invalid("ca_key_type", f"key type must be one of {', '.join(crypto.KEY_TYPES)}")
    if CertificateAuthority.objects.filter(is_active=True).exists() and not force:
        raise Conflict("ca_exists", "A CA is already initialised; pass --force to replace it.")
    ca_passphrase()  # fail before generating anything
    conf = pki_settings()
    org, country = conf.organization, conf.country
    now = timezone.now()
    generation = uuid.uuid4().hex[:12]

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
    root_issuer = crypto.Issuer(
        name=root_cert.subject,
        public_key=root_key.public_key(),
        not_after=root_cert.not_valid_after_utc,
        crl_url=conf.crl_url("root"),
        ca_issuers_url=conf.ca_issuers_url("root"),
    )
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
            slug="root",
            cert=root_cert,
            key_type=key_type,
            key_file=key_files[CertificateAuthority.Kind.ROOT],
            parent=None,
        )
        rows = {
            kind: _ca_row(
                kind=kind,
                slug=f"{kind}-ca",
                cert=cert,
                key_type=key_type,
                key_file=key_files[kind],
                parent=root,
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
        )
    ca_export_files()
    ocsp_responder_renew(actor=actor, force=True)
    return CaSet(root=root, client=rows["client"], server=rows["server"])


# --- OCSP delegate -------------------------------------------------------------------------


def ocsp_responder_key_file(serial: str) -> str:
    """Where the delegate's key lives, relative to the CA directory (the responder loads it)."""
    return f"keys/ocsp-{serial}.key.pem"


def _ocsp_key_usable(delegate: Certificate) -> bool:
    try:
        ocsp_key_load(ocsp_responder_key_file(delegate.serial))
    except (OSError, ValueError, TypeError):
        return False
    return True


def ocsp_responder_current() -> Certificate | None:
    return (
        Certificate.objects.live()
        .filter(kind=Certificate.Kind.OCSP_RESPONDER, issuer__kind="client", issuer__is_active=True)
        .order_by("-not_after", "-pk")  # not_after has whole seconds: newest wins a tie
        .first()
    )


def ocsp_responder_renew(*, actor: Actor, force: bool = False) -> Certificate | None:
    """Issue a new delegated OCSP responder certificate when the current one has less than a
    third of its life left (or none exists, or its key does not open with the OCSP key
    passphrase, or ``force``). Returns the new one, or None when nothing was due. Its key is
    stored like a CA key but under its own passphrase: it signs statuses for the whole CA."""
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


def csr_submit(*, participant: Participant, data: bytes | str, actor: Actor) -> CertificateRequest:
    """Validate an uploaded CSR for ``participant`` and store it as submitted.

    Raises :class:`pki.csr.CsrRejected` (400) or :class:`pki.csr.CsrKeyRejected` (409); a
    rejected upload stores nothing but an audit record.
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
        )
        audit_record(
            event="csr.submitted",
            actor=actor,
            target=request,
            trader_id=participant.trader_id,
            spki_sha256=parsed.spki_sha256,
            key=parsed.key_description,
            requested_extensions_ignored=parsed.requested_extensions,
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
    request is then marked rejected (committed) before the error is raised.
    """
    (outcome,) = certificates_issue(requests=[request], actor=actor, validity_days=validity_days)
    if outcome.error is not None:
        raise outcome.error
    return outcome.certificate  # type: ignore[return-value]


def certificates_issue(
    *, requests: list[CertificateRequest], actor: Actor, validity_days: int | None = None
) -> list[IssueOutcome]:
    """Sign many submitted requests in one transaction: the signing worker's path when it
    drains a queue of approved requests. One outcome per request, in order; a request that
    cannot be signed changes nothing (or is marked rejected, for a key that was certified
    before or compromised) and does not hold up the others."""
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
                IssueOutcome(request_id, error=NotFound("csr_not_found", "No such request."))
            )
            continue
        if request.status != CertificateRequest.Status.SUBMITTED:
            error = Conflict("csr_not_pending", f"This request is already {request.status}.")
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
                "participant_inactive",
                "Certificates are issued only to active participants of approved firms.",
            )
            outcomes.append(IssueOutcome(request_id, error=error))
            continue
        firm = participant.firm
        cert = _sign_linted(
            crypto.build_client(
                subject=crypto.name(
                    common_name=participant.trader_id,
                    organization=firm.legal_name,
                    country=firm.jurisdiction,
                ),
                san_uri=participant.san_uri,
                public_key=x509.load_pem_x509_csr(request.csr_pem.encode()).public_key(),  # type: ignore[arg-type]
                issuer=issuer,
                ocsp_url=conf.ocsp_url,
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
        serials = [c.serial for c in certificates]
        transaction.on_commit(lambda: _presign_issued(serials))
    return outcomes


def _presign_issued(serials: list[str]) -> None:
    """Have the signing worker put the new certificates' "good" answers in the OCSP cache, so
    that the first relying party to ask (nginx) is answered from it."""
    from pki import tasks

    try:
        tasks.ocsp_presign_task.delay(serials=serials)
    except Exception:
        # Not a failure of issuance: the responder signs on the first request instead.
        logger.warning("could not queue the OCSP pre-sign of %s", serials, exc_info=True)


# --- the terminator's server certificate ---------------------------------------------------

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _check_dns_name(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise Invalid("server_name_invalid", f"{value!r} is not a valid DNS name")
    return name


@dataclass(frozen=True)
class ServerCertificate:
    certificate: Certificate
    private_key_pem: bytes
    chain_pem: str  # the server CA
    root_pem: str


def server_certificate_issue(
    *, dns_names: list[str], ip_addresses: list[str], actor: Actor, days: int | None = None
) -> ServerCertificate:
    """Issue the nginx terminator's certificate (serverAuth) from the server CA. The key is
    the venue's own and generated here; the caller writes it out (mode 0600)."""
    names = [_check_dns_name(d) for d in dns_names]
    try:
        addresses = [str(ipaddress.ip_address(a.strip())) for a in ip_addresses]
    except ValueError as exc:
        raise Invalid("server_ip_invalid", str(exc)) from exc
    if not names and not addresses:
        raise Invalid("server_name_missing", "give at least one --dns name or --ip address")
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
