"""A malformed `APIFORGE_*` variable stops every command with its name, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apiforge.cli import main
from apiforge.core.settings import Settings


def test_a_bad_setting_stops_the_cli_with_its_name(tmp_path: Path) -> None:
    env = {**os.environ, "APIFORGE_DATA_DIR": str(tmp_path), "APIFORGE_PORT": "70000"}
    done = subprocess.run(
        [sys.executable, "-c", "from apiforge.cli import main; main()", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "APIFORGE_PORT" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///file:shared?mode=memory&cache=shared&uri=true",
        "sqlite+aiosqlite:///file::memory:?uri=true",
    ],
)
def test_an_in_memory_sqlite_database_is_refused(
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`db upgrade` used to fail with "no such table: apps": each connection (the migration's,
    then the one sealing stored secrets) opens its own empty database, and nothing it holds
    outlives the command for `serve` to use."""
    monkeypatch.chdir(tmp_path)  # no `.env` of the working directory
    monkeypatch.setenv("APIFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("APIFORGE_DATABASE_URL", url)
    monkeypatch.setattr(sys, "argv", ["apiforge", "db", "upgrade"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "APIFORGE_DATABASE_URL" in err
    assert "in-memory" in err
    assert "no such table" not in err


def test_an_sqlite_file_url_is_kept(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'apiforge.db'}"
    assert Settings(database_url=url).resolved_database_url == url
