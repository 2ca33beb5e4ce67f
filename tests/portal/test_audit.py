"""The audit log: append-only in the database, hash-chained, verified by verify_audit."""

import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from kernel.audit import Actor, audit_record, audit_verify
from kernel.models import AuditRecord

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("audit test")


def _append(n: int) -> list[AuditRecord]:
    return [
        audit_record(event="test.event", actor=ACTOR, index=i, note="line\nbreak") for i in range(n)
    ]


def _bypass_triggers() -> None:
    """What an attacker with owner rights on the database does first."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE portal_auditrecord DISABLE TRIGGER USER")
        else:
            cursor.execute("DROP TRIGGER portal_auditrecord_no_update")
            cursor.execute("DROP TRIGGER portal_auditrecord_no_delete")


def test_records_chain_to_their_predecessor(db):
    first, second = _append(2)
    assert second.sequence == first.sequence + 1
    assert second.prev_hash == first.hash
    assert audit_verify().ok


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
    assert AuditRecord.objects.get(pk=record.pk).event == "test.event"


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

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert AuditRecord.objects.filter(event="test.concurrent").count() == 80
    assert audit_verify().ok
