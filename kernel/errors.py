"""One error tree for every app. Each error carries a stable machine code and a message for
people; interfaces (API, views, commands) map the class onto an HTTP status or an exit code.

Codes are upper snake case everywhere (``RFQ_NOT_OPEN``, ``CERTIFICATE_REVOKED``): one casing
for trading, transport and authentication alike, checked when an error is built.
"""

import re
from typing import Any

_CODE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")


def error_code(code: str) -> str:
    """``code`` if it is a well-formed error code (upper snake case), else ``ValueError``: a
    misspelt code is a programming error, caught by the first test that raises it."""
    if _CODE.fullmatch(code) is None:
        raise ValueError(f"error codes are upper snake case, got {code!r}")
    return code


class DomainError(Exception):
    status_code = 400

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = error_code(code)
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Invalid(DomainError):
    status_code = 400


class Unauthenticated(DomainError):
    """Who asks is not established: a credential missing, unknown, expired or spent."""

    status_code = 401


class PermissionDenied(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409
