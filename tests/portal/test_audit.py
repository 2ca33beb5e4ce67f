"""The audit log: append-only in the database, hash-chained by the chainer after the commit,
verified by verify_audit."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from kernel.audit import Actor, audit_chain, audit_record, audit_verify
from kernel.models import AuditCheck, AuditHead, AuditRecord
from pki.health import health_check

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("audit test")


def _append(n: int, *, chain: bool = True) -> list[AuditRecord]:
    """``n`` records, chained as the chainer would (unless ``chain`` is false)."""
    records = [
        audit_record(event="test.event", actor=ACTOR, index=i, note="line\nbreak") for i in range(n)
    ]
    if chain:
        audit_chain()
    return [AuditRecord.objects.get(pk=r.pk) for r in records]


def _bypass_triggers() -> None:
    """What an attacker with owner rights on the database does first."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE portal_auditrecord DISABLE TRIGGER USER")
        else:
            cursor.execute("DROP TRIGGER portal_auditrecord_no_update")
            cursor.execute("DROP TRIGGER portal_auditrecord_no_delete")


def test_a_record_is_written_without_its_chain_and_the_chainer_links_it(db):
    first, second = _append(2, chain=False)
    assert (first.sequence, first.prev_hash, first.hash) == (None, None, None)
    assert audit_verify().tail.count == 2
    assert audit_chain() == 2
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.sequence == first.sequence + 1
    assert second.prev_hash == first.hash
    head = AuditHead.objects.get(pk=1)
    assert (head.sequence, head.hash) == (second.sequence, second.hash)
    result = audit_verify()
    assert result.ok
    assert result.tail.count == 0
    assert audit_chain() == 0


def test_verify_reports_the_unchained_tail_and_its_age(db, capsys):
    _append(2, chain=False)
    with time_machine.travel(timezone.now() + timedelta(seconds=7)):
        result = audit_verify()
        assert result.ok  # the chained part is intact; the tail is reported, not judged
        assert result.tail.count == 2
        assert 6.5 < result.tail.age(timezone.now()).total_seconds() < 60
        call_command("verify_audit")
    assert "2 not chained yet, the oldest for" in capsys.readouterr().out


def test_health_degrades_while_a_record_waits_longer_than_the_bound(db, settings):
    settings.KEYLINE_AUDIT_MAX_LAG = 5.0
    _append(1, chain=False)
    now = timezone.now()
    assert health_check(now + timedelta(seconds=4)).audit_lag <= 5
    late = health_check(now + timedelta(seconds=6))
    assert late.audit_lag > 5
    assert not late.ok
    assert late.as_json()["audit_chain"]["unchained"] == 1
    audit_chain()
    assert health_check(now + timedelta(seconds=6)).audit_tail.count == 0


def test_verify_audit_command_reports_an_intact_chain(db, capsys):
    _append(3)
    call_command("verify_audit")
    assert "audit chain intact" in capsys.readouterr().out


def test_database_refuses_update_and_delete(db):
    (record,) = _append(1)
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditRecord.objects.filter(pk=record.pk).update(event="nothing.happened")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditRecord.objects.filter(pk=record.pk).delete()
    # A chained record cannot be chained again (a rewritten link).
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditRecord.objects.filter(pk=record.pk).update(hash="b" * 64)
    assert AuditRecord.objects.get(pk=record.pk).event == "test.event"


def test_an_unchained_record_takes_only_its_chain_fields(db):
    """The one UPDATE the database allows: the chain fields of a record that has none, with the
    content unchanged. Its content cannot be edited while it waits for the chainer."""
    (record,) = _append(1, chain=False)
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditRecord.objects.filter(pk=record.pk).update(event="nothing.happened")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditRecord.objects.filter(pk=record.pk).update(
            sequence=10**9, prev_hash="0" * 64, hash="c" * 64, actor_label="someone else"
        )
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditRecord.objects.filter(pk=record.pk).delete()
    assert audit_chain() == 1
    assert audit_verify().ok


@pytest.mark.parametrize("field", ["event", "details", "actor_label", "created_at"])
def test_an_edited_row_is_named_by_verify_audit(field, db):
    records = _append(4)
    target = records[1]
    _bypass_triggers()
    changes = {
        "event": {"event": "certificate.downloaded"},
        "details": {"details": {"index": 99, "note": "line\nbreak"}},
        "actor_label": {"actor_label": "someone else"},
        "created_at": {"created_at": target.created_at.replace(year=2020)},
    }[field]
    AuditRecord.objects.filter(pk=target.pk).update(**changes)

    result = audit_verify()
    assert result.broken_sequence == target.sequence
    with pytest.raises(CommandError, match=rf"broken at record #{target.sequence}\b") as failed:
        call_command("verify_audit")
    assert failed.value.returncode == 1
    # The verdict is kept for the officers' audit page: #1 to #checked intact, then the break.
    kept = AuditCheck.objects.get()
    assert (kept.ok, kept.by, kept.broken_sequence) == (
        False,
        "verify_audit command",
        target.sequence,
    )
    assert kept.checked == target.sequence - 1


def test_a_rewritten_hash_breaks_the_next_link(db):
    records = _append(3)
    _bypass_triggers()
    AuditRecord.objects.filter(pk=records[0].pk).update(event="forged", hash="a" * 64)
    assert audit_verify().broken_sequence == records[0].sequence


def test_deleted_rows_are_detected(db):
    records = _append(4)
    _bypass_triggers()
    AuditRecord.objects.filter(pk=records[1].pk).delete()
    result = audit_verify()
    assert result.broken_sequence == records[1].sequence
    assert "missing" in result.reason


def test_truncated_tail_is_detected(db):
    records = _append(3)
    _bypass_triggers()
    AuditRecord.objects.filter(pk=records[-1].pk).delete()
    result = audit_verify()
    assert not result.ok
    assert "head" in result.reason


def test_a_rolled_back_action_leaves_no_record(db):
    before = AuditRecord.objects.count()

    def action() -> None:
        with transaction.atomic():
            audit_record(event="test.rolled_back", actor=ACTOR)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        action()
    assert AuditRecord.objects.count() == before
    assert audit_verify().ok


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL row locks and TRUNCATE; SQLite serialises every writer anyway",
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("start", ["existing-chain", "empty-log"])
def test_concurrent_appends_keep_one_unbroken_chain(start):
    if start == "empty-log":
        # The very first appends race to create the chain head (a fresh install, or the
        # state after a transactional test's flush).
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE portal_auditrecord, portal_audithead")
    else:
        audit_record(event="test.before", actor=ACTOR)
    errors = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                with transaction.atomic():
                    audit_record(event="test.concurrent", actor=ACTOR, worker=n, i=i)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    done = threading.Event()

    def chainer() -> None:
        # Two chainers at once, as a mistaken deployment would run them: passes take turns.
        try:
            while not done.is_set():
                audit_chain(limit=7)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    chainers = [threading.Thread(target=chainer) for _ in range(2)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in chainers + threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    for thread in chainers:
        thread.join()
    assert errors == []
    audit_chain()
    assert AuditRecord.objects.filter(event="test.concurrent").count() == 80
    sequences = sorted(AuditRecord.objects.values_list("sequence", flat=True))
    assert sequences == list(range(1, len(sequences) + 1))
    assert audit_verify().ok


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs two concurrent PostgreSQL transactions"
)
@pytest.mark.django_db(transaction=True)
def test_records_are_chained_in_commit_order_not_insertion_order():
    """A record inserted first but committed last is chained last: the chainer sees a record
    only once its transaction committed, and never waits for one still open."""
    inserted, release, errors = threading.Event(), threading.Event(), []

    def slow_action() -> None:
        try:
            with transaction.atomic():
                audit_record(event="test.slow", actor=ACTOR)
                inserted.set()
                release.wait(10)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    slow = threading.Thread(target=slow_action)
    slow.start()
    assert inserted.wait(10)
    fast = audit_record(event="test.fast", actor=ACTOR)  # autocommit: committed at once
    assert audit_chain() >= 1  # the open transaction's record is not visible, nor waited for
    release.set()
    slow.join()
    audit_chain()
    slow_record = AuditRecord.objects.get(event="test.slow")
    fast_record = AuditRecord.objects.get(pk=fast.pk)
    assert errors == []
    assert slow_record.pk < fast_record.pk  # inserted first
    assert slow_record.sequence > fast_record.sequence  # committed, and chained, last
    assert audit_verify().ok
