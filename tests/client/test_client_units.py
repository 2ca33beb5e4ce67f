"""The trader's client, piece by piece, without the venue: its configuration's errors, atomic
file replacement, the SSE frame reader, and the renewal daemon's back-off (the venue's answers
and the clock are stand-ins here; tests/client/test_client_platform.py runs it for real)."""

import os
import sys
from pathlib import Path

import pytest

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
            ("not_due", None),
            venue.VenueError("UPSTREAM_UNAVAILABLE", "down", 502),
        ]
    )

    def renew_once(config, *, force):
        answer = next(answers)
        if isinstance(answer, Exception):
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
