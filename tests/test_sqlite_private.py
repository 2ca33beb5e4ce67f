"""SQLite stays only for tooling on a bare machine; its file would hold sessions and
second-factor seeds, so it is made readable by its owner alone when a connection opens it."""

import stat
import subprocess
import sys

from tests.servers import ROOT, user_env


def test_a_sqlite_database_file_is_private_once_opened(tmp_path):
    database = tmp_path / "tool.sqlite3"
    code = (
        "import django; django.setup(); from django.db import connection; "
        "connection.ensure_connection()"
    )
    env = user_env(
        DJANGO_SETTINGS_MODULE="keyline.settings",
        DJANGO_DEBUG="1",
        DATABASE_URL=f"sqlite:///{database}",
        KEYLINE_VAR_DIR=str(tmp_path / "var"),
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        check=False, umask=0o022,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
