"""The per-certificate trust decision the API relies on, and how fast a change reaches it."""

from datetime import timedelta

import pytest
import time_machine
from django.test import override_settings

from kernel.models import Firm
from pki import trust
from pki.revocation import certificate_revoke, certificates_revoke_for_firm
from pki.services import ca_init
from tests.factories import ParticipantFactory
from tests.keys import ec_key, make_csr

pytestmark = pytest.mark.django_db


@pytest.fixture
def leaf(participant, issue):
    return issue(participant, make_csr(ec_key()))


def test_a_live_certificate_is_trusted_and_the_decision_cached(leaf):
    decision = trust.certificate_decide(leaf.fingerprint_sha256.upper())
    assert decision.ok
    assert (decision.serial, decision.participant_id) == (leaf.serial, leaf.participant_id)
    assert decision.firm_id == leaf.participant.firm_id
    assert trust.decision_cached(leaf.fingerprint_sha256) == decision


def test_revocation_is_refused_on_the_very_next_call(
    leaf, system_actor, django_capture_on_commit_callbacks
):
    assert trust.certificate_decide(leaf.fingerprint_sha256).ok  # cached as trusted
    with django_capture_on_commit_callbacks(execute=True):
        certificate_revoke(certificate=leaf, reason="keyCompromise", actor=system_actor)
    assert trust.certificate_decide(leaf.fingerprint_sha256).code == trust.CERTIFICATE_REVOKED


def test_suspending_a_firm_refuses_all_its_certificates(
    leaf, participant, issue, system_actor, django_capture_on_commit_callbacks
):
    other = issue(ParticipantFactory(firm=participant.firm), make_csr(ec_key()))
    for cert in (leaf, other):
        assert trust.certificate_decide(cert.fingerprint_sha256).ok
    with django_capture_on_commit_callbacks(execute=True):
        firm = participant.firm
        firm.status = Firm.Status.SUSPENDED
        firm.save()
        certificates_revoke_for_firm(
            firm=participant.firm, reason="privilegeWithdrawn", actor=system_actor
        )
    for cert in (leaf, other):
        assert trust.certificate_decide(cert.fingerprint_sha256).code == trust.CERTIFICATE_REVOKED


def test_disabled_participant_and_inactive_firm(
    leaf, participant, django_capture_on_commit_callbacks
):
    assert trust.certificate_decide(leaf.fingerprint_sha256).ok  # cached
    with django_capture_on_commit_callbacks(execute=True):
        participant.is_active = False
        participant.save()
    assert trust.certificate_decide(leaf.fingerprint_sha256).code == trust.PARTICIPANT_DISABLED
    with django_capture_on_commit_callbacks(execute=True):
        participant.is_active = True
        participant.save()
    assert trust.certificate_decide(leaf.fingerprint_sha256).ok
    firm = participant.firm
    with django_capture_on_commit_callbacks(execute=True):
        firm.status = Firm.Status.SUSPENDED
        firm.save()
    assert trust.certificate_decide(leaf.fingerprint_sha256).code == trust.FIRM_INACTIVE


def test_a_decision_read_before_a_revocation_is_never_cached_after_it(
    leaf, system_actor, monkeypatch, django_capture_on_commit_callbacks
):
    """The race: a miss reads the still-valid row, the revocation commits and forgets, then
    the miss would cache "ok". The generation check refuses to cache it."""
    decide = trust._decide

    def decide_then_revoke(fingerprint):
        decision = decide(fingerprint)
        with django_capture_on_commit_callbacks(execute=True):
            certificate_revoke(certificate=leaf, reason="keyCompromise", actor=system_actor)
        return decision

    monkeypatch.setattr(trust, "_decide", decide_then_revoke)
    assert trust.certificate_decide(leaf.fingerprint_sha256).ok  # this request's view
    monkeypatch.setattr(trust, "_decide", decide)
    assert trust.decision_cached(leaf.fingerprint_sha256) is None
    assert trust.certificate_decide(leaf.fingerprint_sha256).code == trust.CERTIFICATE_REVOKED


def test_expiry_is_checked_on_every_call_even_when_cached(leaf):
    assert trust.certificate_decide(leaf.fingerprint_sha256).ok
    with time_machine.travel(leaf.not_after + timedelta(seconds=1)):
        assert trust.certificate_decide(leaf.fingerprint_sha256).code == (trust.CERTIFICATE_EXPIRED)
    with time_machine.travel(leaf.not_before - timedelta(seconds=1)):
        assert trust.certificate_decide(leaf.fingerprint_sha256).code == (
            trust.CERTIFICATE_NOT_YET_VALID
        )


def test_unknown_and_foreign_certificates(leaf, participant, issue, system_actor, tmp_path):
    assert trust.certificate_decide("ab" * 32).code == trust.CERTIFICATE_UNKNOWN
    # After the CA is replaced, certificates of the old client CA are no longer ours to trust.
    with override_settings(KEYLINE_CA_DIR=str(tmp_path / "new-ca")):
        ca_init(force=True, actor=system_actor)
        trust.decisions_forget([leaf.fingerprint_sha256])
        assert trust.certificate_decide(leaf.fingerprint_sha256).code == trust.ISSUER_UNKNOWN
