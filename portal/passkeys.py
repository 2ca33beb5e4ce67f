"""Passkeys (WebAuthn) as a second factor, beside the authenticator app: django-otp-webauthn's
four ceremony endpoints (mounted at /accounts/passkeys/ by keyline.urls, in its
``otp_webauthn`` namespace, which its template tags and scripts use), with the portal's rules
and audit records around them. The WebAuthn itself (options, challenges, signature and origin
checks, sign counts) is the package's and py_webauthn's; nothing here parses a credential.

The rules added here:

- A passkey is never a way in on its own: passwordless sign-in is off
  (``OTP_WEBAUTHN_ALLOW_PASSWORDLESS_LOGIN``), so every ceremony needs the password session.
- Adding a passkey needs a session verified by a factor already held (the package's own rule)
  and, for an officer, always: officers get their first factor with their account
  (``manage.py add_officer``), never by themselves. A firm user's first factor, passkey or
  app, verifies the session that set it up, as the authenticator app's set-up does.
- Every ceremony's outcome is audited with the acting user: ``second_factor.enrolled`` and
  ``second_factor.enrollment_failed``; ``officer.second_factor_verified`` / ``…_failed`` (or
  ``user.…`` for firm users), with ``method: "passkey"``.
- Errors answer in the package's JSON shape (``detail`` for its script to show), with the
  project's upper-case code: ``PASSKEY_`` and the package's code (``PASSKEY_INVALID_STATE``).
"""

import json
from typing import Any, cast

from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils.translation import gettext_lazy
from django.views.i18n import JavaScriptCatalog
from django_otp_webauthn import exceptions
from django_otp_webauthn.models import WebAuthnCredential
from django_otp_webauthn.views import (
    BeginCredentialAuthenticationView,
    BeginCredentialRegistrationView,
    CompleteCredentialAuthenticationView,
    CompleteCredentialRegistrationView,
)

from kernel.audit import Actor, audit_record
from kernel.errors import error_code
from portal.views import safe_next, verification_event

app_name = "otp_webauthn"


def passkey_name(user: User) -> str:
    """ "passkey 1", "passkey 2" …, the lowest number the user's passkeys leave free: the name
    the Security page lists it under."""
    taken = set(WebAuthnCredential.objects.filter(user=user).values_list("name", flat=True))
    number = 1
    while f"passkey {number}" in taken:
        number += 1
    return f"passkey {number}"


class _StateFirst:
    """A ceremony's second step, in one transaction with what it records: the new passkey or
    the sign count, and the audit record, land together or not at all. The ceremony's state
    leaves the session (saved at once) before that transaction starts, so a failed answer can
    never be replayed against it (the package's own care, which a rollback would undo)."""

    state: dict[str, Any]

    def get_state(self) -> dict[str, Any]:
        return self.state

    def post(self, *args: Any, **kwargs: Any) -> JsonResponse:
        self.state = super().get_state()  # type: ignore[misc]
        with transaction.atomic():
            response: JsonResponse = super().post(*args, **kwargs)  # type: ignore[misc]
            self.record(response)
        return response

    def record(self, response: JsonResponse) -> None:
        """What the step records beside the package's own rows, in the same transaction."""


class _Audited:
    """Every refusal in the project's code casing, audited under ``failure_event()`` (when it
    names one) with the signed-in user as the actor."""

    request: HttpRequest

    def failure_event(self, user: Any) -> str:
        return ""

    def failure_details(self) -> dict[str, Any]:
        return {"method": "passkey"}

    def handle_exception(self, exc: Exception) -> JsonResponse:
        if not isinstance(exc, exceptions.OTPWebAuthnApiError):
            raise exc
        code = error_code(f"PASSKEY_{exc.code}".upper())
        user = self.request.user
        if user.is_authenticated and (event := self.failure_event(user)):
            audit_record(
                event=event,
                actor=Actor.user(user),
                target=user,
                code=code,
                **self.failure_details(),
            )
        return JsonResponse({"detail": str(exc.detail), "code": code}, status=exc.status_code)


class OfficersNeedVerifiedSession(exceptions.OTPWebAuthnApiError):
    status_code = 403
    default_code = "officer_not_verified"
    default_detail = gettext_lazy(
        "Officers add a passkey in a session verified with their authenticator app: "
        "verify this session first."
    )


class _RegistrationRules:
    request: HttpRequest

    def failure_event(self, user: Any) -> str:
        return "second_factor.enrollment_failed"

    def check_can_register(self) -> None:
        user = self.request.user
        # TYPEHINT NOTE: django-otp's OTPMiddleware installs is_verified() on request.user.
        if user.is_staff and not user.is_verified():  # type: ignore[attr-defined]
            raise OfficersNeedVerifiedSession()


class RegistrationBegin(_RegistrationRules, _Audited, BeginCredentialRegistrationView):
    pass


class RegistrationComplete(
    _StateFirst, _RegistrationRules, _Audited, CompleteCredentialRegistrationView
):
    def record(self, response: JsonResponse) -> None:
        user = cast(User, self.request.user)  # the ceremony refuses anonymous users first
        device = WebAuthnCredential.objects.get(pk=json.loads(response.content)["id"], user=user)
        device.name = passkey_name(user)
        device.save(update_fields=["name"])
        audit_record(
            event="second_factor.enrolled",
            actor=Actor.user(user),
            target=user,
            method="passkey",
            device=device.pk,
            name=device.name,
        )


class AuthenticationBegin(_Audited, BeginCredentialAuthenticationView):
    pass


class AuthenticationComplete(_StateFirst, _Audited, CompleteCredentialAuthenticationView):
    def failure_event(self, user: Any) -> str:
        return verification_event(user, "failed")

    def complete_auth(self, device: Any) -> Any:
        done = super().complete_auth(device)
        user = cast(User, self.request.user)  # signed in: passwordless sign-in is off
        audit_record(
            event=verification_event(user, "verified"),
            actor=Actor.user(user),
            target=user,
            method="passkey",
            device=device.pk,
        )
        return done

    def get_success_url(self) -> str:
        # The same rule for ``next`` as the code form on the same page.
        return safe_next(self.request)


urlpatterns = [
    path("registration/begin/", RegistrationBegin.as_view(), name="credential-registration-begin"),
    path(
        "registration/complete/",
        RegistrationComplete.as_view(),
        name="credential-registration-complete",
    ),
    path(
        "authentication/begin/",
        AuthenticationBegin.as_view(),
        name="credential-authentication-begin",
    ),
    path(
        "authentication/complete/",
        AuthenticationComplete.as_view(),
        name="credential-authentication-complete",
    ),
    # The few strings the package's scripts show ("Verifying…"), in the page's language.
    path(
        "jsi18n/",
        JavaScriptCatalog.as_view(packages=["django_otp_webauthn"]),
        name="js-i18n-catalog",
    ),
]
