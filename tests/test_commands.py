"""The management commands other issues and the README rely on: each exits non-zero with a
one-line reason on failure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from django.core.management import call_command
from django.core.management.base import CommandError

from kernel.lei import lei_is_valid
from kernel.models import AuditRecord, Firm, Participant
from pki.models import Certificate, CertificateRequest
from tests.conftest import key_matches_certificate, openssl_verify
from tests.keys import ec_key, key_pem, make_csr

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def test_sign_csr_issues_a_certificate_openssl_accepts(participant, tmp_path, cas):
    csr, out = tmp_path / "t.csr", tmp_path / "t.pem"
    csr.write_bytes(make_csr())
    call_command(
        "sign_csr", "--participant", participant.trader_id, "--csr", str(csr), "--out", str(out)
    )
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert (
        Certificate.objects.get(serial=format(cert.serial_number, "x")).participant == participant
    )
    root, chain = tmp_path / "root.pem", tmp_path / "client-ca.pem"
    root.write_text(cas["root"].certificate_pem)
    chain.write_text(cas["client"].certificate_pem)
    rc, output = openssl_verify(out, root=root, untrusted=chain, purpose="sslclient")
    assert rc == 0, output


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("unknown participant", "PARTICIPANT_NOT_FOUND:"),
        ("csr with key", "CSR_CONTAINS_PRIVATE_KEY:"),
        ("missing file", "cannot read"),
    ],
)
def test_sign_csr_failures_are_one_line(setup, expected, participant, tmp_path):
    csr = tmp_path / "t.csr"
    trader = "nobody" if setup == "unknown participant" else participant.trader_id
    if setup == "csr with key":
        csr.write_bytes(make_csr() + key_pem(ec_key()))
    elif setup == "unknown participant":
        csr.write_bytes(make_csr())
    with pytest.raises(CommandError) as failed:
        call_command(
            "sign_csr", "--participant", trader, "--csr", str(csr), "--out", str(tmp_path / "o.pem")
        )
    assert str(failed.value).startswith(expected)
    assert "\n" not in str(failed.value)
    assert failed.value.returncode == 2
    assert not (tmp_path / "o.pem").exists()
    assert not CertificateRequest.objects.filter(participant=participant).exists()


def test_issue_server_cert_writes_key_and_chain(tmp_path, cas):
    call_command(
        "issue_server_cert",
        "--dns",
        "localhost",
        "rfq.keyline.example",
        "--ip",
        "127.0.0.1",
        "--out",
        str(tmp_path),
    )
    assert oct((tmp_path / "server.key").stat().st_mode & 0o777) == "0o600"
    full = (tmp_path / "server-fullchain.pem").read_text()
    assert full == (tmp_path / "server.pem").read_text() + cas["server"].certificate_pem
    rc, output = openssl_verify(
        tmp_path / "server.pem",
        root=tmp_path / "root.pem",
        untrusted=tmp_path / "server-chain.pem",
        purpose="sslserver",
    )
    assert rc == 0, output
    assert key_matches_certificate(tmp_path / "server.key", tmp_path / "server.pem")


def test_issue_server_cert_rejects_bad_names(tmp_path, cas):
    with pytest.raises(CommandError, match=r"^SERVER_NAME_INVALID:"):
        call_command("issue_server_cert", "--dns", "bad_name!", "--out", str(tmp_path))
    with pytest.raises(CommandError, match=r"^SERVER_IP_INVALID:"):
        call_command("issue_server_cert", "--ip", "300.1.1.1", "--out", str(tmp_path))


def test_seed_demo_is_idempotent_and_writes_the_contract_files(tmp_path, cas, capsys):
    call_command("seed_demo", "--out", str(tmp_path))
    first = capsys.readouterr().out
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    traders = ["nw-alice", "nw-bob", "hl-carol", "hl-dave", "qs-erin"]
    # The EST demo trader: no certificate, an enrollment token and the client's configuration.
    assert files["nw-fay.token"].startswith(b"est_")
    assert b'trader_id = "nw-fay"' in files["nw-fay.toml"]
    for name in ("nw-fay.token", "nw-fay.toml"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "nw-fay").stat().st_mode & 0o777) == "0o700"
    for trader in traders:
        for ext in ("key", "csr", "pem"):
            assert f"{trader}.{ext}" in files
        assert oct((tmp_path / f"{trader}.key").stat().st_mode & 0o777) == "0o600"
    assert files["root.pem"].decode() == cas["root"].certificate_pem
    assert (
        files["chain.pem"].decode() == cas["client"].certificate_pem + cas["root"].certificate_pem
    )
    assert "Demo officer login: officer / " in first
    assert Firm.objects.filter(status=Firm.Status.APPROVED).count() >= 2
    assert all(lei_is_valid(f.lei) for f in Firm.objects.all())
    assert {p.role for p in Participant.objects.filter(trader_id__startswith="hl-")} == {
        "liquidity_provider"
    }
    certificates = Certificate.objects.filter(kind="client").count()

    call_command("seed_demo", "--out", str(tmp_path))
    second = capsys.readouterr().out
    assert Certificate.objects.filter(kind="client").count() == certificates
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == files
    assert second.count("kept certificate") == len(traders)
    assert first.splitlines()[-1] == second.splitlines()[-1]  # same officer password

    for trader in traders:
        rc, output = openssl_verify(
            tmp_path / f"{trader}.pem",
            root=tmp_path / "root.pem",
            untrusted=tmp_path / "chain.pem",
            purpose="sslclient",
        )
        assert rc == 0, output
        # The key on disk is the one certified, and the server never saw it.
        assert key_matches_certificate(tmp_path / f"{trader}.key", tmp_path / f"{trader}.pem")
    key_body = (tmp_path / "nw-alice.key").read_text().splitlines()[1]
    assert not AuditRecord.objects.filter(details__icontains=key_body).exists()


def test_seed_demo_reissues_when_files_are_gone(tmp_path, cas, capsys):
    call_command("seed_demo", "--out", str(tmp_path))
    (tmp_path / "nw-bob.pem").unlink()
    capsys.readouterr()
    call_command("seed_demo", "--out", str(tmp_path))
    out = capsys.readouterr().out
    assert out.count("kept certificate") == 4  # of five
    assert "nw-bob" in next(line for line in out.splitlines() if "issued certificate" in line)


@pytest.mark.parametrize(
    ("extra_env", "message"),
    [
        ({}, "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is required"),
        ({"DJANGO_SECRET_KEY": "x" * 50}, "DJANGO_ALLOWED_HOSTS is required"),
    ],
)
def test_settings_fail_closed(extra_env, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "KEYLINE_"))}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "keyline.settings", **extra_env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_seed_demo_without_a_ca_says_so_in_one_line(tmp_path, cas):
    from pki.models import CertificateAuthority

    CertificateAuthority.objects.update(is_active=False)
    with pytest.raises(CommandError) as failed:
        call_command("seed_demo", "--out", str(tmp_path))
    assert str(failed.value) == "no CA yet: run 'manage.py init_ca' first"
    assert not Participant.objects.filter(trader_id="nw-alice").exists()


def test_add_officer_creates_staff_with_a_second_factor(db, capsys):
    from django.contrib.auth import get_user_model
    from django_otp.plugins.otp_totp.models import TOTPDevice

    call_command("add_officer", "olga", "--email", "olga@venue.example")
    out = capsys.readouterr().out
    user = get_user_model().objects.get(username="olga")
    assert user.is_staff
    assert not user.is_superuser
    password = next(line.split(": ", 1)[1] for line in out.splitlines() if "password" in line)
    assert user.check_password(password)
    assert "otpauth://totp/" in out
    assert TOTPDevice.objects.get(user=user).confirmed
    with pytest.raises(CommandError, match=r"^user_exists"):
        call_command("add_officer", "OLGA", "--email", "x@venue.example")
