"""Revoking certificates and publishing CRLs.

A revocation commits the new status and its audit record in one transaction; when it commits,
it sends ``pki.events.certificates_status_changed``, and ``pki.propagation`` has the process
that revoked forget the cached trust decisions and OCSP responses for those certificates (so
the API and the OCSP responder answer from the database at once) and asks the signing worker
to publish new CRLs and re-sign the OCSP responses.

CRLs are built only by the key-holding worker (``pki.tasks.crl_publish_task``); on a machine
without a broker the same code runs in-process (eager Celery).
"""

import base64
import fcntl
import hashlib
import logging
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.db import connection, transaction
from django.db.models import Max
from django.db.models.functions import Length
from django.utils import timezone

from kernel.audit import Actor, AuditEntry, audit_record, audit_record_many
from kernel.errors import Conflict, DomainError, Invalid
from kernel.models import Firm, Participant
from pki import crypto, events
from pki.conf import pki_settings
from pki.failures import failure_record, failures_open, failures_resolve
from pki.keystore import atomic_write, ca_dir, ca_key_load
from pki.models import (
    Certificate,
    CertificateAuthority,
    CertificateQuerySet,
    PublishFailure,
    RevocationList,
)
from pki.reasons import REASON_FLAGS, reason_from_name
from pki.selectors import ca_certificate

logger = logging.getLogger(__name__)

CRL_KEEP = 20  # published CRLs kept per CA (the newest is served; the rest are history)


class CrlPublishFailed(DomainError):
    """The CRLs could not be written or the reload command failed (503); the last good CRLs
    stay in place and the failure is recorded for ``/pki/health/``."""

    status_code = 503

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__("CRL_PUBLISH_FAILED", message, {"stderr": stderr} if stderr else None)


# --- revoking ------------------------------------------------------------------------------


def _check_invalidity_date(invalidity_date: datetime | None, now: datetime) -> None:
    if invalidity_date is None:
        return
    if timezone.is_naive(invalidity_date):
        raise Invalid("INVALIDITY_DATE_INVALID", "the invalidity date needs a time zone")
    if invalidity_date > now:
        raise Invalid("INVALIDITY_DATE_INVALID", "the invalidity date cannot be in the future")


def _revoked_details(cert: Certificate) -> dict[str, Any]:
    return {
        "serial": cert.serial,
        "fingerprint_sha256": cert.fingerprint_sha256,
        "reason": cert.revocation_reason,
        "invalidity_date": cert.invalidity_date,
        "participant": cert.participant.trader_id if cert.participant is not None else None,
    }


def _status_changed_on_commit(certificates: list[Certificate]) -> None:
    """When the transaction commits, announce the change; ``pki.propagation`` receives it and
    brings the caches, the CRLs and the OCSP answers in line."""
    transaction.on_commit(
        lambda: events.certificates_status_changed.send(
            sender=Certificate, certificates=certificates
        )
    )


def certificate_revoke(
    *,
    certificate: Certificate,
    reason: str,
    actor: Actor,
    invalidity_date: datetime | None = None,
) -> Certificate:
    """Revoke one certificate. Revoking a revoked certificate is a 409 that changes nothing.

    A ``key_compromise`` revocation also bars the public key from ever being certified again
    (``pki.services.csr_submit`` refuses it with ``CSR_KEY_COMPROMISED``).

    The status, its audit record and the announcement to ``pki.propagation`` commit together,
    in a transaction of its own (durable: calling it inside one raises ``RuntimeError``).
    Returns the revoked row (``certificate`` is refreshed too). Raises ``Invalid`` for an
    unknown reason (``REVOCATION_REASON_INVALID``) or an invalidity date that is naive or in
    the future (``INVALIDITY_DATE_INVALID``), ``Conflict`` (``CERTIFICATE_ALREADY_REVOKED``),
    ``Certificate.DoesNotExist`` for a row that is gone.
    """
    reason = reason_from_name(reason)
    now = timezone.now()
    _check_invalidity_date(invalidity_date, now)
    with transaction.atomic(durable=True):
        cert = (
            Certificate.objects.select_for_update(of=("self",))
            .select_related("participant")
            .get(pk=certificate.pk)
        )
        # Revoked: the status and the time go together (pki_certificate_revocation_consistent).
        if cert.revoked_at is not None:
            raise Conflict(
                "CERTIFICATE_ALREADY_REVOKED",
                f"certificate {cert.serial} was already revoked"
                f" at {cert.revoked_at:%Y-%m-%d %H:%M:%S}Z ({cert.revocation_reason}).",
                {"serial": cert.serial, "revoked_at": cert.revoked_at.isoformat()},
            )
        cert.mark_revoked(reason=reason, at=now, invalidity_date=invalidity_date)
        cert.save(
            update_fields=[
                "status",
                "revoked_at",
                "revocation_reason",
                "invalidity_date",
                "updated_at",
            ]
        )
        audit_record(
            event="certificate.revoked", actor=actor, target=cert, **_revoked_details(cert)
        )
        _status_changed_on_commit([cert])
    certificate.refresh_from_db()
    return cert


def _revoke_all(
    certificates: CertificateQuerySet, *, reason: str, actor: Actor, scope: dict[str, str]
) -> list[Certificate]:
    reason = reason_from_name(reason)
    now = timezone.now()
    with transaction.atomic(durable=True):
        live = list(
            certificates.select_for_update(of=("self",))
            .revocable(now)
            .select_related("participant")
            .order_by("pk")
        )
        for cert in live:
            cert.mark_revoked(reason=reason, at=now)
            cert.updated_at = now  # bulk_update does not apply auto_now
        Certificate.objects.bulk_update(
            live, ["status", "revoked_at", "revocation_reason", "invalidity_date", "updated_at"]
        )
        audit_record_many(
            [
                AuditEntry(
                    "certificate.revoked", actor, cert, details=_revoked_details(cert) | scope
                )
                for cert in live
            ]
        )
        if live:
            _status_changed_on_commit(live)
    return live


def certificates_revoke_for_participant(
    *, participant: Participant, reason: str, actor: Actor
) -> list[Certificate]:
    """Revoke every live certificate of one participant, in one transaction.

    Live means active and unexpired; the others are left as they are, so running it twice
    revokes nothing the second time. Each revocation is audited, and the change announced
    when it commits. Returns the certificates revoked. Raises ``Invalid``
    (``REVOCATION_REASON_INVALID``), and ``RuntimeError`` inside another transaction."""
    return _revoke_all(
        Certificate.objects.filter(participant=participant),
        reason=reason,
        actor=actor,
        scope={"scope": "participant"},
    )


def certificates_revoke_for_firm(*, firm: Firm, reason: str, actor: Actor) -> list[Certificate]:
    """Revoke every live certificate of a firm's participants (suspension, offboarding).

    As :func:`certificates_revoke_for_participant`, over the whole firm, in one transaction;
    the audit records name the firm's LEI. Returns the certificates revoked. Raises
    ``Invalid`` (``REVOCATION_REASON_INVALID``), and ``RuntimeError`` inside another
    transaction."""
    return _revoke_all(
        Certificate.objects.filter(participant__firm=firm),
        reason=reason,
        actor=actor,
        scope={"scope": "firm", "firm_lei": firm.lei},
    )


# --- CRLs ----------------------------------------------------------------------------------


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


_REASON_EXTENSIONS = {
    reason: x509.Extension(x509.CRLReason.oid, False, x509.CRLReason(flag))
    for reason, flag in REASON_FLAGS.items()
    if flag is not None
}
# Built entries, kept by the publishing process across rebuilds: a CRL is rebuilt after every
# revocation, and all but the newest entries are the same as last time (measured at 100k
# entries: building them is most of the work). Keyed by everything an entry encodes.
_EntryKey = tuple[str, datetime, str, datetime | None]
_entries: dict[_EntryKey, x509.RevokedCertificate] = {}
ENTRY_CACHE_MAX = 1_000_000


def _revoked_entry(
    serial: str, revoked_at: datetime, reason: str, invalidity_date: datetime | None
) -> x509.RevokedCertificate:
    key: _EntryKey = (serial, revoked_at, reason, invalidity_date)
    entry = _entries.get(key)
    if entry is None:
        extensions: list[x509.Extension[x509.ExtensionType]] = (
            [_REASON_EXTENSIONS[reason]] if reason in _REASON_EXTENSIONS else []
        )
        if invalidity_date is not None:
            extensions.append(
                x509.Extension(
                    x509.InvalidityDate.oid,
                    False,
                    x509.InvalidityDate(_naive_utc(invalidity_date)),
                )
            )
        entry = x509.RevokedCertificateBuilder(int(serial, 16), revoked_at, extensions).build()
        if len(_entries) >= ENTRY_CACHE_MAX:
            _entries.clear()
        _entries[key] = entry
    return entry


_REVOKED_SQL = """
    SELECT serial, floor(extract(epoch FROM revoked_at))::bigint, revocation_reason,
           floor(extract(epoch FROM invalidity_date))::bigint
    FROM {table}
    WHERE issuer_id = %s AND status = 'revoked' AND not_after > %s
    ORDER BY revoked_at
"""


def _revoked_rows(
    ca: CertificateAuthority, now: datetime
) -> Iterator[tuple[str, datetime, str, datetime | None]]:
    """(serial, revocation time, reason, invalidity date) of every revoked, unexpired
    certificate of ``ca``, oldest revocation first; times in whole seconds, as a CRL has them.
    On PostgreSQL the times are read as epoch seconds: Django's per-value time-zone loader
    costs more than the rest of the read (0.7 s of 1.2 s for 100k entries, measured); the
    partial index pki_cert_revoked_crl_idx makes it an index-only scan."""
    if connection.vendor != "postgresql":
        rows = (
            Certificate.objects.filter(
                issuer=ca, status=Certificate.Status.REVOKED, not_after__gt=now
            )
            .order_by("revoked_at")
            .values_list("serial", "revoked_at", "revocation_reason", "invalidity_date")
        )
        for serial, revoked_at, reason, invalidity_date in rows.iterator(chunk_size=5000):
            if revoked_at is None:  # never: see pki_certificate_revocation_consistent
                raise ValueError(f"revoked certificate {serial} has no revocation time")
            yield (
                serial,
                revoked_at.replace(microsecond=0),
                reason,
                invalidity_date.replace(microsecond=0) if invalidity_date else None,
            )
        return
    with connection.cursor() as cursor:
        cursor.execute(_REVOKED_SQL.format(table=Certificate._meta.db_table), [ca.pk, now])
        for serial, revoked, reason, invalid in cursor.fetchall():
            yield (
                serial,
                datetime.fromtimestamp(revoked, UTC),
                reason,
                datetime.fromtimestamp(invalid, UTC) if invalid is not None else None,
            )


def crl_build(
    *, ca: CertificateAuthority, number: int, this_update: datetime, key: crypto.CaPrivateKey
) -> tuple[x509.CertificateRevocationList, int]:
    """Sign a full CRL for ``ca``: every revoked certificate it issued that has not expired
    (RFC 5280 §3.3 lets expired entries go), with reason codes and invalidity dates.

    Returns the CRL and its number of entries; stores and writes nothing. Raises nothing of
    its own: a database error reading the entries propagates."""
    rows = _revoked_rows(ca, this_update)
    # The entries go to the builder's constructor in one list: add_revoked_certificate()
    # copies the builder each time, which is quadratic (12.9 s for 100k entries, measured).
    revoked = [_revoked_entry(*row) for row in rows]
    ca_cert = ca_certificate(ca)
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder(revoked_certificates=revoked)
        .issuer_name(ca_cert.subject)
        .last_update(this_update)
        .next_update(this_update + timedelta(hours=pki_settings().crl_validity_hours))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return builder.sign(key, crypto.signature_hash(key)), len(revoked)


def _crl_publish_one(ca: CertificateAuthority) -> RevocationList:
    key = ca_key_load(ca.key_file)
    with transaction.atomic():
        # The CA row lock orders concurrent rebuilds: each reads the entries and the last
        # number after the previous one committed, so numbers and contents only go forward.
        CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
        last = RevocationList.objects.filter(ca=ca).aggregate(n=Max("number"))["n"] or 0
        this_update = timezone.now().replace(microsecond=0)
        started = time.perf_counter()
        crl, entries = crl_build(ca=ca, number=last + 1, this_update=this_update, key=key)
        der = crl.public_bytes(serialization.Encoding.DER)
        if crl.next_update_utc is None:  # never: crl_build sets it
            raise CrlPublishFailed(f"the CRL built for {ca.slug} has no nextUpdate")
        row = RevocationList.objects.create(
            ca=ca,
            number=last + 1,
            this_update=this_update,
            next_update=crl.next_update_utc,
            entries=entries,
            der=der,
            sha256=hashlib.sha256(der).hexdigest(),
            build_seconds=time.perf_counter() - started,
        )
        RevocationList.objects.filter(ca=ca, number__lte=last + 1 - CRL_KEEP).delete()
    return row


def crl_publish(*, actor: Actor) -> list[RevocationList]:
    """Build, sign and store a new CRL for every active CA (the root's is the ARL), then write
    the files nginx reads and run the reload command. On any failure the files keep the last
    good CRLs and the error is raised (the Celery task retries) and remembered for
    ``/pki/health/``.

    The CRLs of all CAs and their audit records commit together, in a transaction of its own
    (durable), before any file names them; numbers only go forward, one publisher at a time
    on this host. A success resolves the open CRL, reload and enqueue failures. Raises
    :class:`CrlPublishFailed` (the reload command failed), ``OSError`` (files),
    ``ValueError`` or ``ImproperlyConfigured`` (a CA key that does not open), database errors;
    ``RuntimeError`` inside another transaction."""
    stage = PublishFailure.Stage.CRL
    try:
        with _publish_lock():
            # Durable: numbers committed here are final before any file names them. A
            # concurrent publisher waits on each CA's row lock (PostgreSQL) or on SQLite's
            # single writer; the unique (ca, number) constraint backs both up.
            with transaction.atomic(durable=True):
                published = [
                    _crl_publish_one(ca)
                    for ca in CertificateAuthority.objects.filter(is_active=True).order_by("pk")
                ]
                audit_record_many(
                    [
                        AuditEntry(
                            "crl.published",
                            actor,
                            row.ca,
                            details={
                                "ca": row.ca.slug,
                                "number": row.number,
                                "entries": row.entries,
                                "next_update": row.next_update,
                                "sha256": row.sha256,
                            },
                        )
                        for row in published
                    ]
                )
            crl_files_write()
            stage = PublishFailure.Stage.RELOAD
            crl_reload()
    except Exception as exc:
        logger.exception("CRL publishing failed (%s); the last good CRLs stay in place", stage)
        failure_record(stage, exc)
        raise
    failures_resolve(
        [PublishFailure.Stage.CRL, PublishFailure.Stage.RELOAD, PublishFailure.Stage.ENQUEUE]
    )
    return published


@contextmanager
def _publish_lock() -> Iterator[None]:
    """One publisher at a time on this host, so the files never go back to an older CRL."""
    path = ca_dir() / "crl" / ".publish.lock"
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def crl_latest(ca: CertificateAuthority) -> RevocationList | None:
    """The newest stored CRL of ``ca`` (the highest number), or None before its first.
    Raises nothing of its own."""
    return RevocationList.objects.filter(ca=ca).order_by("-number").first()


def _pem(der: bytes) -> bytes:
    """RFC 7468 armour (base64 in 64-character lines) without parsing a 5 MB CRL again."""
    encoded = base64.b64encode(der)
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return b"-----BEGIN X509 CRL-----\n" + b"\n".join(lines) + b"\n-----END X509 CRL-----\n"


def crl_files_write() -> None:
    """Write ``<CA dir>/crl/<slug>.crl`` (DER) for each active CA and ``bundle.pem`` (every CA's
    newest CRL, PEM, for nginx's ``ssl_crl``), each atomically (temporary file + rename).

    A CA without a CRL yet is left out. Raises ``OSError`` when a file cannot be written: the
    file it was replacing stays whole."""
    directory = ca_dir() / "crl"
    bundle = []
    for ca in CertificateAuthority.objects.filter(is_active=True).order_by("pk"):
        latest = crl_latest(ca)
        if latest is None:
            continue
        der = bytes(latest.der)
        atomic_write(directory / f"{ca.slug}.crl", der)
        bundle.append(_pem(der))
    if bundle:
        atomic_write(directory / "bundle.pem", b"".join(bundle))


def crl_reload() -> None:
    """Run ``KEYLINE_CRL_RELOAD_COMMAND`` (nginx reads ``ssl_crl`` only at start/reload).

    Does nothing when it is empty. Raises :class:`CrlPublishFailed`, with the command's
    standard error, when the command cannot start, exits non-zero or runs over 30 seconds."""
    command = pki_settings().crl_reload_command
    if not command:
        return
    try:
        subprocess.run(shlex.split(command), check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip()
        raise CrlPublishFailed(f"CRL reload command failed: {exc}", stderr=stderr) from exc


@dataclass(frozen=True)
class CrlHealth:
    """One CA's CRL as ``/pki/health/`` reports it: its number, times, age and status."""

    ca: str
    status: str  # ok | stale | expired | missing
    number: int | None
    this_update: datetime | None
    next_update: datetime | None
    age_seconds: int | None
    entries: int | None
    size: int | None


def crl_health(now: datetime | None = None) -> list[CrlHealth]:
    """The age of each active CA's newest published CRL: ``stale`` past
    ``KEYLINE_CRL_MAX_AGE_HOURS`` (it is rebuilt hourly), ``expired`` past nextUpdate, when
    nginx refuses every client.

    One entry per active CA, ``missing`` for one without a CRL; reads only (never the CRLs'
    bytes). Raises nothing of its own."""
    now = now or timezone.now()
    max_age = timedelta(hours=pki_settings().crl_max_age_hours)
    report = []
    for ca in CertificateAuthority.objects.filter(is_active=True).order_by("pk"):
        latest = (
            RevocationList.objects.filter(ca=ca)
            .order_by("-number")
            .annotate(size=Length("der"))
            .defer("der")
            .first()
        )
        if latest is None:
            report.append(CrlHealth(ca.slug, "missing", None, None, None, None, None, None))
            continue
        age = now - latest.this_update
        if latest.next_update <= now:
            status = "expired"
        elif age > max_age:
            status = "stale"
        else:
            status = "ok"
        report.append(
            CrlHealth(
                ca=ca.slug,
                status=status,
                number=latest.number,
                this_update=latest.this_update,
                next_update=latest.next_update,
                age_seconds=int(age.total_seconds()),
                entries=latest.entries,
                size=latest.size,
            )
        )
    return report


def crl_last_failure() -> dict[str, Any] | None:
    """The newest unresolved publishing failure (stage, time, first line of the error), or
    None. Reads only; raises nothing of its own."""
    failures = failures_open()
    return failures[0] if failures else None
