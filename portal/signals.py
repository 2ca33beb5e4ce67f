"""Portal sign-ins in the audit log: successes, failures and django-axes lockouts."""

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from kernel.audit import Actor, audit_record


def _where(request) -> dict:
    """The path and the client's address as django-axes resolved it (nginx's X-Real-IP)."""
    if request is None:
        return {}
    return {"path": request.path[:200], "address": getattr(request, "axes_ip_address", None) or ""}


@receiver(user_logged_in, dispatch_uid="keyline_login_audit")
def login_audit(sender, request, user, **kwargs) -> None:
    audit_record(event="login.succeeded", actor=Actor.user(user), target=user, **_where(request))


@receiver(user_login_failed, dispatch_uid="keyline_login_failed_audit")
def login_failed_audit(sender, credentials, request=None, **kwargs) -> None:
    username = str(credentials.get("username", ""))[:150]
    audit_record(
        event="login.failed", actor=Actor.anonymous(username), username=username, **_where(request)
    )


@receiver(user_locked_out, dispatch_uid="keyline_lockout_audit")
def lockout_audit(sender, request, username, ip_address, **kwargs) -> None:
    audit_record(
        event="login.locked_out",
        actor=Actor.anonymous(str(username or "")[:150]),
        username=username or "",
        **(_where(request) | {"address": ip_address or ""}),
    )
