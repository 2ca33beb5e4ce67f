"""One JSON error shape for the whole API: ``{code, message, request_id, details}``.

``request_id`` is nginx's ``$request_id`` (forwarded as ``X-Request-ID``) or, without nginx, a
fresh one; it is echoed in the ``X-Request-ID`` response header so a caller can quote it.
"""

import uuid

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from kernel.errors import DomainError

REQUEST_ID_HEADER = "X-Request-ID"


def request_id(request) -> str:
    rid = getattr(request, "_keyline_request_id", None)
    if rid is None:
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        rid = supplied if supplied.isalnum() and len(supplied) <= 64 else uuid.uuid4().hex
        request._keyline_request_id = rid
    return rid


class ApiError(exceptions.APIException):
    """A refusal with a stable machine code (and the HTTP status it comes with)."""

    def __init__(self, code: str, message: str, status_code: int, details: dict | None = None):
        super().__init__(message, code)
        self.status_code = status_code
        self.error_code = code
        self.details = details or {}


def error_body(request, code: str, message: str, details: dict | None = None) -> dict:
    return {
        "code": code,
        "message": message,
        "request_id": request_id(request),
        "details": details or {},
    }


_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "malformed_request",
    exceptions.ValidationError: "invalid",
    exceptions.Throttled: "rate_limited",
}


def exception_handler(exc, context):
    # Imported here: rest_framework.views loads the authentication classes, which import us.
    from rest_framework.views import exception_handler as drf_exception_handler

    request = context["request"]
    if isinstance(exc, DomainError):
        exc = ApiError(exc.code, exc.message, exc.status_code, exc.details)
    if isinstance(exc, Http404):
        exc = ApiError("not_found", "Not found.", status.HTTP_404_NOT_FOUND)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a bug: Django's 500 handling (and logging) applies
    if isinstance(exc, ApiError):
        body = error_body(request, exc.error_code, str(exc.detail), exc.details)
    else:
        code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
        details = {"fields": exc.detail} if isinstance(exc, exceptions.ValidationError) else {}
        message = "Invalid input." if details else str(exc.detail)
        body = error_body(request, code, message, details)
    response.data = body
    response[REQUEST_ID_HEADER] = body["request_id"]
    return response


def ok(request, data: dict, status_code: int = 200) -> Response:
    response = Response(data, status=status_code)
    response[REQUEST_ID_HEADER] = request_id(request)
    return response
