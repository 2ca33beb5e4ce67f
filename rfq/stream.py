"""``GET /api/v1/events/stream/``: the event feed as Server-Sent Events, on top of the
long-poll (same events, same order, same visibility).

Each event is ``id: <seq>``, ``event: <type>``, ``data: <json>``. A browser's EventSource (or
any SSE client) reconnects by itself with ``Last-Event-ID``, so the stream ends after
``KEYLINE_EVENTS_STREAM_SECONDS`` (300) on purpose: a stream holds a gunicorn thread, and a
bounded life hands it back to the pool.

A stream is one request, so the trust decision is taken again every ``CHECK_INTERVAL``
seconds: a certificate revoked (or a participant or firm disabled) mid-stream gets an
``event: error`` frame with the refusal code and the stream ends. The comment line sent when
there is nothing to say keeps nginx's ``proxy_read_timeout`` and idle proxies happy;
``X-Accel-Buffering: no`` makes nginx pass each event on as it comes.
"""

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
import redis
from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from kernel.api import ApiError, Error, error_body, request_id
from kernel.redis import redis_client
from kernel.renderers import OrjsonRenderer
from pki.authentication import principal_of, recheck
from rfq.events import events_wait
from rfq.render import event_render
from rfq.selectors import Viewer
from rfq.throttling import CertificateRateThrottle

CHECK_INTERVAL = 5.0


class EventStreamRenderer(BaseRenderer):
    """Lets ``Accept: text/event-stream`` through content negotiation; the events themselves
    are streamed by the view. A refusal (401, 429, ...) is still the JSON error body."""

    media_type = "text/event-stream"
    format = "sse"
    charset = None

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return OrjsonRenderer().render(data)


def _since(request: Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query_params.get("since") or "0"
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError("INVALID_REQUEST", "since / Last-Event-ID must be an event seq.", 400)
    return int(raw)


def _frames(request: Request, viewer: Viewer, since: int, seconds: float) -> Iterator[bytes]:
    yield b"retry: 1000\n\n"
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            # The one re-check of the API (the long-poll's too): refused and audited alike.
            recheck(request)
        except ApiError as refused:
            refusal = error_body(request, refused.error_code, str(refused.detail), refused.details)
            yield b"event: error\ndata: " + orjson.dumps(refusal) + b"\n\n"
            return
        events = events_wait(
            viewer,
            since=since,
            wait=min(CHECK_INTERVAL, remaining),
            limit=settings.KEYLINE_RFQ["EVENTS_LIMIT_DEFAULT"],
        )
        if not events:
            yield b": keep-alive\n\n"
            continue
        for event in events:
            body = orjson.dumps(event_render(event))
            yield f"id: {event.seq}\nevent: {event.type}\ndata: ".encode() + body + b"\n\n"
        since = events[-1].seq


class _Stream(StreamingHttpResponse):
    """Gives the certificate's stream slot back when the server closes the response (end,
    error or the client going away)."""

    def __init__(self, release: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release: Callable[[], None] | None = release

    def close(self) -> None:
        try:
            super().close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


def _stream_slot(serial: str) -> Callable[[], None]:
    """Take one of the certificate's ``EVENTS_STREAMS_PER_CERTIFICATE`` stream slots (429
    ``STREAM_LIMIT`` when none is free): a stream holds a thread of the shared event pool for
    minutes, so one certificate must not be able to take them all. The counter lives in Redis
    with a TTL (a process that dies cannot leak a slot for long); without Redis there is no
    cap. Returns the release function."""
    client = redis_client()
    if client is None:
        return lambda: None
    limit = settings.KEYLINE_RFQ["EVENTS_STREAMS_PER_CERTIFICATE"]
    key = f"keyline:sse:{serial}"
    try:
        pipe = client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, settings.KEYLINE_RFQ["EVENTS_STREAM_SECONDS"] + 60)
        count, _ = pipe.execute()
    except redis.RedisError:
        return lambda: None
    if count > limit:
        client.decr(key)
        raise ApiError(
            "STREAM_LIMIT",
            f"At most {limit} event streams per certificate; close one or use events/.",
            429,
        )

    def release() -> None:
        with contextlib.suppress(redis.RedisError):  # else the TTL frees it
            client.decr(key)

    return release


class EventStreamApi(APIView):
    throttle_classes = [CertificateRateThrottle]
    throttle_scope = "read"
    renderer_classes = [OrjsonRenderer, EventStreamRenderer]

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        # A refusal is a JSON error body, labelled as JSON, whatever the client accepted.
        if response.status_code >= 400 and not isinstance(response, StreamingHttpResponse):
            request.accepted_renderer = OrjsonRenderer()
            request.accepted_media_type = "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "since", {"type": "integer", "minimum": 0}, description="Start after this seq."
            ),
            OpenApiParameter(
                "Last-Event-ID",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Sent by SSE clients on reconnect; wins over since.",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR, description="Server-Sent Events, ending after 5 minutes."
            ),
            **{
                (code, "application/json"): OpenApiResponse(Error)
                for code in (400, 401, 403, 404, 429)
            },
        },
        tags=["events"],
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        """Your desk's events as a Server-Sent Events stream (reconnect with Last-Event-ID)."""

        since = _since(request)
        principal = principal_of(request)
        viewer = Viewer.of(principal.participant)
        release = _stream_slot(principal.serial)
        response = _Stream(
            release,
            _frames(
                request,
                viewer,
                since,
                settings.KEYLINE_RFQ["EVENTS_STREAM_SECONDS"],
            ),
            content_type="text/event-stream",
        )
        response["Cache-Control"] = "no-store"
        response["X-Accel-Buffering"] = "no"
        response["X-Request-ID"] = request_id(request)
        return response
