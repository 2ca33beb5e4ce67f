"""Certificate expiry reminders: 30, 14, 7 and 1 days before notAfter, to the participant and
its firm's administrators, exactly once per certificate and threshold.

Each reminder is one transaction: insert its ``ExpiryReminder`` row (the unique constraint
makes a concurrent run wait, then skip it), send, audit, commit. A crash or a failed send rolls
the row back and the next run sends it; a run that already sent it finds the row. The only
window left is a crash between the mail server accepting the message and the commit: the
``Message-ID`` is derived from the certificate and threshold, so that resend is recognisably
the same message. Renewed (a newer live certificate) and revoked certificates get nothing, and
a missed run never sends a stale, less urgent threshold after a more urgent one.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.utils import timezone

from kernel.audit import Actor, audit_record
from kernel.models import Participant
from pki.models import Certificate
from portal.models import ExpiryReminder, PortalAccount

logger = logging.getLogger(__name__)


def _recipients(participant: Participant) -> list[str]:
    admins = PortalAccount.objects.filter(
        firm_id=participant.firm_id, role=PortalAccount.Role.ADMIN, user__is_active=True
    ).values_list("user__email", flat=True)
    return sorted({participant.email, *[a for a in admins if a]})


def expiry_reminders_send(*, now: datetime | None = None) -> int:
    """Send what is due now; returns how many reminders were sent."""
    now = now or timezone.now()
    thresholds = sorted(settings.KEYLINE_REMINDER_DAYS)
    actor = Actor.system("expiry reminders")
    due_certificates = (
        Certificate.objects.live(now)
        .filter(kind=Certificate.Kind.CLIENT, not_after__lte=now + timedelta(days=thresholds[-1]))
        .select_related("participant__firm")
        .order_by("not_after")
    )
    sent, failed = 0, []
    for certificate in due_certificates:
        participant = certificate.participant
        if participant is None:  # never: a client certificate has one
            continue
        days_left = (certificate.not_after - now) / timedelta(days=1)
        due = min(t for t in thresholds if days_left <= t)
        renewed = (
            Certificate.objects.live(now)
            .filter(
                participant=participant,
                kind=Certificate.Kind.CLIENT,
                not_after__gt=certificate.not_after,
            )
            .exists()
        )
        if (
            renewed
            or ExpiryReminder.objects.filter(certificate=certificate, days_before__lte=due).exists()
        ):
            continue
        recipients = _recipients(participant)
        try:
            with transaction.atomic():
                ExpiryReminder.objects.create(
                    certificate=certificate, days_before=due, recipients=recipients, sent_at=now
                )
                _send(certificate, participant, due, recipients)
                audit_record(
                    event="certificate.expiry_reminder_sent",
                    actor=actor,
                    target=certificate,
                    days_before=due,
                    recipients=recipients,
                )
        except IntegrityError:
            continue  # another run sent it
        except Exception as exc:  # one undeliverable reminder must not hold up the others
            logger.warning("expiry reminder for %s failed", certificate.serial, exc_info=True)
            failed.append(exc)
            continue
        sent += 1
    if failed:
        # Rolled back, so not recorded: the task's retry (and tomorrow's run) sends them.
        raise failed[0]
    return sent


def _send(
    certificate: Certificate, participant: Participant, days: int, recipients: list[str]
) -> None:
    when = certificate.not_after.strftime("%Y-%m-%d %H:%M UTC")
    message = EmailMessage(
        subject=f"Keyline RFQ: certificate of {participant.trader_id} expires in {days} "
        f"day{'s' if days != 1 else ''}",
        body=(
            f"The API certificate {certificate.serial} of {participant.name} "
            f"({participant.trader_id}, {participant.firm.legal_name}) expires on {when}.\n\n"
            "Make a new key and CSR on your own machine and upload the CSR in the portal:\n"
            f"{settings.KEYLINE_PORTAL_URL.rstrip('/')}/firm/participants/{participant.pk}/\n"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
        headers={"Message-ID": f"<expiry-{certificate.serial}-{days}d@keyline-rfq>"},
    )
    message.send(fail_silently=False)
