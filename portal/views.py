"""Portal pages. Each view validates a form, calls a service (portal.services), and renders.
State changes are POST only, CSRF-checked; after one, the officer or firm user lands back on
the page they came from, which says what happened (Django messages). A refused action shows
that same page again with what was refused, its machine code and its status (400/403/404/409);
a page that cannot be shown at all gets the error page, which links back to the user's desk."""

import csv
import functools
import json
import math
from base64 import b32encode
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.forms import Form
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_otp import login as otp_login
from django_otp import user_has_device
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from kernel.audit import Actor, audit_record, audit_tail
from kernel.errors import Conflict, DomainError, Invalid, NotFound, PermissionDenied
from kernel.models import AuditCheck, AuditHead, AuditRecord, Firm, Participant
from kernel.tasks import audit_verify_task
from pki.est import POLICY_FIELDS as EST_POLICY_FIELDS
from pki.est import policy_of as est_policy_of
from pki.health import health_check
from pki.models import Certificate, CertificateRequest, EnrollmentToken
from pki.selectors import ca_list_active
from pki.services import client_subject
from portal import forms, services
from portal.models import Application, Document, PortalAccount


class AuthenticatedHttpRequest(HttpRequest):
    """A request that :func:`officer_required` or :func:`firm_user_required` let through:
    its user is signed in."""

    user: User


P = ParamSpec("P")
R = TypeVar("R", bound=HttpRequest)
T = TypeVar("T", bound=HttpResponseBase)


ERROR_TITLES = {
    400: "That request could not be used",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed that way",
    409: "Not possible now",
}


def desk_url(request: HttpRequest) -> str:
    """Where this user works: the officers' desk, the firm's page, or the home page."""
    user = request.user
    if user.is_authenticated and user.is_staff:
        return reverse("portal:officer")
    if user.is_authenticated and hasattr(user, "portal"):
        return reverse("portal:firm")
    return reverse("portal:home")


def _error(request: HttpRequest, exc: DomainError) -> HttpResponse:
    return render(
        request,
        "portal/error.html",
        {
            "title": ERROR_TITLES.get(exc.status_code, "That did not work"),
            "code": exc.code,
            "message": exc.message,
            "details": exc.details,
            "back": desk_url(request),
        },
        status=exc.status_code,
    )


def _refusal(exc: DomainError) -> dict[str, Any]:
    """What a page shows above its content when the action asked from it was refused."""
    return {"code": exc.code, "message": exc.message, "status": exc.status_code}


def domain_errors(
    view: Callable[Concatenate[R, P], T],
) -> Callable[Concatenate[R, P], T | HttpResponse]:
    @functools.wraps(view)
    def wrapper(request: R, *args: P.args, **kwargs: P.kwargs) -> T | HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except DomainError as exc:
            return _error(request, exc)

    return wrapper


def officer_required(
    view: Callable[Concatenate[AuthenticatedHttpRequest, P], HttpResponseBase],
) -> Callable[Concatenate[HttpRequest, P], HttpResponseBase]:
    """Staff with a verified second factor. Anonymous: sign in; staff without the second
    factor: verify it; anyone else: 403."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponseBase:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not user.is_staff:
            return _error(
                request, PermissionDenied("OFFICER_REQUIRED", "This area is for officers.")
            )
        # TYPEHINT NOTE: django-otp's OTPMiddleware installs is_verified() on request.user.
        if not user.is_verified():  # type: ignore[attr-defined]
            return redirect(f"{reverse('portal:verify')}?next={request.get_full_path()}")
        return domain_errors(view)(cast(AuthenticatedHttpRequest, request), *args, **kwargs)

    return wrapper


def firm_user_required(
    view: Callable[Concatenate[AuthenticatedHttpRequest, P], HttpResponse],
) -> Callable[Concatenate[HttpRequest, P], HttpResponse]:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        # TYPEHINT NOTE: django-otp's OTPMiddleware installs is_verified() on request.user.
        if user.is_staff and not user.is_verified():  # type: ignore[attr-defined]
            return redirect(f"{reverse('portal:verify')}?next={request.get_full_path()}")
        return domain_errors(view)(cast(AuthenticatedHttpRequest, request), *args, **kwargs)

    return wrapper


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if (desk := desk_url(request)) != reverse("portal:home"):
        return redirect(desk)
    return render(request, "portal/home.html", {"cas": ca_list_active()})


# --- applicants ------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@domain_errors
def apply(request: HttpRequest) -> HttpResponse:
    form = forms.ApplicationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        application, token = services.application_submit(
            fields=form.cleaned_data, actor=Actor.anonymous("applicant")
        )
        return render(
            request,
            "portal/applied.html",
            {
                "firm": application.firm,
                "case_url": services.portal_url(reverse("portal:case", args=[token])),
            },
            status=201,
        )
    return render(request, "portal/apply.html", {"form": form}, status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
@domain_errors
def case(request: HttpRequest, token: str) -> HttpResponse:
    application = services.application_by_token(token)
    form = forms.CallbackCodeForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            challenge = services.callback_confirm(token=token, code=form.cleaned_data["code"])
            if challenge.confirmed_at:
                messages.success(request, "Thank you: the call-back is confirmed.")
                return redirect("portal:case", token=token)
            form.add_error("code", "That is not the code; check it with the officer.")
        status = 400
    pending = application.callbacks.filter(
        confirmed_at__isnull=True, expires_at__gt=timezone.now()
    ).exists()
    return render(
        request,
        "portal/case.html",
        {"application": application, "firm": application.firm, "form": form, "pending": pending},
        status=status,
    )


@require_http_methods(["GET", "POST"])
@domain_errors
def invite(request: HttpRequest, token: str) -> HttpResponse:
    invitation = services.invitation_get(token)
    form = forms.InvitationAcceptForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.invitation_accept(
            token=token,
            username=form.cleaned_data["username"],
            password=form.cleaned_data["password"],
        )
        messages.success(request, "Your account is ready: sign in.")
        return redirect("login")
    return render(
        request,
        "portal/invite.html",
        {"invitation": invitation, "form": form},
        status=400 if form.errors else 200,
    )


@require_GET
def csr_help(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/csr_help.html")


# --- second factor -----------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """Officers (always) and firm administrators (before they add traders or revoke) prove a
    second factor after the password: the code from their authenticator app (django-otp), or
    a passkey (django-otp-webauthn's script on this page; portal.passkeys checks it)."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    device = TOTPDevice.objects.filter(user=request.user, confirmed=True).first()
    passkeys = WebAuthnCredential.objects.filter(user=request.user, confirmed=True).exists()
    form = forms.TokenForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 400
        if device is None:
            form.add_error(
                None,
                "No authenticator app is set up for you"
                + (
                    ": use your passkey."
                    if passkeys
                    else ": officers ask an administrator; firm users set one up under Security."
                ),
            )
        elif form.is_valid():
            allowed, why = device.verify_is_allowed()
            if allowed and device.verify_token(form.cleaned_data["token"]):
                otp_login(request, device)
                audit_record(
                    event=verification_event(request.user, "verified"),
                    actor=Actor.user(request.user),
                    target=request.user,
                    method="authenticator_app",
                )
                return redirect(safe_next(request))
            audit_record(
                event=verification_event(request.user, "failed"),
                actor=Actor.user(request.user),
                target=request.user,
                method="authenticator_app",
            )
            if allowed:
                form.add_error("token", "That code is not valid: check it and try again.")
            else:
                form.add_error("token", _throttled(why))
    return render(
        request,
        "portal/verify.html",
        {"form": form, "device": device, "passkeys": passkeys},
        status=status,
    )


def verification_event(user: Any, outcome: str) -> str:
    """``officer.second_factor_verified`` for an officer, ``user.…`` for a firm user (and
    ``…_failed``), whichever factor was used."""
    return f"{'officer' if user.is_staff else 'user'}.second_factor_{outcome}"


def _throttled(why: dict[str, Any] | None) -> str:
    """django-otp's throttle after repeated wrong codes (OTP_TOTP_THROTTLE_FACTOR): the code is
    not even checked until the wait is over; say how long."""
    now = timezone.now()
    wait = max(1, math.ceil(((why or {}).get("locked_until", now) - now).total_seconds()))
    return (
        f"Too many wrong codes: wait {wait} second{pluralize(wait)}, then enter the current code."
    )


def safe_next(request: HttpRequest) -> str:
    """The ``next`` path if it is one of this site's ("//host" and "/\\host" are other sites
    to a browser), else the user's desk."""
    target = request.GET.get("next", "")
    if not target.startswith("/") or not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return desk_url(request)
    return target


def may_add_factor(user: Any) -> bool:
    """Adding a second factor needs a session verified by one already held. Without any, a
    firm user sets up the first, which then verifies the session; an officer's first comes
    with the account (``manage.py add_officer``), never from the officer."""
    if user.is_verified():
        return True
    return not user.is_staff and not user_has_device(user)


@require_http_methods(["GET", "POST"])
def security(request: HttpRequest) -> HttpResponse:
    """A signed-in user's second factors: the authenticator app (or, without one, setting one
    up: an unconfirmed TOTP device shown as an otpauth URI and its secret, confirmed by the
    first code it shows) and passkeys (listed, added with django-otp-webauthn's script,
    removed). See :func:`may_add_factor` for who may add one."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    user = request.user
    may_add = may_add_factor(user)
    confirmed = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    pending = None
    form = forms.TokenForm(request.POST or None)
    status = 200
    refusal: DomainError | None = None
    if confirmed is None and may_add:
        pending = TOTPDevice.objects.filter(user=user, confirmed=False).first()
        if pending is None:
            pending = TOTPDevice.objects.create(
                user=user, name="authenticator app", confirmed=False
            )
        if request.method == "POST":
            status = 400
            allowed, why = pending.verify_is_allowed()
            if not allowed:
                form.add_error("token", _throttled(why))
            elif form.is_valid() and pending.verify_token(form.cleaned_data["token"]):
                with transaction.atomic():
                    pending.confirmed = True
                    pending.save(update_fields=["confirmed"])
                    audit_record(
                        event="second_factor.enrolled",
                        actor=Actor.user(user),
                        target=user,
                        method="authenticator_app",
                        device=pending.pk,
                    )
                # TYPEHINT NOTE: django-otp's OTPMiddleware installs is_verified().
                if user.is_verified():  # type: ignore[attr-defined]
                    messages.success(request, "Your authenticator app is set up.")
                else:
                    otp_login(request, pending)
                    messages.success(
                        request, "Your authenticator app is set up, and this session is verified."
                    )
                return redirect(safe_next(request))
            if allowed and form.is_valid():
                form.add_error("token", "That code is not valid: check the app and try again.")
    elif request.method == "POST":
        if confirmed:
            refusal = Conflict("SECOND_FACTOR_PRESENT", "You already have an authenticator app.")
        elif user_has_device(user):
            refusal = PermissionDenied(
                "SECOND_FACTOR_VERIFY_FIRST",
                "Verify this session with the factor you hold before you add another.",
            )
        else:
            refusal = PermissionDenied(
                "SECOND_FACTOR_FROM_ADMINISTRATOR",
                "An officer's first factor comes with the account: ask the administrator who "
                "runs manage.py add_officer.",
            )
        status = refusal.status_code
    return render(
        request,
        "portal/security.html",
        {
            "confirmed": confirmed,
            "pending": pending,
            "secret": b32encode(pending.bin_key).decode() if pending else "",
            "form": form,
            "passkeys": WebAuthnCredential.objects.filter(user=user).order_by("created_at"),
            "may_add": may_add,
            "rp_id": settings.OTP_WEBAUTHN_RP_ID,
            # TYPEHINT NOTE: django-otp's OTPMiddleware installs is_verified() on request.user.
            "verified": user.is_verified(),  # type: ignore[attr-defined]
            "refusal": _refusal(refusal) if refusal else None,
        },
        status=status,
    )


@require_POST
def passkey_remove(request: HttpRequest, pk: int) -> HttpResponse:
    """Removes one of the user's passkeys, in a session verified with a second factor."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    user = request.user
    # TYPEHINT NOTE: django-otp's OTPMiddleware installs is_verified() on request.user.
    if not user.is_verified():  # type: ignore[attr-defined]
        return redirect(f"{reverse('portal:verify')}?next={request.get_full_path()}")
    device = WebAuthnCredential.objects.filter(user=user, pk=pk).first()
    if device is None:
        return _error(request, NotFound("PASSKEY_NOT_FOUND", "You hold no such passkey."))
    with transaction.atomic():
        audit_record(
            event="second_factor.removed",
            actor=Actor.user(user),
            target=user,
            method="passkey",
            device=device.pk,
            name=device.name,
        )
        device.delete()
    messages.success(request, f"Your {device.name} is removed: it can no longer verify you.")
    return redirect("portal:security")


def _second_factor_first(request: AuthenticatedHttpRequest) -> HttpResponse | None:
    """Firm administrators add traders and revoke only in a session verified with a second
    factor: without one yet, set it up; with one, verify it. None when the session may act."""
    # TYPEHINT NOTE: django-otp's OTPMiddleware installs is_verified() on request.user.
    if request.user.is_verified():  # type: ignore[attr-defined]
        return None
    back = f"?next={request.get_full_path()}"
    if user_has_device(request.user):
        return redirect(reverse("portal:verify") + back)
    messages.info(request, "Set up a second factor before you add traders or revoke certificates.")
    return redirect(reverse("portal:security") + back)


# --- officers ----------------------------------------------------------------------------------


@require_GET
@officer_required
def officer_dashboard(request: AuthenticatedHttpRequest) -> HttpResponse:
    now = timezone.now()
    query = request.GET.get("q", "").strip()[:100]
    results = None
    if query:
        results = {
            "firms": Firm.objects.filter(Q(legal_name__icontains=query) | Q(lei__iexact=query))[
                :20
            ],
            "participants": Participant.objects.select_related("firm").filter(
                trader_id__icontains=query
            )[:20],
            "certificates": Certificate.objects.select_related("participant__firm").filter(
                serial__startswith=query.lower().replace(":", "")
            )[:20],
        }
    applications = Application.objects.select_related("firm", "prepared_by").order_by(
        "-submitted_at"
    )
    context: dict[str, Any] = {
        "query": query,
        "results": results,
        "queues": {
            "Applied": applications.filter(firm__status=Firm.Status.APPLIED),
            "Under review": applications.filter(
                firm__status=Firm.Status.UNDER_REVIEW, prepared_at__isnull=True
            ),
            "Awaiting second officer": applications.filter(
                firm__status=Firm.Status.UNDER_REVIEW, prepared_at__isnull=False
            ),
        },
        "pending_csrs": CertificateRequest.objects.select_related("participant__firm")
        .filter(status=CertificateRequest.Status.SUBMITTED)
        .annotate(
            pending_for_participant=Count(
                "participant__certificate_requests",
                filter=Q(
                    participant__certificate_requests__status=CertificateRequest.Status.SUBMITTED
                ),
            )
        )
        .order_by("created_at")[:50],
        "expiring": Certificate.objects.live(now)
        .filter(kind=Certificate.Kind.CLIENT, not_after__lte=now + timedelta(days=30))
        .select_related("participant__firm")
        .order_by("not_after")[:50],
        "revocations": Certificate.objects.revoked()
        .select_related("participant__firm")
        .order_by("-revoked_at")[:10],
        "audit": AuditRecord.objects.order_by("-id")[:15],
        "firms": Firm.objects.filter(status=Firm.Status.APPROVED).annotate(n=Count("participants")),
    }

    report = health_check(now)
    context["health"] = {
        "status": "ok" if report.ok else "degraded",
        "crls": report.crls,
        "ocsp_until": report.ocsp_responder.not_after if report.ocsp_responder else None,
        "failures": len(report.publish_failures),
        "audit_unchained": report.audit_tail.count,
        "audit_lag": report.audit_lag,
    }
    return render(request, "portal/officer/dashboard.html", context)


@require_GET
@officer_required
def officer_case(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _case_page(request, pk)


def _case_page(
    request: AuthenticatedHttpRequest,
    pk: int,
    refusal: DomainError | None = None,
    decision_form: Form | None = None,
) -> HttpResponse:
    """The case page; after a refused action on it, with the refusal and its status."""
    application = (
        Application.objects.select_related("firm", "prepared_by", "decided_by")
        .filter(pk=pk)
        .first()
    )
    if application is None:
        raise NotFound("APPLICATION_NOT_FOUND", "No such application.")
    took_part = services.took_part(application, request.user)
    return render(
        request,
        "portal/officer/case.html",
        {
            "application": application,
            "firm": application.firm,
            "checks": application.checks.select_related("performed_by"),
            "documents": application.documents.select_related("uploaded_by"),
            "callbacks": application.callbacks.select_related("created_by"),
            "check_form": forms.CheckForm(),
            "document_form": forms.DocumentForm(),
            "callback_form": forms.CallbackStartForm(),
            "decision_form": decision_form or forms.DecisionForm(),
            "code": request.session.pop(f"callback_code_{pk}", None),
            "can_decide": application.prepared_at is not None
            and application.decided_at is None
            and not took_part,
            # Once the case is prepared, an upload would make an officer who has not taken
            # part yet one who has: they could no longer decide it. Not offered to them.
            "can_upload": application.decided_at is None
            and (application.prepared_at is None or took_part),
            "refusal": _refusal(refusal) if refusal else None,
        },
        status=refusal.status_code if refusal else 200,
    )


def case_action(
    view: Callable[[AuthenticatedHttpRequest, int], HttpResponse],
) -> Callable[[AuthenticatedHttpRequest, int], HttpResponse]:
    """An action on a case: refused, it shows the case page again with the refusal."""

    @functools.wraps(view)
    def wrapper(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
        try:
            return view(request, pk)
        except DomainError as exc:
            # A case that does not exist cannot be shown again: _case_page raises its 404.
            return _case_page(request, pk, refusal=exc)

    return wrapper


def _cleaned(form: Form, code: str = "INVALID_FORM") -> dict[str, Any]:
    """A bound form's cleaned data, or a 400 with ``code`` naming the first problem."""
    if not form.is_valid():
        first = next(iter(form.errors.values()))[0]
        raise Invalid(code, str(first), {"fields": form.errors.get_json_data()})
    return form.cleaned_data


def _posted(form_class: type[Form], request: HttpRequest) -> dict[str, Any]:
    """The POSTed form's cleaned data, or 400 ``INVALID_FORM`` naming the first problem."""
    return _cleaned(form_class(request.POST, request.FILES))


@require_POST
@officer_required
@case_action
def officer_check(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    data = _posted(forms.CheckForm, request)
    services.check_record(application_id=pk, user=request.user, **data)
    messages.success(request, "Check recorded.")
    return redirect("portal:officer-case", pk=pk)


@require_POST
@officer_required
@case_action
def officer_document(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    data = _posted(forms.DocumentForm, request)
    services.document_add(
        application_id=pk,
        title=data["title"],
        upload=data["file"],
        user=request.user,
    )
    messages.success(request, "Document kept with the case.")
    return redirect("portal:officer-case", pk=pk)


@require_GET
@officer_required
def officer_document_download(request: AuthenticatedHttpRequest, pk: int, doc: int) -> HttpResponse:

    document = Document.objects.filter(pk=doc, application_id=pk).first()
    if document is None:
        raise NotFound("DOCUMENT_NOT_FOUND", "No such document.")
    response = HttpResponse(services.document_read(document), content_type=document.content_type)
    response["Content-Disposition"] = f'attachment; filename="document-{document.pk}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_POST
@officer_required
@case_action
def officer_callback(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    data = _posted(forms.CallbackStartForm, request)
    code = services.callback_start(application_id=pk, user=request.user, **data)
    request.session[f"callback_code_{pk}"] = code  # shown once, on the next page
    return redirect("portal:officer-case", pk=pk)


@require_POST
@officer_required
@case_action
def officer_prepare(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    services.application_prepare(application_id=pk, user=request.user)
    messages.success(request, "Submitted for a second officer's decision.")
    return redirect("portal:officer-case", pk=pk)


@require_POST
@officer_required
def officer_decide(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    form = forms.DecisionForm(request.POST)
    try:
        data = _cleaned(form)
        application = services.application_decide(
            application_id=pk,
            approve=data["decision"] == "approve",
            reason=data["reason"],
            user=request.user,
        )
    except DomainError as exc:
        return _case_page(request, pk, refusal=exc, decision_form=form)
    firm = application.firm
    if firm.status == Firm.Status.APPROVED:
        messages.success(
            request, f"Approved: {firm.legal_name} is active and its administrator is invited."
        )
    else:
        messages.success(request, f"Rejected: {firm.legal_name}'s application is refused.")
    return redirect("portal:officer-case", pk=pk)


@require_http_methods(["GET", "POST"])
@officer_required
def officer_firm_suspend(
    request: AuthenticatedHttpRequest, firm_id: int, action: str
) -> HttpResponse:
    """Suspend or offboard, confirmed: the page lists what will happen (the certificates
    revoked, the accounts disabled, the RFQs and quotes cancelled) and the officer types the
    firm's legal name. A name that does not match is refused and changes nothing."""
    if action not in ("suspend", "offboard"):
        raise NotFound("NOT_FOUND", "No such action.")
    preview = services.firm_stop_preview(firm_id=firm_id, user=request.user)
    form = forms.FirmStopForm(request.POST or None)
    refusal: DomainError | None = None
    if request.method == "POST":
        try:
            data = _cleaned(form)
            if data["confirm_name"].strip() != preview.firm.legal_name:
                raise Invalid(
                    "FIRM_NAME_MISMATCH",
                    f"The name typed is not the firm's legal name, {preview.firm.legal_name}.",
                )
            firm = services.firm_suspend(
                firm_id=firm_id,
                offboard=action == "offboard",
                reason=data["reason"],
                user=request.user,
            )
        except DomainError as exc:
            refusal = exc
        else:
            done = "offboarded" if action == "offboard" else "suspended"
            revoked = len(preview.certificates)
            messages.success(
                request,
                f"{firm.legal_name} is {done}: {revoked} certificate{pluralize(revoked)} "
                f"revoked, its users signed out for good, its open RFQs and quotes cancelled.",
            )
            return redirect("portal:officer")
    return render(
        request,
        "portal/officer/firm_stop.html",
        {
            "action": action,
            "preview": preview,
            "firm": preview.firm,
            "form": form,
            "refusal": _refusal(refusal) if refusal else None,
        },
        status=refusal.status_code if refusal else 200,
    )


def firm_audit_filter(firm: Firm) -> Q:
    """The audit records about a firm: the firm itself, its onboarding case, its participants,
    their certificate requests and certificates (each record names one target)."""
    targets = {
        "kernel.firm": [firm.pk],
        "portal.application": list(
            Application.objects.filter(firm=firm).values_list("pk", flat=True)
        ),
        "kernel.participant": list(firm.participants.values_list("pk", flat=True)),
        "pki.certificaterequest": list(
            CertificateRequest.objects.filter(participant__firm=firm).values_list("pk", flat=True)
        ),
        "pki.certificate": list(
            Certificate.objects.filter(participant__firm=firm).values_list("pk", flat=True)
        ),
    }
    found = Q(pk__in=[])
    for target_type, ids in targets.items():
        if ids:
            found |= Q(target_type=target_type, target_id__in=[str(i) for i in ids])
    return found


@require_GET
@officer_required
def officer_firm(request: AuthenticatedHttpRequest, firm_id: int) -> HttpResponse:
    """Everything about one firm on one page: status, LEI, role, participants, every
    certificate with its state and expiry, the onboarding case and its evidence, and the
    firm's audit trail."""
    firm = Firm.objects.filter(pk=firm_id).first()
    if firm is None:
        raise NotFound("FIRM_NOT_FOUND", "No such firm.")
    now = timezone.now()
    application = (
        Application.objects.filter(firm=firm).select_related("prepared_by", "decided_by").first()
    )
    certificates = (
        Certificate.objects.filter(participant__firm=firm, kind=Certificate.Kind.CLIENT)
        .select_related("participant")
        .order_by("participant__trader_id", "-not_after")
    )
    trail = AuditRecord.objects.filter(firm_audit_filter(firm)).order_by("-id")[:50]
    policy = est_policy_of(firm)
    return render(
        request,
        "portal/officer/firm.html",
        {
            "firm": firm,
            "application": application,
            "checks": application.checks.select_related("performed_by") if application else [],
            "documents": application.documents.all() if application else [],
            "participants": firm.participants.annotate(
                live=Count(
                    "certificates",
                    filter=Q(
                        certificates__status=Certificate.Status.ACTIVE,
                        certificates__not_after__gt=now,
                    ),
                )
            ).order_by("trader_id"),
            "accounts": PortalAccount.objects.filter(firm=firm).select_related("user"),
            "certificates": [(c, (c.not_after - now).days) for c in certificates],
            "pending": CertificateRequest.objects.filter(
                participant__firm=firm, status=CertificateRequest.Status.SUBMITTED
            ).select_related("participant"),
            "trail": trail,
            "now": now,
            "can_stop": firm.status in (Firm.Status.APPROVED, Firm.Status.SUSPENDED),
            "est_policy": policy,
            "est_form": forms.EstPolicyForm(
                initial={name: getattr(policy, name) for name in EST_POLICY_FIELDS}
            ),
            "tokens": EnrollmentToken.objects.filter(participant__firm=firm)
            .select_related("participant")
            .order_by("-created_at")[:20],
        },
    )


@require_http_methods(["GET", "POST"])
@officer_required
def officer_user_factor_reset(request: AuthenticatedHttpRequest, user_id: int) -> HttpResponse:
    """A firm user lost their second factor: the page names what they hold and what a reset
    does; the officer gives the reason (and how they checked who asked) and confirms."""
    held = services.firm_user_factors(user_id=user_id)
    form = forms.FactorResetForm(request.POST or None)
    refusal: DomainError | None = None
    if request.method == "POST":
        try:
            data = _cleaned(form, "REASON_REQUIRED")
            services.second_factors_reset(
                officer=request.user, user_id=user_id, reason=data["reason"]
            )
        except DomainError as exc:
            refusal = exc
        else:
            messages.success(
                request,
                f"{held.user.get_username()}'s second factors are removed: at the next sign-in "
                "they set up a new one.",
            )
            return redirect("portal:officer-firm", firm_id=held.user.portal.firm_id)
    return render(
        request,
        "portal/officer/factor_reset.html",
        {"held": held, "form": form, "refusal": _refusal(refusal) if refusal else None},
        status=refusal.status_code if refusal else 200,
    )


AUDIT_PAGE = 50


def _audit_filtered(form: forms.AuditFilterForm) -> "QuerySet[AuditRecord]":
    """The records the (valid) filter form selects, newest first; ``NotFound``
    (``FIRM_NOT_FOUND``) for a firm that does not exist."""
    data = form.cleaned_data
    records = AuditRecord.objects.order_by("-id")
    if firm_key := (data.get("firm") or "").strip().upper():
        firm = Firm.objects.filter(
            Q(lei=firm_key) | Q(pk=int(firm_key)) if firm_key.isdigit() else Q(lei=firm_key)
        ).first()
        if firm is None:
            raise NotFound("FIRM_NOT_FOUND", f"No firm with LEI or id {firm_key}.")
        records = records.filter(firm_audit_filter(firm))
    if actor := (data.get("actor") or "").strip():
        records = records.filter(Q(actor_label__icontains=actor) | Q(actor_id=actor))
    if event := (data.get("event") or "").strip():
        records = records.filter(event__startswith=event)
    if since := data.get("since"):
        records = records.filter(created_at__gte=datetime.combine(since, time.min, tzinfo=UTC))
    if until := data.get("until"):
        end = datetime.combine(until, time.min, tzinfo=UTC) + timedelta(days=1)
        records = records.filter(created_at__lt=end)
    return records


def _query(*parts: str) -> str:
    """A URL's query string from encoded parts, empty ones left out: "", "?a=1", "?a=1&b=2"."""
    joined = "&".join(part for part in parts if part)
    return f"?{joined}" if joined else ""


def _audit_form(request: HttpRequest) -> forms.AuditFilterForm:
    """The filters, always bound (no filter at all is a valid, empty one); 400
    ``INVALID_FILTER`` naming the first problem."""
    form = forms.AuditFilterForm(request.GET)
    _cleaned(form, "INVALID_FILTER")
    return form


def _audit_links(records: list[AuditRecord]) -> dict[int, str]:
    """Each record's link to the object it is about, where the portal has a page for it."""
    ids: dict[str, set[str]] = {}
    for record in records:
        ids.setdefault(record.target_type, set()).add(record.target_id)
    firm_of = dict(
        Participant.objects.filter(
            pk__in=[int(i) for i in ids.get("kernel.participant", ()) if i.isdigit()]
        ).values_list("pk", "firm_id")
    )
    # The portal has pages for client certificates only (not the server's or OCSP's).
    client_certificates = {
        str(pk)
        for pk in Certificate.objects.filter(
            pk__in=[int(i) for i in ids.get("pki.certificate", ()) if i.isdigit()],
            kind=Certificate.Kind.CLIENT,
        ).values_list("pk", flat=True)
    }
    links: dict[int, str] = {}
    for record in records:
        target, pk = record.target_type, record.target_id
        if not pk.isdigit():
            continue
        if target == "kernel.firm":
            links[record.pk] = reverse("portal:officer-firm", args=[pk])
        elif target == "portal.application":
            links[record.pk] = reverse("portal:officer-case", args=[pk])
        elif target == "pki.certificate" and pk in client_certificates:
            links[record.pk] = reverse("portal:certificate", args=[pk])
        elif target == "pki.certificaterequest":
            links[record.pk] = reverse("portal:officer-csr", args=[pk])
        elif target == "kernel.participant" and int(pk) in firm_of:
            firm_id = firm_of[int(pk)]
            links[record.pk] = reverse("portal:officer-firm", args=[firm_id]) + "#firm-participants"
    return links


@require_GET
@officer_required
def officer_audit(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Every audit record, newest first, 50 a page (keyset: ``before`` is the last id seen),
    filtered by firm, actor, action and UTC days; each linked to its object; with the chain's
    state (the last verification kept, the head, the records waiting for the chainer)."""
    form = _audit_form(request)
    records = _audit_filtered(form)
    if before := form.cleaned_data.get("before"):
        records = records.filter(pk__lt=before)
    page = list(records[: AUDIT_PAGE + 1])
    more = len(page) > AUDIT_PAGE
    page = page[:AUDIT_PAGE]
    query = request.GET.copy()
    query.pop("before", None)  # the filters alone: the first page, the export, "Verify now"
    filters = query.urlencode()
    older = _query(filters, f"before={page[-1].pk}") if more else None
    links = _audit_links(page)
    head = AuditHead.objects.filter(pk=1).first()
    return render(
        request,
        "portal/officer/audit.html",
        {
            "form": form,
            "rows": [
                (record, links.get(record.pk), json.dumps(record.details, sort_keys=True))
                for record in page
            ],
            "query": filters,
            "older": older,
            "newest": reverse("portal:officer-audit") + _query(filters)
            if form.cleaned_data.get("before")
            else None,
            "export": reverse("portal:officer-audit-export") + _query(filters),
            "check": AuditCheck.objects.first(),
            "head": head.sequence if head else 0,
            "tail": audit_tail(),
            "now": timezone.now(),
        },
    )


class _Echo:
    """A file whose write returns what it was given: csv.writer rows for streaming."""

    def write(self, value: str) -> str:
        return value


@require_GET
@officer_required
def officer_audit_export(request: AuthenticatedHttpRequest) -> StreamingHttpResponse:
    """The filtered records (every page, oldest first) as CSV, streamed; the export itself is
    audited with its filters."""
    form = _audit_form(request)
    records = _audit_filtered(form).order_by("id")
    filters = {k: str(v) for k, v in form.cleaned_data.items() if v not in (None, "")}
    filters.pop("before", None)
    audit_record(
        event="audit.exported", actor=Actor.user(request.user), target_type="audit", filters=filters
    )
    writer = csv.writer(_Echo())
    header = ["sequence", "created_at", "event", "actor_type", "actor_id", "actor",
              "target_type", "target_id", "details", "prev_hash", "hash"]  # fmt: skip

    def rows() -> Iterator[str]:
        yield writer.writerow(header)
        for r in records.iterator(chunk_size=2000):
            yield writer.writerow(
                [r.sequence or "", r.created_at.isoformat(), r.event, r.actor_type, r.actor_id,
                 r.actor_label, r.target_type, r.target_id,
                 json.dumps(r.details, sort_keys=True), r.prev_hash or "", r.hash or ""]
            )  # fmt: skip

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="keyline-audit-{stamp}.csv"'
    return response


@require_POST
@officer_required
def officer_audit_verify(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Queue a verification of the whole chain (the worker runs it; the page shows the
    result once kept)."""
    by = request.user.get_username()
    audit_record(
        event="audit.verify_requested", actor=Actor.user(request.user), target_type="audit"
    )
    audit_verify_task.delay(by=by)
    messages.success(request, "Verification queued: the result shows here when the worker is done.")
    # Back to the page with the filters the officer had (the form posts them in its URL).
    return redirect(reverse("portal:officer-audit") + _query(request.GET.urlencode()))


@require_GET
@officer_required
def officer_csr(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _csr_page(request, pk)


def _csr_page(
    request: AuthenticatedHttpRequest, pk: int, refusal: DomainError | None = None
) -> HttpResponse:
    """A CSR as the officer must see it before signing: who sent it and when, the subject the
    certificate will get (from the verified identity), the key, what the CSR asked for (all of
    it ignored), the participant's certificate history, and the other pending requests."""
    csr = CertificateRequest.objects.select_related("participant__firm").filter(pk=pk).first()
    if csr is None:
        raise NotFound("CSR_NOT_FOUND", "No such request.")
    participant = csr.participant
    history = list(
        participant.certificates.filter(kind=Certificate.Kind.CLIENT).order_by("-not_before")
    )
    others = list(
        participant.certificate_requests.filter(status=CertificateRequest.Status.SUBMITTED)
        .exclude(pk=csr.pk)
        .order_by("created_at")
    )
    return render(
        request,
        "portal/officer/csr.html",
        {
            "csr": csr,
            "participant": participant,
            "firm": participant.firm,
            "subject": client_subject(participant).rfc4514_string(),
            "san_uri": participant.san_uri,
            "history": history,
            "same_key": [c for c in history if c.spki_sha256 == csr.spki_sha256],
            "others": others,
            "pending": csr.status == CertificateRequest.Status.SUBMITTED,
            "refusal": _refusal(refusal) if refusal else None,
        },
        status=refusal.status_code if refusal else 200,
    )


@require_POST
@officer_required
def officer_csr_decide(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    decision = request.POST.get("decision")
    try:
        if decision not in ("sign", "reject"):
            raise Invalid("DECISION_REQUIRED", "Choose sign or reject.")
        outcome = services.csr_decide(
            user=request.user,
            request_id=pk,
            approve=decision == "sign",
            reason=request.POST.get("reason", ""),
        )
    except DomainError as exc:
        return _csr_page(request, pk, refusal=exc)  # a missing CSR: its page raises the 404
    if isinstance(outcome, Certificate):
        messages.success(
            request,
            f"Signed: certificate {outcome.serial} for {_holder(outcome)}, "
            f"valid until {outcome.not_after:%Y-%m-%d}.",
        )
    elif outcome.status == CertificateRequest.Status.SUBMITTED:
        messages.info(
            request,
            "Queued for signing: the signing worker has not answered yet; this page shows the "
            "certificate once it has.",
        )
    else:
        messages.success(
            request,
            f"Rejected: {outcome.participant.trader_id}'s request is closed; the firm sees your "
            f"reason on the participant's page.",
        )
    return redirect("portal:officer-csr", pk=pk)


# --- firm users -------------------------------------------------------------------------------


@require_GET
@firm_user_required
def firm_dashboard(request: AuthenticatedHttpRequest) -> HttpResponse:
    account = services.account_of(request.user)
    now = timezone.now()
    participants = Participant.objects.filter(firm=account.firm).order_by("trader_id")
    if account.role == PortalAccount.Role.TRADER:
        participants = (
            participants.filter(pk=account.participant_id)
            if account.participant_id is not None
            else participants.none()  # what filter(pk=None) gave: a trader has its own
        )
    certificates = (
        Certificate.objects.filter(participant__in=participants, kind=Certificate.Kind.CLIENT)
        .select_related("participant")
        .order_by("-not_after")
    )
    pending = CertificateRequest.objects.filter(
        participant__in=participants, status=CertificateRequest.Status.SUBMITTED
    ).select_related("participant")
    return render(
        request,
        "portal/firm/dashboard.html",
        {
            "account": account,
            "firm": account.firm,
            "participants": participants,
            "certificates": [(c, (c.not_after - now).days) for c in certificates],
            "pending": pending,
            "now": now,
        },
    )


@require_http_methods(["GET", "POST"])
@firm_user_required
def participant_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    account = services.account_of(request.user)
    if account.role != PortalAccount.Role.ADMIN:
        raise PermissionDenied(
            "FIRM_ADMIN_REQUIRED", "Only the firm's administrators add participants."
        )
    if (first := _second_factor_first(request)) is not None:
        return first
    form = forms.ParticipantForm(request.POST or None, firm=account.firm)
    if request.method == "POST" and form.is_valid():
        participant = services.participant_add(user=request.user, **form.cleaned_data)
        messages.success(request, f"{participant.trader_id} added and invited.")
        return redirect("portal:participant", pk=participant.pk)
    return render(
        request,
        "portal/firm/participant_new.html",
        {"form": form},
        status=400 if form.errors else 200,
    )


@require_http_methods(["GET", "POST"])
@firm_user_required
def participant_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    participant = services.participant_for(request.user, pk)
    form = forms.CsrForm(request.POST or None, request.FILES or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                outcome = services.csr_upload(
                    user=request.user, participant_id=pk, data=form.cleaned_data["csr"]
                )
            except DomainError as exc:
                form.add_error(None, f"{exc.message} ({exc.code})")
                status = exc.status_code
            else:
                if isinstance(outcome, Certificate):
                    messages.success(request, "Certificate issued.")
                    return redirect("portal:certificate", pk=outcome.pk)
                messages.success(
                    request,
                    "CSR received: it is being signed; the certificate shows here shortly."
                    if settings.KEYLINE_AUTO_SIGN and outcome.participant.firm.is_active
                    else "CSR received: an officer will sign it.",
                )
                return redirect("portal:participant", pk=pk)
        else:
            status = 400
    return render(
        request,
        "portal/firm/participant.html",
        {
            "participant": participant,
            "form": form,
            "certificates": participant.certificates.filter(kind=Certificate.Kind.CLIENT).order_by(
                "-not_after"
            ),
            "requests": participant.certificate_requests.order_by("-created_at")[:10],
            "tokens": participant.enrollment_tokens.order_by("-created_at")[:10],
            "is_admin": request.user.portal.role == PortalAccount.Role.ADMIN,
        },
        status=status,
    )


# --- EST enrollment tokens and policy -------------------------------------------------------


def _token_manager_first(request: AuthenticatedHttpRequest) -> HttpResponse | None:
    """Officers (verified: ``firm_user_required``) and firm administrators with a verified
    second factor manage enrollment tokens; None when the session may act."""
    services.officer_or_firm_admin_require(request.user, "make enrollment tokens")
    return _second_factor_first(request)


@require_POST
@firm_user_required
def enrollment_token_new(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """A one-time EST enrollment token for participant ``pk``, shown once on the page this
    answers, with the commands that use it."""
    if (first := _token_manager_first(request)) is not None:
        return first
    row, token = services.enrollment_token_issue(user=request.user, participant_id=pk)
    response = render(
        request,
        "portal/enrollment_token.html",
        {
            "row": row,
            "token": token,
            "participant": row.participant,
            "api_url": settings.KEYLINE_API_URL,
            "back": reverse("portal:officer-firm", args=[row.participant.firm_id])
            if request.user.is_staff
            else reverse("portal:participant", args=[pk]),
        },
        status=201,
    )
    response["Cache-Control"] = "no-store"  # the token, shown once: never from a cache
    return response


@require_POST
@firm_user_required
def enrollment_token_revoke(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Withdraws an unused enrollment token; back to the page it was listed on."""
    if (first := _token_manager_first(request)) is not None:
        return first
    row = services.enrollment_token_withdraw(user=request.user, token_id=pk)
    messages.success(
        request, f"Enrollment token #{row.pk} for {row.participant.trader_id} is withdrawn."
    )
    if request.user.is_staff:
        return redirect("portal:officer-firm", firm_id=row.participant.firm_id)
    return redirect("portal:participant", pk=row.participant_id)


@require_POST
@officer_required
def officer_est_policy(request: AuthenticatedHttpRequest, firm_id: int) -> HttpResponse:
    """An officer sets how EST treats the firm: auto-signing, the renewal window, a block."""
    data = _cleaned(forms.EstPolicyForm(request.POST), "EST_POLICY_INVALID")
    services.est_policy_update(user=request.user, firm_id=firm_id, **data)
    messages.success(request, "The firm's EST policy is saved.")
    return redirect("portal:officer-firm", firm_id=firm_id)


def _holder(certificate: Certificate) -> str:
    """The trader id a client certificate was issued to (server certificates have none)."""
    return certificate.participant.trader_id if certificate.participant else "its holder"


def _may_revoke(request: AuthenticatedHttpRequest, certificate: Certificate) -> bool:
    if certificate.status != Certificate.Status.ACTIVE:
        return False
    try:
        services.officer_or_firm_admin_require(request.user)
    except PermissionDenied:
        return False
    return True


@require_GET
@firm_user_required
def certificate_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    certificate = services.certificate_for(request.user, pk)
    return render(
        request,
        "portal/firm/certificate.html",
        {
            "certificate": certificate,
            "days_left": (certificate.not_after - timezone.now()).days,
            "can_revoke": _may_revoke(request, certificate),
        },
    )


@require_GET
@firm_user_required
def certificate_download(request: AuthenticatedHttpRequest, pk: int, kind: str) -> HttpResponse:
    name, data = services.certificate_download(user=request.user, certificate_id=pk, kind=kind)
    response = HttpResponse(data, content_type="application/x-pem-file")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_GET
@firm_user_required
def certificate_connect(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    certificate = services.certificate_for(request.user, pk)
    return render(
        request,
        "portal/firm/connect.html",
        {"certificate": certificate, "api_url": settings.KEYLINE_API_URL.rstrip("/")},
    )


@require_http_methods(["GET", "POST"])
@firm_user_required
def certificate_revoke(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Revoke, confirmed: the page names the serial, whose access ends and what else that
    participant still holds; the reason is chosen, never defaulted."""
    certificate = services.certificate_for(request.user, pk)
    services.officer_or_firm_admin_require(request.user)
    if (first := _second_factor_first(request)) is not None:
        return first
    form = forms.RevokeForm(request.POST or None)
    refusal: DomainError | None = None
    if request.method == "POST":
        try:
            data = _cleaned(form)
            certificate = services.certificate_revoke_by(
                user=request.user, certificate_id=pk, reason=data["reason"]
            )
        except DomainError as exc:
            refusal = exc
        else:
            messages.success(
                request,
                f"Certificate {certificate.serial} is revoked: "
                f"{_holder(certificate)} can no longer connect with it.",
            )
            return redirect("portal:certificate", pk=pk)
    others = (
        Certificate.objects.live()
        .filter(participant=certificate.participant, kind=Certificate.Kind.CLIENT)
        .exclude(pk=certificate.pk)
        .order_by("not_after")
    )
    return render(
        request,
        "portal/firm/revoke.html",
        {
            "certificate": certificate,
            "participant": certificate.participant,
            "others": others,
            "form": form,
            "refusal": _refusal(refusal) if refusal else None,
        },
        status=refusal.status_code if refusal else 200,
    )
