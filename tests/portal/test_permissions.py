"""Who may do what in the portal: every URL of ``portal.urls.portal_patterns`` against every
kind of caller, as one table (one test per cell), and the session protections around it (405,
CSRF, session rotation, login lockout, the officers' idle timeout, the second factor's
redirect). A refused request changes nothing."""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

import pytest
import time_machine
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, resolve
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from kernel.audit import Actor
from kernel.models import AuditRecord, Firm, Participant
from pki import est
from pki.models import Certificate, CertificateRequest, EnrollmentToken, EstPolicy
from pki.services import csr_submit
from portal import services
from portal.middleware import LAST_SEEN
from portal.models import (
    Application,
    CallbackChallenge,
    Document,
    Invitation,
    PortalAccount,
    VerificationCheck,
)
from portal.urls import portal_patterns
from tests.factories import FirmFactory, ParticipantFactory, random_lei
from tests.keys import ec_key, make_csr
from tests.portal.conftest import PASSWORD, sign_in, totp_now, verify_session

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n% a small test document\n%%EOF\n"


@pytest.fixture(autouse=True)
def _fast(settings, tmp_path):
    # Hashing with the production hasher costs ~0.3 s a password; these tests make hundreds.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.KEYLINE_DOCUMENTS_DIR = str(tmp_path / "documents")


def application_fields(name: str = "Applicant Ltd", lei: str | None = None) -> dict:
    return {
        "legal_name": name,
        "lei": lei or random_lei(),
        "jurisdiction": "GB",
        "role": "client",
        "contact_name": "Casey Contact",
        "contact_email": "casey@applicant.example",
        "contact_phone": "+44 20 7946 0000",
    }


class World:
    """The objects the URLs point at, made on first use (a cell builds only what it needs):
    firm A (an administrator, a trader tied to participant a1, another participant a2, their
    certificates, a pending CSR), firm B with its administrator, applications at each stage
    (fresh with a pending call-back and a document, ready to prepare, prepared), an
    invitation."""

    def __init__(self, cas, issue, make_officer):
        self._issue, self._make_officer = issue, make_officer

    # --- firms and their users --------------------------------------------------------------

    @cached_property
    def firm_a(self) -> Firm:
        return FirmFactory(legal_name="Firm A Ltd")

    @cached_property
    def firm_b(self) -> Firm:
        return FirmFactory(legal_name="Firm B Ltd")

    @cached_property
    def a1(self) -> Participant:
        return ParticipantFactory(firm=self.firm_a, trader_id="a-one")

    @cached_property
    def a2(self) -> Participant:
        return ParticipantFactory(firm=self.firm_a, trader_id="a-two")

    def _account(self, name: str, firm: Firm, role: str, participant=None) -> User:
        user = User.objects.create_user(name, f"{name}@firm.example", PASSWORD)
        PortalAccount.objects.create(user=user, firm=firm, role=role, participant=participant)
        return user

    @cached_property
    def trader_a_user(self) -> User:
        return self._account("trader-a", self.firm_a, PortalAccount.Role.TRADER, self.a1)

    @cached_property
    def admin_a_user(self) -> User:
        return self._account("admin-a", self.firm_a, PortalAccount.Role.ADMIN)

    @cached_property
    def admin_b_user(self) -> User:
        return self._account("admin-b", self.firm_b, PortalAccount.Role.ADMIN)

    @cached_property
    def cert_a1(self) -> Certificate:
        return self._issue(self.a1, make_csr(ec_key()))

    @cached_property
    def cert_a2(self) -> Certificate:
        return self._issue(self.a2, make_csr(ec_key()))

    @cached_property
    def pending_csr(self) -> CertificateRequest:
        return csr_submit(participant=self.a1, data=make_csr(ec_key()), actor=Actor.system("t"))

    # --- applications ------------------------------------------------------------------------

    @cached_property
    def checker(self) -> User:
        """An officer (by the services' rules: staff) who works the cases up front."""
        return User.objects.create_user("checker", "checker@venue.example", is_staff=True)

    def _submit(self, name: str) -> tuple[Application, str]:
        return services.application_submit(
            fields=application_fields(name), actor=Actor.anonymous("applicant")
        )

    @cached_property
    def fresh(self) -> tuple[Application, str, str]:
        """(application, case token, pending call-back code)."""
        application, token = self._submit("Fresh Applicant Ltd")
        code = services.callback_start(
            application_id=application.pk,
            phone="+44 20 7946 5555",
            source="Companies House",
            user=self.checker,
        )
        return application, token, code

    @property
    def app_fresh(self) -> Application:
        return self.fresh[0]

    @property
    def case_url(self) -> str:
        return f"/apply/case/{self.fresh[1]}/"

    @cached_property
    def document(self) -> Document:
        return services.document_add(
            application_id=self.app_fresh.pk,
            title="Register extract",
            upload=SimpleUploadedFile("extract.pdf", PDF, "application/pdf"),
            user=self.checker,
        )

    def _checked(self, name: str) -> Application:
        application, token = self._submit(name)
        code = services.callback_start(
            application_id=application.pk,
            phone="+44 1632 960000",
            source="GLEIF",
            user=self.checker,
        )
        services.callback_confirm(token=token, code=code)
        for kind in ("lei_registry", "documents", "sanctions", "callback"):
            services.check_record(
                application_id=application.pk,
                kind=kind,
                outcome="passed",
                evidence=f"{kind} fine",
                user=self.checker,
            )
        return application

    @cached_property
    def app_ready(self) -> Application:
        return self._checked("Ready Applicant Ltd")

    @cached_property
    def app_prepared(self) -> Application:
        application = self._checked("Prepared Applicant Ltd")
        return services.application_prepare(application_id=application.pk, user=self.checker)

    @cached_property
    def a1_token(self) -> EnrollmentToken:
        """An open EST enrollment token for participant a1."""
        return est.enrollment_token_create(participant=self.a1, actor=Actor.system("t"))[0]

    @cached_property
    def strangers_passkey(self) -> WebAuthnCredential:
        """A passkey of a user none of the callers is."""
        stranger = User.objects.create_user("stranger", "s@elsewhere.example", PASSWORD)
        return WebAuthnCredential.objects.create(
            user=stranger, name="passkey 1", credential_id=b"\x01" * 32, public_key=b"\x02"
        )

    @cached_property
    def invitation_token(self) -> str:
        token = "invitation-token-for-the-permission-matrix"
        Invitation.objects.create(
            firm=self.firm_a,
            email="new-admin@firm-a.example",
            role=PortalAccount.Role.ADMIN,
            token_hash=services.token_hash(token),
            created_by="test",
            expires_at=timezone.now() + timedelta(days=7),
        )
        return token

    # --- callers -----------------------------------------------------------------------------

    def client_for(self, caller: str) -> Client:
        if caller == "anonymous":
            return Client()
        if caller in ("officer", "officer_unverified"):
            client, _ = self._make_officer(caller, verified=caller == "officer")
            return client
        user = {
            "trader_a": lambda: self.trader_a_user,
            "admin_a": lambda: self.admin_a_user,
            "admin_b": lambda: self.admin_b_user,
        }[caller]()
        client = Client()
        client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        if caller.startswith("admin_"):
            verify_session(client, user)  # administrators act with a second factor
        return client


@pytest.fixture
def world(cas, issue, make_officer) -> World:
    return World(cas, issue, make_officer)


def db_state() -> tuple:
    """Everything a portal action can change (for "a refused request changes nothing")."""

    def rows(model, *fields):
        return list(model.objects.order_by("pk").values_list("pk", *fields))

    return (
        AuditRecord.objects.count(),
        rows(Firm, "status"),
        rows(Participant, "is_active"),
        rows(User, "is_active"),
        rows(PortalAccount),
        rows(Application, "prepared_at", "decided_at"),
        rows(VerificationCheck),
        rows(Document),
        rows(CallbackChallenge, "attempts", "confirmed_at"),
        rows(Invitation, "used_at"),
        rows(CertificateRequest, "status"),
        rows(Certificate, "status"),
        rows(TOTPDevice, "confirmed"),
        rows(WebAuthnCredential),
        rows(EnrollmentToken, "revoked_at"),
        rows(EstPolicy, "renewal_window_percent"),
    )


def error_code(response) -> str | None:
    found = re.search(rb'id="error-code">([A-Z0-9_]+)<', response.content)
    return found.group(1).decode() if found else None


# --- the matrix ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    method: str
    url: Callable[[World], str]
    data: Callable[[World], dict] | None = None


@dataclass(frozen=True)
class Expect:
    status: int
    detail: str = ""  # 4xx: the machine code on the error page; 302: where to

    def __repr__(self) -> str:
        return f"{self.status}{' ' + self.detail if self.detail else ''}"


OK = Expect(200)
CREATED = Expect(201)
DONE = Expect(302, "(the action's own page)")  # succeeded: redirected on, something changed
LOGIN = Expect(302, "/accounts/login/?next=")
VERIFY = Expect(302, "/accounts/verify/?next=")
TO_FIRM = Expect(302, "/firm/")
TO_DESK = Expect(302, "/officer/")
INVALID = Expect(400)
OFFICERS = Expect(403, "OFFICER_REQUIRED")
FIRM_ONLY = Expect(403, "FIRM_USER_REQUIRED")
ADMINS = Expect(403, "FIRM_ADMIN_REQUIRED")
NO_APP = Expect(404, "APPLICATION_NOT_FOUND")
NO_INV = Expect(404, "INVITATION_INVALID")
NO_PART = Expect(404, "PARTICIPANT_NOT_FOUND")
NO_CERT = Expect(404, "CERTIFICATE_NOT_FOUND")
NO_KEY = Expect(404, "PASSKEY_NOT_FOUND")
NO_TOKEN = Expect(404, "EST_TOKEN_NOT_FOUND")
HELD = Expect(409, "SECOND_FACTOR_PRESENT")
REFUSALS = {LOGIN, VERIFY, OFFICERS, FIRM_ONLY, ADMINS, NO_PART, NO_CERT, NO_KEY, HELD, NO_TOKEN}


def _case(w: World, suffix: str = "") -> str:
    return f"/officer/cases/{w.app_fresh.pk}/{suffix}"


ACTIONS: dict[str, Action] = {
    "home": Action("get", lambda w: "/"),
    "apply": Action("get", lambda w: "/apply/"),
    "apply POST": Action("post", lambda w: "/apply/", lambda w: application_fields("New Ltd")),
    "case": Action("get", lambda w: w.case_url),
    "case POST code": Action("post", lambda w: w.case_url, lambda w: {"code": w.fresh[2]}),
    "case bad-token": Action("get", lambda w: "/apply/case/no-such-token/"),
    "invite": Action("get", lambda w: f"/invite/{w.invitation_token}/"),
    "invite POST": Action(
        "post",
        lambda w: f"/invite/{w.invitation_token}/",
        lambda w: {
            "username": "newcomer",
            "password": "a long pass phrase 42",
            "password2": "a long pass phrase 42",
        },
    ),
    "invite bad-token": Action("get", lambda w: "/invite/no-such-token/"),
    "csr-help": Action("get", lambda w: "/help/csr/"),
    "verify": Action("get", lambda w: "/accounts/verify/"),
    "verify POST bad": Action("post", lambda w: "/accounts/verify/", lambda w: {"token": "x"}),
    "security": Action("get", lambda w: "/accounts/security/"),
    "security POST": Action("post", lambda w: "/accounts/security/", lambda w: {"token": "x"}),
    "factor-reset": Action(
        "get", lambda w: f"/officer/users/{w.admin_a_user.pk}/second-factor-reset/"
    ),
    "factor-reset POST": Action(
        "post",
        lambda w: f"/officer/users/{w.admin_a_user.pk}/second-factor-reset/",
        lambda w: {"reason": "lost phone; call-back to the registered number"},
    ),
    "token-new POST": Action("post", lambda w: f"/participants/{w.a1.pk}/enrollment-tokens/"),
    "token-revoke POST": Action("post", lambda w: f"/enrollment-tokens/{w.a1_token.pk}/revoke/"),
    "est-policy POST": Action(
        "post",
        lambda w: f"/officer/firms/{w.firm_a.pk}/est-policy/",
        lambda w: {"auto_sign_renewal": "on", "renewal_window_percent": "50"},
    ),
    "passkey-remove POST other": Action(
        "post", lambda w: f"/accounts/security/passkeys/{w.strangers_passkey.pk}/remove/"
    ),
    "officer": Action("get", lambda w: "/officer/"),
    "officer-case": Action("get", lambda w: _case(w)),
    "officer-check POST": Action(
        "post",
        lambda w: _case(w, "checks/"),
        lambda w: {"kind": "lei_registry", "outcome": "passed", "evidence": "GLEIF matches"},
    ),
    "officer-doc POST": Action(
        "post",
        lambda w: _case(w, "documents/"),
        lambda w: {
            "title": "Passport",
            "file": SimpleUploadedFile("p.pdf", PDF, "application/pdf"),
        },
    ),
    "officer-doc-download": Action("get", lambda w: _case(w, f"documents/{w.document.pk}/")),
    "officer-callback POST": Action(
        "post",
        lambda w: _case(w, "callback/"),
        lambda w: {"phone": "+44 20 7946 1234", "source": "the firm's website"},
    ),
    "officer-prepare POST": Action(
        "post", lambda w: f"/officer/cases/{w.app_ready.pk}/prepare/", lambda w: {}
    ),
    "officer-decide POST": Action(
        "post",
        lambda w: f"/officer/cases/{w.app_prepared.pk}/decide/",
        lambda w: {"decision": "approve", "reason": "every check passed"},
    ),
    "officer-firm": Action("get", lambda w: f"/officer/firms/{w.firm_a.pk}/"),
    "officer-firm confirm": Action("get", lambda w: f"/officer/firms/{w.firm_a.pk}/suspend/"),
    "officer-firm POST": Action(
        "post",
        lambda w: f"/officer/firms/{w.firm_a.pk}/suspend/",
        lambda w: {"reason": "sanctions hit", "confirm_name": "Firm A Ltd"},
    ),
    "officer-csr": Action("get", lambda w: f"/officer/csrs/{w.pending_csr.pk}/"),
    "officer-audit": Action("get", lambda w: "/officer/audit/"),
    "officer-audit-export": Action("get", lambda w: "/officer/audit/export.csv"),
    "officer-audit-verify POST": Action("post", lambda w: "/officer/audit/verify/", lambda w: {}),
    "officer-csr POST": Action(
        "post",
        lambda w: f"/officer/csrs/{w.pending_csr.pk}/decide/",
        lambda w: {"decision": "sign"},
    ),
    "firm": Action("get", lambda w: "/firm/"),
    "participant-new": Action("get", lambda w: "/firm/participants/new/"),
    "participant-new POST": Action(
        "post",
        lambda w: "/firm/participants/new/",
        lambda w: {
            "trader_id": "new-desk",
            "name": "New Desk",
            "email": "desk@firm.example",
            "role": "requester",
        },
    ),
    "participant own": Action("get", lambda w: f"/firm/participants/{w.a1.pk}/"),
    "participant other": Action("get", lambda w: f"/firm/participants/{w.a2.pk}/"),
    "participant POST own": Action(
        "post",
        lambda w: f"/firm/participants/{w.a1.pk}/",
        lambda w: {"csr_text": make_csr(ec_key()).decode()},
    ),
    "participant POST other": Action(
        "post",
        lambda w: f"/firm/participants/{w.a2.pk}/",
        lambda w: {"csr_text": make_csr(ec_key()).decode()},
    ),
    "certificate own": Action("get", lambda w: f"/certificates/{w.cert_a1.pk}/"),
    "certificate other": Action("get", lambda w: f"/certificates/{w.cert_a2.pk}/"),
    "cert-download own": Action("get", lambda w: f"/certificates/{w.cert_a1.pk}/download/chain/"),
    "cert-download other": Action("get", lambda w: f"/certificates/{w.cert_a2.pk}/download/cert/"),
    "cert-connect own": Action("get", lambda w: f"/certificates/{w.cert_a1.pk}/connect/"),
    "cert-revoke own": Action("get", lambda w: f"/certificates/{w.cert_a1.pk}/revoke/"),
    "cert-revoke other": Action("get", lambda w: f"/certificates/{w.cert_a2.pk}/revoke/"),
    "cert-revoke POST own": Action(
        "post",
        lambda w: f"/certificates/{w.cert_a1.pk}/revoke/",
        lambda w: {"reason": "superseded"},
    ),
    "cert-revoke POST other": Action(
        "post",
        lambda w: f"/certificates/{w.cert_a2.pk}/revoke/",
        lambda w: {"reason": "superseded"},
    ),
}

CALLERS = ("anonymous", "trader_a", "admin_a", "admin_b", "officer_unverified", "officer")

# fmt: off
MATRIX = [
    # action                   anonymous trader_a  admin_a   admin_b   unverified officer
    ("home",                     OK,       TO_FIRM,  TO_FIRM,  TO_FIRM,  TO_DESK,  TO_DESK),
    ("apply",                    OK,       OK,       OK,       OK,       OK,       OK),
    ("apply POST",               CREATED,  CREATED,  CREATED,  CREATED,  CREATED,  CREATED),
    ("case",                     OK,       OK,       OK,       OK,       OK,       OK),
    ("case POST code",           DONE,     DONE,     DONE,     DONE,     DONE,     DONE),
    ("case bad-token",           NO_APP,   NO_APP,   NO_APP,   NO_APP,   NO_APP,   NO_APP),
    ("invite",                   OK,       OK,       OK,       OK,       OK,       OK),
    ("invite POST",              DONE,     DONE,     DONE,     DONE,     DONE,     DONE),
    ("invite bad-token",         NO_INV,   NO_INV,   NO_INV,   NO_INV,   NO_INV,   NO_INV),
    ("csr-help",                 OK,       OK,       OK,       OK,       OK,       OK),
    ("verify",                   LOGIN,    OK,       OK,       OK,       OK,       OK),
    ("verify POST bad",          LOGIN,    INVALID,  INVALID,  INVALID,  INVALID,  INVALID),
    ("security",                 LOGIN,    OK,       OK,       OK,       OK,       OK),
    ("security POST",            LOGIN,    INVALID,  HELD,     HELD,     HELD,     HELD),
    ("passkey-remove POST other", LOGIN,   VERIFY,   NO_KEY,   NO_KEY,   VERIFY,   NO_KEY),
    ("factor-reset",             LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   OK),
    ("factor-reset POST",        LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   DONE),
    ("token-new POST",           LOGIN,    ADMINS,   CREATED,  NO_PART,  VERIFY,   CREATED),
    ("token-revoke POST",        LOGIN,    ADMINS,   DONE,     NO_TOKEN, VERIFY,   DONE),
    ("est-policy POST",          LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   DONE),
    ("officer",                  LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   OK),
    ("officer-case",             LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   OK),
    ("officer-check POST",       LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   DONE),
    ("officer-doc POST",         LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   DONE),
    ("officer-doc-download",     LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   OK),
    ("officer-callback POST",    LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   DONE),
    ("officer-prepare POST",     LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   DONE),
    ("officer-decide POST",      LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   DONE),
    ("officer-firm",             LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   OK),
    ("officer-firm confirm",     LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   OK),
    ("officer-firm POST",        LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   DONE),
    ("officer-csr",              LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   OK),
    ("officer-audit",            LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   OK),
    ("officer-audit-export",     LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   OK),
    ("officer-audit-verify POST", LOGIN,   OFFICERS, OFFICERS, OFFICERS, VERIFY,   DONE),
    ("officer-csr POST",         LOGIN,    OFFICERS, OFFICERS, OFFICERS, VERIFY,   DONE),
    ("firm",                     LOGIN,    OK,       OK,       OK,       VERIFY,   FIRM_ONLY),
    ("participant-new",          LOGIN,    ADMINS,   OK,       OK,       VERIFY,   FIRM_ONLY),
    ("participant-new POST",     LOGIN,    ADMINS,   DONE,     DONE,     VERIFY,   FIRM_ONLY),
    ("participant own",          LOGIN,    OK,       OK,       NO_PART,  VERIFY,   FIRM_ONLY),
    ("participant other",        LOGIN,    NO_PART,  OK,       NO_PART,  VERIFY,   FIRM_ONLY),
    ("participant POST own",     LOGIN,    DONE,     DONE,     NO_PART,  VERIFY,   FIRM_ONLY),
    ("participant POST other",   LOGIN,    NO_PART,  DONE,     NO_PART,  VERIFY,   FIRM_ONLY),
    ("certificate own",          LOGIN,    OK,       OK,       NO_CERT,  VERIFY,   OK),
    ("certificate other",        LOGIN,    NO_CERT,  OK,       NO_CERT,  VERIFY,   OK),
    ("cert-download own",        LOGIN,    OK,       OK,       NO_CERT,  VERIFY,   OK),
    ("cert-download other",      LOGIN,    NO_CERT,  OK,       NO_CERT,  VERIFY,   OK),
    ("cert-connect own",         LOGIN,    OK,       OK,       NO_CERT,  VERIFY,   OK),
    ("cert-revoke own",          LOGIN,    ADMINS,   OK,       NO_CERT,  VERIFY,   OK),
    ("cert-revoke other",        LOGIN,    NO_CERT,  OK,       NO_CERT,  VERIFY,   OK),
    ("cert-revoke POST own",     LOGIN,    ADMINS,   DONE,     NO_CERT,  VERIFY,   DONE),
    ("cert-revoke POST other",   LOGIN,    NO_CERT,  DONE,     NO_CERT,  VERIFY,   DONE),
]
# fmt: on

CELLS = [
    pytest.param(action, caller, expect, id=f"{action} | {caller} -> {expect!r}")
    for action, *row in MATRIX
    for caller, expect in zip(CALLERS, row, strict=True)
]


def test_the_matrix_covers_every_portal_url(world):
    """Each URL in portal_patterns has at least one row; a new URL fails here until it has."""
    names = {p.name for p in portal_patterns if isinstance(p, URLPattern)}
    covered = {resolve(action.url(world)).url_name for action in ACTIONS.values()}
    assert covered == names
    assert {action for action, *_ in MATRIX} == set(ACTIONS)


@pytest.mark.parametrize(("action_name", "caller", "expect"), CELLS)
def test_permission_matrix(world, action_name, caller, expect):
    action = ACTIONS[action_name]
    client = world.client_for(caller)
    url = action.url(world)
    data = action.data(world) if action.data else None
    before = db_state()

    send = getattr(client, action.method)
    response = send(url, data) if data is not None else send(url)

    assert response.status_code == expect.status, (response.status_code, response.content[:600])
    if expect.status == 302:
        location = response["Location"]
        if expect is DONE:
            assert not location.startswith(("/accounts/login/?", "/accounts/verify/")), location
        elif expect.detail.endswith("?next="):
            assert location.startswith(expect.detail), location
            assert location.endswith(url), location  # back where it was going, afterwards
        else:
            assert location == expect.detail
    elif expect.status >= 400 and expect.detail:
        assert error_code(response) == expect.detail
    if expect in REFUSALS or expect.status in (404, 405):
        assert db_state() == before, "a refused request changed something"
    if expect in (DONE, CREATED):
        assert db_state() != before, "the action claimed success but changed nothing"


def test_a_firm_user_sees_only_its_own(world):
    a1, a2, cert_a1 = world.a1, world.a2, world.cert_a1
    b_page = world.client_for("admin_b").get("/firm/").content.decode()
    assert "Firm B Ltd" in b_page
    assert a1.trader_id not in b_page
    assert "Firm A Ltd" not in b_page
    trader_page = world.client_for("trader_a").get("/firm/").content.decode()
    assert a1.trader_id in trader_page
    assert cert_a1.serial[:15] in trader_page
    assert a2.trader_id not in trader_page
    admin_page = world.client_for("admin_a").get("/firm/").content.decode()
    assert a1.trader_id in admin_page
    assert a2.trader_id in admin_page


def test_a_firm_b_participant_added_by_its_admin_belongs_to_firm_b(world):
    client = world.client_for("admin_b")
    response = client.post(
        "/firm/participants/new/",
        {"trader_id": "b-desk", "name": "B Desk", "email": "b@firm.example", "role": "requester"},
    )
    assert response.status_code == 302
    assert Participant.objects.get(trader_id="b-desk").firm == world.firm_b


# --- methods ---------------------------------------------------------------------------------

POST_ONLY = [
    "officer-check POST",
    "officer-doc POST",
    "officer-callback POST",
    "officer-prepare POST",
    "officer-decide POST",
    "officer-csr POST",
    "officer-audit-verify POST",
]
GET_ONLY = [
    "home",
    "csr-help",
    "officer",
    "officer-case",
    "officer-csr",
    "officer-firm",
    "officer-audit",
    "officer-audit-export",
    "officer-doc-download",
    "firm",
    "certificate own",
    "cert-download own",
    "cert-connect own",
]


@pytest.mark.parametrize("caller", ["anonymous", "officer"])
@pytest.mark.parametrize("action_name", POST_ONLY)
def test_get_on_a_post_only_url_is_405(world, action_name, caller):
    client = world.client_for(caller)
    url = ACTIONS[action_name].url(world)
    before = db_state()
    response = client.get(url)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert db_state() == before


@pytest.mark.parametrize("caller", ["anonymous", "admin_a", "officer"])
@pytest.mark.parametrize("action_name", GET_ONLY)
def test_post_on_a_get_only_url_is_405(world, action_name, caller):
    client = world.client_for(caller)
    url = ACTIONS[action_name].url(world)
    before = db_state()
    response = client.post(url, {})
    assert response.status_code == 405
    assert db_state() == before


# --- CSRF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "action_name", "form_page"),
    [
        ("officer", "officer-check POST", lambda w: _case(w)),
        ("officer", "officer-firm POST", lambda w: f"/officer/firms/{w.firm_a.pk}/suspend/"),
        ("admin_a", "participant-new POST", lambda w: "/firm/participants/new/"),
        ("admin_a", "cert-revoke POST own", lambda w: f"/certificates/{w.cert_a1.pk}/revoke/"),
        ("trader_a", "participant POST own", lambda w: f"/firm/participants/{w.a1.pk}/"),
        ("anonymous", "apply POST", lambda w: "/apply/"),
        ("anonymous", "case POST code", lambda w: w.case_url),
        ("anonymous", "invite POST", lambda w: f"/invite/{w.invitation_token}/"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_post_without_the_csrf_token_is_refused(world, caller, action_name, form_page):
    signed_in = world.client_for(caller)
    client = Client(enforce_csrf_checks=True)
    client.cookies = signed_in.cookies  # the same session, from a browser that checks CSRF
    action = ACTIONS[action_name]
    url, data = action.url(world), action.data(world)
    page = client.get(form_page(world))
    assert page.status_code == 200
    before = db_state()

    refused = client.post(url, data)
    assert refused.status_code == 403
    assert b"CSRF" in refused.content
    assert db_state() == before

    token = client.cookies["csrftoken"].value
    accepted = client.post(url, {**action.data(world), "csrfmiddlewaretoken": token})
    assert accepted.status_code in (201, 302), accepted.content[:600]
    assert db_state() != before


def test_the_login_form_checks_csrf(world):
    world.admin_a_user  # noqa: B018 - made for its side effect
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "admin-a", "password": PASSWORD})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


# --- sessions --------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["firm admin", "officer"])
def test_the_session_key_rotates_at_login(world, who):
    if who == "officer":
        name = "officer-rotation"
        User.objects.create_user(name, f"{name}@venue.example", PASSWORD, is_staff=True)
    else:
        name = world.admin_a_user.username
    client = Client()
    planted = client.session  # an anonymous session: what a fixation attacker would plant
    planted["planted"] = True
    planted.save()
    before = client.cookies["sessionid"].value
    assert before == planted.session_key

    sign_in(client, name)
    after = client.cookies["sessionid"].value
    assert after != before
    assert client.session.get("_auth_user_id") == str(User.objects.get(username=name).pk)
    # The planted key no longer names a session, let alone a signed-in one.
    attacker = Client()
    attacker.cookies["sessionid"] = before
    assert "_auth_user_id" not in attacker.session
    assert attacker.get("/firm/")["Location"].startswith("/accounts/login/")


def _login(client: Client, username: str, password: str, ip: str = "127.0.0.1"):
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip
    )


def test_five_wrong_passwords_lock_the_user_name(world):
    user = world.admin_a_user
    client = Client()
    for attempt in range(1, 5):
        response = _login(client, user.username, "wrong password", ip="192.0.2.1")
        assert response.status_code == 200, attempt  # the form again, with its error
    fifth = _login(client, user.username, "wrong password", ip="192.0.2.1")
    assert fifth.status_code == 429  # django-axes 8: AXES_HTTP_RESPONSE_CODE defaults to 429

    # The right password, even from another address, is refused for the cool-off hour.
    for ip in ("192.0.2.1", "198.51.100.7"):
        sixth = _login(Client(), user.username, PASSWORD, ip=ip)
        assert sixth.status_code == 429
        assert b'data-code="login_locked"' in sixth.content
        assert b"Too many failed sign-ins" in sixth.content
    assert "_auth_user_id" not in client.session
    # Visible to whoever looks: django-axes keeps the attempts (admin, axes_list_attempts).
    attempt = AccessAttempt.objects.get(username=user.username, ip_address="192.0.2.1")
    assert attempt.failures_since_start >= 5

    # An hour later the right password works again.
    with time_machine.travel(timezone.now() + timedelta(hours=1, minutes=1)):
        assert _login(Client(), user.username, PASSWORD, ip="203.0.113.5").status_code == 302


def test_five_failures_from_one_address_lock_every_user_name_there(world):
    victim = world.admin_b_user
    for n in range(5):
        _login(Client(), f"guess-{n}", "wrong password", ip="192.0.2.66")
    assert _login(Client(), victim.username, PASSWORD, ip="192.0.2.66").status_code == 429
    assert _login(Client(), victim.username, PASSWORD, ip="192.0.2.67").status_code == 302


@pytest.fixture
def idle_settings(settings):
    settings.KEYLINE_OFFICER_IDLE_SECONDS = 60
    return settings


def test_an_idle_officer_is_signed_out(world, idle_settings):
    client = world.client_for("officer")
    assert client.get("/officer/").status_code == 200
    with time_machine.travel(time.time() + 50):
        assert client.get("/officer/").status_code == 200  # active: the clock restarts
    with time_machine.travel(time.time() + 50 + 61):
        response = client.get("/officer/cases/1/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/officer/cases/1/"
    assert "_auth_user_id" not in client.session  # signed out, not just redirected
    assert client.get("/officer/")["Location"].startswith("/accounts/login/")
    page = client.get("/accounts/login/").content.decode()
    assert "signed out after a period of inactivity" in page


def test_an_idle_officer_session_edited_to_look_old_is_signed_out(world, idle_settings):
    client = world.client_for("officer")
    assert client.get("/officer/").status_code == 200
    session = client.session
    session[LAST_SEEN] = int(time.time()) - 61
    session.save()
    response = client.post(_case(world, "checks/"), ACTIONS["officer-check POST"].data(world))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert not VerificationCheck.objects.exists()


def test_firm_users_have_no_officer_idle_timeout(world, settings):
    settings.KEYLINE_OFFICER_IDLE_SECONDS = 60
    client = world.client_for("admin_a")
    with time_machine.travel(time.time() + 3600):
        assert client.get("/firm/").status_code == 200


# --- the second factor's redirect -----------------------------------------------------------


@pytest.mark.parametrize(
    ("next_url", "lands_on"),
    [
        ("/officer/cases/7/", "/officer/cases/7/"),
        ("//evil.example/", "/officer/"),
        ("/\\evil.example/", "/officer/"),
        ("/\\/evil.example/", "/officer/"),
        ("https://evil.example/", "/officer/"),
        ("javascript:alert(1)", "/officer/"),
    ],
)
def test_the_second_factor_only_redirects_within_the_portal(make_officer, next_url, lands_on):
    client, user = make_officer("verifier", verified=False)
    device = TOTPDevice.objects.get(user=user)
    response = client.post("/accounts/verify/?" + f"next={next_url}", {"token": totp_now(device)})
    assert response.status_code == 302
    assert response["Location"] == lands_on
