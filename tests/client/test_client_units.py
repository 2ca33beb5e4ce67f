"""The trader's client, piece by piece, without the venue: its configuration's errors, atomic
file replacement, the SSE frame reader, and the renewal daemon's back-off (the venue's answers
and the clock are stand-ins here; tests/client/test_client_platform.py runs it for real)."""

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client" / "src"))

from keyline_client import cli, venue
from keyline_client.config import ConfigError, load

GOOD = """api_url = "https://venue.example:8443/"
ca_file = "root.pem"
trader_id = "nw-fay"
key_file = "keys/key.pem"
cert_file = "keys/cert.pem"
chain_file = "/etc/keyline/chain.pem"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.toml"
    path.write_text(text)
    return path


def test_relative_paths_are_read_from_the_files_directory(tmp_path):
    config = load(str(write(tmp_path, GOOD)))
    assert config.api_url == "https://venue.example:8443"
    assert config.key_file == tmp_path / "keys" / "key.pem"
    assert config.chain_file == Path("/etc/keyline/chain.pem")
    assert config.pending_key_file == tmp_path / "keys" / "key.pem.pending"
    assert config.renew_before == 0.33


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace('trader_id = "nw-fay"\n', ""), "missing trader_id"),
        (GOOD + "colour = 'blue'\n", "unknown setting(s) colour"),
        (GOOD + "renew_before = 1.5\n", "renew_before must be in (0, 1]"),
        ("api_url = ", "Invalid value"),
    ],
)
def test_a_bad_configuration_is_one_clear_line(tmp_path, text, message, capsys):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(str(path))
    assert cli.main(["--config", str(path), "whoami"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: CONFIG: ")


def test_no_configuration_says_where_it_looked(tmp_path, capsys):
    assert cli.main(["--config", str(tmp_path / "none.toml"), "whoami"]) == 1
    assert f"no configuration at {tmp_path / 'none.toml'}" in capsys.readouterr().err


def test_files_are_replaced_whole_with_their_mode(tmp_path):
    target = tmp_path / "deep" / "key.pem"
    venue.write_atomically(target, b"first", 0o600)
    venue.write_atomically(target, b"second", 0o600)
    assert target.read_bytes() == b"second"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert os.listdir(target.parent) == ["key.pem"]  # no temporary file left behind


def test_the_sse_reader_yields_whole_frames_and_skips_comments():
    lines = [
        "retry: 1000",
        "",
        ": keep-alive",
        "",
        "id: 7",
        "event: rfq.created",
        'data: {"seq": 7, "type": "rfq.created", "data": {"rfq": {"id": "r1"}}}',
        "",
        "event: error",
        'data: {"code": "CERTIFICATE_REVOKED", "message": "revoked"}',
        "",
    ]
    frames = list(venue._frames(lines))
    assert frames == [
        ("rfq.created", {"seq": 7, "type": "rfq.created", "data": {"rfq": {"id": "r1"}}}),
        ("error", {"code": "CERTIFICATE_REVOKED", "message": "revoked"}),
    ]


def test_the_daemon_backs_off_after_failures_and_resets_after_a_success(tmp_path, monkeypatch):
    config = load(str(write(tmp_path, GOOD)))
    answers = iter(
        [
            venue.VenueError("UPSTREAM_UNAVAILABLE", "down", 502),
            venue.VenueError("UPSTREAM_UNAVAILABLE", "down", 502),
            venue.VenueError("UPSTREAM_UNAVAILABLE", "down", 502),
            cli.NotDue(_certificate()),
            venue.VenueError("UPSTREAM_UNAVAILABLE", "down", 502),
        ]
    )

    def renew_once(config, *, force):
        answer = next(answers)
        if isinstance(answer, venue.VenueError):
            raise answer
        return answer

    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "renew_once", renew_once)
    monkeypatch.setattr(cli.time, "sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        cli.daemon(config, interval=3600)
    assert slept == [30.0, 60.0, 120.0, 3600, 30.0]


def test_retry_after_is_read_as_seconds_or_a_date():
    assert venue._retry_after("120") == 120
    assert venue._retry_after("Wed, 21 Oct 2099 07:28:00 GMT") > 10**6
    assert venue._retry_after("soon") == 60
    assert venue._retry_after("") == 60


def test_an_interrupted_install_is_finished_without_the_venue(tmp_path):
    config = load(str(write(tmp_path, GOOD)))
    key = venue.pending_key(config)  # made, saved 0600, then the venue answered...
    cert = _self_signed(key)
    venue.write_atomically(config.cert_file, cert)  # ...and the run stopped here
    assert venue.finish_interrupted_install(config) is not None
    assert not config.pending_key_file.exists()
    assert oct(config.key_file.stat().st_mode & 0o777) == "0o600"
    # A pending key that is not the certificate's is left alone (a request still out).
    venue.pending_key(config)
    assert venue.finish_interrupted_install(config) is None
    assert config.pending_key_file.exists()


def test_a_refusal_drops_the_pending_key_unless_the_venue_still_holds_its_request(tmp_path):
    config = load(str(write(tmp_path, GOOD)))
    for code, kept in (("CSR_ALREADY_SUBMITTED", True), ("EST_TOKEN_SPENT", False)):
        venue.pending_key(config)

        def refuse(code=code):
            raise venue.VenueError(code, "no", 409)

        with pytest.raises(venue.VenueError):
            venue._definitive(config, refuse)
        assert config.pending_key_file.exists() is kept, code
        config.pending_key_file.unlink(missing_ok=True)


def test_the_daemon_asks_again_after_retry_after_while_the_venue_holds_the_request(
    tmp_path, monkeypatch
):
    config = load(str(write(tmp_path, GOOD)))
    answers = iter([venue.Pending(45, "waits"), cli.NotDue(_certificate())])
    monkeypatch.setattr(cli, "renew_once", lambda config, force: next(answers))
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        cli.daemon(config, interval=3600)
    assert slept == [45, 3600]


def _self_signed(key) -> bytes:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "nw-fay")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _certificate() -> x509.Certificate:
    return x509.load_pem_x509_certificate(
        _self_signed(venue.ec.generate_private_key(venue.ec.SECP256R1()))
    )
