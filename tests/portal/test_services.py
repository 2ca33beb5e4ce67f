"""The onboarding services' rules (portal.services), called directly: four eyes, the checks a
case needs, decisions and what they send, suspension and offboarding, auto-signing, and the
audit record every security action leaves with the acting user."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from kernel.audit import Actor, audit_verify
from kernel.errors import Conflict, DomainError, Invalid, NotFound, PermissionDenied
from kernel.models import AuditRecord, Firm, Participant
from pki import trust
from pki.models import Certificate, CertificateRequest
from pki.revocation import certificate_revoke
from portal import services
from portal.models import Application, Invitation, PortalAccount, VerificationCheck
from tests.factories import FirmFactory, ParticipantFactory, expire, random_lei
from tests.keys import ec_key, key_pem, make_csr

pytestmark = pytest.mark.django_db

KINDS = ("lei_registry", "documents", "sanctions", "callback")


@pytest.fixture(autouse=True)
def _fast(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.KEYLINE_DOCUMENTS_DIR = str(tmp_path / "documents")


def officer(name: str) -> User:
    return User.objects.create_user(name, f"{name}@venue.example", is_staff=True)


def submit(name: str = "Applicant Ltd") -> tuple[Application, str]:
    return services.application_submit(
        fields={
            "legal_name": name,
            "lei": random_lei(),
            "jurisdiction": "GB",
            "role": "both",
            "contact_name": "Casey",
            "contact_email": "casey@applicant.example",
            "contact_phone": "+44 20 7946 0000",
        },
        actor=Actor.anonymous("applicant"),
    )


def confirm_callback(application: Application, token: str, by: User) -> None:
    code = services.callback_start(
        application_id=application.pk, phone="+44 1632 960 555", source="GLEIF", user=by
    )
    services.callback_confirm(token=token, code=code)


def record(application: Application, kind: str, by: User, outcome: str = "passed") -> None:
    services.check_record(
        application_id=application.pk, kind=kind, outcome=outcome, evidence="seen", user=by
    )


def checked(by: dict[str, User] | User) -> Application:
    """A submitted application with every check passed (``by``: one officer or one per kind)."""
    application, token = submit()
    by = by if isinstance(by, dict) else dict.fromkeys(KINDS, by)
    confirm_callback(application, token, by["callback"])
    for kind in KINDS:
        record(application, kind, by[kind])
    return application


def refresh(application: Application) -> Application:
    return Application.objects.select_related("firm").get(pk=application.pk)


def audit_since(record_id: int):
    """The audit records written after ``record_id``, in insertion order."""
    return AuditRecord.objects.filter(pk__gt=record_id).order_by("pk")


def last_sequence() -> int:
    """The id of the newest audit record (0 without one)."""
    return AuditRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


# --- four eyes ------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["the preparer", "a checker", "the preparer who also checked"])
def test_four_eyes_an_officer_who_prepared_or_checked_cannot_decide(db, who):
    alice, bob, carol = officer("alice"), officer("bob"), officer("carol")
    # Bob runs the call-back check, Alice the others and prepares.
    application = checked({"lei_registry": alice, "documents": alice, "sanctions": alice,
                           "callback": bob})  # fmt: skip
    services.application_prepare(application_id=application.pk, user=alice)
    deciding = {"the preparer": alice, "a checker": bob, "the preparer who also checked": alice}
    before = last_sequence()

    for approve in (True, False):
        with pytest.raises(PermissionDenied) as refused:
            services.application_decide(
                application_id=application.pk, approve=approve, reason="fine", user=deciding[who]
            )
        assert refused.value.code == "FOUR_EYES"
    application = refresh(application)
    assert application.decided_at is None
    assert application.firm.status == Firm.Status.UNDER_REVIEW
    assert not audit_since(before).exists()

    services.application_decide(
        application_id=application.pk, approve=True, reason="independent review", user=carol
    )
    assert refresh(application).decided_by == carol


def test_four_eyes_holds_when_one_officer_checked_everything_and_another_prepared(db):
    checker, preparer, decider = officer("checker"), officer("preparer"), officer("decider")
    application = checked(checker)
    services.application_prepare(application_id=application.pk, user=preparer)
    for user in (checker, preparer):
        with pytest.raises(PermissionDenied, match="cannot decide"):
            services.application_decide(
                application_id=application.pk, approve=True, reason="ok", user=user
            )
    services.application_decide(
        application_id=application.pk, approve=True, reason="ok", user=decider
    )


@pytest.mark.parametrize("contribution", ["started the call-back", "uploaded a document"])
def test_four_eyes_an_officer_who_contributed_material_cannot_decide(db, contribution):
    from django.core.files.uploadedfile import SimpleUploadedFile

    helper, checker, decider = officer("helper"), officer("checker"), officer("decider")
    application, token = submit()
    if contribution == "started the call-back":
        confirm_callback(application, token, helper)
    else:
        confirm_callback(application, token, checker)
        services.document_add(
            application_id=application.pk,
            title="Register extract",
            upload=SimpleUploadedFile("x.pdf", b"%PDF-1.7 extract", "application/pdf"),
            user=helper,
        )
    for kind in KINDS:
        record(application, kind, checker)
    services.application_prepare(application_id=application.pk, user=checker)
    with pytest.raises(PermissionDenied) as refused:
        services.application_decide(
            application_id=application.pk, approve=True, reason="ok", user=helper
        )
    assert refused.value.code == "FOUR_EYES"
    services.application_decide(
        application_id=application.pk, approve=True, reason="ok", user=decider
    )


# --- preparing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recorded", "missing"),
    [
        ({"lei_registry": "passed"}, ["callback", "documents", "sanctions"]),
        ({"lei_registry": "passed", "documents": "passed", "sanctions": "passed"}, ["callback"]),
        (
            {"lei_registry": "passed", "documents": "passed", "sanctions": "failed",
             "callback": "passed"},
            ["sanctions"],
        ),
        (
            {"lei_registry": "failed", "documents": "failed", "sanctions": "failed",
             "callback": "failed"},
            ["callback", "documents", "lei_registry", "sanctions"],
        ),
    ],
    ids=["one", "three", "one-failed", "all-failed"],
)  # fmt: skip
def test_prepare_needs_all_four_checks_passed(db, recorded, missing):
    alice = officer("alice")
    application, token = submit()
    if "callback" in recorded:
        confirm_callback(application, token, alice)
    for kind, outcome in recorded.items():
        record(application, kind, alice, outcome)
    with pytest.raises(Conflict) as refused:
        services.application_prepare(application_id=application.pk, user=alice)
    assert refused.value.code == "CHECKS_MISSING"
    assert refused.value.details == {"missing": missing}
    assert refresh(application).prepared_at is None


def test_a_failed_check_passed_on_a_second_look_counts(db):
    alice = officer("alice")
    application, token = submit()
    confirm_callback(application, token, alice)
    record(application, "sanctions", alice, "failed")
    for kind in KINDS:
        record(application, kind, alice)
    prepared = services.application_prepare(application_id=application.pk, user=alice)
    assert prepared.prepared_by == alice


def test_a_case_without_checks_cannot_be_prepared(db):
    application, _ = submit()
    with pytest.raises(Conflict) as refused:
        services.application_prepare(application_id=application.pk, user=officer("alice"))
    assert refused.value.code == "APPLICATION_NOT_IN_REVIEW"


def test_a_prepared_case_takes_no_more_checks_and_is_not_prepared_twice(db):
    alice = officer("alice")
    application = checked(alice)
    services.application_prepare(application_id=application.pk, user=alice)
    with pytest.raises(Conflict, match="before it is submitted"):
        record(application, "sanctions", alice, "failed")
    with pytest.raises(Conflict) as again:
        services.application_prepare(application_id=application.pk, user=alice)
    assert again.value.code == "APPLICATION_NOT_IN_REVIEW"
    assert VerificationCheck.objects.filter(application=application).count() == 4


def test_a_callback_check_needs_the_contact_to_have_confirmed(db):
    alice = officer("alice")
    application, _ = submit()
    services.callback_start(
        application_id=application.pk, phone="+44 1632 960 555", source="GLEIF", user=alice
    )
    with pytest.raises(Conflict) as refused:
        record(application, "callback", alice)
    assert refused.value.code == "CALLBACK_NOT_CONFIRMED"


@pytest.mark.parametrize("evidence", ["", "   ", "\n\t"])
def test_a_check_needs_evidence(db, evidence):
    application, _ = submit()
    with pytest.raises(Invalid) as refused:
        services.check_record(
            application_id=application.pk,
            kind="lei_registry",
            outcome="passed",
            evidence=evidence,
            user=officer("alice"),
        )
    assert refused.value.code == "EVIDENCE_REQUIRED"
    assert not VerificationCheck.objects.exists()


# --- deciding -------------------------------------------------------------------------------


@pytest.fixture
def prepared(db) -> tuple[Application, User]:
    """(a prepared application, an officer who may decide it)."""
    alice = officer("alice")
    application = checked(alice)
    services.application_prepare(application_id=application.pk, user=alice)
    return application, officer("bob")


@pytest.mark.parametrize("reason", ["", "   ", "\n"])
def test_a_decision_needs_a_reason(prepared, reason):
    application, bob = prepared
    with pytest.raises(Invalid) as refused:
        services.application_decide(
            application_id=application.pk, approve=True, reason=reason, user=bob
        )
    assert refused.value.code == "REASON_REQUIRED"
    application = refresh(application)
    assert application.decided_at is None
    assert application.firm.status == Firm.Status.UNDER_REVIEW
    assert not Invitation.objects.exists()


def test_a_rejection_tells_the_contact_why_and_invites_nobody(
    prepared, django_capture_on_commit_callbacks
):
    application, bob = prepared
    with django_capture_on_commit_callbacks(execute=True):
        services.application_decide(
            application_id=application.pk, approve=False, reason="sanctions match", user=bob
        )
    application = refresh(application)
    assert application.firm.status == Firm.Status.REJECTED
    assert (application.decided_by, application.decision_reason) == (bob, "sanctions match")
    (message,) = mail.outbox
    assert message.to == ["casey@applicant.example"]
    assert "not approved" in message.body
    assert "sanctions match" in message.body
    assert "/invite/" not in message.body
    assert not Invitation.objects.exists()
    record_ = AuditRecord.objects.get(event="application.rejected")
    assert record_.details["reason"] == "sanctions match"
    assert record_.details["prepared_by"] == "alice"
    with pytest.raises(Conflict) as again:
        services.application_decide(
            application_id=application.pk, approve=True, reason="second thoughts", user=bob
        )
    assert again.value.code == "APPLICATION_NOT_PREPARED"
    assert refresh(application).firm.status == Firm.Status.REJECTED


def test_an_approval_activates_the_firm_and_invites_its_contact_as_administrator(
    prepared, django_capture_on_commit_callbacks
):
    application, bob = prepared
    with django_capture_on_commit_callbacks(execute=True):
        services.application_decide(
            application_id=application.pk, approve=True, reason="all checks passed", user=bob
        )
    firm = refresh(application).firm
    assert firm.status == Firm.Status.APPROVED
    (message,) = mail.outbox
    assert message.to == ["casey@applicant.example"]
    token = re.search(r"/invite/([^/\s]+)/", message.body).group(1)
    invitation = services.invitation_get(token)
    assert (invitation.firm, invitation.role, invitation.email) == (
        firm,
        PortalAccount.Role.ADMIN,
        "casey@applicant.example",
    )
    assert invitation.participant is None
    assert timedelta(days=6, hours=23) < invitation.expires_at - timezone.now() <= timedelta(days=7)
    assert Invitation.objects.get().token_hash != token  # only the hash is kept
    user = services.invitation_accept(token=token, username="casey", password="x" * 12)
    assert services.account_of(user).role == PortalAccount.Role.ADMIN


# --- who may call the officers' services -----------------------------------------------------

OFFICER_ONLY = {
    "check_record": lambda a, u: services.check_record(
        application_id=a.pk, kind="lei_registry", outcome="passed", evidence="x", user=u
    ),
    "document_add": lambda a, u: services.document_add(
        application_id=a.pk,
        title="x",
        upload=SimpleUploadedFile("x.pdf", b"%PDF-1.7", "application/pdf"),
        user=u,
    ),
    "callback_start": lambda a, u: services.callback_start(
        application_id=a.pk, phone="+44 1632 960 555", source="x", user=u
    ),
    "application_prepare": lambda a, u: services.application_prepare(application_id=a.pk, user=u),
    "application_decide": lambda a, u: services.application_decide(
        application_id=a.pk, approve=True, reason="x", user=u
    ),
    "firm_suspend": lambda a, u: services.firm_suspend(
        firm_id=a.firm_id, offboard=False, reason="x", user=u
    ),
    "csr_decide": lambda a, u: services.csr_decide(user=u, request_id=1, approve=True),
}


@pytest.mark.parametrize("service", list(OFFICER_ONLY))
def test_only_officers_may_call_the_officers_services(db, service):
    application, _ = submit()
    firm_admin = User.objects.create_user("firm-admin")
    PortalAccount.objects.create(user=firm_admin, firm=FirmFactory(), role=PortalAccount.Role.ADMIN)
    before = last_sequence()
    with pytest.raises(PermissionDenied) as refused:
        OFFICER_ONLY[service](application, firm_admin)
    assert refused.value.code == "OFFICER_REQUIRED"
    assert not audit_since(before).exists()
    assert refresh(application).firm.status == Firm.Status.APPLIED


# --- suspension and offboarding ---------------------------------------------------------------


@pytest.fixture
def active_firm(cas, issue):
    """A firm with users, participants and certificates (live, revoked, expired), a pending
    CSR and a pending invitation; and another firm with a live certificate."""
    firm = FirmFactory()
    p1, p2 = ParticipantFactory(firm=firm), ParticipantFactory(firm=firm)
    live = [issue(p1, make_csr(ec_key())), issue(p2, make_csr(ec_key()))]
    revoked = issue(p1, make_csr(ec_key()))
    certificate_revoke(certificate=revoked, reason="superseded", actor=Actor.system("t"))
    expired = issue(p2, make_csr(ec_key()))
    expire(expired)
    pending = services.pki_services.csr_submit(
        participant=p1, data=make_csr(ec_key()), actor=Actor.system("t")
    )
    users = []
    for name, role, participant in (("fa", "admin", None), ("ft", "trader", p1)):
        user = User.objects.create_user(name, f"{name}@firm.example")
        PortalAccount.objects.create(user=user, firm=firm, role=role, participant=participant)
        users.append(user)
    Invitation.objects.create(
        firm=firm,
        email="late@firm.example",
        role=PortalAccount.Role.TRADER,
        token_hash=services.token_hash("pending-invitation"),
        created_by="fa",
        expires_at=timezone.now() + timedelta(days=3),
    )
    other = issue(ParticipantFactory(), make_csr(ec_key()))
    return {
        "firm": firm,
        "live": live,
        "revoked": revoked,
        "expired": expired,
        "pending": pending,
        "users": users,
        "other": other,
    }


@pytest.mark.parametrize(
    ("offboard", "status", "reason", "event"),
    [
        (False, Firm.Status.SUSPENDED, "affiliation_changed", "firm.suspended"),
        (True, Firm.Status.OFFBOARDED, "cessation_of_operation", "firm.offboarded"),
    ],
    ids=["suspend", "offboard"],
)
def test_suspending_a_firm_revokes_its_certificates_and_disables_its_users(
    active_firm, django_capture_on_commit_callbacks, offboard, status, reason, event
):
    w = active_firm
    bob = officer("bob")
    for certificate in w["live"]:  # the API has these cached as trusted
        assert trust.certificate_decide(certificate.fingerprint_sha256).ok
    before = last_sequence()

    with django_capture_on_commit_callbacks(execute=True):
        services.firm_suspend(firm_id=w["firm"].pk, offboard=offboard, reason="fraud", user=bob)

    w["firm"].refresh_from_db()
    assert w["firm"].status == status
    for certificate in w["live"]:
        certificate.refresh_from_db()
        assert (certificate.status, certificate.revocation_reason) == ("revoked", reason)
        decision = trust.certificate_decide(certificate.fingerprint_sha256)
        assert decision.code == trust.CERTIFICATE_REVOKED  # the RFQ API refuses it
    w["revoked"].refresh_from_db()
    assert w["revoked"].revocation_reason == "superseded"  # revoked before: left alone
    assert Certificate.objects.get(pk=w["expired"].pk).status == "active"  # expired: left alone
    assert Certificate.objects.get(pk=w["other"].pk).status == "active"  # another firm's
    assert trust.certificate_decide(w["other"].fingerprint_sha256).ok
    assert not User.objects.filter(pk__in=[u.pk for u in w["users"]], is_active=True).exists()
    assert not Participant.objects.filter(firm=w["firm"], is_active=True).exists()

    records = list(audit_since(before))
    (firm_record,) = [r for r in records if r.event == event]
    assert (firm_record.actor_type, firm_record.actor_label) == ("user", "bob")
    assert firm_record.details["reason"] == "fraud"
    revoked = [r for r in records if r.event == "certificate.revoked"]
    assert sorted(r.target_id for r in revoked) == sorted(str(c.pk) for c in w["live"])
    assert {(r.actor_label, r.details["scope"]) for r in revoked} == {("bob", "firm")}

    # Nothing of the firm's works any more: its users, its pending CSR, its invitations.
    with pytest.raises(PermissionDenied):
        services.account_of(w["users"][0])
    with pytest.raises(Conflict) as signing:
        services.csr_decide(user=bob, request_id=w["pending"].pk, approve=True)
    assert signing.value.code == "PARTICIPANT_INACTIVE"
    with pytest.raises(NotFound):
        services.invitation_get("pending-invitation")
    with pytest.raises(NotFound):
        services.invitation_accept(token="pending-invitation", username="late", password="x" * 12)
    assert not User.objects.filter(username="late").exists()


def test_a_suspension_reaches_the_api_even_if_the_revocations_fail(
    active_firm, django_capture_on_commit_callbacks, monkeypatch
):
    """The status change commits first; the trust decision checks the firm."""
    w = active_firm
    certificate = w["live"][0]
    assert trust.certificate_decide(certificate.fingerprint_sha256).ok

    def broken(**kwargs):
        raise RuntimeError("CRL publishing is down")

    monkeypatch.setattr(services, "certificates_revoke_for_firm", broken)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        services.firm_suspend(firm_id=w["firm"].pk, offboard=False, reason="x", user=officer("b"))
    assert Firm.objects.get(pk=w["firm"].pk).status == Firm.Status.SUSPENDED
    decision = trust.certificate_decide(certificate.fingerprint_sha256)
    assert decision.code in (trust.PARTICIPANT_DISABLED, trust.FIRM_INACTIVE)

    # Running it again (the documented repair) revokes what is still live.
    monkeypatch.undo()
    with django_capture_on_commit_callbacks(execute=True):
        services.firm_suspend(firm_id=w["firm"].pk, offboard=True, reason="x", user=officer("c"))
    assert not Certificate.objects.live().filter(participant__firm=w["firm"]).exists()


@pytest.mark.parametrize(
    ("status", "reason", "code"),
    [
        (Firm.Status.APPLIED, "x", "FIRM_NOT_ACTIVE"),
        (Firm.Status.REJECTED, "x", "FIRM_NOT_ACTIVE"),
        (Firm.Status.OFFBOARDED, "x", "FIRM_NOT_ACTIVE"),
        (Firm.Status.APPROVED, "  ", "REASON_REQUIRED"),
    ],
)
def test_suspension_needs_an_active_firm_and_a_reason(db, status, reason, code):
    firm = FirmFactory(status=status)
    with pytest.raises(DomainError) as refused:
        services.firm_suspend(firm_id=firm.pk, offboard=False, reason=reason, user=officer("b"))
    assert refused.value.code == code
    assert Firm.objects.get(pk=firm.pk).status == status


# --- CSRs ------------------------------------------------------------------------------------


@pytest.fixture
def firm_admin(firm) -> tuple[User, Participant]:
    user = User.objects.create_user("fa", "fa@firm.example", "a long pass phrase 42")
    PortalAccount.objects.create(user=user, firm=firm, role=PortalAccount.Role.ADMIN)
    return user, ParticipantFactory(firm=firm)


def test_auto_sign_issues_at_upload_and_records_the_decision(firm_admin, settings):
    settings.KEYLINE_AUTO_SIGN = True
    user, participant = firm_admin
    before = last_sequence()
    certificate = services.csr_upload(
        user=user, participant_id=participant.pk, data=make_csr(ec_key())
    )
    assert isinstance(certificate, Certificate)
    assert certificate.participant == participant
    request = CertificateRequest.objects.get()
    assert request.status == CertificateRequest.Status.ISSUED
    assert certificate.request == request
    events = [(r.event, r.actor_type, r.actor_label) for r in audit_since(before)]
    assert events == [
        ("csr.submitted", "user", "fa"),
        ("csr.auto_sign_decided", "system", "KEYLINE_AUTO_SIGN"),
        ("certificate.issued", "system", "auto-sign"),
    ]
    decided = AuditRecord.objects.get(event="csr.auto_sign_decided")
    assert (decided.target_type, decided.target_id) == ("pki.certificaterequest", str(request.pk))


def test_auto_sign_through_the_page_lands_on_the_new_certificate(firm_admin, settings):
    settings.KEYLINE_AUTO_SIGN = True
    user, participant = firm_admin
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    response = client.post(
        f"/firm/participants/{participant.pk}/", {"csr_text": make_csr(ec_key()).decode()}
    )
    assert response.status_code == 302
    assert response["Location"] == f"/certificates/{Certificate.objects.get(kind='client').pk}/"


def test_without_auto_sign_a_csr_waits_for_an_officer(firm_admin, settings):
    settings.KEYLINE_AUTO_SIGN = False
    user, participant = firm_admin
    request = services.csr_upload(user=user, participant_id=participant.pk, data=make_csr())
    assert isinstance(request, CertificateRequest)
    assert request.status == CertificateRequest.Status.SUBMITTED
    assert not Certificate.objects.filter(kind="client").exists()
    assert not AuditRecord.objects.filter(event="csr.auto_sign_decided").exists()


def test_an_officer_rejection_needs_a_reason_and_is_final(firm_admin):
    user, participant = firm_admin
    request = services.csr_upload(user=user, participant_id=participant.pk, data=make_csr())
    bob = officer("bob")
    with pytest.raises(Invalid) as refused:
        services.csr_decide(user=bob, request_id=request.pk, approve=False, reason=" ")
    assert refused.value.code == "REASON_REQUIRED"
    rejected = services.csr_decide(user=bob, request_id=request.pk, approve=False, reason="typo")
    assert rejected.status == CertificateRequest.Status.REJECTED
    with pytest.raises(Conflict) as again:
        services.csr_decide(user=bob, request_id=request.pk, approve=True)
    assert again.value.code == "CSR_NOT_PENDING"
    assert not Certificate.objects.filter(kind="client").exists()


# --- the audit trail -------------------------------------------------------------------------


def test_every_security_action_is_audited_with_its_actor(cas, django_capture_on_commit_callbacks):
    alice, bob = officer("alice"), officer("bob")
    application, token = submit("Audited Ltd")
    lei = application.firm.lei
    code = services.callback_start(
        application_id=application.pk, phone="+44 1632 960 555", source="GLEIF", user=alice
    )
    services.callback_confirm(token=token, code=f"{(int(code) + 1) % 10**6:06d}")
    services.callback_confirm(token=token, code=code)
    services.document_add(
        application_id=application.pk,
        title="Register extract",
        upload=SimpleUploadedFile("r.pdf", b"%PDF-1.7\n", "application/pdf"),
        user=alice,
    )
    for kind in KINDS:
        record(application, kind, alice)
    services.application_prepare(application_id=application.pk, user=alice)
    with django_capture_on_commit_callbacks(execute=True):
        services.application_decide(
            application_id=application.pk, approve=True, reason="ok", user=bob
        )
    admin_token = re.search(r"/invite/([^/\s]+)/", mail.outbox[-1].body).group(1)
    admin = services.invitation_accept(token=admin_token, username="fay", password="x" * 12)
    with django_capture_on_commit_callbacks(execute=True):
        participant = services.participant_add(
            user=admin, trader_id="fay-desk", name="Fay Desk", email="d@f.example", role="requester"
        )
    trader_token = re.search(r"/invite/([^/\s]+)/", mail.outbox[-1].body).group(1)
    trader = services.invitation_accept(token=trader_token, username="desk", password="x" * 12)
    key = ec_key()
    with pytest.raises(DomainError):
        services.csr_upload(user=trader, participant_id=participant.pk, data=key_pem(key))
    rejected = services.csr_upload(user=trader, participant_id=participant.pk, data=make_csr())
    services.csr_decide(user=bob, request_id=rejected.pk, approve=False, reason="wrong desk")
    request = services.csr_upload(user=trader, participant_id=participant.pk, data=make_csr(key))
    certificate = services.csr_decide(user=bob, request_id=request.pk, approve=True)
    services.certificate_download(user=trader, certificate_id=certificate.pk, kind="chain")
    services.certificate_revoke_by(user=admin, certificate_id=certificate.pk, reason="superseded")
    second = services.csr_decide(
        user=bob,
        request_id=services.csr_upload(
            user=admin, participant_id=participant.pk, data=make_csr()
        ).pk,
        approve=True,
    )
    services.firm_suspend(firm_id=application.firm_id, offboard=False, reason="x", user=bob)

    applicant = f"applicant {lei}"
    # (event, actor type, actor label, how many at least)
    expected = [
        ("application.submitted", "anonymous", "applicant", 1),
        ("callback.started", "user", "alice", 1),
        ("application.review_started", "user", "alice", 1),
        ("callback.code_wrong", "anonymous", applicant, 1),
        ("callback.confirmed", "anonymous", applicant, 1),
        ("document.added", "user", "alice", 1),
        ("verification.recorded", "user", "alice", 4),
        ("application.prepared", "user", "alice", 1),
        ("application.approved", "user", "bob", 1),
        ("invitation.sent", "user", "bob", 1),
        ("invitation.accepted", "user", "fay", 1),
        ("participant.added", "user", "fay", 1),
        ("invitation.sent", "user", "fay", 1),
        ("invitation.accepted", "user", "desk", 1),
        ("csr.rejected", "user", "desk", 1),
        ("csr.submitted", "user", "desk", 2),
        ("csr.rejected_by_officer", "user", "bob", 1),
        ("certificate.issued", "user", "bob", 2),
        ("certificate.downloaded", "user", "desk", 1),
        ("certificate.revoked", "user", "fay", 1),
        ("firm.suspended", "user", "bob", 1),
        ("certificate.revoked", "user", "bob", 1),
    ]
    users = {u.username: str(u.pk) for u in User.objects.all()}
    problems = []
    for event, actor_type, label, count in expected:
        rows = AuditRecord.objects.filter(event=event, actor_type=actor_type, actor_label=label)
        if actor_type == "user":
            rows = rows.filter(actor_id=users[label])
        if rows.count() < count:
            problems.append((event, label, rows.count()))
    assert problems == []
    revoked_by_firm = AuditRecord.objects.get(event="certificate.revoked", actor_label="bob")
    assert revoked_by_firm.target_id == str(second.pk)
    downloaded = AuditRecord.objects.get(event="certificate.downloaded")
    assert downloaded.details["kind"] == "chain"
    assert downloaded.target_id == str(certificate.pk)
    # The private key that was refused appears in no record.
    secret = key_pem(key).decode().splitlines()[1]
    assert not any(secret in str(r.details) for r in AuditRecord.objects.all())
    assert audit_verify().ok
