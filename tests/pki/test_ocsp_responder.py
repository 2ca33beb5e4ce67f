"""The OCSP delegate certificate is renewed before it expires, by command or Celery task."""

from datetime import timedelta

import pytest
import time_machine
from cryptography import x509
from django.core.management import call_command
from django.utils import timezone

from pki.models import Certificate
from pki.selectors import ocsp_responder_current
from pki.tasks import ocsp_responder_renew_task

pytestmark = pytest.mark.django_db


def test_delegate_profile(cas):
    current = ocsp_responder_current()
    cert = x509.load_pem_x509_certificate(current.pem.encode())
    assert current.issuer == cas["client"]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(days=7, minutes=6)
    assert cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.ExtendedKeyUsageOID.OCSP_SIGNING]


def test_task_does_nothing_when_not_due(cas):
    before = Certificate.objects.filter(kind=Certificate.Kind.OCSP_RESPONDER).count()
    assert ocsp_responder_renew_task.delay().get() is None
    assert Certificate.objects.filter(kind=Certificate.Kind.OCSP_RESPONDER).count() == before


def test_task_renews_when_a_third_of_the_life_is_left(cas):
    old = ocsp_responder_current()
    with time_machine.travel(old.not_after - timedelta(days=2), tick=False):
        serial = ocsp_responder_renew_task.delay().get()
        new = ocsp_responder_current()
        assert new.serial == serial != old.serial
        assert new.not_after > old.not_after
        assert new.not_before <= timezone.now()


def test_command_forces_renewal(cas, capsys):
    old = ocsp_responder_current()
    call_command("renew_ocsp_responder")
    assert "not due" in capsys.readouterr().out
    call_command("renew_ocsp_responder", "--force")
    assert ocsp_responder_current().serial != old.serial
