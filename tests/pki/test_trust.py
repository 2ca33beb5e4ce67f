"""The per-certificate trust decision the API relies on, and how fast a change reaches it."""

import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from kernel.models import Firm
from kernel.redis import channel, redis_client
from pki import trust
from pki.revocation import certificate_revoke, certificates_revoke_for_firm
from pki.services import ca_init
from tests.conftest import wait_subscribed
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


# --- the in-process level ---------------------------------------------------------------------


def _subscribed() -> None:
    trust._subscriber.ensure_started()
    wait_subscribed(trust.near)


def test_a_decision_is_served_from_memory_while_subscribed(leaf):
    _subscribed()
    assert trust.certificate_decide(leaf.fingerprint_sha256).ok
    assert trust.near.get(leaf.fingerprint_sha256).ok
    # Redis and the database are not asked again: remove the Redis copy behind the cache's
    # back (no publish), and the decision is still there.
    redis_client().delete(trust.decision_cache_key(leaf.fingerprint_sha256))
    with CaptureQueriesContext(connection) as queries:
        assert trust.certificate_decide(leaf.fingerprint_sha256).ok
    assert len(queries) == 0


def test_another_process_forgetting_reaches_this_processs_memory_within_50_ms(leaf):
    """What another worker's decisions_forget publishes (the revoking process forgets its own
    memory directly): this process drops the decision when the message arrives."""
    _subscribed()
    assert trust.certificate_decide(leaf.fingerprint_sha256).ok
    assert trust.near.get(leaf.fingerprint_sha256) is not None
    started = time.monotonic()
    redis_client().publish(channel(trust.TRUST_CHANNEL), leaf.fingerprint_sha256)
    while trust.near.get(leaf.fingerprint_sha256) is not None:
        assert time.monotonic() - started < 0.05, "not forgotten within 50 ms"
        time.sleep(0.001)


def test_losing_the_subscription_empties_and_bypasses_memory_until_it_is_back(leaf):
    _subscribed()
    assert trust.certificate_decide(leaf.fingerprint_sha256).ok
    assert trust.near.entries
    # Redis drops the subscriber's connection (a restart, a network cut, a failover); only
    # this process's (other test processes share the Redis server).
    client = redis_client()
    ids = [c["id"] for c in client.client_list() if c["name"] == trust._subscriber.client_name]
    assert ids
    for client_id in ids:
        client.client_kill_filter(_id=client_id)
    deadline = time.monotonic() + 5
    while trust.near.subscribed and trust.near.entries:
        assert time.monotonic() < deadline, "the lost subscription was not noticed"
        time.sleep(0.01)
    assert trust.near.get(leaf.fingerprint_sha256) is None
    # Decisions keep coming from Redis and the database meanwhile; memory is used again once
    # the subscriber is back (it retries every second), starting empty.
    assert trust.certificate_decide(leaf.fingerprint_sha256).ok
    _subscribed()
    assert trust.certificate_decide(leaf.fingerprint_sha256).ok
    assert trust.near.get(leaf.fingerprint_sha256) is not None


def test_a_decision_fetched_while_an_invalidation_arrived_is_not_kept_in_memory(leaf):
    _subscribed()
    fingerprint = leaf.fingerprint_sha256
    seen = trust.near.generation()
    decision = trust.certificate_decide(fingerprint)
    trust.near.forget([fingerprint])  # a message that arrived during the fetch
    trust.near.put(fingerprint, decision, seen)
    assert trust.near.get(fingerprint) is None
