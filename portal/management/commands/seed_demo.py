"""Demo data: an officer, a client firm and a liquidity-provider firm with two traders each.

The traders' keys and CSRs are made here the way a client makes them on its own machine; the
keys are written only to the output directory and never reach the database or the CA. The
command is idempotent: a trader whose live certificate and key are already in the output
directory is left alone.
"""

import secrets
from pathlib import Path
from typing import Any, TypedDict

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from kernel.audit import Actor, audit_record
from kernel.errors import NotFound
from kernel.lei import lei_with_check_digits
from kernel.models import Firm, Participant
from pki import est
from pki.keystore import atomic_write
from pki.management.commands._base import KeylineCommand
from pki.models import Certificate, CertificateAuthority, EnrollmentToken, EstPolicy
from pki.selectors import ca_get_active
from pki.services import certificate_issue, command_actor, csr_submit
from portal.services import application_submit


class DemoFirm(TypedDict):
    legal_name: str
    lei: str
    jurisdiction: str
    role: str
    contact_name: str
    contact_email: str
    contact_phone: str
    traders: list[tuple[str, str, str]]  # (trader id, name, participant role)


DEMO_FIRMS: list[DemoFirm] = [
    {
        "legal_name": "Northwind Asset Management LLP",
        "lei": lei_with_check_digits("984500NWASSETMGT01"),
        "jurisdiction": "GB",
        "role": Firm.Role.CLIENT,
        "contact_name": "Nora West",
        "contact_email": "ops@northwind.example",
        "contact_phone": "+44 20 7946 0001",
        "traders": [
            ("nw-alice", "Alice Northwind", Participant.Role.REQUESTER),
            ("nw-bob", "Bob Northwind", Participant.Role.REQUESTER),
        ],
    },
    {
        "legal_name": "Harbour Lane Markets Ltd",
        "lei": lei_with_check_digits("984500HARBOURLANE1"),
        "jurisdiction": "IE",
        "role": Firm.Role.LIQUIDITY_PROVIDER,
        "contact_name": "Hal Lane",
        "contact_email": "desk@harbourlane.example",
        "contact_phone": "+353 1 555 0102",
        "traders": [
            ("hl-carol", "Carol Harbour", Participant.Role.LIQUIDITY_PROVIDER),
            ("hl-dave", "Dave Harbour", Participant.Role.LIQUIDITY_PROVIDER),
        ],
    },
    {
        "legal_name": "Quayside Liquidity GmbH",
        "lei": lei_with_check_digits("984500QUAYSIDELIQ1"),
        "jurisdiction": "DE",
        "role": Firm.Role.LIQUIDITY_PROVIDER,
        "contact_name": "Quinn Side",
        "contact_email": "trading@quayside.example",
        "contact_phone": "+49 69 555 0103",
        "traders": [("qs-erin", "Erin Quayside", Participant.Role.LIQUIDITY_PROVIDER)],
    },
]
# A Northwind trader with no certificate yet: it enrolls over EST with the trader's client
# (README: three commands), with the token and client configuration written to var/demo/.
EST_TRADER = ("nw-fay", "Fay Northwind", Participant.Role.REQUESTER)
OFFICER = "officer"
# Four eyes: one officer prepares a case, the other decides it. Same demo password.
OFFICERS = (OFFICER, "officer2")
TOTP_DEVICE = "demo authenticator"
DEMO_APPLICANT = {
    "legal_name": "Estuary Capital Partners SA",
    "lei": lei_with_check_digits("984500ESTUARYCAP01"),
    "jurisdiction": "LU",
    "role": Firm.Role.CLIENT,
    "contact_name": "Eve Stuart",
    "contact_email": "eve@estuary.example",
    "contact_phone": "+352 555 0104",
}


def client_make_key_and_csr(trader_id: str) -> tuple[bytes, bytes]:
    """What a trader runs locally (``openssl req -new -newkey ec ...``): a new EC P-256 key
    and a CSR signed with it. Returns (key PEM, CSR PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, trader_id)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


class Command(KeylineCommand):
    help = "Create demo firms, traders and their certificates (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", type=Path, default=None, metavar="DIR")

    def handle(self, *args: Any, out: Path | None, **options: Any) -> None:
        from django.conf import settings

        out = out or Path(settings.VAR_DIR) / "demo"
        out.mkdir(parents=True, exist_ok=True)
        try:
            client_ca = ca_get_active(CertificateAuthority.Kind.CLIENT)
            root = ca_get_active(CertificateAuthority.Kind.ROOT)
        except NotFound as exc:
            raise CommandError("no CA yet: run 'manage.py init_ca' first", returncode=2) from exc
        actor = command_actor("seed_demo")
        password = self._officer(out, actor)
        atomic_write(out / "root.pem", root.certificate_pem.encode())
        atomic_write(out / "chain.pem", (client_ca.certificate_pem + root.certificate_pem).encode())

        if not Firm.objects.filter(lei=DEMO_APPLICANT["lei"]).exists():
            _, token = application_submit(fields=dict(DEMO_APPLICANT), actor=actor)
            atomic_write(
                out / "applicant-case-link.txt", f"/apply/case/{token}/\n".encode(), mode=0o600
            )

        for spec in DEMO_FIRMS:
            firm = self._firm(spec, actor)
            for trader_id, name, role in spec["traders"]:
                participant, _ = Participant.objects.get_or_create(
                    trader_id=trader_id,
                    defaults={
                        "firm": firm,
                        "name": name,
                        "email": f"{trader_id}@{spec['contact_email'].split('@')[1]}",
                        "role": role,
                    },
                )
                state = self._certificate(participant, out, actor)
                self.stdout.write(f"  {trader_id:10} {firm.legal_name}: {state}")

        self.stdout.write(
            f"  {EST_TRADER[0]:10} {DEMO_FIRMS[0]['legal_name']}: {self._est(out, actor)}"
        )
        self.stdout.write(f"Demo files in {out}")
        self.stdout.write(
            f"Demo officers {', '.join(OFFICERS)}: second factor from "
            f"'manage.py demo_totp <officer>' (secrets in {out}/officer-totp.txt)"
        )
        self.stdout.write(f"Demo officer login: {OFFICER} / {password}")

    def _officer(self, out: Path, actor: Actor) -> str:
        """The demo officers (one password, each with a TOTP device). The password and the
        TOTP secrets are written 0600 beside the demo keys."""
        from django_otp.plugins.otp_totp.models import TOTPDevice

        password_file, totp_file = out / "officer-password.txt", out / "officer-totp.txt"
        user_model = get_user_model()
        existing = user_model.objects.filter(username__in=OFFICERS).count()
        if existing == len(OFFICERS) and password_file.exists() and totp_file.exists():
            return password_file.read_text().strip()
        password = secrets.token_urlsafe(12)
        uris = []
        with transaction.atomic():
            for name in OFFICERS:
                user = user_model.objects.filter(username=name).first()
                if user is None:
                    user = user_model.objects.create_user(name, email=f"{name}@keyline.example")
                user.set_password(password)
                user.is_staff = user.is_superuser = True
                user.save()
                TOTPDevice.objects.filter(user=user).delete()
                device = TOTPDevice.objects.create(user=user, name=TOTP_DEVICE, confirmed=True)
                uris.append(device.config_url)
                audit_record(event="demo.officer_set", actor=actor, target=user, username=name)
        atomic_write(password_file, password.encode(), mode=0o600)
        atomic_write(totp_file, ("\n".join(uris) + "\n").encode(), mode=0o600)
        return password

    def _firm(self, spec: DemoFirm, actor: Actor) -> Firm:
        fields = {k: v for k, v in spec.items() if k not in ("lei", "traders")}
        with transaction.atomic():
            firm, created = Firm.objects.get_or_create(
                lei=spec["lei"], defaults={**fields, "status": Firm.Status.APPROVED}
            )
            if created:
                firm.full_clean()
                audit_record(event="demo.firm_created", actor=actor, target=firm, lei=firm.lei)
        return firm

    def _est(self, out: Path, actor: Actor) -> str:
        """The EST demo trader: Northwind signs first certificates enrolled with a token at
        once; a fresh token (0600) and the client's configuration are written while the
        trader holds no live certificate."""
        trader_id, name, role = EST_TRADER
        firm = Firm.objects.get(lei=DEMO_FIRMS[0]["lei"])
        participant, _ = Participant.objects.get_or_create(
            trader_id=trader_id,
            defaults={"firm": firm, "name": name, "email": f"{trader_id}@northwind.example",
                      "role": role},
        )  # fmt: skip
        if not EstPolicy.objects.filter(firm=firm).exists():
            est.policy_set(firm=firm, actor=actor, auto_sign_enrollment=True)
        home = out / trader_id
        home.mkdir(mode=0o700, exist_ok=True)
        atomic_write(
            out / f"{trader_id}.toml",
            (
                f'api_url = "{settings.KEYLINE_API_URL}"\n'
                f'ca_file = "{out / "root.pem"}"\n'
                f'trader_id = "{trader_id}"\n'
                f'key_file = "{home / "key.pem"}"\n'
                f'cert_file = "{home / "cert.pem"}"\n'
                f'chain_file = "{home / "chain.pem"}"\n'
            ).encode(),
            mode=0o600,
        )
        token_file = out / f"{trader_id}.token"
        live = participant.certificates.live().filter(kind=Certificate.Kind.CLIENT).first()
        if live is not None:
            token_file.unlink(missing_ok=True)
            return f"enrolled by EST: certificate {live.serial}"
        kept = token_file.read_text().strip() if token_file.exists() else ""
        open_token = EnrollmentToken.objects.filter(
            participant=participant, token_sha256=est.token_sha256(kept)
        ).first()
        if open_token is None or open_token.state() != "open":
            _, token = est.enrollment_token_create(participant=participant, actor=actor)
            atomic_write(token_file, f"{token}\n".encode(), mode=0o600)
        return f"no certificate yet: enrollment token in {token_file}"

    def _certificate(self, participant: Participant, out: Path, actor: Actor) -> str:
        tid = participant.trader_id
        key_path, csr_path, pem_path = (out / f"{tid}.{ext}" for ext in ("key", "csr", "pem"))
        live = (
            participant.certificates.live()
            .filter(kind=Certificate.Kind.CLIENT)
            .order_by("-not_after")
            .first()
        )
        if live and key_path.exists() and pem_path.exists() and pem_path.read_text() == live.pem:
            return f"kept certificate {live.serial}"
        key_pem, csr_pem = client_make_key_and_csr(tid)
        request = csr_submit(participant=participant, data=csr_pem, actor=actor)
        certificate = certificate_issue(request=request, actor=actor)
        atomic_write(key_path, key_pem, mode=0o600)
        atomic_write(csr_path, csr_pem)
        atomic_write(pem_path, certificate.pem.encode())
        return f"issued certificate {certificate.serial}"
