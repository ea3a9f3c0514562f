"""The admin commands under review: a `.env` that can't be decoded is one line naming it (exit 2),
not a traceback; the sign-in command `admin ensure` prints runs as printed in a POSIX shell."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apiforge.cli import app
from apiforge.core.settings import Settings

runner = CliRunner()


@pytest.mark.parametrize("command", [["db", "upgrade"], ["admin", "ensure"], ["serve"]])
def test_an_undecodable_dotenv_is_one_line_naming_it(
    settings: Settings, tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / ".env").write_bytes(b"APIFORGE_ADMIN_PASSWORD=caf\xe9-latin-1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIFORGE_")}
    env.update(
        APIFORGE_DATA_DIR=str(tmp_path / "cli-data"), APIFORGE_DATABASE_URL=settings.database_url
    )
    done = subprocess.run(  # noqa: S603 - our own entry point, fixed arguments
        [sys.executable, "-c", "from apiforge.cli import main; main()", *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert ".env" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "latin-1" not in done.stderr  # never the file's content
    assert not (tmp_path / "cli-data").exists()  # stopped before anything was created


def test_the_printed_curl_command_survives_an_apostrophe_in_the_email(settings: Settings) -> None:
    """`o'brien@example.com` is a valid address: the printed `-d '...'` must still be one
    shell word holding the JSON that signs in."""
    env: dict[str, str | None] = {
        "APIFORGE_DATA_DIR": str(settings.data_dir),
        "APIFORGE_DATABASE_URL": settings.database_url,
        "APIFORGE_SECRET_KEY": settings.secret_key,
        "APIFORGE_REDIS_URL": None,
        "APIFORGE_HOST": None,
        "APIFORGE_PORT": None,
        "APIFORGE_ADMIN_EMAIL": "o'brien@example.com",
        "APIFORGE_ADMIN_PASSWORD": None,
    }
    result = runner.invoke(app, ["admin", "ensure"], env=env)
    assert result.exit_code == 0, result.output
    password = re.search(r"password:\s+(\S+)", result.stdout)
    assert password is not None
    curl = next(line for line in result.stdout.splitlines() if "curl -s" in line)
    words = shlex.split(curl)  # ValueError ("No closing quotation") before the fix
    body = json.loads(words[words.index("-d") + 1])
    assert body == {"email": "o'brien@example.com", "password": password.group(1)}


@pytest.mark.parametrize(
    "command",
    [
        ["admin", "ensure"],
        ["admin", "create", "--email", "a@example.com", "--password", "correct horse battery"],
        ["apps", "export", "01m965qd3fryv53cah100sgh9h"],
    ],
)
def test_a_data_command_without_a_database_says_so_and_creates_none(
    tmp_path: Path, command: list[str]
) -> None:
    """Opening a missing SQLite file created an empty one, and the command then failed on "no
    such table", leaving a database file where `db upgrade` may never have been meant to run."""
    data = tmp_path / "data"
    data.mkdir()
    env: dict[str, str | None] = {
        "APIFORGE_DATA_DIR": str(data),
        "APIFORGE_DATABASE_URL": None,
        "APIFORGE_SECRET_KEY": "k" * 48,
        "APIFORGE_REDIS_URL": None,
    }
    result = runner.invoke(app, command, env=env)
    assert result.exit_code == 1, result.output
    assert f"error: no database at {data / 'apiforge.db'}; run `apiforge db upgrade` first" in (
        result.output
    )
    assert not (data / "apiforge.db").exists()
