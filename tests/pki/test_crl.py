"""CRL publishing: what each CRL says (checked with cryptography, pkilint and openssl), the files
nginx reads, the reload command, failures and their visibility on /pki/health/, the HTTP
distribution point, and concurrent publishers."""

import contextlib
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from kernel.audit import audit_chain
from kernel.models import AuditRecord
from pki import keystore, revocation
from pki.conf import pki_settings
from pki.models import Certificate, CertificateAuthority, RevocationList
from pki.revocation import (
    CrlPublishFailed,
    certificate_revoke,
    crl_last_failure,
    crl_latest,
    crl_publish,
)
from tests.conftest import openssl_verify, run, tool
from tests.factories import expire
from tests.keys import ec_key, make_csr

pytestmark = pytest.mark.django_db

PEM_CRL = b"-----BEGIN X509 CRL-----"


@pytest.fixture
def private_cache(settings):
    """The last publishing failure is one key in the shared cache (Redis, shared by the xdist
    workers): tests that set or expect it get a cache of their own."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"crl-test-{uuid.uuid4()}",
        }
    }


def _ca_cert(ca: CertificateAuthority) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.certificate_pem.encode())


def _by_kind(rows: list[RevocationList]) -> dict[str, RevocationList]:
    return {row.ca.kind: row for row in rows}


def _crl(row: RevocationList) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(bytes(row.der))


def _pem_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    return [x509.load_pem_x509_crl(PEM_CRL + block) for block in data.split(PEM_CRL)[1:]]


def _forget_loaded_keys() -> None:
    """CA keys are cached once loaded; make the next load read (and decrypt) the file."""
    for function in (keystore.ca_key_load, getattr(keystore, "_load", None)):
        if hasattr(function, "cache_clear"):
            function.cache_clear()


@pytest.fixture
def revoked(cas, participant, issue, system_actor):
    """Client certificates revoked for several reasons, and one left good."""
    made = {}
    for name, reason, invalid_since in (
        ("compromised", "keyCompromise", timezone.now() - timedelta(days=2)),
        ("superseded", "superseded", None),
        ("unspecified", "unspecified", None),
        ("withdrawn", "privilegeWithdrawn", None),
    ):
        cert = issue(participant, make_csr())
        certificate_revoke(
            certificate=cert, reason=reason, actor=system_actor, invalidity_date=invalid_since
        )
        made[name] = Certificate.objects.get(pk=cert.pk)
    made["good"] = issue(participant, make_csr())
    return made


# --- numbering -----------------------------------------------------------------------------


def test_each_publish_adds_one_crl_per_active_ca_numbered_one_up(cas, system_actor):
    counts = {kind: RevocationList.objects.filter(ca=ca).count() for kind, ca in cas.items()}

    first = _by_kind(crl_publish(actor=system_actor))
    second = _by_kind(crl_publish(actor=system_actor))
    third = _by_kind(crl_publish(actor=system_actor))

    assert set(first) == set(second) == set(third) == {"root", "client", "server"}
    for kind, ca in cas.items():
        assert first[kind].ca == ca
        assert second[kind].number == first[kind].number + 1
        assert third[kind].number == first[kind].number + 2
        assert RevocationList.objects.filter(ca=ca).count() == counts[kind] + 3
        assert _crl(third[kind]).extensions.get_extension_for_class(
            x509.CRLNumber
        ).value.crl_number == (third[kind].number)


def test_inactive_ca_gets_no_crl(cas, system_actor):
    cas["server"].is_active = False
    cas["server"].save(update_fields=["is_active"])

    rows = crl_publish(actor=system_actor)

    assert sorted(r.ca.kind for r in rows) == ["client", "root"]
    assert not RevocationList.objects.filter(ca=cas["server"]).exists()


# --- contents ------------------------------------------------------------------------------


def test_client_crl_lists_revoked_certificates_with_reasons_and_dates(revoked, cas, system_actor):
    row = _by_kind(crl_publish(actor=system_actor))["client"]
    crl = _crl(row)

    assert row.entries == 4
    assert len(crl) == 4
    expected_flags = {
        "compromised": x509.ReasonFlags.key_compromise,
        "superseded": x509.ReasonFlags.superseded,
        "withdrawn": x509.ReasonFlags.privilege_withdrawn,
    }
    for name, flag in expected_flags.items():
        entry = crl.get_revoked_certificate_by_serial_number(revoked[name].serial_int)
        assert entry is not None, name
        reason = entry.extensions.get_extension_for_class(x509.CRLReason)
        assert reason.value.reason == flag
        assert reason.critical is False
        assert entry.revocation_date_utc == revoked[name].revoked_at.replace(microsecond=0)

    # RFC 5280 §5.3.1: "unspecified" is expressed by leaving the reasonCode out.
    unspecified = crl.get_revoked_certificate_by_serial_number(revoked["unspecified"].serial_int)
    assert unspecified is not None
    assert [e.oid for e in unspecified.extensions] == []

    # RFC 5280 §5.3.2: the invalidity date, only where one was given.
    compromised = crl.get_revoked_certificate_by_serial_number(revoked["compromised"].serial_int)
    invalidity = compromised.extensions.get_extension_for_class(x509.InvalidityDate)
    assert invalidity.critical is False
    assert invalidity.value.invalidity_date_utc == revoked["compromised"].invalidity_date.replace(
        microsecond=0
    )
    superseded = crl.get_revoked_certificate_by_serial_number(revoked["superseded"].serial_int)
    with pytest.raises(x509.ExtensionNotFound):
        superseded.extensions.get_extension_for_class(x509.InvalidityDate)

    assert crl.get_revoked_certificate_by_serial_number(revoked["good"].serial_int) is None


def test_crl_header_extensions_validity_and_signature(revoked, cas, system_actor):
    rows = _by_kind(crl_publish(actor=system_actor))
    hours = pki_settings().crl_validity_hours
    assert hours <= 7 * 24

    for kind, row in rows.items():
        ca_cert = _ca_cert(cas[kind])
        crl = _crl(row)
        assert crl.issuer == ca_cert.subject
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        assert aki.value.key_identifier == ski.value.digest
        assert aki.critical is False
        number = crl.extensions.get_extension_for_class(x509.CRLNumber)
        assert (number.value.crl_number, number.critical) == (row.number, False)
        assert crl.next_update_utc - crl.last_update_utc == timedelta(hours=hours)
        assert (crl.last_update_utc, crl.next_update_utc) == (row.this_update, row.next_update)
        assert crl.is_signature_valid(ca_cert.public_key())

    # The check can fail: the root did not sign the client CA's CRL.
    assert not _crl(rows["client"]).is_signature_valid(_ca_cert(cas["root"]).public_key())


@override_settings(KEYLINE_CRL_VALIDITY_HOURS=6)
def test_validity_follows_the_setting(cas, system_actor):
    crl = _crl(_by_kind(crl_publish(actor=system_actor))["client"])
    assert crl.next_update_utc - crl.last_update_utc == timedelta(hours=6)


def test_expired_revoked_certificates_are_dropped(revoked, cas, system_actor):
    expire(revoked["superseded"])

    row = _by_kind(crl_publish(actor=system_actor))["client"]
    crl = _crl(row)

    assert row.entries == 3
    assert crl.get_revoked_certificate_by_serial_number(revoked["superseded"].serial_int) is None
    assert crl.get_revoked_certificate_by_serial_number(revoked["compromised"].serial_int)


def test_empty_crl_has_no_entries(cas, system_actor):
    rows = _by_kind(crl_publish(actor=system_actor))
    for row in rows.values():
        assert row.entries == 0
        assert len(_crl(row)) == 0


# --- independent checks: pkilint and openssl -----------------------------------------------


def _lint_crl(path: Path, crl_type: str) -> tuple[int, list[tuple[str, str]], str]:
    """`lint_crl` (BR profile) at WARNING and above: (exit code, findings, stderr)."""
    options = ["-t", crl_type, "-p", "BR", "-s", "WARNING", "-f", "JSON"]
    result = run([tool("lint_crl"), "lint", *options, str(path)])
    findings = [
        (description["severity"], description["code"])
        for item in json.loads(result.stdout or '{"results": []}')["results"]
        for description in item["finding_descriptions"]
    ]
    return result.returncode, findings, result.stderr


def test_pkilint_finds_nothing_in_the_crls_and_the_arl(revoked, cas, system_actor, tmp_path):
    rows = _by_kind(crl_publish(actor=system_actor))
    assert rows["client"].entries == 4
    jobs = []
    for kind, crl_type in (("client", "CRL"), ("server", "CRL"), ("root", "ARL")):
        path = tmp_path / f"{kind}.crl"
        path.write_bytes(bytes(rows[kind].der))
        jobs.append((path, crl_type))

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda job: _lint_crl(*job), jobs))

    for job, result in zip(jobs, results, strict=True):
        assert result == (0, [], ""), job


def test_pkilint_does_flag_a_bad_crl(tmp_path):
    """The lint above can fail: a CRL without number or AKI, valid 30 days, with an
    ``unspecified`` reason code, is reported."""
    key = ec_key()
    now = timezone.now().replace(microsecond=0)
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(12345)
        .revocation_date(now)
        .add_extension(x509.CRLReason(x509.ReasonFlags.unspecified), critical=False)
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder(revoked_certificates=[entry])
        .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bad")]))
        .last_update(now)
        .next_update(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "bad.crl"
    path.write_bytes(crl.public_bytes(serialization.Encoding.DER))

    rc, findings, _ = _lint_crl(path, "CRL")

    assert rc == 4
    assert sorted(findings) == [
        ("ERROR", "cabf.crl_invalid_validity_period"),
        ("ERROR", "cabf.crl_prohibited_reason_code"),
        ("ERROR", "pkix.authority_key_identifier_missing"),
        ("ERROR", "pkix.crl_number_missing"),
    ]


def test_openssl_checks_every_crl_of_the_chain_from_the_bundle(
    revoked, cas, system_actor, tmp_path
):
    crl_publish(actor=system_actor)
    bundle = keystore.ca_dir() / "crl" / "bundle.pem"
    root, chain = tmp_path / "root.pem", tmp_path / "client-ca.pem"
    root.write_text(cas["root"].certificate_pem)
    chain.write_text(cas["client"].certificate_pem)
    good, bad = tmp_path / "good.pem", tmp_path / "bad.pem"
    good.write_text(revoked["good"].pem)
    bad.write_text(revoked["compromised"].pem)

    def verify(leaf: Path) -> tuple[int, str]:
        chain_options = ["-CAfile", str(root), "-untrusted", str(chain)]
        result = run(
            [
                "openssl",
                "verify",
                "-crl_check_all",
                *chain_options,
                "-CRLfile",
                str(bundle),
                str(leaf),
            ]
        )
        return result.returncode, result.stdout + result.stderr

    assert verify(good) == (0, f"{good}: OK\n")
    rc, out = verify(bad)
    assert rc == 2
    assert "error 23 at 0 depth lookup: certificate revoked" in out
    # Without CRL checks openssl accepts it: the refusal above comes from the bundle.
    assert openssl_verify(bad, root=root, untrusted=chain) == (0, f"{bad}: OK\n")


def test_bundle_and_der_files_hold_the_newest_crl_of_each_active_ca(cas, system_actor):
    crl_publish(actor=system_actor)
    rows = _by_kind(crl_publish(actor=system_actor))
    directory = keystore.ca_dir() / "crl"

    bundle = (directory / "bundle.pem").read_bytes()
    assert bundle.count(PEM_CRL) == len(cas) == 3
    parsed = _pem_crls(bundle)
    assert [c.public_bytes(serialization.Encoding.DER) for c in parsed] == [
        bytes(rows[kind].der) for kind in sorted(rows, key=lambda k: rows[k].ca.pk)
    ]
    for kind, row in rows.items():
        assert (directory / f"{row.ca.slug}.crl").read_bytes() == bytes(row.der), kind
        assert oct((directory / f"{row.ca.slug}.crl").stat().st_mode & 0o777) == "0o644"


# --- the reload command and failures -------------------------------------------------------


def test_reload_command_runs_after_the_files_are_written(cas, system_actor, tmp_path):
    log, snapshot = tmp_path / "reloads.log", tmp_path / "seen.pem"
    bundle = keystore.ca_dir() / "crl" / "bundle.pem"
    command = f"sh -c 'echo ok >> {log} && cp {bundle} {snapshot}'"

    with override_settings(KEYLINE_CRL_RELOAD_COMMAND=command):
        crl_publish(actor=system_actor)
        rows = _by_kind(crl_publish(actor=system_actor))

    assert log.read_text() == "ok\nok\n"
    # What the reload saw is the second publish: the files were in place before it ran.
    seen = _pem_crls(snapshot.read_bytes())
    assert [c.public_bytes(serialization.Encoding.DER) for c in seen] == [
        bytes(rows[kind].der) for kind in sorted(rows, key=lambda k: rows[k].ca.pk)
    ]


def test_failing_reload_is_raised_remembered_and_shown_until_the_next_success(
    cas, system_actor, private_cache
):
    with (
        override_settings(KEYLINE_CRL_RELOAD_COMMAND="false"),
        pytest.raises(CrlPublishFailed) as failed,
    ):
        crl_publish(actor=system_actor)

    assert failed.value.code == "CRL_PUBLISH_FAILED"
    assert failed.value.status_code == 503
    failure = crl_last_failure()
    assert failure is not None
    assert failure["error"].startswith("CRL_PUBLISH_FAILED: CRL reload command failed:")
    assert "'false'" in failure["error"]

    response = Client().get("/pki/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    (shown,) = body["publish_failures"]
    assert (shown["stage"], shown["error"]) == ("reload", failure["error"])
    assert failure["stage"] == "reload"
    # The CRLs themselves are fine: only the reload failed.
    assert {c["status"] for c in body["crls"]} == {"ok"}

    crl_publish(actor=system_actor)

    assert crl_last_failure() is None
    response = Client().get("/pki/health/")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["publish_failures"] == []


def test_missing_reload_command_is_a_failure_too(cas, system_actor, private_cache):
    with (
        override_settings(KEYLINE_CRL_RELOAD_COMMAND="/nonexistent/keyline-reload"),
        pytest.raises(CrlPublishFailed),
    ):
        crl_publish(actor=system_actor)
    assert "/nonexistent/keyline-reload" in crl_last_failure()["error"]


def test_failure_before_writing_keeps_the_last_good_files(cas, system_actor, private_cache):
    crl_publish(actor=system_actor)
    directory = keystore.ca_dir() / "crl"
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.suffix in {".pem", ".crl"}}
    assert set(files) == {"bundle.pem", "root.crl", "client-ca.crl", "server-ca.crl"}
    rows = RevocationList.objects.count()
    audits = AuditRecord.objects.count()

    _forget_loaded_keys()
    try:
        with (
            override_settings(KEYLINE_CA_PASSPHRASE="not-the-ca-passphrase-at-all"),
            pytest.raises(ValueError, match="password"),
        ):
            crl_publish(actor=system_actor)
    finally:
        _forget_loaded_keys()

    assert {p.name: p.read_bytes() for p in directory.iterdir() if p.name in files} == files
    assert RevocationList.objects.count() == rows
    assert AuditRecord.objects.count() == audits
    assert "password" in crl_last_failure()["error"]
    # The right passphrase works again.
    crl_publish(actor=system_actor)
    assert crl_last_failure() is None


# --- the distribution point over HTTP ------------------------------------------------------


def test_crl_url_serves_the_newest_crl_with_cache_headers(cas, system_actor):
    crl_publish(actor=system_actor)
    latest = _by_kind(crl_publish(actor=system_actor))["client"]

    response = Client().get("/pki/crl/client-ca.crl")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkix-crl"
    assert response.content == bytes(latest.der)
    assert response["Cache-Control"] == "public, max-age=300"
    assert response["ETag"] == f'"{latest.sha256}"'
    assert response["Last-Modified"] == format_datetime(
        latest.this_update.astimezone(UTC), usegmt=True
    )
    assert response["Expires"] == format_datetime(latest.next_update.astimezone(UTC), usegmt=True)

    again = Client().get("/pki/crl/client-ca.crl", headers={"If-None-Match": response["ETag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == response["ETag"]
    changed = Client().get("/pki/crl/client-ca.crl", headers={"If-None-Match": '"older"'})
    assert changed.status_code == 200


def test_not_modified_carries_the_cache_headers(cas, system_actor):
    """RFC 9110 §15.4.5: a 304 MUST carry the Cache-Control and Expires a 200 would have,
    or a cache that revalidates keeps the old freshness lifetime for the CRL."""
    crl_publish(actor=system_actor)
    full = Client().get("/pki/crl/client-ca.crl")

    again = Client().get("/pki/crl/client-ca.crl", headers={"If-None-Match": full["ETag"]})

    assert again.status_code == 304
    assert again.get("Cache-Control") == full["Cache-Control"]
    assert again.get("Expires") == full["Expires"]


def test_crl_distribution_point_of_a_leaf_serves_its_issuers_crl(
    participant, issue, system_actor, cas
):
    leaf = issue(participant, make_csr())
    parsed = x509.load_pem_x509_certificate(leaf.pem.encode())
    points = parsed.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    (url,) = [name.value for point in points for name in point.full_name]
    assert url.endswith("/pki/crl/client-ca.crl")
    certificate_revoke(certificate=leaf, reason="keyCompromise", actor=system_actor)
    crl_publish(actor=system_actor)

    response = Client().get(urlsplit(url).path)

    assert response.status_code == 200
    crl = x509.load_der_x509_crl(response.content)
    assert crl.issuer == parsed.issuer
    assert crl.get_revoked_certificate_by_serial_number(parsed.serial_number) is not None


@pytest.mark.parametrize("path", ["/pki/crl/nope.crl", "/pki/crl/client.crl"])
def test_unknown_ca_crl_is_404(cas, system_actor, path):
    crl_publish(actor=system_actor)
    assert Client().get(path).status_code == 404


def test_crl_is_404_until_published_and_get_only(cas, system_actor):
    assert Client().get("/pki/crl/client-ca.crl").status_code == 404
    crl_publish(actor=system_actor)
    assert Client().post("/pki/crl/client-ca.crl").status_code == 405


# --- health --------------------------------------------------------------------------------


def _health() -> tuple[int, dict]:
    response = Client().get("/pki/health/")
    return response.status_code, response.json()


def test_health_reports_missing_crls(cas, private_cache):
    status, body = _health()
    assert status == 503
    assert body["status"] == "degraded"
    assert [(c["ca"], c["status"], c["number"]) for c in body["crls"]] == [
        ("root", "missing", None),
        ("client-ca", "missing", None),
        ("server-ca", "missing", None),
    ]


def test_health_reports_ages_then_stale_then_expired(cas, system_actor, private_cache):
    rows = _by_kind(crl_publish(actor=system_actor))
    audit_chain()  # the chainer's work: the audit tail is not what this test travels past
    this_update = rows["client"].this_update
    max_age = timedelta(hours=pki_settings().crl_max_age_hours)

    with time_machine.travel(this_update + timedelta(minutes=10), tick=False):
        status, body = _health()
    assert status == 200
    assert body["status"] == "ok"
    by_ca = {c["ca"]: c for c in body["crls"]}
    assert list(by_ca) == ["root", "client-ca", "server-ca"]
    client = by_ca["client-ca"]
    assert client["status"] == "ok"
    assert client["age_seconds"] == 600
    assert client["number"] == rows["client"].number
    assert client["entries"] == 0
    assert client["size"] == len(bytes(rows["client"].der))
    assert body["ocsp_responder"]["seconds_left"] > 0

    at = this_update + max_age + timedelta(seconds=1)
    with time_machine.travel(at, tick=False):
        status, body = _health()
    assert status == 503
    assert body["status"] == "degraded"
    assert {c["status"] for c in body["crls"]} == {"stale"}
    # Each CRL's own age (the three are signed one after the other, maybe a second apart).
    for c in body["crls"]:
        signed = datetime.fromisoformat(c["this_update"].replace("Z", "+00:00"))
        assert c["age_seconds"] == int((at - signed).total_seconds())
    assert body["crls"][1]["age_seconds"] == int(max_age.total_seconds()) + 1  # the client CA

    with time_machine.travel(rows["client"].next_update, tick=False):
        status, body = _health()
    assert status == 503
    assert {c["status"] for c in body["crls"]} == {"expired"}


# --- concurrency ---------------------------------------------------------------------------


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs row locks and concurrent connections (PostgreSQL); SQLite serialises writers",
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("host_lock", [True, False], ids=["one-host", "many-hosts"])
def test_concurrent_publishers_number_every_crl_once_and_in_order(
    cas, participant, issue, system_actor, private_cache, monkeypatch, host_lock
):
    if not host_lock:
        # Publishers on different hosts share no file lock: the CA row locks alone must keep
        # every number unique and in order.
        monkeypatch.setattr(revocation, "_publish_lock", contextlib.nullcontext)
    publishers, revocations = 8, 4
    leaves = [issue(participant, make_csr()) for _ in range(revocations)]
    start = threading.Barrier(publishers + revocations)

    def publish() -> None:
        try:
            start.wait()
            crl_publish(actor=system_actor)
        finally:
            connection.close()

    def revoke(leaf: Certificate) -> None:
        # Each revocation publishes once more after it commits (eager Celery).
        try:
            start.wait()
            certificate_revoke(certificate=leaf, reason="keyCompromise", actor=system_actor)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=publishers + revocations) as pool:
        futures = [pool.submit(publish) for _ in range(publishers)]
        futures += [pool.submit(revoke, leaf) for leaf in leaves]
        for future in futures:
            future.result(timeout=60)

    assert crl_last_failure() is None
    total = publishers + revocations
    for kind, ca in cas.items():
        numbers = list(
            RevocationList.objects.filter(ca=ca).order_by("number").values_list("number", flat=True)
        )
        assert numbers == list(range(1, total + 1)), kind
    # Contents only go forward: the newest client CRL lists every revocation, and the files
    # hold the newest CRLs.
    newest = _crl(crl_latest(cas["client"]))
    for leaf in leaves:
        assert newest.get_revoked_certificate_by_serial_number(leaf.serial_int) is not None
    if not host_lock:
        return  # each host's files are its own; only one host's ordering is checked
    bundle = _pem_crls((keystore.ca_dir() / "crl" / "bundle.pem").read_bytes())
    assert {
        c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number for c in bundle
    } == {total}
