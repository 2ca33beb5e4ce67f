"""Production settings pass Django's deployment checks; the deployment files are consistent;
the image is built from the application alone."""

import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.keys import ec_key
from tests.servers import ROOT, user_env


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    env = user_env(
        DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
        DJANGO_ALLOWED_HOSTS="portal.keyline.example,api.keyline.example",
        KEYLINE_VAR_DIR=str(tmp_path),
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_units_run_what_exists():
    units = ROOT / "deploy" / "systemd"
    for unit in units.glob("keyline-*.service"):
        text = unit.read_text()
        if unit.name != "keyline-nginx.service":
            assert "EnvironmentFile=/etc/keyline/keyline.env" in text, unit
        # Only the signing worker is given the CA passphrase (a systemd credential).
        assert ("KEYLINE_CA_PASSPHRASE_FILE" in text) == (unit.name == "keyline-worker.service")
    assert "KEYLINE_CA_PASSPHRASE" not in (ROOT / "deploy" / "keyline.env.example").read_text()
    assert (ROOT / "deploy" / "gunicorn.conf.py").is_file()
    compose = (ROOT / "deploy" / "compose.yaml").read_text()
    for path in ("deploy/Dockerfile", "deploy/gunicorn.conf.py"):
        assert path in compose
        assert (ROOT / path).is_file()


# --- the image's build context ------------------------------------------------------------------

# A PEM private key block (pki/csr.py names the header in a pattern: that is not a key).
PEM_PRIVATE_KEY = re.compile(
    rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n(?:[A-Za-z0-9+/=:, -]*\r?\n)+-----END"
)


def _dockerignore_patterns(root: Path) -> list[str]:
    """The rules as the Docker clients read them: one a line, blanks and # comments skipped."""
    lines = (root / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _build_context() -> tuple[Path, str]:
    """compose's build context (relative to deploy/) and Dockerfile (relative to the context)."""
    compose = (ROOT / "deploy" / "compose.yaml").read_text()
    found = re.search(r"build: \{context: ([^,}]+), dockerfile: ([^,}]+)\}", compose)
    assert found, "deploy/compose.yaml: build: {context: ..., dockerfile: ...} not found"
    return (ROOT / "deploy" / found[1]).resolve(), found[2]


def _scratch_checkout(dest: Path) -> None:
    """The repository's files (tracked, and untracked but not ignored) copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # not a file deleted in the work tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    shutil.copy2(ROOT / ".dockerignore", dest / ".dockerignore")


def _plant_a_used_checkout(root: Path) -> tuple[list[str], list[bytes]]:
    """What a machine that ran bin/run and the tests leaves in the checkout: (paths, the
    secret values written into them)."""
    secret = [secrets.token_hex(16).encode() for _ in range(4)]
    key_pem = ec_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(secret[0]),
    )
    files = {
        "var/secrets/django-secret-key": secret[1],
        "var/secrets/terminator-secret": secret[2],
        "var/ca/private/root-ca.key": key_pem,
        "var/ca/private/issuing-ca.key": key_pem,
        "var/ca/passphrase": secret[0],
        "var/demo/nw-alice.key": key_pem,
        "var/nginx/nginx.conf": b"proxy_set_header X-Keyline-Terminator " + secret[2] + b";\n",
        "var/log/app.log": b"started\n",
        ".env": b"DJANGO_SECRET_KEY=" + secret[1] + b"\nKEYLINE_CA_PASSPHRASE=" + secret[0],
        "deploy/secrets/x": secret[3],
        "deploy/secrets/ca-passphrase": secret[0],
        "deploy/secrets/server.key": key_pem,
        ".venv/bin/python": b"#!/bin/sh\n",
        ".venv/lib/python3.11/site-packages/django/__init__.py": b"",
        ".git/HEAD": b"ref: refs/heads/main\n",
        ".git/config": b"[core]\n",
        "portal/__pycache__/settings.cpython-311.pyc": b"\x00",
        "pki/__pycache__/services.cpython-311.pyc": b"\x00",
        "tests/.artifacts/trace.zip": b"PK",
        ".pytest_cache/v/cache/lastfailed": b"{}",
        ".hypothesis/examples/x": b"",
        ".ruff_cache/CACHEDIR.TAG": b"",
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    databases = ["var/keyline.sqlite3", "var/celery-results.sqlite3"]
    for name in databases:
        with closing(sqlite3.connect(root / name)) as db:
            db.execute("CREATE TABLE t (secret TEXT)")
            db.execute("INSERT INTO t VALUES (?)", [secret[1].decode()])
            db.commit()
    return [*files, *databases], secret


def test_the_image_gets_the_app_and_none_of_a_used_checkouts_secrets(tmp_path):
    from docker.utils.build import exclude_paths

    context, dockerfile = _build_context()
    assert context == ROOT
    assert dockerfile == "deploy/Dockerfile"
    root = tmp_path / "checkout"
    _scratch_checkout(root)
    planted, planted_secrets = _plant_a_used_checkout(root)

    sent = exclude_paths(str(root), _dockerignore_patterns(root), dockerfile=dockerfile)
    files = {name for name in sent if (root / name).is_file()}

    assert not set(planted) & sent
    for top in ("var", ".venv", ".git", ".env", "deploy/secrets", "tests", ".hypothesis"):
        assert not {name for name in sent if name == top or name.startswith(top + "/")}, top
    assert not {name for name in sent if "__pycache__" in name or name.endswith(".pyc")}
    for name in files:
        content = (root / name).read_bytes()
        assert not PEM_PRIVATE_KEY.search(content), f"{name} holds a private key"
        assert not content.startswith(b"SQLite format 3\0"), f"{name} is a database"
        assert not [s for s in planted_secrets if s in content], f"{name} holds a secret"

    needed = {
        "manage.py",
        "requirements.txt",
        "deploy/gunicorn.conf.py",
        "deploy/nginx/keyline.conf.template",
        "portal",
        "pki",
        "rfq",
        "templates",
        "static",
    }
    assert needed <= sent
    # Every file of the application's own directories, not just the directories.
    for top in ("portal", "pki", "rfq", "templates", "static"):
        tracked = {
            str(path.relative_to(root))
            for path in (root / top).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
        assert tracked
        assert tracked <= files, top
