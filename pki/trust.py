"""The app's per-certificate trust decision (docs/architecture.md, the trust contract).

A client certificate is trusted when it was issued by the active client CA, is inside its
validity, is not revoked, and its participant and firm are active. The decision is cached by
SHA-256 fingerprint in two levels: Redis, shared by every process, and each process's memory
(:class:`kernel.nearcache.NearCache`), used only while the process is subscribed to
``TRUST_CHANNEL``. Every status change forgets the decision (``pki.propagation`` for
certificates; ``pki.signals`` for participants and firms): in Redis, in the forgetting
process's memory at once, and in every other process's memory when the published message
arrives (about a millisecond; bounded and measured, docs/benchmarks.md). So the revoking
request's own process refuses on its very next request, every other worker within that bound,
whatever a CRL or OCSP cache still says. The TTL bounds how long any change that forgot to call
:func:`decisions_forget` can go unseen.

The API's authentication class (nginx forwards the client certificate) computes the
fingerprint from the forwarded PEM and asks :func:`certificate_decide`.
"""

import copy
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone
from redis.commands.core import Script

from kernel.models import Participant
from kernel.nearcache import NearCache, ThreadSubscriber
from kernel.redis import channel, redis_client
from pki.cache_cas import PUT_UNCHANGED
from pki.models import Certificate, CertificateAuthority

logger = logging.getLogger(__name__)

# v3: decisions carry ``supersedes`` (an older process cannot read them, nor they its).
DECISION_PREFIX = "keyline:trust:v3:"
DECISION_TTL = 60  # seconds: bounds a decision whose forgetting failed (e.g. Redis down)
# Forgotten fingerprints, newline-separated, for every process's memory.
TRUST_CHANNEL = "keyline:trust:forget"

OK = "OK"
CERTIFICATE_UNKNOWN = "CERTIFICATE_UNKNOWN"
ISSUER_UNKNOWN = "CERTIFICATE_ISSUER_UNKNOWN"
CERTIFICATE_REVOKED = "CERTIFICATE_REVOKED"
CERTIFICATE_EXPIRED = "CERTIFICATE_EXPIRED"
CERTIFICATE_NOT_YET_VALID = "CERTIFICATE_NOT_YET_VALID"
PARTICIPANT_DISABLED = "PARTICIPANT_DISABLED"
FIRM_INACTIVE = "FIRM_INACTIVE"


@dataclass(frozen=True)
class TrustDecision:
    code: str
    fingerprint_sha256: str
    certificate_id: int | None = None
    serial: str = ""
    participant_id: int | None = None
    firm_id: int | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    # A certificate renewed by EST: the id of the certificate it replaces while that one is
    # still active (its first use revokes that one as superseded: pki.est).
    supersedes: int | None = None

    @property
    def ok(self) -> bool:
        return self.code == OK


def decision_cache_key(fingerprint_sha256: str) -> str:
    return f"{DECISION_PREFIX}{fingerprint_sha256.lower()}"


# With Redis, decisions are read with one plain GET of a small JSON value: the API pays this
# on every request, and Django's cache layer costs about 2.5 times a raw GET here (533 µs
# against 204 µs, measured). Without Redis, Django's (database) cache, shared by all processes.
_put_unchanged: dict[str, Script] = {}


def _redis() -> redis.Redis | None:
    """The process's Redis client (kernel.redis), with the compare-and-set script registered."""
    client = redis_client()
    if client is not None and settings.REDIS_URL not in _put_unchanged:
        _put_unchanged[settings.REDIS_URL] = client.register_script(PUT_UNCHANGED)
    return client


def _encode(decision: "TrustDecision") -> bytes:
    return json.dumps(asdict(decision), cls=_Encoder).encode()


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        return o.isoformat() if isinstance(o, datetime) else super().default(o)


def _decode(value: bytes | str) -> "TrustDecision":
    fields = json.loads(value)
    for name in ("not_before", "not_after"):
        if fields[name] is not None:
            fields[name] = datetime.fromisoformat(fields[name])
    return TrustDecision(**fields)


def decision_cached(fingerprint: str) -> "TrustDecision | None":
    """The cached decision for this fingerprint, if any (without deciding)."""
    return _cached(fingerprint.lower())


def _cached(fingerprint: str) -> "TrustDecision | None":
    client = _redis()
    if client is None:
        return cache.get(decision_cache_key(fingerprint))
    try:
        value = client.get(decision_cache_key(fingerprint))
    except redis.RedisError:
        logger.warning("trust cache unavailable; deciding from the database", exc_info=True)
        return None
    return _decode(value) if value is not None else None


# A decision read from the database just before a status change must never be cached after
# the change forgot it: every fingerprint has a generation, bumped (with the deletion) by every
# forget; a decision is cached only if its generation is still the one read before the
# database was. (The OCSP answer cache works the same way.)
GENERATION_TTL = 86400


def _generation_key(fingerprint: str) -> str:
    return f"{DECISION_PREFIX}gen:{fingerprint}"


def _generation(fingerprint: str) -> bytes | str | int | None:
    """The fingerprint's generation (None: unknown, do not cache)."""
    client = _redis()
    try:
        if client is None:
            return cache.get(_generation_key(fingerprint), 0)
        return client.get(_generation_key(fingerprint)) or b"0"
    except redis.RedisError:
        logger.warning("trust cache unavailable; decision not cached", exc_info=True)
        return None


def _cache(decision: "TrustDecision", generation: bytes | str | int | None) -> None:
    if generation is None:
        return
    fingerprint = decision.fingerprint_sha256
    client = _redis()
    if client is None:
        # The database cache has no compare-and-set: check, then set (a narrow window, on a
        # single machine only).
        if cache.get(_generation_key(fingerprint), 0) == generation:
            cache.set(decision_cache_key(fingerprint), decision, DECISION_TTL)
        return
    try:
        _put_unchanged[settings.REDIS_URL](
            keys=[_generation_key(fingerprint), decision_cache_key(fingerprint)],
            args=[generation, _encode(decision), DECISION_TTL],
        )
    except redis.RedisError:
        logger.warning("trust cache unavailable; decision not cached", exc_info=True)


def decisions_forget(fingerprints: Iterable[str]) -> None:
    """Forget the cached decisions, and keep any decision read before now from being cached
    after. Raises when the cache is unavailable (the caller records it: a decision left
    behind lives at most DECISION_TTL)."""
    fingerprints = [fp.lower() for fp in fingerprints]
    if not fingerprints:
        return
    # This process first: the request that revoked sees the refusal on its next call.
    near.forget(fingerprints)
    participants.forget(fingerprints)
    client = _redis()
    if client is None:
        for fp in fingerprints:
            cache.set(_generation_key(fp), cache.get(_generation_key(fp), 0) + 1, GENERATION_TTL)
        cache.delete_many([decision_cache_key(fp) for fp in fingerprints])
        return
    with client.pipeline(transaction=True) as pipe:
        for fp in fingerprints:
            pipe.incr(_generation_key(fp))
            pipe.expire(_generation_key(fp), GENERATION_TTL)
        pipe.delete(*[decision_cache_key(fp) for fp in fingerprints])
        # After the deletion, in the same transaction: a process that hears it finds Redis
        # already without the decision.
        pipe.publish(channel(TRUST_CHANNEL), "\n".join(fingerprints))
        pipe.execute()


def participant_of(decision: TrustDecision) -> Participant:
    """The participant (its firm loaded) a trusted decision names: from this process's memory
    while subscribed, else the database. Read-only: a copy of the cached row is returned, its
    firm shared with the cache."""
    if decision.participant_id is None:  # never: a trusted decision names one
        raise Participant.DoesNotExist("the certificate belongs to no participant")
    fingerprint = decision.fingerprint_sha256
    cached = participants.get(fingerprint)
    if cached is None:
        seen = participants.generation()
        cached = Participant.objects.select_related("firm").get(pk=decision.participant_id)
        participants.put(fingerprint, cached, seen)
    return copy.copy(cached)


def certificate_fingerprints_of(
    *, participant_ids: Iterable[int] = (), firm_ids: Iterable[int] = ()
) -> list[str]:
    """Fingerprints of the client certificates of these participants or firms' participants
    (to forget their decisions when a participant or firm changes)."""
    rows = Certificate.objects.filter(kind=Certificate.Kind.CLIENT)
    query = Q(participant_id__in=list(participant_ids)) | Q(participant__firm_id__in=list(firm_ids))
    return list(rows.filter(query).values_list("fingerprint_sha256", flat=True))


def _decide(fingerprint: str) -> TrustDecision:
    cert = (
        Certificate.objects.select_related("issuer", "participant__firm", "request__renewal_of")
        .filter(fingerprint_sha256=fingerprint, kind=Certificate.Kind.CLIENT)
        .first()
    )
    if cert is None:
        return TrustDecision(CERTIFICATE_UNKNOWN, fingerprint)
    decision = TrustDecision(
        OK,
        fingerprint_sha256=fingerprint,
        certificate_id=cert.pk,
        serial=cert.serial,
        participant_id=cert.participant_id,
        firm_id=cert.participant.firm_id if cert.participant else None,
        not_before=cert.not_before,
        not_after=cert.not_after,
    )
    if not (cert.issuer.is_active and cert.issuer.kind == CertificateAuthority.Kind.CLIENT):
        return replace(decision, code=ISSUER_UNKNOWN)
    if cert.status == Certificate.Status.REVOKED:
        return replace(decision, code=CERTIFICATE_REVOKED)
    participant = cert.participant
    if participant is None or not participant.is_active:
        return replace(decision, code=PARTICIPANT_DISABLED)
    if not participant.firm.is_active:
        return replace(decision, code=FIRM_INACTIVE)
    return replace(decision, supersedes=_predecessor_active(cert))


def _predecessor_active(cert: Certificate) -> int | None:
    """The id of the certificate ``cert`` renewed by EST, while that one is still active."""
    renewed = cert.request.renewal_of if cert.request is not None else None
    if renewed is None or renewed.status != Certificate.Status.ACTIVE:
        return None
    return renewed.pk


near: NearCache[TrustDecision] = NearCache(ttl=DECISION_TTL, max_entries=100_000)
# The participant (with its firm) a trusted certificate belongs to, by fingerprint: forgotten
# with the decision, by the same messages (a participant's or firm's save forgets both).
participants: NearCache[Participant] = NearCache(ttl=DECISION_TTL, max_entries=100_000)
_subscriber = ThreadSubscriber(TRUST_CHANNEL, near, participants)


def certificate_decide(fingerprint_sha256: str, now: datetime | None = None) -> TrustDecision:
    """The trust decision for the certificate with this SHA-256 fingerprint (hex): from this
    process's memory, else Redis, else the database."""
    fingerprint = fingerprint_sha256.lower()
    _subscriber.ensure_started()
    decision = near.get(fingerprint)
    if decision is None:
        seen = near.generation()
        decision = _cached(fingerprint)
        if decision is None:
            generation = _generation(fingerprint)
            decision = _decide(fingerprint)
            _cache(decision, generation)
        near.put(fingerprint, decision, seen)
    # The validity window is checked on every call: time passes while a decision is cached.
    now = now or timezone.now()
    if decision.ok and decision.not_after is not None and now >= decision.not_after:
        return replace(decision, code=CERTIFICATE_EXPIRED)
    if decision.ok and decision.not_before is not None and now < decision.not_before:
        return replace(decision, code=CERTIFICATE_NOT_YET_VALID)
    return decision
