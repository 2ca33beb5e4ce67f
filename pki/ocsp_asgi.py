"""The production OCSP responder: an ASGI application for uvicorn (uvloop + httptools).

    uvicorn pki.ocsp_asgi:application --workers 2 --host 127.0.0.1 --port 8081 \\
        --http httptools --loop uvloop --no-access-log

nginx routes the OCSP URL's path here. The process needs the database, Redis and the OCSP
delegate key's passphrase (never the CA passphrase).

Hot path, on the event loop: parse the request, and answer a nonce-less request for one of our
certificates from this process's memory, else from Redis (``pki.ocsp`` pre-signed answers).
Everything else (nonces, misses, errors) runs ``pki.ocsp.respond`` in a thread.

The memory ("near") cache is only used while this process is subscribed to the invalidation
channel that every status change publishes to (``pki.ocsp._RedisStore.forget``), so a revoked
certificate's answer is dropped from every responder's memory as it is deleted from Redis:

- an answer fetched from Redis is kept only if no invalidation arrived while it was fetched;
- while the subscription is down (and until it is back), memory is cleared and not used;
- entries live at most ``NEAR_TTL`` seconds and never past their nextUpdate.
"""

import asyncio
import logging
import os
import struct
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "keyline.settings")
django.setup()

import redis.asyncio as aioredis  # noqa: E402 - after django.setup()
from django.db import close_old_connections  # noqa: E402

from kernel.nearcache import NearCache  # noqa: E402
from kernel.redis import async_redis_client, channel  # noqa: E402
from pki import ocsp  # noqa: E402
from pki.conf import pki_settings  # noqa: E402
from pki.ocsp_http import get_request_bytes, ocsp_path  # noqa: E402

logger = logging.getLogger(__name__)

# ASGI's callables (the spec's names): the connection scope, and the two message channels.
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

NEAR_TTL = 60.0  # seconds an answer stays in a process's memory
NEAR_MAX = 100_000  # entries; cleared when full
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ocsp-sign")


def _fresh(answer: ocsp.Answer) -> bool:
    """An answer may be served from memory only before its nextUpdate."""
    return answer.next_update is not None and answer.next_update > datetime.now(UTC)


# The one near-cache structure of the project (kernel.nearcache), driven here by an asyncio
# subscription instead of a thread.
near: NearCache[ocsp.Answer] = NearCache(ttl=NEAR_TTL, max_entries=NEAR_MAX)


def _client() -> aioredis.Redis | None:
    """The process's asyncio Redis client (kernel.redis), or None without Redis."""
    return async_redis_client()


async def _listen() -> None:
    """Keep the invalidation subscription up; memory is used only while it is."""
    url = pki_settings().redis_url
    while True:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel(ocsp.INVALIDATION_CHANNEL))
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        near.up()
                    elif message["type"] == "message":
                        near.forget(message["data"].decode().split("\n"))
        except asyncio.CancelledError:
            near.down()
            raise
        except Exception:
            logger.warning("OCSP invalidation subscription lost; memory cache off", exc_info=True)
        finally:
            near.down()
            await client.aclose()
        await asyncio.sleep(1)


def _respond_in_thread(data: bytes) -> ocsp.Answer:
    close_old_connections()  # what Django's request_started does
    return ocsp.respond(data)


async def answer(data: bytes) -> ocsp.Answer:
    parsed = ocsp.parse(data)
    if isinstance(parsed, ocsp.Answer):
        return parsed
    ctx = ocsp.context_fresh()
    key = ocsp.cache_key_for(ctx, parsed) if ctx is not None else None
    if key is not None:
        if (hit := near.get(key, _fresh)) is not None:
            return hit
        seen = near.generation()
        client = _client()
        if client is not None:
            try:
                value = await client.get(key)
            except Exception:
                logger.warning("OCSP cache read failed; signing live", exc_info=True)
                value = None
            if value is not None:
                try:
                    # TYPEHINT NOTE: bytes, not bytes | str as redis types replies (the client
                    # does not set decode_responses).
                    found = ocsp.Answer.unpack(value)  # type: ignore[arg-type]
                except struct.error:
                    found = None
                if found is not None:
                    near.put(key, found, seen)
                    return found
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, _respond_in_thread, data)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        more = message.get("more_body", False)
    return body


async def _send(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    listener: asyncio.Task[None] | None = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if pki_settings().redis_url:
                listener = asyncio.create_task(_listen())
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if listener is not None:
                listener.cancel()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    prefix = ocsp_path()
    if not (path == prefix or path.startswith(prefix + "/")):
        await _send(send, 404, [("Content-Length", "0")], b"")
        return
    if method == "POST":
        body = await _read_body(receive, ocsp.MAX_REQUEST_BYTES)
        result = await answer(body or b"")
    elif method == "GET":
        result = await answer(get_request_bytes(path[len(prefix) :]))
    else:
        await _send(send, 405, [("Allow", "GET, POST"), ("Content-Length", "0")], b"")
        return
    await _send(send, 200, result.headers(), result.body)
