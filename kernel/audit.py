"""The security audit log: append-only and hash-chained.

Every app records security-relevant actions with :func:`audit_record`, inside the same
transaction as the action, so a rolled-back action leaves no record and a committed one always
has its record. The insert takes no lock: it is one row in the action's transaction.

Chaining happens beside the requests, not in them: :func:`audit_chain` (run in a loop by
``manage.py chain_audit --follow``, one process per deployment) takes the committed records
that have no place in the chain yet, in the order it finds them committed (by insertion id
within one pass), and gives each its sequence number, the previous record's hash and its own.
Before, every action took the chain head's row lock until its commit, which serialised every
write of the venue.

:func:`audit_verify` recomputes the chain, names the first broken record, and reports the
unchained tail and its age: the window in which a record is protected by the database
triggers only.
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.utils import timezone

from kernel.models import AuditCheck, AuditHead, AuditRecord

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class Actor:
    """Who did it: a portal user, a client certificate (API caller) or the system itself."""

    type: str
    id: str = ""
    label: str = ""

    @classmethod
    def user(cls, user: Any) -> "Actor":
        return cls(AuditRecord.ActorType.USER, str(user.pk), user.get_username())

    @classmethod
    def certificate(cls, certificate: Any) -> "Actor":
        return cls(AuditRecord.ActorType.CERTIFICATE, certificate.serial, str(certificate))

    @classmethod
    def system(cls, label: str) -> "Actor":
        return cls(AuditRecord.ActorType.SYSTEM, "", label)

    @classmethod
    def anonymous(cls, label: str = "") -> "Actor":
        return cls(AuditRecord.ActorType.ANONYMOUS, "", label)


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _record_hash(
    *,
    sequence: int,
    created_at: datetime,
    event: str,
    actor_type: str,
    actor_id: str,
    actor_label: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    return hashlib.sha256(
        _canonical(
            {
                "sequence": sequence,
                "created_at": created_at.astimezone(UTC).isoformat(timespec="microseconds"),
                "event": event,
                "actor": [actor_type, actor_id, actor_label],
                "target": [target_type, target_id],
                "details": details,
                "prev_hash": prev_hash,
            }
        )
    ).hexdigest()


def _hash_of(record: AuditRecord) -> str:
    if record.sequence is None or record.prev_hash is None:
        raise ValueError("an unchained record has no hash")
    return _record_hash(
        sequence=record.sequence,
        created_at=record.created_at,
        event=record.event,
        actor_type=record.actor_type,
        actor_id=record.actor_id,
        actor_label=record.actor_label,
        target_type=record.target_type,
        target_id=record.target_id,
        details=record.details,
        prev_hash=record.prev_hash,
    )


@dataclass(frozen=True)
class AuditEntry:
    """One record to append: what happened, who did it, to what, and the details."""

    event: str
    actor: Actor
    target: models.Model | None = None
    target_type: str = ""
    target_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def audit_record(
    *,
    event: str,
    actor: Actor,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    **details: Any,
) -> AuditRecord:
    """Append one record to the chain, in the caller's transaction.

    ``details`` must be JSON-serialisable after Django's encoder (datetimes, decimals and
    UUIDs become strings). Never pass secrets or private key material.
    """
    entry = AuditEntry(event, actor, target, target_type, target_id, details)
    return audit_record_many([entry])[0]


def audit_record_many(entries: list[AuditEntry]) -> list[AuditRecord]:
    """Insert several records in order, in the caller's transaction, without their place in the
    chain (:func:`audit_chain` gives it after the commit)."""
    now = timezone.now()
    records = []
    for entry in entries:
        target_type, target_id = entry.target_type, entry.target_id
        if entry.target is not None:
            target_type = target_type or entry.target._meta.label_lower
            target_id = target_id or str(entry.target.pk)
        records.append(
            AuditRecord(
                created_at=now,
                event=entry.event,
                actor_type=str(entry.actor.type),
                actor_id=entry.actor.id,
                actor_label=entry.actor.label[:200],
                target_type=target_type,
                target_id=target_id,
                details=json.loads(json.dumps(entry.details, cls=DjangoJSONEncoder)),
            )
        )
    # No savepoint: the records live or die with the caller's transaction.
    with transaction.atomic(savepoint=False):
        AuditRecord.objects.bulk_create(records)
    return records


def _head_locked() -> AuditHead:
    head = AuditHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        # A fresh install (or the state after a test's flush): concurrent chainers must not
        # collide on the primary key; ON CONFLICT DO NOTHING waits for the other insert.
        AuditHead.objects.bulk_create(
            [AuditHead(pk=1, sequence=0, hash=GENESIS_HASH)], ignore_conflicts=True
        )
        head = AuditHead.objects.select_for_update().get(pk=1)
    return head


def audit_chain(limit: int = 2000) -> int:
    """Chain up to ``limit`` committed, unchained records, oldest insertion first; returns how
    many. Safe to run in several processes at once: each pass holds the chain head's row lock,
    so passes take turns."""
    with transaction.atomic():
        head = _head_locked()
        records = list(AuditRecord.objects.filter(hash__isnull=True).order_by("id")[:limit])
        if not records:
            return 0
        sequence, prev_hash, now = head.sequence, head.hash, timezone.now()
        for record in records:
            sequence += 1
            record.sequence, record.prev_hash, record.chained_at = sequence, prev_hash, now
            record.hash = prev_hash = _hash_of(record)
        AuditRecord.objects.bulk_update(records, ["sequence", "prev_hash", "hash", "chained_at"])
        AuditHead.objects.filter(pk=1).update(sequence=sequence, hash=prev_hash)
    return len(records)


@dataclass(frozen=True)
class AuditTail:
    """The records not chained yet: how many, and since when the oldest waits."""

    count: int
    oldest_at: datetime | None

    def age(self, now: datetime) -> timedelta:
        """How long the oldest has waited (zero without a tail)."""
        return now - self.oldest_at if self.oldest_at is not None else timedelta(0)


def audit_tail() -> AuditTail:
    """The unchained tail (one index scan: ``audit_unchained_idx``)."""
    unchained = AuditRecord.objects.filter(hash__isnull=True)
    oldest = unchained.order_by("id").values_list("created_at", flat=True).first()
    return AuditTail(unchained.count() if oldest is not None else 0, oldest)


@dataclass(frozen=True)
class AuditVerification:
    """What ``verify_audit`` found: how many records it checked and, when the chain is broken,
    the first broken sequence number and why."""

    checked: int
    broken_sequence: int | None = None
    reason: str = ""
    # Records not chained yet when the check ran (not an error: the chainer's backlog).
    tail: AuditTail = AuditTail(0, None)

    @property
    def ok(self) -> bool:
        """The chained records are intact (the unchained tail is reported, not judged)."""
        return self.broken_sequence is None


def _records(up_to: int) -> Iterator[AuditRecord]:
    return (
        AuditRecord.objects.filter(sequence__lte=up_to)
        .order_by("sequence")
        .iterator(chunk_size=2000)
    )


def audit_verify() -> AuditVerification:
    """Recompute the whole chain; report the first record whose content, link or position is
    wrong, and a tip that does not match the head (records deleted from the end). The
    unchained tail is measured first, so a record chained during the check is never missed."""
    tail = audit_tail()
    # The head is read before the records: what the chainer adds meanwhile lies beyond it and
    # is left to the next check.
    head = AuditHead.objects.filter(pk=1).first()
    prev_hash, expected_sequence, checked = GENESIS_HASH, 1, 0
    up_to = head.sequence if head is not None else 0
    if head is None:
        # No chain head: nothing was ever chained, or the head row was deleted.
        up_to = AuditRecord.objects.aggregate(m=models.Max("sequence"))["m"] or 0
    for record in _records(up_to):
        if record.sequence != expected_sequence:
            return AuditVerification(
                checked,
                expected_sequence,
                f"record #{expected_sequence} is missing (next present is #{record.sequence})",
                tail,
            )
        if record.prev_hash != prev_hash:
            return AuditVerification(
                checked,
                record.sequence,
                f"record #{record.sequence} does not link to its predecessor",
                tail,
            )
        if _hash_of(record) != record.hash:
            return AuditVerification(
                checked,
                record.sequence,
                f"record #{record.sequence} was altered after it was written",
                tail,
            )
        prev_hash, expected_sequence, checked = record.hash, expected_sequence + 1, checked + 1
    if head is not None and (head.sequence, head.hash) != (expected_sequence - 1, prev_hash):
        return AuditVerification(
            checked,
            expected_sequence,
            f"the chain ends at #{expected_sequence - 1} but its head says #{head.sequence}",
            tail,
        )
    return AuditVerification(checked, tail=tail)


def audit_check(by: str, result: AuditVerification | None = None) -> AuditCheck:
    """Verify the whole chain (:func:`audit_verify`, unless ``result`` is a verification just
    made) and keep what was found, with who asked. Returns the stored check."""
    result = result or audit_verify()
    return AuditCheck.objects.create(
        checked_at=timezone.now(),
        by=by[:200],
        ok=result.ok,
        checked=result.checked,
        broken_sequence=result.broken_sequence,
        reason=result.reason,
        unchained=result.tail.count,
    )
