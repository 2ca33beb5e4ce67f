"""init_ca: the hierarchy of docs/pki.md, keys encrypted at rest with mode 0600 and never in the
database, no silent overwrite."""

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings

from pki.checks import pki_configuration
from pki.models import CertificateAuthority
from pki.services import ca_init
from tests.conftest import run

pytestmark = pytest.mark.django_db

PASSPHRASE = "test-ca-passphrase-0123456789"
OCSP_PASSPHRASE = "test-ocsp-passphrase-0123456789"


@pytest.fixture
def fresh_ca(tmp_path, system_actor):
    with override_settings(KEYLINE_CA_DIR=str(tmp_path)):
        yield tmp_path, ca_init(force=True, actor=system_actor)


def test_keys_are_encrypted_pkcs8_mode_0600_and_not_in_the_database(fresh_ca):
    directory, _cas = fresh_ca
    keys = sorted((directory / "keys").glob("*.key.pem"))
    assert len(keys) == 4  # root, client CA, server CA, OCSP delegate
    for path in keys:
        # The delegate's key has its own passphrase: a responder never holds the CA's.
        right, wrong = (
            (OCSP_PASSPHRASE, PASSPHRASE)
            if path.name.startswith("ocsp-")
            else (PASSPHRASE, OCSP_PASSPHRASE)
        )
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = path.read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(data, password=None)
        with pytest.raises(ValueError, match="Incorrect password"):
            serialization.load_pem_private_key(data, password=wrong.encode())
        serialization.load_pem_private_key(data, password=right.encode())
        # openssl reads it with the passphrase and not without.
        openssl = ["openssl", "pkey", "-in", str(path), "-noout", "-passin"]
        assert run([*openssl, f"pass:{right}"]).returncode == 0
        assert run([*openssl, f"pass:{wrong}"]).returncode != 0
        body = b"".join(data.splitlines()[1:3]).decode()
        assert not _database_contains(body)
    assert stat.S_IMODE((directory / "keys").stat().st_mode) == 0o700


def _database_contains(text: str) -> bool:
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            columns = [
                c.name for c in connection.introspection.get_table_description(cursor, table)
            ]
            for column in columns:
                cursor.execute(
                    f'SELECT 1 FROM "{table}" WHERE CAST("{column}" AS TEXT) LIKE %s LIMIT 1',  # noqa: S608
                    [f"%{text}%"],
                )
                if cursor.fetchone():
                    return True
    return False


def test_hierarchy_matches_the_design(fresh_ca):
    _, cas = fresh_ca
    root = x509.load_pem_x509_certificate(cas.root.certificate_pem.encode())
    client = x509.load_pem_x509_certificate(cas.client.certificate_pem.encode())
    server = x509.load_pem_x509_certificate(cas.server.certificate_pem.encode())
    assert root.issuer == root.subject
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    for intermediate, purpose in (
        (client, x509.ExtendedKeyUsageOID.CLIENT_AUTH),
        (server, x509.ExtendedKeyUsageOID.SERVER_AUTH),
    ):
        assert intermediate.issuer == root.subject
        assert (
            intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
            == 0
        )
        assert (
            purpose in intermediate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        )
        intermediate.verify_directly_issued_by(root)
    assert (
        x509.ExtendedKeyUsageOID.OCSP_SIGNING
        in client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    assert cas.client.key_type == "ec-p256"


def test_exported_chain_files(fresh_ca):
    directory, cas = fresh_ca
    certs = directory / "certs"
    assert (certs / "root.pem").read_text() == cas.root.certificate_pem
    assert (
        certs / "client-chain.pem"
    ).read_text() == cas.client.certificate_pem + cas.root.certificate_pem
    assert (certs / "ocsp-responder.pem").exists()


def test_init_ca_refuses_to_overwrite_without_force(tmp_path, capsys):
    before = set(CertificateAuthority.objects.values_list("pk", flat=True))
    with override_settings(KEYLINE_CA_DIR=str(tmp_path)), pytest.raises(CommandError) as refused:
        call_command("init_ca")
    assert str(refused.value).startswith("CA_EXISTS:")
    assert "\n" not in str(refused.value)
    assert refused.value.returncode == 2
    assert set(CertificateAuthority.objects.values_list("pk", flat=True)) == before
    assert not (tmp_path / "keys").exists()


def test_force_replaces_and_keeps_the_old_ca_inactive(cas, tmp_path):
    with override_settings(KEYLINE_CA_DIR=str(tmp_path)):
        call_command("init_ca", "--force", "--key-type", "rsa-3072")
    old = CertificateAuthority.objects.get(pk=cas["root"].pk)
    assert not old.is_active
    active = CertificateAuthority.objects.filter(is_active=True)
    assert {ca.kind for ca in active} == {"root", "client", "server"}
    assert {ca.key_type for ca in active} == {"rsa-3072"}


def test_if_missing_does_nothing_when_a_ca_exists(cas, tmp_path):
    with override_settings(KEYLINE_CA_DIR=str(tmp_path)):
        call_command("init_ca", "--if-missing")
    assert CertificateAuthority.objects.get(pk=cas["root"].pk).is_active


@pytest.mark.parametrize(
    ("passphrase", "message"),
    [("", "passphrase is not set"), ("short", "at least 16 characters")],
)
def test_missing_or_weak_passphrase_fails_closed(passphrase, message, tmp_path, system_actor):
    with (
        override_settings(KEYLINE_CA_DIR=str(tmp_path), KEYLINE_CA_PASSPHRASE=passphrase),
        pytest.raises(ImproperlyConfigured, match=message),
    ):
        ca_init(force=True, actor=system_actor)
    assert not (tmp_path / "keys").exists()


def test_passphrase_from_file(tmp_path, system_actor):
    secret = tmp_path / "passphrase"
    secret.write_text("a-passphrase-from-a-file-123\n")
    with override_settings(
        KEYLINE_CA_DIR=str(tmp_path / "ca"),
        KEYLINE_CA_PASSPHRASE="",
        KEYLINE_CA_PASSPHRASE_FILE=str(secret),
    ):
        ca_init(force=True, actor=system_actor)
    key = next((tmp_path / "ca" / "keys").glob("*root.key.pem")).read_bytes()
    serialization.load_pem_private_key(key, password=b"a-passphrase-from-a-file-123")


def test_system_check_flags_a_loose_key_file(fresh_ca):
    directory, _ = fresh_ca
    with override_settings(KEYLINE_CA_DIR=str(directory)):
        assert [e.id for e in pki_configuration(None)] == []
        key = next(Path(directory / "keys").glob("*.key.pem"))
        key.chmod(0o644)
        assert [e.id for e in pki_configuration(None)] == ["pki.E002"]
