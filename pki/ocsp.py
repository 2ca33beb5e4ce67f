"""RFC 6960 OCSP responder for the client issuing CA.

The hot path is small on purpose: parse the request, match its CertID against the issuing CA,
and return a response that the signing worker pre-signed (RFC 5019 style, no nonce) from Redis.
Only a cache miss, a request with a nonce (echoed, so it must be signed for that request) or a
serial we never issued signs live, with the delegated responder key (id-kp-OCSPSigning,
ocsp-nocheck); no CA key is ever loaded here.

Answers:
- ``good`` / ``revoked`` (time and reason; ``unspecified`` is sent without a reason) for every
  certificate the client CA issued, expired ones included.
- For a serial the CA never issued: ``revoked``, revocationTime 1970-01-01T00:00:00Z, reason
  certificateHold, with the id-pkix-ocsp-extended-revoke response extension: the RFC 6960 §2.2
  / §4.4.8 "non-issued" answer, which every relying party treats as a hard refusal (``unknown``
  would let a soft-failing client through). Not cached.
- Unsigned errors (§2.3): ``malformedRequest`` for anything that is not one DER OCSPRequest with
  a supported hash (and a 1-32 byte nonce, RFC 8954), ``unauthorized`` for a CertID of any other
  issuer, ``tryLater`` before the CA and its delegate exist, ``internalError`` for a failure.

Pre-signed responses live in Redis for half their validity and are dropped the moment a status
changes (``responses_forget``), so a cached answer never predates a revocation. Without Redis
(a fresh machine) every response is signed live: per-process caches could disagree.
"""

import hashlib
import logging
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import redis
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from django.utils import timezone

from kernel.redis import channel, redis_client
from pki.cache_cas import PUT_UNCHANGED
from pki.conf import pki_settings
from pki.crypto import CaPrivateKey
from pki.failures import failures_resolve
from pki.keystore import ocsp_key_load, ocsp_responder_key_file
from pki.models import Certificate, CertificateAuthority, PublishFailure
from pki.reasons import REASON_FLAGS
from pki.selectors import ca_certificate, ocsp_responder_current

logger = logging.getLogger(__name__)

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
PRESIGNED_HASH = "sha1"  # what nginx and `openssl ocsp` put in their CertIDs by default
EXTENDED_REVOKE = x509.ObjectIdentifier("1.3.6.1.5.5.7.48.1.9")
NON_ISSUED_REVOCATION_TIME = datetime(1970, 1, 1, tzinfo=UTC)
CONTEXT_TTL = 30.0  # seconds a process keeps its view of the CA and the delegate
MAX_REQUEST_BYTES = 4096
CACHE_PREFIX = "keyline:ocsp:v1:"
PRESIGN_BATCH = 1000
INVALIDATION_CHANNEL = f"{CACHE_PREFIX}forget"
_TIMES = struct.Struct(">qq")


def _error(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


MALFORMED = _error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
UNAUTHORIZED = _error(ocsp.OCSPResponseStatus.UNAUTHORIZED)
TRY_LATER = _error(ocsp.OCSPResponseStatus.TRY_LATER)
INTERNAL_ERROR = _error(ocsp.OCSPResponseStatus.INTERNAL_ERROR)


@dataclass(frozen=True)
class Answer:
    """A DER OCSPResponse and what its HTTP caching headers need."""

    body: bytes
    this_update: datetime | None = None
    next_update: datetime | None = None
    cacheable: bool = False  # no nonce: the same bytes may be served to anyone

    def headers(self, now: datetime | None = None) -> list[tuple[str, str]]:
        headers = [
            ("Content-Type", "application/ocsp-response"),
            ("Content-Length", str(len(self.body))),
        ]
        if not (self.cacheable and self.this_update and self.next_update):
            return [*headers, ("Cache-Control", "no-store")]
        now = now or datetime.now(UTC)
        max_age = max(0, int((self.next_update - now).total_seconds()))
        return [
            *headers,
            # RFC 5019 §6.2
            ("Cache-Control", f"max-age={max_age}, public, no-transform, must-revalidate"),
            ("Last-Modified", format_datetime(self.this_update, usegmt=True)),
            ("Expires", format_datetime(self.next_update, usegmt=True)),
            ("ETag", f'"{hashlib.sha1(self.body).hexdigest()}"'),  # noqa: S324 - an ETag
        ]

    def pack(self) -> bytes:
        if self.this_update is None or self.next_update is None:
            raise ValueError("only a signed status response can be cached")
        times = (int(self.this_update.timestamp()), int(self.next_update.timestamp()))
        return _TIMES.pack(*times) + self.body

    @classmethod
    def unpack(cls, value: bytes) -> "Answer":
        this_update, next_update = _TIMES.unpack_from(value)
        return cls(
            body=value[_TIMES.size :],
            this_update=datetime.fromtimestamp(this_update, UTC),
            next_update=datetime.fromtimestamp(next_update, UTC),
            cacheable=True,
        )


# --- the CA and the delegate as this process sees them -------------------------------------


def _key_hash_input(public_key: object) -> bytes:
    """The subjectPublicKey BIT STRING contents (RFC 6960 §4.1.1 issuerKeyHash)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    raise TypeError(f"unsupported CA key {type(public_key).__name__}")


def _digest(algorithm: str, data: bytes) -> bytes:
    return hashlib.new(algorithm, data).digest()


@dataclass(frozen=True)
class _Context:
    ca_id: int
    namespace: str  # cache key prefix for this CA
    hashes: dict[str, tuple[bytes, bytes]]  # algorithm → (issuerNameHash, issuerKeyHash)
    signer: x509.Certificate
    signer_serial: str
    loaded_at: float

    def signer_key(self) -> CaPrivateKey:
        """The delegate's key, loaded on the first live signature (kept by the keystore): a
        process that only reads the cache or forgets answers (web) never loads a key."""
        return ocsp_key_load(ocsp_responder_key_file(self.signer_serial))


_context_lock = threading.Lock()
_context_cache: _Context | None = None


def _load_context() -> _Context | None:
    ca = CertificateAuthority.objects.filter(kind="client", is_active=True).first()
    delegate = ocsp_responder_current()
    if ca is None or delegate is None:
        return None
    cert = ca_certificate(ca)
    name_der = cert.subject.public_bytes()
    key_bits = _key_hash_input(cert.public_key())
    return _Context(
        ca_id=ca.pk,
        namespace=f"{CACHE_PREFIX}{ca.fingerprint_sha256[:32]}:",
        hashes={alg: (_digest(alg, name_der), _digest(alg, key_bits)) for alg in HASHES},
        signer=x509.load_pem_x509_certificate(delegate.pem.encode()),
        signer_serial=delegate.serial,
        loaded_at=time.monotonic(),
    )


def context_fresh() -> "_Context | None":
    """The cached view of the CA and delegate if it is fresh, without touching the database
    (for the event loop of ``pki.ocsp_asgi``), else None."""
    current = _context_cache
    if current is not None and time.monotonic() - current.loaded_at < CONTEXT_TTL:
        return current
    return None


def context() -> _Context | None:
    """This process's view of the client CA and the current delegate (reloaded every 30 s)."""
    global _context_cache
    current = _context_cache
    if current is not None and time.monotonic() - current.loaded_at < CONTEXT_TTL:
        return current
    with _context_lock:
        _context_cache = _load_context()
        return _context_cache


def context_reset() -> None:
    """Forget the cached CA and delegate (after ``init_ca --force`` or a delegate renewal)."""
    global _context_cache
    _context_cache = None


# --- the pre-signed response store ---------------------------------------------------------


@dataclass(frozen=True)
class _Write:
    """A response to cache for ``serial`` unless its generation moved since ``generation``
    was read (before the status was read from the database)."""

    serial: int
    generation: bytes | None
    key: str
    value: bytes


class _NullStore:
    def get(self, key: str) -> bytes | None:
        return None

    def generations(self, ctx: "_Context", serials: list[int]) -> list[bytes | None]:
        return [None] * len(serials)

    def put_unchanged(self, ctx: "_Context", writes: list[_Write], ttl: int) -> int:
        return 0

    def forget(self, ctx: "_Context", serials: list[int]) -> None:
        pass


# Compare-and-set: cache a response only if the certificate's generation is still the one the
# writer read before it read the status. A status change bumps the generation and deletes the
# responses in one transaction, so a writer that read the old status can never put it back.
GENERATION_TTL = 7 * 86400  # far longer than any signing run


class _RedisStore:
    """Raw bytes in Redis (shared by every responder process), plus a generation counter per
    certificate. A read error is a miss (the response is signed live); a failed invalidation
    is logged loudly (and recorded by the caller)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._put_unchanged = self.client.register_script(PUT_UNCHANGED)

    def get(self, key: str) -> bytes | None:
        try:
            # TYPEHINT NOTE: redis types replies bytes | str; str only with decode_responses,
            # which this client does not set.
            return self.client.get(key)  # type: ignore[return-value]
        except redis.RedisError:
            logger.warning("OCSP cache read failed; signing live", exc_info=True)
            return None

    def generations(self, ctx: "_Context", serials: list[int]) -> list[bytes | None]:
        """The current generation of each certificate (None: unknown, do not cache)."""
        if not serials:
            return []
        try:
            values = self.client.mget([_generation_key(ctx, s) for s in serials])
        except redis.RedisError:
            logger.warning("OCSP cache unavailable; answers will not be cached", exc_info=True)
            return [None] * len(serials)
        # TYPEHINT NOTE: bytes, not bytes | str as redis types them (no decode_responses).
        return [value or b"0" for value in values]  # type: ignore[misc]

    def put_unchanged(self, ctx: "_Context", writes: list[_Write], ttl: int) -> int:
        """Cache the writes whose generation did not move; returns how many were cached."""
        known = [(write, write.generation) for write in writes if write.generation is not None]
        if not known:
            return 0
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for write, generation in known:
                    self._put_unchanged(
                        keys=[_generation_key(ctx, write.serial), write.key],
                        args=[generation, write.value, ttl],
                        client=pipe,
                    )
                return sum(pipe.execute())
        except redis.RedisError:
            logger.warning("OCSP cache write failed", exc_info=True)
            return 0

    def forget(self, ctx: "_Context", serials: list[int]) -> None:
        """Bump the generation of these certificates and drop their cached responses (every
        hash algorithm), atomically. Raises ``redis.RedisError`` when Redis is unavailable."""
        if not serials:
            return
        keys = [_cache_key(ctx, algorithm, serial) for serial in serials for algorithm in HASHES]
        with self.client.pipeline(transaction=True) as pipe:
            for serial in serials:
                pipe.incr(_generation_key(ctx, serial))
                pipe.expire(_generation_key(ctx, serial), GENERATION_TTL)
            pipe.delete(*keys)
            # Responder processes keep hot answers in memory (pki.ocsp_asgi): tell them.
            pipe.publish(channel(INVALIDATION_CHANNEL), "\n".join(keys))
            pipe.execute()


_stores: dict[str, _NullStore | _RedisStore] = {}


def _store() -> _NullStore | _RedisStore:
    """The cache of pre-signed answers on the process's Redis client (kernel.redis), if any."""
    url = pki_settings().redis_url
    if url not in _stores:
        client = redis_client()
        _stores[url] = _RedisStore(client) if client is not None else _NullStore()
    return _stores[url]


def _cache_key(ctx: "_Context", algorithm: str, serial: int) -> str:
    return f"{ctx.namespace}{algorithm}:{serial:x}"


def _generation_key(ctx: "_Context", serial: int) -> str:
    return f"{ctx.namespace}gen:{serial:x}"


# --- answering -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Status:
    issued: bool
    revoked_at: datetime | None = None
    reason: str = ""


def _status(ctx: _Context, serial: int) -> _Status:
    row = (
        Certificate.objects.filter(issuer_id=ctx.ca_id, serial=f"{serial:x}")
        .values_list("status", "revoked_at", "revocation_reason")
        .first()
    )
    if row is None:
        return _Status(issued=False)
    status, revoked_at, reason = row
    if status == Certificate.Status.REVOKED:
        return _Status(issued=True, revoked_at=revoked_at, reason=reason)
    return _Status(issued=True)


def _sign(
    ctx: _Context,
    *,
    algorithm: str,
    serial: int,
    status: _Status,
    nonce: bytes | None,
    now: datetime,
) -> Answer:
    this_update = now.replace(microsecond=0)
    next_update = this_update + timedelta(seconds=pki_settings().ocsp_validity_seconds)
    name_hash, key_hash = ctx.hashes[algorithm]
    cert_status: ocsp.OCSPCertStatus
    revoked_at: datetime | None
    reason: x509.ReasonFlags | None
    if not status.issued:
        cert_status, revoked_at, reason = (
            ocsp.OCSPCertStatus.REVOKED,
            NON_ISSUED_REVOCATION_TIME,
            x509.ReasonFlags.certificate_hold,
        )
    elif status.revoked_at is not None:
        cert_status, revoked_at, reason = (
            ocsp.OCSPCertStatus.REVOKED,
            status.revoked_at,
            REASON_FLAGS.get(status.reason),
        )
    else:
        cert_status, revoked_at, reason = ocsp.OCSPCertStatus.GOOD, None, None
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=serial,
            algorithm=HASHES[algorithm](),
            cert_status=cert_status,
            this_update=this_update,
            next_update=next_update,
            revocation_time=revoked_at,
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ctx.signer)
        .certificates([ctx.signer])
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    if not status.issued:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(EXTENDED_REVOKE, b"\x05\x00"), critical=False
        )
    response = builder.sign(ctx.signer_key(), hashes.SHA256())
    return Answer(
        body=response.public_bytes(serialization.Encoding.DER),
        this_update=this_update,
        next_update=next_update,
        cacheable=nonce is None and status.issued,
    )


def _ttl() -> int:
    return pki_settings().ocsp_validity_seconds // 2


@dataclass(frozen=True)
class Parsed:
    """The parts of a well-formed request that the responder uses."""

    algorithm: str
    name_hash: bytes
    key_hash: bytes
    serial: int
    nonce: bytes | None


def parse(data: bytes) -> Parsed | Answer:
    """Parse one DER OCSPRequest, or return the ``malformedRequest`` answer."""
    if not data or len(data) > MAX_REQUEST_BYTES:
        return Answer(MALFORMED)
    try:
        request = ocsp.load_der_ocsp_request(data)
        algorithm = request.hash_algorithm.name
        nonce = None
        for extension in request.extensions:
            if isinstance(extension.value, x509.OCSPNonce):
                nonce = extension.value.nonce
        parsed = Parsed(
            algorithm,
            request.issuer_name_hash,
            request.issuer_key_hash,
            request.serial_number,
            nonce,
        )
    except (ValueError, NotImplementedError, UnsupportedAlgorithm, x509.DuplicateExtension):
        # NotImplementedError: more than one CertID in the request (we answer one at a time).
        return Answer(MALFORMED)
    if algorithm not in HASHES or (nonce is not None and not 1 <= len(nonce) <= 32):
        return Answer(MALFORMED)
    return parsed


def cache_key_for(ctx: "_Context", parsed: Parsed) -> str | None:
    """The cache key of a pre-signable answer to ``parsed`` (no nonce, our issuer), or None."""
    if parsed.nonce is not None:
        return None
    if ctx.hashes[parsed.algorithm] != (parsed.name_hash, parsed.key_hash):
        return None
    return _cache_key(ctx, parsed.algorithm, parsed.serial)


def respond(data: bytes, now: datetime | None = None) -> Answer:
    """Answer one DER OCSPRequest. Never raises: every failure is an unsigned error response."""
    parsed = parse(data)
    if isinstance(parsed, Answer):
        return parsed
    try:
        ctx = context()
        if ctx is None:
            return Answer(TRY_LATER)
        if ctx.hashes[parsed.algorithm] != (parsed.name_hash, parsed.key_hash):
            return Answer(UNAUTHORIZED)
        store = _store()
        serial, nonce = parsed.serial, parsed.nonce
        key = _cache_key(ctx, parsed.algorithm, serial)
        if nonce is None and (hit := store.get(key)) is not None:
            try:
                return Answer.unpack(hit)
            except struct.error:
                logger.warning("corrupt OCSP cache entry %s; signing live", key)
        generation = store.generations(ctx, [serial])[0] if nonce is None else None
        status = _status(ctx, serial)
        answer = _sign(
            ctx,
            algorithm=parsed.algorithm,
            serial=serial,
            status=status,
            nonce=nonce,
            now=now or timezone.now(),
        )
        if answer.cacheable:
            store.put_unchanged(ctx, [_Write(serial, generation, key, answer.pack())], _ttl())
        return answer
    except Exception:
        logger.exception("OCSP responder failed")
        return Answer(INTERNAL_ERROR)


# --- keeping the cache right ---------------------------------------------------------------


def responses_forget(certificates: Iterable[Certificate]) -> None:
    """Drop every cached response for these certificates (all hash algorithms) at once, and
    make sure no signing that started before this call can cache its answer afterwards.
    Raises ``redis.RedisError`` when Redis is unavailable: the caller records it."""
    ctx = context()
    if ctx is None:
        return
    _store().forget(ctx, [c.serial_int for c in certificates if c.issuer_id == ctx.ca_id])


def presign(serials: list[str] | None = None, now: datetime | None = None) -> int:
    """Sign and cache the SHA-1 CertID response for every unexpired certificate of the client
    CA (or just ``serials``); returns how many were cached. Run by the signing worker after
    issuance and status changes, and on beat. Each batch reads the generations before the
    statuses, so an answer made stale by a concurrent status change is never cached."""
    store = _store()
    if isinstance(store, _NullStore):
        return 0
    ctx = context()
    if ctx is None:
        return 0
    store.client.ping()  # fail (and be retried) rather than cache nothing
    now = now or timezone.now()
    rows = Certificate.objects.filter(issuer_id=ctx.ca_id, not_after__gt=now)
    if serials is not None:
        rows = rows.filter(serial__in=serials)
    wanted = list(rows.values_list("serial", flat=True))
    cached = 0
    for start in range(0, len(wanted), PRESIGN_BATCH):
        batch = wanted[start : start + PRESIGN_BATCH]
        numbers = [int(serial, 16) for serial in batch]
        generations = dict(zip(numbers, store.generations(ctx, numbers), strict=True))
        writes = []
        for serial, status, revoked_at, reason in Certificate.objects.filter(
            issuer_id=ctx.ca_id, serial__in=batch
        ).values_list("serial", "status", "revoked_at", "revocation_reason"):
            number = int(serial, 16)
            answer = _sign(
                ctx,
                algorithm=PRESIGNED_HASH,
                serial=number,
                status=_Status(
                    issued=True,
                    revoked_at=revoked_at if status == Certificate.Status.REVOKED else None,
                    reason=reason,
                ),
                nonce=None,
                now=now,
            )
            key = _cache_key(ctx, PRESIGNED_HASH, number)
            writes.append(_Write(number, generations[number], key, answer.pack()))
        cached += store.put_unchanged(ctx, writes, _ttl())
    if serials is None:
        # Every answer was re-signed: whatever a failed invalidation left behind is gone.
        failures_resolve([PublishFailure.Stage.CACHE])
    return cached


def cached_status(certificate: Certificate) -> dict[str, Any] | None:
    """What the pre-signed OCSP response for ``certificate`` in the cache says (for the status
    pages), or None when there is none (no Redis, or not signed yet)."""
    ctx = context()
    if ctx is None or certificate.issuer_id != ctx.ca_id:
        return None
    value = _store().get(_cache_key(ctx, PRESIGNED_HASH, certificate.serial_int))
    if value is None:
        return None
    try:
        response = ocsp.load_der_ocsp_response(Answer.unpack(value).body)
    except (struct.error, ValueError):
        return None
    return {
        "status": response.certificate_status.name.lower(),
        "produced_at": response.produced_at_utc,
        "this_update": response.this_update_utc,
        "next_update": response.next_update_utc,
    }
