"""What happens around a revocation when the cache, the broker or the files fail: the
revocation stands, every failure is recorded in the database for /pki/health/, and the next
success clears it."""

from pathlib import Path

import pytest
from cryptography import x509
from django.conf import settings
from django.test import Client, override_settings

from pki import ocsp
from pki.models import Certificate, PublishFailure, RevocationList
from pki.revocation import certificate_revoke, crl_publish
from pki.selectors import ocsp_responder_current
from tests.keys import ec_key, make_csr

pytestmark = pytest.mark.django_db

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def leaf(participant, issue):
    return issue(participant, make_csr(ec_key()))


def test_revocation_stands_and_publishes_when_the_cache_is_down(
    leaf, cas, system_actor, django_capture_on_commit_callbacks
):
    crl_publish(actor=system_actor)
    before = RevocationList.objects.filter(ca=cas["client"]).latest().number
    dead_cache = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                              "LOCATION": DEAD_REDIS}}  # fmt: skip
    with (
        override_settings(CACHES=dead_cache, REDIS_URL=DEAD_REDIS),
        django_capture_on_commit_callbacks(execute=True),
    ):
        certificate_revoke(certificate=leaf, reason="keyCompromise", actor=system_actor)
    leaf.refresh_from_db()
    assert leaf.status == Certificate.Status.REVOKED
    # The trust decision and the OCSP answers could not be forgotten: recorded, not raised.
    stages = sorted(PublishFailure.objects.values_list("stage", flat=True))
    # Both caches failed; so did the (eager, here) OCSP re-sign, which needs Redis.
    assert stages == ["cache", "cache", "enqueue"]
    # ... and the CRL was still published (eagerly, here).
    assert RevocationList.objects.filter(ca=cas["client"]).latest().number == before + 1

    health = Client().get("/pki/health/")
    assert health.status_code == 503
    assert {f["stage"] for f in health.json()["publish_failures"]} == {"cache", "enqueue"}


@pytest.mark.skipif(not settings.REDIS_URL, reason="the OCSP cache exists only with Redis")
def test_a_full_presign_resolves_cache_failures(leaf, cas):
    PublishFailure.objects.create(stage="cache", error="redis down")
    ocsp.presign([leaf.serial])
    assert PublishFailure.objects.filter(resolved_at__isnull=True).count() == 1  # partial run
    ocsp.presign()
    assert PublishFailure.objects.filter(resolved_at__isnull=True).count() == 0


@pytest.mark.skipif(not settings.REDIS_URL, reason="the OCSP cache exists only with Redis")
def test_issuance_puts_the_good_answer_in_the_ocsp_cache(
    participant, issue, cas, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        cert = issue(participant, make_csr(ec_key()))
    assert ocsp.cached_status(cert)["status"] == "good"


def test_revoking_the_ocsp_delegate_replaces_it_at_once(
    cas, system_actor, django_capture_on_commit_callbacks
):
    delegate = ocsp_responder_current()
    with django_capture_on_commit_callbacks(execute=True):
        certificate_revoke(certificate=delegate, reason="keyCompromise", actor=system_actor)
    replacement = ocsp_responder_current()
    assert replacement is not None
    assert replacement.serial != delegate.serial


def test_health_sees_a_bundle_file_that_fell_behind(cas, system_actor):
    crl_publish(actor=system_actor)
    bundle = Path(settings.KEYLINE_CA_DIR) / "crl" / "bundle.pem"
    old = bundle.read_bytes()
    assert Client().get("/pki/health/").json()["crl_bundle"]["current"] is True
    with override_settings(KEYLINE_CRL_RELOAD_COMMAND=""):
        crl_publish(actor=system_actor)
    bundle.write_bytes(old)  # e.g. a host whose copy stopped being updated
    response = Client().get("/pki/health/")
    assert response.status_code == 503
    assert response.json()["crl_bundle"]["current"] is False
    numbers = [
        x509.load_pem_x509_crl(b"-----BEGIN" + block)
        .extensions.get_extension_for_class(x509.CRLNumber)
        .value.crl_number
        for block in old.split(b"-----BEGIN")[1:]
    ]
    assert numbers  # the old bundle really held older CRLs
    crl_publish(actor=system_actor)
    assert Client().get("/pki/health/").json()["crl_bundle"]["current"] is True
