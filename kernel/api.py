"""One JSON error shape for the whole API: ``{code, message, request_id, details}``.

``request_id`` is nginx's ``$request_id`` (forwarded as ``X-Request-ID``) or, without nginx, a
fresh one; it is echoed in the ``X-Request-ID`` response header so a caller can quote it.
"""

import uuid
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from typing_extensions import TypedDict

from kernel.errors import DomainError, error_code

REQUEST_ID_HEADER = "X-Request-ID"
# The attribute the id is kept under on the request, so every caller in one request agrees.
_REQUEST_ID_ATTR = "_keyline_request_id"


def request_id(request: HttpRequest | Request) -> str:
    rid: str | None = getattr(request, _REQUEST_ID_ATTR, None)
    if rid is None:
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        rid = supplied if supplied.isalnum() and len(supplied) <= 64 else uuid.uuid4().hex
        setattr(request, _REQUEST_ID_ATTR, rid)
    return rid


class ApiError(exceptions.APIException):
    """A refusal with a stable machine code (and the HTTP status it comes with)."""

    def __init__(
        self, code: str, message: str, status_code: int, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, code)
        self.status_code = status_code
        self.error_code = error_code(code)
        self.details = details or {}


class Error(TypedDict):
    """Every refusal of the API (a shape of :mod:`kernel.shapes`)."""

    code: str
    message: str
    request_id: str
    details: dict[str, Any]


def error_body(
    request: HttpRequest | Request, code: str, message: str, details: dict[str, Any] | None = None
) -> Error:
    return {
        "code": error_code(code),
        "message": message,
        "request_id": request_id(request),
        "details": details or {},
    }


_DRF_CODES = {
    exceptions.NotAuthenticated: "NOT_AUTHENTICATED",
    exceptions.AuthenticationFailed: "AUTHENTICATION_FAILED",
    exceptions.PermissionDenied: "PERMISSION_DENIED",
    exceptions.NotFound: "NOT_FOUND",
    exceptions.MethodNotAllowed: "METHOD_NOT_ALLOWED",
    exceptions.NotAcceptable: "NOT_ACCEPTABLE",
    exceptions.UnsupportedMediaType: "UNSUPPORTED_MEDIA_TYPE",
    exceptions.ParseError: "MALFORMED_REQUEST",
    exceptions.ValidationError: "INVALID",
    exceptions.Throttled: "RATE_LIMITED",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # Imported here: rest_framework.views loads the authentication classes, which import us.
    from rest_framework.views import exception_handler as drf_exception_handler

    request = context["request"]
    if isinstance(exc, DomainError):
        exc = ApiError(exc.code, exc.message, exc.status_code, exc.details)
    if isinstance(exc, Http404):
        exc = ApiError("NOT_FOUND", "Not found.", status.HTTP_404_NOT_FOUND)
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)  # as DRF's handler does, so it has .detail
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        # None is a bug: Django's 500 handling (and logging) applies. DRF answers nothing else
        # once Http404 and Django's PermissionDenied are converted above.
        return response
    if isinstance(exc, ApiError):
        body = error_body(request, exc.error_code, str(exc.detail), exc.details)
    else:
        code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "ERROR")
        details = {"fields": exc.detail} if isinstance(exc, exceptions.ValidationError) else {}
        message = "Invalid input." if details else str(exc.detail)
        body = error_body(request, code, message, details)
    response.data = body
    response[REQUEST_ID_HEADER] = body["request_id"]
    return response


def ok(
    request: HttpRequest | Request, data: Mapping[str, object], status_code: int = 200
) -> Response:
    """A successful answer: ``data`` (a shape's render) with the request id in its header."""
    response = Response(data, status=status_code)
    response[REQUEST_ID_HEADER] = request_id(request)
    return response
