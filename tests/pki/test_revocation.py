"""Revoking certificates: one at a time, per participant and per firm, and from the command
line. A revocation changes the row once, audits it once, bars a compromised key for good and
forgets the cached trust decision when it commits."""

import getpass
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from kernel.audit import Actor, audit_verify
from kernel.errors import Conflict, Invalid
from kernel.models import AuditRecord
from pki.csr import CSR_KEY_COMPROMISED, CsrKeyRejected
from pki.models import Certificate, RevocationList
from pki.revocation import (
    certificate_revoke,
    certificates_revoke_for_firm,
    certificates_revoke_for_participant,
)
from pki.services import csr_submit
from pki.trust import certificate_decide, decision_cache_key, decision_cached
from tests.factories import FirmFactory, ParticipantFactory, expire
from tests.keys import ec_key, make_csr

pytestmark = pytest.mark.django_db

OFFICER = Actor("user", "42", "officer@keyline.example")

# Every name an operator may type, and the reason stored for it (RFC 5280 §5.3.1 and ours).
REASONS = {
    "unspecified": "unspecified",
    "keyCompromise": "key_compromise",
    "affiliationChanged": "affiliation_changed",
    "superseded": "superseded",
    "cessationOfOperation": "cessation_of_operation",
    "privilegeWithdrawn": "privilege_withdrawn",
    "key_compromise": "key_compromise",
    "affiliation_changed": "affiliation_changed",
    "cessation_of_operation": "cessation_of_operation",
    "privilege_withdrawn": "privilege_withdrawn",
}


def _revoked_audits(*certificates: Certificate):
    return AuditRecord.objects.filter(
        event="certificate.revoked",
        target_type="pki.certificate",
        target_id__in=[str(c.pk) for c in certificates],
    )


@pytest.fixture
def cert(participant, issue):
    return issue(participant, make_csr())


# --- one certificate -----------------------------------------------------------------------


def test_revoke_sets_status_reason_dates_and_audits_the_actor(cert):
    invalid_since = timezone.now() - timedelta(hours=3)
    before = timezone.now()

    returned = certificate_revoke(
        certificate=cert, reason="keyCompromise", actor=OFFICER, invalidity_date=invalid_since
    )

    row = Certificate.objects.get(pk=cert.pk)
    assert row.status == Certificate.Status.REVOKED
    assert row.revocation_reason == Certificate.Reason.KEY_COMPROMISE
    assert before <= row.revoked_at <= timezone.now()
    assert row.invalidity_date == invalid_since
    assert (returned.status, returned.revoked_at) == (row.status, row.revoked_at)
    # The caller's instance is refreshed too.
    assert (cert.status, cert.revoked_at) == (row.status, row.revoked_at)

    (record,) = _revoked_audits(cert)
    assert (record.actor_type, record.actor_id, record.actor_label) == (
        "user",
        "42",
        "officer@keyline.example",
    )
    assert record.details["serial"] == cert.serial
    assert record.details["fingerprint_sha256"] == cert.fingerprint_sha256
    assert record.details["reason"] == "key_compromise"
    assert record.details["participant"] == cert.participant.trader_id
    assert datetime.fromisoformat(record.details["invalidity_date"]) == invalid_since.replace(
        microsecond=invalid_since.microsecond // 1000 * 1000
    )


def test_revoke_twice_is_409_and_changes_nothing(cert, system_actor):
    certificate_revoke(certificate=cert, reason="superseded", actor=system_actor)
    first = Certificate.objects.get(pk=cert.pk)
    audits = AuditRecord.objects.count()

    with pytest.raises(Conflict) as conflict:
        certificate_revoke(certificate=cert, reason="keyCompromise", actor=OFFICER)

    assert conflict.value.code == "CERTIFICATE_ALREADY_REVOKED"
    assert conflict.value.status_code == 409
    assert conflict.value.details == {
        "serial": cert.serial,
        "revoked_at": first.revoked_at.isoformat(),
    }
    again = Certificate.objects.get(pk=cert.pk)
    assert (again.revoked_at, again.revocation_reason, again.updated_at) == (
        first.revoked_at,
        "superseded",
        first.updated_at,
    )
    assert AuditRecord.objects.count() == audits


@pytest.mark.parametrize("reason", ["", "keycompromise", "KEY_COMPROMISE", "certificateHold"])
def test_unknown_reason_is_refused_and_changes_nothing(cert, system_actor, reason):
    audits = AuditRecord.objects.count()
    with pytest.raises(Invalid) as invalid:
        certificate_revoke(certificate=cert, reason=reason, actor=system_actor)
    assert invalid.value.code == "REVOCATION_REASON_INVALID"
    assert Certificate.objects.get(pk=cert.pk).status == Certificate.Status.ACTIVE
    assert AuditRecord.objects.count() == audits


@pytest.mark.parametrize(
    "when",
    [
        pytest.param(lambda: timezone.now() + timedelta(minutes=5), id="future"),
        pytest.param(lambda: datetime.now(UTC).replace(tzinfo=None), id="naive"),
    ],
)
def test_bad_invalidity_date_is_refused(cert, system_actor, when):
    with pytest.raises(Invalid) as invalid:
        certificate_revoke(
            certificate=cert, reason="keyCompromise", actor=system_actor, invalidity_date=when()
        )
    assert invalid.value.code == "INVALIDITY_DATE_INVALID"
    assert Certificate.objects.get(pk=cert.pk).status == Certificate.Status.ACTIVE


@pytest.mark.parametrize(("name", "stored"), REASONS.items())
def test_rfc_and_our_reason_names_are_accepted(cert, system_actor, name, stored):
    certificate_revoke(certificate=cert, reason=name, actor=system_actor)
    assert Certificate.objects.get(pk=cert.pk).revocation_reason == stored


def test_key_compromise_bars_the_public_key_for_good(participant, issue, system_actor):
    key = ec_key()
    cert = issue(participant, make_csr(key))
    certificate_revoke(certificate=cert, reason="keyCompromise", actor=system_actor)

    with pytest.raises(CsrKeyRejected) as rejected:
        csr_submit(participant=participant, data=make_csr(key), actor=system_actor)

    assert rejected.value.code == CSR_KEY_COMPROMISED == "CSR_KEY_COMPROMISED"
    assert rejected.value.status_code == 409


def test_decision_cache_is_forgotten_when_the_revocation_commits(
    cert, system_actor, django_capture_on_commit_callbacks
):
    assert decision_cache_key(cert.fingerprint_sha256.upper()) == (
        decision_cache_key(cert.fingerprint_sha256)
    )
    assert certificate_decide(cert.fingerprint_sha256).ok  # now cached

    with django_capture_on_commit_callbacks(execute=True):
        certificate_revoke(certificate=cert, reason="keyCompromise", actor=system_actor)
        # Not before the commit: another request could still cache the old row.
        assert decision_cached(cert.fingerprint_sha256).ok

    assert decision_cached(cert.fingerprint_sha256) is None
    # The same callback published new CRLs (eager Celery).
    assert RevocationList.objects.filter(ca=cert.issuer).exists()


# --- many certificates ---------------------------------------------------------------------


@pytest.fixture
def estate(cas, issue, system_actor):
    """Two firms: ours with two participants (live, already revoked and expired
    certificates), and another with one live certificate."""
    ours, other = FirmFactory(), FirmFactory()
    alice, bob = ParticipantFactory(firm=ours), ParticipantFactory(firm=ours)
    carol = ParticipantFactory(firm=other)
    live = [issue(alice, make_csr()), issue(alice, make_csr()), issue(bob, make_csr())]
    revoked = issue(bob, make_csr())
    certificate_revoke(certificate=revoked, reason="superseded", actor=system_actor)
    expired = issue(alice, make_csr())
    expire(expired)
    return {
        "firm": ours,
        "alice": alice,
        "bob": bob,
        "live": live,
        "revoked": Certificate.objects.get(pk=revoked.pk),
        "expired": Certificate.objects.get(pk=expired.pk),
        "other": issue(carol, make_csr()),
    }


def _assert_untouched(*certificates: Certificate) -> None:
    for before in certificates:
        after = Certificate.objects.get(pk=before.pk)
        assert (after.status, after.revoked_at, after.revocation_reason) == (
            before.status,
            before.revoked_at,
            before.revocation_reason,
        )


def test_revoke_for_firm_revokes_every_live_certificate_of_the_firm_only(estate):
    audits = AuditRecord.objects.count()

    revoked = certificates_revoke_for_firm(
        firm=estate["firm"], reason="privilegeWithdrawn", actor=OFFICER
    )

    assert sorted(c.pk for c in revoked) == sorted(c.pk for c in estate["live"])
    for cert in estate["live"]:
        row = Certificate.objects.get(pk=cert.pk)
        assert row.status == Certificate.Status.REVOKED
        assert row.revocation_reason == "privilege_withdrawn"
        assert row.revoked_at is not None
    _assert_untouched(estate["revoked"], estate["expired"], estate["other"])

    records = _revoked_audits(*estate["live"])
    assert records.count() == 3
    assert AuditRecord.objects.count() == audits + 3
    for record in records:
        assert (record.actor_type, record.actor_label) == ("user", "officer@keyline.example")
        assert record.details["scope"] == "firm"
        assert record.details["firm_lei"] == estate["firm"].lei
        assert record.details["reason"] == "privilege_withdrawn"
    assert audit_verify().ok


def test_revoke_for_participant_revokes_only_their_live_certificates(estate):
    alice = estate["alice"]
    audits = AuditRecord.objects.count()

    revoked = certificates_revoke_for_participant(
        participant=alice, reason="affiliation_changed", actor=OFFICER
    )

    alices = [c for c in estate["live"] if c.participant_id == alice.pk]
    assert len(alices) == 2
    assert sorted(c.pk for c in revoked) == sorted(c.pk for c in alices)
    assert set(
        Certificate.objects.filter(pk__in=[c.pk for c in alices]).values_list(
            "status", "revocation_reason"
        )
    ) == {("revoked", "affiliation_changed")}
    bobs = [c for c in estate["live"] if c.participant_id != alice.pk]
    _assert_untouched(*bobs, estate["revoked"], estate["expired"], estate["other"])
    assert AuditRecord.objects.count() == audits + 2
    assert {r.details["scope"] for r in _revoked_audits(*alices)} == {"participant"}


def test_revoke_for_participant_with_nothing_live_does_nothing(participant, system_actor):
    audits = AuditRecord.objects.count()
    assert (
        certificates_revoke_for_participant(
            participant=participant, reason="superseded", actor=system_actor
        )
        == []
    )
    assert AuditRecord.objects.count() == audits


def test_bulk_revoke_with_unknown_reason_changes_nothing(estate):
    with pytest.raises(Invalid) as invalid:
        certificates_revoke_for_firm(firm=estate["firm"], reason="bogus", actor=OFFICER)
    assert invalid.value.code == "REVOCATION_REASON_INVALID"
    _assert_untouched(*estate["live"])


def test_bulk_revoke_forgets_every_decision_on_commit(estate, django_capture_on_commit_callbacks):
    fingerprints = [c.fingerprint_sha256 for c in estate["live"]]
    for fingerprint in fingerprints:
        assert certificate_decide(fingerprint).ok  # now cached

    with django_capture_on_commit_callbacks(execute=True):
        certificates_revoke_for_firm(firm=estate["firm"], reason="superseded", actor=OFFICER)
        assert all(decision_cached(fp).ok for fp in fingerprints)

    assert [decision_cached(fp) for fp in fingerprints] == [None] * len(fingerprints)


# --- commands ------------------------------------------------------------------------------


def test_revoke_cert_command_revokes_and_says_so(cert, capsys):
    # Operators paste serials as openssl prints them: upper case with colons.
    pasted = ":".join(cert.serial.upper().zfill(40)[i : i + 2] for i in range(0, 40, 2))
    call_command(
        "revoke_cert",
        "--serial",
        pasted,
        "--reason",
        "keyCompromise",
        "--invalidity-date",
        "2024-01-02T03:04:05+00:00",
    )

    row = Certificate.objects.get(pk=cert.pk)
    assert row.status == Certificate.Status.REVOKED
    assert row.revocation_reason == "key_compromise"
    assert row.invalidity_date == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert capsys.readouterr().out == (
        f"Revoked {cert.serial} ({cert.subject}) at "
        f"{row.revoked_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z, reason key_compromise\n"
    )
    (record,) = _revoked_audits(cert)
    assert record.actor_type == "system"
    assert record.actor_label == f"manage.py revoke_cert (os user {getpass.getuser()})"


def test_revoke_cert_command_unknown_serial_exits_2(cas):
    with pytest.raises(CommandError) as failed:
        call_command("revoke_cert", "--serial", "abcdef", "--reason", "superseded")
    assert failed.value.returncode == 2
    assert str(failed.value).startswith("CERTIFICATE_NOT_FOUND:")
    assert "\n" not in str(failed.value)


def test_revoke_cert_command_second_revoke_exits_2(cert):
    call_command("revoke_cert", "--serial", cert.serial, "--reason", "superseded")
    first = Certificate.objects.get(pk=cert.pk)
    with pytest.raises(CommandError) as failed:
        call_command("revoke_cert", "--serial", cert.serial, "--reason", "keyCompromise")
    assert failed.value.returncode == 2
    assert str(failed.value).startswith("CERTIFICATE_ALREADY_REVOKED:")
    again = Certificate.objects.get(pk=cert.pk)
    assert (again.revoked_at, again.revocation_reason) == (first.revoked_at, "superseded")


@pytest.mark.parametrize(
    ("invalidity_date", "reason", "code"),
    [
        ("yesterday", "keyCompromise", "INVALIDITY_DATE_INVALID"),
        ("2024-01-02T03:04:05", "keyCompromise", "INVALIDITY_DATE_INVALID"),  # no zone
        ("2999-01-01T00:00:00+00:00", "keyCompromise", "INVALIDITY_DATE_INVALID"),
        (None, "lostMyKey", "REVOCATION_REASON_INVALID"),
    ],
)
def test_revoke_cert_command_bad_input_exits_2_and_changes_nothing(
    cert, invalidity_date, reason, code
):
    args = ["--serial", cert.serial, "--reason", reason]
    if invalidity_date:
        args += ["--invalidity-date", invalidity_date]
    with pytest.raises(CommandError) as failed:
        call_command("revoke_cert", *args)
    assert failed.value.returncode == 2
    assert str(failed.value).startswith(f"{code}:")
    assert Certificate.objects.get(pk=cert.pk).status == Certificate.Status.ACTIVE


def test_publish_crl_command_lists_each_ca(cas, cert, system_actor, capsys, ca_dir):
    certificate_revoke(certificate=cert, reason="superseded", actor=system_actor)

    call_command("publish_crl")

    rows = {r.ca.kind: r for r in RevocationList.objects.select_related("ca")}
    assert set(rows) == {"root", "client", "server"}
    assert rows["client"].entries == 1
    assert (rows["root"].entries, rows["server"].entries) == (0, 0)
    expected = [
        f"{rows[kind].ca.slug}: CRL #{rows[kind].number}, {rows[kind].entries} entries, "
        f"next update {rows[kind].next_update.astimezone(UTC):%Y-%m-%d %H:%M}Z, "
        for kind in ("root", "client", "server")
    ]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    for line, start in zip(lines, expected, strict=False):
        assert line.startswith(start)
        assert line.endswith(" s")
    assert lines[3] == f"Files in {ca_dir / 'crl'}"
    published = AuditRecord.objects.filter(event="crl.published").order_by("-sequence")[:3]
    assert {r.details["ca"] for r in published} == {"root", "client-ca", "server-ca"}
    assert {r.actor_label for r in published} == {
        f"manage.py publish_crl (os user {getpass.getuser()})"
    }
