"""One error tree for every app. Each error carries a stable machine code and a message for
people; interfaces (API, views, commands) map the class onto an HTTP status or an exit code."""

from typing import Any


class DomainError(Exception):
    status_code = 400

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Invalid(DomainError):
    status_code = 400


class PermissionDenied(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409
