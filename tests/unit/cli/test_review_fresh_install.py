"""The command line as a first-time user meets it after `pip install apiforge`: the help shows
where a default comes from, `--version` answers, and a backup destination that cannot be
created is one line, not a traceback."""

import re
import sqlite3
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import apiforge
from apiforge.cli import app
from apiforge.migrate import MIGRATIONS

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[3]


def _help(arguments: list[str]) -> str:
    """The `--help` text with the frame drawn around it and its line wrapping removed."""
    result = runner.invoke(app, [*arguments, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stdout).split())


@pytest.mark.parametrize(
    ("arguments", "default"),
    [
        (["serve"], "APIFORGE_HOST"),
        (["serve"], "APIFORGE_PORT"),
        (["apps", "export"], "standard output"),
    ],
)
def test_the_help_says_where_an_unset_option_comes_from(arguments: list[str], default: str) -> None:
    """Written as `[default: ...]` in the help text, the rich help formatter took it for markup
    and dropped it: `--host` and `--port` read as if they had no default at all."""
    assert re.search(rf"\[default: \(?{default}\)?\]", _help(arguments))


def test_version_is_also_an_option() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{apiforge.__version__}\n"
    assert "--version" in _help([])


def test_a_backup_destination_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """A destination under a regular file (or in a directory not writable by the user) ended
    `db backup` with the traceback of `mkdir`."""
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "apiforge.db") as db:
        db.execute("CREATE TABLE t (n INTEGER)")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    dest = blocker / "backup"
    result = runner.invoke(
        app,
        ["db", "backup", str(dest)],
        env={"APIFORGE_DATA_DIR": str(data), "APIFORGE_DATABASE_URL": None},
    )
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: cannot write a backup to {dest}: Not a directory\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_the_wheel_carries_what_the_installed_package_reads() -> None:
    """An installed apiforge reads its migrations (migrate.py) and CHANGELOG.md (served at
    /api/v1/version, system/changelog.py) from inside the package: the wheel must ship the
    package directory whole, and the repository's CHANGELOG.md into it."""
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
        "targets"
    ]["wheel"]
    assert wheel["packages"] == ["src/apiforge"]
    assert MIGRATIONS.resolve().is_relative_to(Path(apiforge.__file__).resolve().parent)
    assert wheel["force-include"] == {"CHANGELOG.md": "apiforge/CHANGELOG.md"}
