"""Portal sign-ins in the audit log: successes, failures and django-axes lockouts."""

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from kernel.audit import Actor, audit_record


def _where(request: HttpRequest | None) -> dict[str, Any]:
    """The path and the client's address as django-axes resolved it (nginx's X-Real-IP)."""
    if request is None:
        return {}
    return {"path": request.path[:200], "address": getattr(request, "axes_ip_address", None) or ""}


@receiver(user_logged_in, dispatch_uid="keyline_login_audit")
def login_audit(sender: type[User], request: HttpRequest, user: User, **kwargs: Any) -> None:
    audit_record(event="login.succeeded", actor=Actor.user(user), target=user, **_where(request))


@receiver(user_login_failed, dispatch_uid="keyline_login_failed_audit")
def login_failed_audit(
    sender: str, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    username = str(credentials.get("username", ""))[:150]
    audit_record(
        event="login.failed", actor=Actor.anonymous(username), username=username, **_where(request)
    )


@receiver(user_locked_out, dispatch_uid="keyline_lockout_audit")
def lockout_audit(
    sender: str,
    request: HttpRequest | None,
    username: str | None,
    ip_address: str | None,
    **kwargs: Any,
) -> None:
    audit_record(
        event="login.locked_out",
        actor=Actor.anonymous(str(username or "")[:150]),
        username=username or "",
        **(_where(request) | {"address": ip_address or ""}),
    )
