"""The REST API (DRF). Every view authenticates by client certificate
(``pki.authentication``) and answers errors in one shape (``kernel.api``).

Each view does three things: validate the input (``rfq.serializers``), call a service or a
selector, render what the caller may see (``rfq.render``), once, from the objects it was given.
The schema's response shapes are the ones the render functions return (``rfq.shapes``).
"""

from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from kernel.api import ApiError, Error, ok
from pki.authentication import principal_of, recheck
from rfq import render, services, shapes
from rfq import serializers as s
from rfq.events import events_wait
from rfq.listing import rfq_list_answer
from rfq.models import Quote
from rfq.selectors import (
    instrument_list,
    quote_get,
    quote_list,
    rfq_get,
    trade_get,
    trade_list,
)
from rfq.throttling import CertificateRateThrottle


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {
        code: OpenApiResponse(Error)
        for code in (400, 401, 403, 404, 409, 429)
        if code in codes or code in (401, 429)
    }


def _input(serializer_class: type[Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise ApiError("INVALID_REQUEST", "Invalid input.", 400, {"fields": serializer.errors})
    return serializer.validated_data


def _caller(request: Request) -> services.Caller:
    principal = principal_of(request)
    return services.Caller(principal.participant, principal.serial)


# Methods whose body is parsed before the handler runs (Api.initial).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Api(APIView):
    """Every endpoint of the API. A body is parsed before the handler runs, also where the
    handler reads none, so a malformed or hostile body (``MALFORMED_REQUEST``,
    ``JSON_TOO_DEEP``) is refused alike everywhere, and before anything is written.

    Each endpoint names its rate-limit scope (``throttle_scope``, ``throttle_scopes`` per
    method); the one throttle class keys it by the caller's certificate."""

    throttle_classes = [CertificateRateThrottle]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """After authentication and throttling (a stranger's body is never read), before the
        handler: parsing is what refuses the body."""
        super().initial(request, *args, **kwargs)
        # Only where the method has a handler: otherwise the answer is 405, whatever the body.
        if request.method in BODY_METHODS and hasattr(self, request.method.lower()):
            _ = request.data


class NotFoundApi(APIView):
    """Any other path under ``/api/``: the API's 404 in its JSON shape, not Django's HTML page.
    Nothing is asked of the caller first; that a path does not exist is no secret."""

    authentication_classes = []
    permission_classes = []
    throttle_classes = []
    schema = None  # not an endpoint of the contract

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Every method, before anything else: there is nothing here to authenticate for."""
        raise NotFound("No such endpoint (every path ends with a slash; see /api/v1/schema/).")


class InstrumentListApi(Api):
    throttle_scope = "read"

    @extend_schema(responses={200: shapes.InstrumentList, **_errors()}, tags=["reference data"])
    def get(self, request: Request) -> Response:
        """Tradable instruments (active and not expired)."""
        rows = instrument_list(timezone.now())
        return ok(request, render.instruments_render(rows))


class RfqListCreateApi(Api):
    throttle_scope = "read"
    throttle_scopes = {"POST": "rfq_create"}

    @extend_schema(
        operation_id="rfqs_list",
        parameters=[s.RfqListIn],
        responses={200: shapes.RfqPage, **_errors(400)},
        tags=["rfqs"],
    )
    def get(self, request: Request) -> Response:
        """RFQs you can see, newest first: your firm's (as a requester) or those addressed to
        your firm (as a liquidity provider)."""
        params = _input(s.RfqListIn, request.query_params)
        answer = rfq_list_answer(
            _caller(request).viewer,
            now=timezone.now(),
            state=params.get("state"),
            role=params.get("role"),
            cursor=params.get("cursor"),
            limit=params["limit"],
        )
        return ok(request, answer)

    @extend_schema(
        request=s.RfqCreateIn,
        responses={201: shapes.Rfq, 200: shapes.Rfq, **_errors(400, 403, 409)},
        tags=["rfqs"],
    )
    def post(self, request: Request) -> Response:
        """Open an RFQ. Replaying a ``client_rfq_id`` with the same body returns the original
        (200); with a different body, 409 DUPLICATE_CLIENT_ID."""
        data = _input(s.RfqCreateIn, request.data)
        caller = _caller(request)
        rfq, created = services.rfq_create(
            caller=caller,
            legs=[services.LegIn(**leg) for leg in data["legs"]],
            quantity=data["quantity"],
            counterparties=data["counterparties"],
            anonymous=data["anonymous"],
            expires_in=data.get("expires_in"),
            client_rfq_id=data["client_rfq_id"],
        )
        return ok(
            request, render.rfq_render(rfq, caller.viewer, timezone.now()), 201 if created else 200
        )


class RfqDetailApi(Api):
    throttle_scope = "read"

    @extend_schema(responses={200: shapes.Rfq, **_errors(404)}, tags=["rfqs"])
    def get(self, request: Request, rfq_id: str) -> Response:
        viewer = _caller(request).viewer
        rfq = rfq_get(viewer, rfq_id, details=True)
        return ok(request, render.rfq_render(rfq, viewer, timezone.now()))


class RfqCancelApi(Api):
    throttle_scope = "cancel"

    @extend_schema(
        request=None, responses={200: shapes.Rfq, **_errors(400, 403, 404, 409)}, tags=["rfqs"]
    )
    def post(self, request: Request, rfq_id: str) -> Response:
        """Cancel an open RFQ of your firm; its active quotes are cancelled with it."""
        caller = _caller(request)
        rfq = services.rfq_cancel(caller=caller, rfq_id=rfq_id)
        return ok(request, render.rfq_render(rfq, caller.viewer, timezone.now()))


def _quote_in(data: dict[str, Any]) -> services.QuoteIn:
    legs = data.get("legs")
    return services.QuoteIn(
        bid_price=data["bid_price"],
        bid_size=data["bid_size"],
        ask_price=data["ask_price"],
        ask_size=data["ask_size"],
        legs=None if legs is None else tuple(services.QuoteLegIn(**leg) for leg in legs),
        expires_in=data.get("expires_in"),
        client_quote_id=data["client_quote_id"],
    )


def _quote_response(
    request: Request, caller: services.Caller, quote: Quote, status: int = 200
) -> Response:
    """A quote (loaded with details) as the caller sees it."""
    return ok(request, render.quote_render(quote, caller.viewer, timezone.now()), status)


class RfqQuotesApi(Api):
    throttle_scope = "read"
    throttle_scopes = {"POST": "quote"}

    @extend_schema(
        parameters=[s.PageIn],
        responses={200: shapes.QuotePage, **_errors(400, 404)},
        tags=["quotes"],
    )
    def get(self, request: Request, rfq_id: str) -> Response:
        """Quotes on an RFQ: all of them for the requester's firm, your own for a maker."""
        params = _input(s.PageIn, request.query_params)
        viewer = _caller(request).viewer
        page = quote_list(viewer, rfq_id, cursor=params.get("cursor"), limit=params["limit"])
        return ok(request, render.quote_page_render(page, viewer, timezone.now()))

    @extend_schema(
        request=s.QuoteIn,
        responses={201: shapes.Quote, 200: shapes.Quote, **_errors(400, 403, 404, 409)},
        tags=["quotes"],
    )
    def post(self, request: Request, rfq_id: str) -> Response:
        """Quote an RFQ addressed to your firm: a bid, an ask or both, with leg prices for a
        multi-leg RFQ (package = Σ ±ratio x leg price; + for buy legs)."""
        data = _input(s.QuoteIn, request.data)
        caller = _caller(request)
        quote, created = services.quote_create(caller=caller, rfq_id=rfq_id, data=_quote_in(data))
        return _quote_response(request, caller, quote, 201 if created else 200)


class RfqAcceptApi(Api):
    throttle_scope = "accept"

    @extend_schema(
        request=s.AcceptIn,
        responses={201: shapes.Trade, **_errors(400, 403, 404, 409)},
        tags=["rfqs"],
    )
    def post(self, request: Request, rfq_id: str) -> Response:
        """Take one active quote. Exactly one accept per RFQ succeeds; the others get 409."""
        data = _input(s.AcceptIn, request.data)
        caller = _caller(request)
        trade = services.rfq_accept(
            caller=caller,
            rfq_id=rfq_id,
            quote_id=data["quote_id"],
            side=data["side"],
            quantity=data.get("quantity"),
            limit_price=data.get("limit_price"),
        )
        return ok(request, render.trade_render(trade, caller.viewer), 201)


class QuoteDetailApi(Api):
    throttle_scope = "read"

    @extend_schema(responses={200: shapes.Quote, **_errors(404)}, tags=["quotes"])
    def get(self, request: Request, quote_id: str) -> Response:
        caller = _caller(request)
        return _quote_response(request, caller, quote_get(caller.viewer, quote_id, details=True))


class QuoteReplaceApi(Api):
    throttle_scope = "quote"

    @extend_schema(
        request=s.QuoteIn,
        responses={201: shapes.Quote, 200: shapes.Quote, **_errors(400, 403, 404, 409)},
        tags=["quotes"],
    )
    def post(self, request: Request, quote_id: str) -> Response:
        """Replace an active quote: the answer is the new quote; the old one is ``replaced``."""
        data = _input(s.QuoteIn, request.data)
        caller = _caller(request)
        quote, created = services.quote_replace(
            caller=caller, quote_id=quote_id, data=_quote_in(data)
        )
        return _quote_response(request, caller, quote, 201 if created else 200)


class QuoteCancelApi(Api):
    throttle_scope = "quote"

    @extend_schema(
        request=None, responses={200: shapes.Quote, **_errors(400, 403, 404, 409)}, tags=["quotes"]
    )
    def post(self, request: Request, quote_id: str) -> Response:
        caller = _caller(request)
        return _quote_response(
            request, caller, services.quote_cancel(caller=caller, quote_id=quote_id)
        )


class QuoteCancelAllApi(Api):
    throttle_scope = "quote"

    @extend_schema(
        request=s.CancelAllIn,
        responses={200: shapes.CancelAll, **_errors(400, 403, 404)},
        tags=["quotes"],
    )
    def post(self, request: Request) -> Response:
        """Cancel every active quote of your firm, or only those on ``rfq_id``."""
        data = _input(s.CancelAllIn, request.data)
        caller = _caller(request)
        quotes = services.quote_cancel_all(caller=caller, rfq_id=data.get("rfq_id"))
        return ok(request, render.cancelled_render(quotes))


class TradeListApi(Api):
    throttle_scope = "read"

    @extend_schema(
        operation_id="trades_list",
        parameters=[s.PageIn],
        responses={200: shapes.TradePage, **_errors(400)},
        tags=["trades"],
    )
    def get(self, request: Request) -> Response:
        """Your firm's trades on your side, newest first."""
        params = _input(s.PageIn, request.query_params)
        viewer = _caller(request).viewer
        page = trade_list(viewer, cursor=params.get("cursor"), limit=params["limit"])
        return ok(request, render.trade_page_render(page, viewer))


class TradeDetailApi(Api):
    throttle_scope = "read"

    @extend_schema(responses={200: shapes.Trade, **_errors(404)}, tags=["trades"])
    def get(self, request: Request, trade_id: str) -> Response:
        viewer = _caller(request).viewer
        return ok(request, render.trade_render(trade_get(viewer, trade_id), viewer))


class EventsApi(Api):
    throttle_scope = "read"

    @extend_schema(
        parameters=[s.EventsIn],
        responses={200: shapes.Events, **_errors(400)},
        tags=["events"],
    )
    def get(self, request: Request) -> Response:
        """Your desk's events after ``since``, in commit order. With ``wait`` (seconds, at most
        25) the call holds until the first event arrives (long-poll). Resume with the
        ``next_since`` of the previous answer; events are kept, so nothing is missed."""
        params = _input(s.EventsIn, request.query_params)
        caller = _caller(request)
        wait = min(params["wait"], settings.KEYLINE_RFQ["EVENTS_MAX_WAIT"])
        events = events_wait(caller.viewer, since=params["since"], wait=wait, limit=params["limit"])
        if wait:
            # The wait may have outlived the certificate (or the firm): ask again before
            # handing over what arrived meanwhile.
            recheck(request)
        return ok(request, render.events_render(events, params["since"]))


class WhoAmIView(Api):
    """``GET /api/v1/whoami/``: who the platform thinks the caller is. The first call every
    integrator makes."""

    throttle_scope = "read"

    @extend_schema(responses={200: shapes.WhoAmI, **_errors()}, tags=["identity"])
    def get(self, request: Request) -> Response:
        return ok(request, render.whoami_render(principal_of(request), timezone.now()))
