"""factory_boy factories for the models the tests need."""

import secrets
import string
from datetime import timedelta

import factory

from kernel.lei import lei_with_check_digits
from kernel.models import Firm, Participant
from pki.models import Certificate


def random_lei() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return lei_with_check_digits(
        "9845" + "00" + "".join(secrets.choice(alphabet) for _ in range(12))
    )


class FirmFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Firm

    legal_name = factory.Sequence(lambda n: f"Test Firm {n} Ltd")
    lei = factory.LazyFunction(random_lei)
    jurisdiction = "GB"
    role = Firm.Role.BOTH
    status = Firm.Status.APPROVED
    contact_name = "Test Contact"
    contact_email = factory.Sequence(lambda n: f"contact{n}@firm.example")
    contact_phone = "+44 20 7946 0000"


class ParticipantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Participant

    firm = factory.SubFactory(FirmFactory)
    trader_id = factory.Sequence(lambda n: f"trader-{n}")
    name = factory.Sequence(lambda n: f"Trader {n}")
    email = factory.Sequence(lambda n: f"trader{n}@firm.example")
    role = Participant.Role.REQUESTER


def certificate_row_like(certificate: Certificate, **changes: object) -> Certificate:
    """An unsaved row copying ``certificate`` with ``changes``: for proving what the database
    refuses. Its fingerprint is fresh unless given."""
    fields = {
        "kind": certificate.kind,
        "issuer": certificate.issuer,
        "participant": certificate.participant,
        "serial": "1234",
        "fingerprint_sha256": secrets.token_hex(32),
        "spki_sha256": secrets.token_hex(32),
        "subject": certificate.subject,
        "not_before": certificate.not_before,
        "not_after": certificate.not_after,
        "pem": certificate.pem,
    }
    return Certificate(**{**fields, **changes})


def expire(certificate, *, ago: timedelta = timedelta(hours=1)) -> None:
    """Move a certificate's validity into the past (the row only: the CA never backdates)."""
    from django.utils import timezone

    past = timezone.now() - ago
    Certificate.objects.filter(pk=certificate.pk).update(
        not_before=past - timedelta(days=30), not_after=past
    )
