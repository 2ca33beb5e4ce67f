"""Production settings pass Django's deployment checks; the deployment files are consistent."""

import secrets
import subprocess
import sys

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
