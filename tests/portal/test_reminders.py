"""Certificate expiry reminders (portal.reminders): one e-mail per certificate and threshold,
at the right threshold, to the right people, exactly once: across repeated runs, a crash in
the middle of a run, and two runs at the same time."""

import smtplib
import threading
import time
from datetime import datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core import mail
from django.core.mail.backends import locmem
from django.db import connection
from django.utils import timezone

from kernel.audit import Actor
from kernel.models import AuditRecord
from pki.models import Certificate
from pki.revocation import certificate_revoke
from portal.models import ExpiryReminder, PortalAccount
from portal.reminders import expiry_reminders_send
from portal.tasks import expiry_reminders_task
from tests.factories import FirmFactory, ParticipantFactory
from tests.keys import ec_key, make_csr
from tests.servers import NEEDS_POSTGRES

pytestmark = pytest.mark.django_db

BACKEND = f"{__name__}.FlakyBackend"


class FlakyBackend(locmem.EmailBackend):
    """The test outbox, with a mail server that fails on the ``fail_on``-th message of the
    test (1-based; 0: never). With ``accept_first`` it takes the message and then drops the
    connection (the reply is lost), as a server that crashes after queueing it does."""

    fail_on = 0
    accept_first = False
    delay = 0.0
    seen = 0
    lock = threading.Lock()

    def send_messages(self, messages):
        for message in messages:
            with FlakyBackend.lock:
                FlakyBackend.seen += 1
                failing = FlakyBackend.seen == FlakyBackend.fail_on
            time.sleep(FlakyBackend.delay)
            if failing:
                if FlakyBackend.accept_first:
                    super().send_messages([message])
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            super().send_messages([message])
        return len(messages)


@pytest.fixture(autouse=True)
def backend(settings):
    settings.EMAIL_BACKEND = BACKEND
    FlakyBackend.fail_on, FlakyBackend.accept_first, FlakyBackend.delay = 0, False, 0.0
    FlakyBackend.seen = 0
    mail.outbox = []
    return FlakyBackend


@pytest.fixture
def people(firm):
    """The firm's users: two active administrators (one without an e-mail address), a
    disabled one, a trader (not an administrator), and another firm's administrator."""

    def account(name, role, *, firm=firm, email=None, active=True):
        user = User.objects.create_user(
            name, f"{name}@firm.example" if email is None else email, is_active=active
        )
        PortalAccount.objects.create(user=user, firm=firm, role=role)

    account("admin1", PortalAccount.Role.ADMIN)
    account("admin2", PortalAccount.Role.ADMIN)
    account("admin-no-mail", PortalAccount.Role.ADMIN, email="")
    account("admin-gone", PortalAccount.Role.ADMIN, active=False)
    account("trader", PortalAccount.Role.TRADER)
    account("other-admin", PortalAccount.Role.ADMIN, firm=FirmFactory())
    return ["admin1@firm.example", "admin2@firm.example"]


def expiring(issue, participant, days: float, now: datetime | None = None) -> Certificate:
    """A live certificate of ``participant`` with ``days`` left at ``now``."""
    now = now or timezone.now()
    certificate = issue(participant, make_csr(ec_key()))
    Certificate.objects.filter(pk=certificate.pk).update(
        not_before=now - timedelta(days=300), not_after=now + timedelta(days=days)
    )
    certificate.refresh_from_db()
    return certificate


def subject(certificate: Certificate, days: int) -> str:
    plural = "s" if days != 1 else ""
    return (
        f"Keyline RFQ: certificate of {certificate.participant.trader_id} expires in "
        f"{days} day{plural}"
    )


def message_id(certificate: Certificate, days: int) -> str:
    return f"<expiry-{certificate.serial}-{days}d@keyline-rfq>"


def sent() -> list[tuple[str, str]]:
    """(Message-ID, subject) of every message that reached the outbox."""
    return [(m.message()["Message-ID"], m.subject) for m in mail.outbox]


def reminders() -> set[tuple[int, int]]:
    return set(ExpiryReminder.objects.values_list("certificate_id", "days_before"))


def test_each_certificate_gets_one_reminder_at_its_threshold(firm, people, issue):
    now = timezone.now()
    due = {
        days: expiring(issue, ParticipantFactory(firm=firm), days, now) for days in (29, 13, 6, 0.5)
    }
    expiring(issue, ParticipantFactory(firm=firm), 30.5, now)  # not yet
    gone = expiring(issue, ParticipantFactory(firm=firm), -0.1, now)  # expired already
    threshold = {29: 30, 13: 14, 6: 7, 0.5: 1}

    assert expiry_reminders_send(now=now) == 4

    by_id = {m.message()["Message-ID"]: m for m in mail.outbox}
    assert len(mail.outbox) == len(by_id) == 4
    for days, certificate in due.items():
        message = by_id[message_id(certificate, threshold[days])]
        assert message.subject == subject(certificate, threshold[days])
        assert sorted(message.to) == sorted([certificate.participant.email, *people])
        assert certificate.serial in message.body
        assert f"/firm/participants/{certificate.participant_id}/" in message.body
        assert message.from_email == "onboarding@keyline.invalid"
    assert "expires in 1 day" in by_id[message_id(due[0.5], 1)].subject  # not "1 days"
    assert reminders() == {(c.pk, threshold[d]) for d, c in due.items()}
    audited = AuditRecord.objects.filter(event="certificate.expiry_reminder_sent")
    assert sorted(r.details["days_before"] for r in audited) == [1, 7, 14, 30]
    assert {r.actor_type for r in audited} == {"system"}
    assert not ExpiryReminder.objects.filter(certificate=gone).exists()

    # Running again (the same day, or a retried task) sends nothing more.
    assert expiry_reminders_send(now=now) == 0
    assert expiry_reminders_send(now=now + timedelta(hours=6)) == 0
    assert len(mail.outbox) == 4


def test_a_failed_send_holds_up_nothing_and_the_next_run_sends_it(firm, people, issue, backend):
    now = timezone.now()
    # The run goes by notAfter: the 6-day certificate first, then 13, then 29.
    six, thirteen, twenty_nine = (
        expiring(issue, ParticipantFactory(firm=firm), days, now) for days in (6, 13, 29)
    )
    backend.fail_on = 2  # the 13-day one's reminder fails

    with pytest.raises(smtplib.SMTPException):  # raised at the end, so the task retries
        expiry_reminders_send(now=now)

    assert sorted(sent()) == sorted(
        [
            (message_id(six, 7), subject(six, 7)),
            (message_id(twenty_nine, 30), subject(twenty_nine, 30)),
        ]
    )
    assert reminders() == {(six.pk, 7), (twenty_nine.pk, 30)}  # the failed one is still due
    assert AuditRecord.objects.filter(event="certificate.expiry_reminder_sent").count() == 2

    assert expiry_reminders_send(now=now) == 1
    assert (message_id(thirteen, 14), subject(thirteen, 14)) in sent()
    assert expiry_reminders_send(now=now) == 0
    assert len(mail.outbox) == 3


def test_a_resend_after_a_lost_reply_carries_the_same_message_id(firm, people, issue, backend):
    """The one window left: the server took the message but the run did not learn it. The
    resend is then recognisably the same message (deterministic Message-ID)."""
    now = timezone.now()
    certificate = expiring(issue, ParticipantFactory(firm=firm), 13, now)
    backend.fail_on, backend.accept_first = 1, True
    with pytest.raises(smtplib.SMTPException):
        expiry_reminders_send(now=now)
    assert expiry_reminders_send(now=now) == 1
    first, second = (m.message() for m in mail.outbox)
    assert first["Message-ID"] == second["Message-ID"] == message_id(certificate, 14)
    assert first["Subject"] == second["Subject"]
    assert reminders() == {(certificate.pk, 14)}


def test_revoked_and_renewed_certificates_get_nothing(firm, people, issue):
    now = timezone.now()
    revoked = expiring(issue, ParticipantFactory(firm=firm), 6, now)
    certificate_revoke(certificate=revoked, reason="superseded", actor=Actor.system("test"))
    renewed_participant = ParticipantFactory(firm=firm)
    old = expiring(issue, renewed_participant, 6, now)
    new = expiring(issue, renewed_participant, 25, now)  # renewed, itself due in 25 days
    # A renewal that was revoked again is no renewal: the old certificate is still reminded.
    undone_participant = ParticipantFactory(firm=firm)
    still_due = expiring(issue, undone_participant, 6, now)
    undone = expiring(issue, undone_participant, 300, now)
    certificate_revoke(certificate=undone, reason="keyCompromise", actor=Actor.system("test"))

    assert expiry_reminders_send(now=now) == 2
    assert reminders() == {(new.pk, 30), (still_due.pk, 7)}
    assert not ExpiryReminder.objects.filter(certificate__in=[revoked, old]).exists()


def test_the_next_threshold_still_comes_after_a_reminder(firm, people, issue):
    start = timezone.now()
    certificate = expiring(issue, ParticipantFactory(firm=firm), 35, start)
    sent_at = {}
    # Days since start (the certificate has 35 days left at the start), either side of each
    # threshold, and past the end.
    for day in (0, 4.9, 5.5, 6, 10, 20.9, 21.5, 22, 27.9, 28.5, 29, 30, 33.9, 34.4, 34.6, 35.5):
        with time_machine.travel(start + timedelta(days=day), tick=False):
            if expiry_reminders_send():
                (reminder,) = ExpiryReminder.objects.exclude(days_before__in=sent_at.values())
                sent_at[day] = reminder.days_before
    assert sent_at == {5.5: 30, 21.5: 14, 28.5: 7, 34.4: 1}
    assert [m.subject for m in mail.outbox] == [subject(certificate, d) for d in (30, 14, 7, 1)]


def test_a_missed_window_never_sends_a_less_urgent_reminder_after_a_more_urgent_one(
    firm, people, issue
):
    start = timezone.now()
    certificate = expiring(issue, ParticipantFactory(firm=firm), 29, start)
    with time_machine.travel(start, tick=False):
        assert expiry_reminders_send() == 1  # 30 days
    # The task did not run for three weeks: at 6 days left the 7-day reminder goes, and the
    # 14-day one, whose window was missed, never does.
    for day, expected in ((23, 1), (24, 0), (25, 0), (27, 0), (28.6, 1), (28.9, 0)):
        with time_machine.travel(start + timedelta(days=day), tick=False):
            assert expiry_reminders_send() == expected, day
    assert [r.days_before for r in ExpiryReminder.objects.order_by("sent_at")] == [30, 7, 1]
    assert [m.subject for m in mail.outbox] == [subject(certificate, d) for d in (30, 7, 1)]


def test_a_first_run_close_to_expiry_sends_only_the_most_urgent(firm, people, issue):
    now = timezone.now()
    certificate = expiring(issue, ParticipantFactory(firm=firm), 0.5, now)
    assert expiry_reminders_send(now=now) == 1
    assert reminders() == {(certificate.pk, 1)}


def test_the_celery_task_sends_the_reminders(firm, people, issue, backend):
    certificate = expiring(issue, ParticipantFactory(firm=firm), 13)
    assert expiry_reminders_task.delay().get() == 1
    assert sent() == [(message_id(certificate, 14), subject(certificate, 14))]
    assert expiry_reminders_task.delay().get() == 0


def test_the_celery_task_raises_a_mail_failure_when_eager(firm, people, issue, backend):
    expiring(issue, ParticipantFactory(firm=firm), 13)
    backend.fail_on = 1
    with pytest.raises(smtplib.SMTPException):
        expiry_reminders_task.delay()
    assert not ExpiryReminder.objects.exists()
    assert expiry_reminders_task.delay().get() == 1


def test_the_task_is_scheduled_daily(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["expiry-reminders"]
    assert entry["task"] == expiry_reminders_task.name == "portal.tasks.expiry_reminders_task"


@pytest.mark.skipif(connection.vendor != "postgresql", reason=NEEDS_POSTGRES)
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_send_each_reminder_once(cas, firm, people, issue, backend):
    now = timezone.now()
    certificates = [
        expiring(issue, ParticipantFactory(firm=firm), days, now)
        for days in (29, 20, 13, 9, 6, 3, 0.5)
    ]
    backend.delay = 0.05  # a slow mail server: the runs overlap on every certificate
    start = threading.Barrier(2)
    results, errors = [], []

    def run() -> None:
        try:
            start.wait()
            results.append(expiry_reminders_send(now=now))
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sum(results) == len(certificates)
    ids = [message_id for message_id, _ in sent()]
    assert len(ids) == len(set(ids)) == len(certificates)
    assert ExpiryReminder.objects.count() == len(certificates)
    assert AuditRecord.objects.filter(event="certificate.expiry_reminder_sent").count() == len(
        certificates
    )
