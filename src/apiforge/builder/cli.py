"""`apiforge apps export|import`: move an app between workspaces or servers as a file.

The commands act directly on the configured database as the operator (no sign-in), with the same
document and validation as `GET /api/v1/apps/{appId}/export` and `POST /api/v1/apps/import`.
Database modules are imported inside the commands so `apiforge --help` stays fast.
"""

import asyncio
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from apiforge.core.errors import ApiforgeError
from apiforge.core.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

apps = typer.Typer(help="Export and import apps.", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _describe(error: ApiforgeError) -> str:
    problems = error.details.get("errors") or []
    listed = "; ".join(f"{p.get('field')}: {p.get('message')}" for p in problems)
    return f"{error.message} ({listed})" if listed else error.message


@asynccontextmanager
async def _session(settings: Settings) -> AsyncIterator["AsyncSession"]:
    """One unit of work against the configured database, committed when the body succeeds."""
    from apiforge.core.db import make_engine, make_sessionmaker, unit_of_work

    engine = make_engine(settings.resolved_database_url, pool=False)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as session:
            yield session
    finally:
        await engine.dispose()


async def _export(settings: Settings, app_id: str) -> dict[str, Any]:
    from apiforge.builder.models import App
    from apiforge.builder.service import AppNotFoundError
    from apiforge.builder.transfer import export_app

    async with _session(settings) as session:
        app = await session.get(App, app_id)
        if app is None:
            raise AppNotFoundError()
        return await export_app(session, app)


async def _import(settings: Settings, raw: bytes, content_type: str, workspace_id: str) -> str:
    from apiforge.builder.transfer import import_app, parse_document, validate_document
    from apiforge.core.errors import NotFoundError
    from apiforge.workspaces.models import Workspace

    document = validate_document(parse_document(raw, content_type))
    async with _session(settings) as session:
        workspace = await session.get(Workspace, workspace_id)
        if workspace is None:
            raise NotFoundError("Workspace not found", reason="workspace_not_found")
        app = await import_app(session, settings, workspace, document)
        return app.id


def database_settings() -> Settings:
    """The settings of a command that works on the data (here and the admin commands, cli.py),
    refused with one line when the database is not there."""
    from apiforge.migrate import database_missing

    settings = Settings()
    problem = database_missing(settings)
    if problem is not None:
        raise _fail(problem)
    return settings


def _run(work: Coroutine[Any, Any, T]) -> T:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return asyncio.run(work)
    except ApiforgeError as exc:
        raise _fail(_describe(exc)) from None
    except (SQLAlchemyError, OSError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(f"database unavailable ({first_line}); is it migrated?") from None


@apps.command("export")
def export_command(
    app_id: Annotated[str, typer.Argument(help="Id of the app to export")],
    format: Annotated[str, typer.Option("--format", help="json or yaml")] = "json",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="File to write", show_default="standard output"),
    ] = None,
) -> None:
    """Write an app (APIs, collections' schemas, versions' notes) as a JSON or YAML document."""
    from apiforge.builder.transfer import dump_document

    if format not in ("json", "yaml"):
        raise _fail("--format must be json or yaml", code=2)
    document = _run(_export(database_settings(), app_id))
    content, _media, _name = dump_document(document, "yaml" if format == "yaml" else "json")
    if out is None:
        try:
            sys.stdout.buffer.write(content + (b"" if content.endswith(b"\n") else b"\n"))
            sys.stdout.flush()
        except BrokenPipeError:
            raise  # the reader stopped early (`| head`): Click exits 1 quietly
        except OSError as exc:  # `> file` on a full disk
            raise _fail(f"cannot write to standard output: {exc.strerror}") from None
        return
    try:
        replaced = _write_whole(out, content)
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror}") from None
    note = " (replacing the file that was there)" if replaced else ""
    typer.echo(f"app {app_id} exported to {out}{note}", err=True)


def _write_whole(path: Path, content: bytes) -> bool:
    """Write `content` to `path` whole or not at all, and say whether it replaced a file.

    Written into a new file beside it, then renamed over it: writing in place truncated the
    file first, so a failed write (a full disk) lost the previous export and left a partial
    one. What is no regular file (`/dev/stdout`, a pipe) is written as it is."""
    if path.exists() and not path.is_file():
        path.write_bytes(content)
        return False
    replaced = path.exists()
    target = Path(os.path.realpath(path))  # through a symbolic link, not over it
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        with temporary.open("xb") as file:
            file.write(content)
        if replaced:
            shutil.copymode(target, temporary)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return replaced


def _read_document(file: Path, limit: int) -> bytes:
    """The document's bytes, refused (exit 2) past `limit`, `APIFORGE_MAX_BODY_BYTES` as for
    `POST /api/v1/apps/import`: read at most one byte over, so no file (`/dev/zero`, a wrong
    path to a disk image) is read whole into memory first."""
    try:
        with file.open("rb") as opened:
            raw = opened.read(limit + 1)
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror}") from None
    if len(raw) > limit:
        raise _fail(f"{file} is over {limit} bytes (APIFORGE_MAX_BODY_BYTES)", code=2)
    return raw


@apps.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="An exported document (.json, .yaml or .yml)")],
    workspace: Annotated[str, typer.Option("--workspace", help="Id of the target workspace")],
) -> None:
    """Create a new app in a workspace from an exported document (new ids, new signing secret)."""
    settings = database_settings()
    raw = _read_document(file, settings.max_body_bytes)
    is_yaml = file.suffix.lower() in (".yaml", ".yml")
    content_type = "application/yaml" if is_yaml else "application/json"
    app_id = _run(_import(settings, raw, content_type, workspace))
    typer.echo(f"imported as app {app_id}")
