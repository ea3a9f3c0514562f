"""The `apiforge` command line: serve, database migrations and backups, administrator accounts,
version.

The web stack and the database layer are imported inside the commands that need them, so
`apiforge --help` and `apiforge version` answer without loading them.
"""

import asyncio
import gc
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import SecretStr
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from apiforge import __version__
from apiforge.builder.cli import apps, database_settings
from apiforge.core.errors import ConflictError
from apiforge.core.settings import InvalidSettingsError, Settings
from apiforge.tools.hashing import random_secret

if TYPE_CHECKING:
    from apiforge.accounts.service import AccountService

T = TypeVar("T")

app = typer.Typer(help="apiforge: a self-hosted open API platform.", no_args_is_help=True)
db = typer.Typer(help="Database commands.", no_args_is_help=True)
admin = typer.Typer(help="Administrator accounts.", no_args_is_help=True)
app.add_typer(db, name="db")
app.add_typer(admin, name="admin")
app.add_typer(apps, name="apps")

# `admin@localhost` and `*.local` are refused by email-validator (and so by sign-up and any later
# validation); `.example` is reserved by RFC 2606, accepted, and can never deliver mail anywhere.
DEFAULT_ADMIN_EMAIL = "admin@apiforge.example"


class AdminBootstrap(BaseSettings):
    """`APIFORGE_ADMIN_EMAIL` / `APIFORGE_ADMIN_PASSWORD` (environment or `.env`), read only by
    `admin ensure`, so the server's settings never hold a bootstrap password."""

    model_config = SettingsConfigDict(env_prefix="APIFORGE_ADMIN_", env_file=".env", extra="ignore")

    email: str | None = None
    password: SecretStr | None = None


# The embedded database's charging (reservations against a cached balance) and gateway
# idempotency keys (claimed in memory) are one process's: a second process runs a call's steps
# without seeing the first's claim or spending, so an `httpRequest` step could run twice
# under one key, or unpaid (docs/decisions.md).
SQLITE_WORKERS = (
    "--workers needs PostgreSQL (APIFORGE_DATABASE_URL): the embedded SQLite database is served "
    "by one process (docs/decisions.md)"
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """`apiforge --version`, as most commands answer it, besides `apiforge version`."""


@app.command()
def version() -> None:
    """Print the running version."""
    typer.echo(__version__)


@app.command()
def serve(
    # `show_default`, not "[default: ...]" in the help: the rich help takes that for markup.
    host: Annotated[
        str | None, typer.Option(help="Bind address", show_default="APIFORGE_HOST")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port", show_default="APIFORGE_PORT"),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
) -> None:
    """Run the HTTP server (uvicorn with uvloop and httptools)."""
    import uvicorn

    from apiforge.logs import configure_logging

    if reload and workers > 1:
        raise _fail("--reload runs a single process; drop --workers", code=2)
    settings = Settings()
    if workers > 1 and settings.is_sqlite:
        raise _fail(SQLITE_WORKERS, code=2)
    _require_migrated(settings)  # before our logs are set up: Alembic logs its imports at INFO
    # Each worker builds the app, which reads the secret key (or creates it in the data dir):
    # a data dir it cannot use is refused here, once, not as a traceback from every worker.
    settings.signing_key  # noqa: B018 - InvalidSettingsError: main() prints its one line
    # The supervisor of --workers/--reload never builds the app: configure its logs here too.
    configure_logging(settings)
    if workers > 1 and not settings.redis_url:
        typer.echo(
            "warning: without APIFORGE_REDIS_URL each worker keeps its own traffic limits and "
            "signed-call nonces: limits let up to --workers times the traffic through, and a "
            "captured signed call can be replayed once to each worker (docs/traffic.md)",
            err=True,
        )
    # A server allocates many short-lived objects per request: collect the youngest generation
    # less often (each collection then frees more at once), the older ones rarely. The heap
    # built at start-up is frozen out of every collection once the app is up (app.py).
    gc.set_threshold(20_000, 20, 20)
    trusted = ",".join(settings.trusted_proxies)
    with _workers_metrics(workers):
        uvicorn.run(
            "apiforge.app:create_app",
            factory=True,
            host=host or settings.host,
            port=port if port is not None else settings.port,
            workers=workers,
            reload=reload,
            log_config=None,  # ours: JSON lines through apiforge.logs
            log_level=logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO),
            access_log=False,  # AccessLogMiddleware writes the one access line per request
            # Only configured proxies may rewrite the client address with X-Forwarded-For.
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted or None,
            server_header=False,
        )


# prometheus-client keeps its figures in files of this directory when the variable is set when it
# is first imported (the lower-case spelling is its deprecated alias).
_MULTIPROCESS_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


@contextmanager
def _workers_metrics(workers: int) -> Iterator[None]:
    """`--workers N`: each worker counts in its own process, so `/metrics` (http/metrics.py) adds
    up the files they keep in one directory: a fresh one of this server (empty, owner-only, never
    another server's; removed when it stops), set before uvicorn spawns the workers, which inherit
    it. One process keeps its figures in memory, as ever: the metrics on the hot path cost no file
    write, and an inherited directory (another server's) is dropped."""
    for name in _MULTIPROCESS_VARIABLES:
        os.environ.pop(name, None)
    if workers == 1:
        yield
        return
    with tempfile.TemporaryDirectory(
        prefix="apiforge-metrics-", ignore_cleanup_errors=True
    ) as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        try:
            yield
        finally:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def _require_migrated(settings: Settings) -> None:
    """Refuse to serve a schema this release's code cannot use: it would start, report ready
    and answer every request with a 500."""
    from apiforge.migrate import pending_migrations

    pending = _run(pending_migrations(settings))
    if pending:
        raise _fail(
            f"the database is not migrated ({len(pending)} of this release's migrations not "
            "applied); run `apiforge db upgrade` first"
        )


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (creates the embedded SQLite database on first run)."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from apiforge.migrate import upgrade

    try:
        upgrade(Settings())
    # CommandError: e.g. the database is at a revision of a newer release, unknown to this one.
    except (CommandError, SQLAlchemyError, OSError) as exc:
        raise _fail(f"cannot migrate the database: {_first_line(exc)}") from None
    typer.echo("database is up to date")


@db.command("backup")
def db_backup(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) directory to write the copy to")],
) -> None:
    """Copy the embedded data dir (database snapshot, secret key, uploaded files, idempotency
    answers) to DEST while the server keeps serving. Restore: point APIFORGE_DATA_DIR at DEST."""
    from apiforge.system.backup import BackupError, backup

    try:
        summary = backup(Settings(), dest)
    except BackupError as exc:
        raise _fail(str(exc), code=exc.code) from None
    typer.echo(summary.line(dest))


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _first_line(exc: BaseException) -> str:
    """What a one-line error shows of an exception (SQLAlchemy adds lines about its docs)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _validated(email: str, password: str, name: str) -> tuple[str, str, str]:
    """The same rules as sign-up (email syntax, password length, name length)."""
    from apiforge.accounts.schemas import RegisterInput

    try:
        data = RegisterInput(email=email, password=password, name=name)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}"
            for err in exc.errors()
        )
        raise _fail(problems) from None
    return str(data.email), data.password, data.name


@asynccontextmanager
async def _account_service(settings: Settings) -> AsyncIterator["AccountService"]:
    """One unit of work against the configured database, as the HTTP edge would run it."""
    from limits.aio.storage import MemoryStorage

    from apiforge.accounts import passwords
    from apiforge.accounts.service import AccountService
    from apiforge.accounts.throttle import LoginThrottle
    from apiforge.core.db import make_engine, make_sessionmaker, unit_of_work

    passwords.configure(
        settings.password_time_cost, settings.password_memory_kib, settings.password_parallelism
    )
    engine = make_engine(settings.resolved_database_url, pool=False)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as session:
            # No sign-in happens here, so the throttle needs no shared storage.
            yield AccountService(session, settings, LoginThrottle(MemoryStorage(), 1, 1))
    finally:
        await engine.dispose()


async def _create_admin(settings: Settings, email: str, password: str, name: str) -> str:
    async with _account_service(settings) as service:
        account = await service.create_account(email, password, name, is_admin=True)
        return account.id


async def _count_admins(settings: Settings) -> int:
    async with _account_service(settings) as service:
        return await service.count_admins()


async def _ensure_admin(settings: Settings, email: str, password: str, name: str) -> int:
    """How many administrators existed; when none, creates one in the same transaction (so two
    nodes starting at once, both having counted none before, still create only one)."""
    async with _account_service(settings) as service:
        existing = await service.count_admins()
        if not existing:
            await service.create_account(email, password, name, is_admin=True)
        return existing


async def _is_admin(settings: Settings, email: str) -> bool:
    """Whether `email` names an administrator (as stored: trimmed and lowercased)."""
    from sqlalchemy import select

    from apiforge.accounts.models import Account

    async with _account_service(settings) as service:
        found = await service.session.scalar(
            select(Account.is_admin).where(Account.email == email.strip().lower())
        )
        return bool(found)


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run database work; an unreachable or unmigrated database is a message, not a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return asyncio.run(work)
    except (SQLAlchemyError, OSError) as exc:
        raise _fail(
            f"database unavailable ({_first_line(exc)}); is it reachable and migrated "
            "(`apiforge db upgrade`)?"
        ) from None


@admin.command("create")
def admin_create(
    email: Annotated[str, typer.Option(help="Sign-in email")],
    password: Annotated[
        str | None, typer.Option(help="Password (prompted, hidden, when neither option is given)")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
    name: Annotated[str, typer.Option(help="Display name")] = "",
) -> None:
    """Create an administrator account (with its personal workspace)."""
    if password is not None and password_stdin:
        raise _fail("give either --password or --password-stdin, not both", code=2)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    email, password, name = _validated(email, password, name)
    try:
        account_id = _run(_create_admin(database_settings(), email, password, name))
    except ConflictError:
        raise _fail(f"an account with email {email} already exists") from None
    typer.echo(f"administrator {email} created (id {account_id})")


@admin.command("ensure")
def admin_ensure() -> None:
    """Create the first administrator when there is none, and print how to sign in.

    Uses APIFORGE_ADMIN_EMAIL / APIFORGE_ADMIN_PASSWORD when set; otherwise a generated password
    is printed once. Does nothing when an administrator already exists (and then checks neither
    variable: they would not be used).
    """
    settings = database_settings()
    existing = _run(_count_admins(settings))
    if existing:
        # The bootstrap values are not used, so not checked either: a password set long ago
        # must not stop a deployment's every start once the sign-up rules are tightened.
        typer.echo(f"an administrator account already exists ({existing}); nothing to do")
        return
    bootstrap = AdminBootstrap()
    given = bootstrap.password.get_secret_value() if bootstrap.password else None
    email, password, name = _validated(
        bootstrap.email or DEFAULT_ADMIN_EMAIL, given or random_secret(12), "Administrator"
    )
    try:
        existing = _run(_ensure_admin(settings, email, password, name))
    except ConflictError:
        if _run(_is_admin(settings, email)):
            # Another `admin ensure` (a second node starting) created it meanwhile.
            typer.echo("an administrator account already exists; nothing to do")
            return
        # The address belongs to a regular account: never promote it silently.
        raise _fail(
            f"{email} is already a regular account; set another APIFORGE_ADMIN_EMAIL "
            "or run `apiforge admin create`"
        ) from None
    if existing:
        typer.echo(f"an administrator account already exists ({existing}); nothing to do")
        return
    typer.echo(_sign_in_instructions(settings, email, None if given else password))


def _sign_in_instructions(settings: Settings, email: str, password: str | None) -> str:
    """`password` is None when it came from the environment: it is then never echoed."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind is reached via loopback
        host = "127.0.0.1"
    base = f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"
    # The body goes inside '...' in the shell: a `'` of the email (valid in an address) must
    # close, escape and reopen the quotes, or the command printed never runs.
    quoted = email.replace("'", "'\\''")
    if password is None:
        shown = "(the value of APIFORGE_ADMIN_PASSWORD)"
        body = f'{{"email": "{quoted}", "password": "\'"$APIFORGE_ADMIN_PASSWORD"\'"}}'
    else:
        shown = f"{password}   (shown only this once: store it now)"
        body = f'{{"email": "{quoted}", "password": "{password}"}}'
    return "\n".join(
        [
            "created the first administrator account",
            f"  sign in at: {base}/docs",
            f"  email:      {email}",
            f"  password:   {shown}",
            "  or with curl:",
            f"    curl -s -X POST {base}/api/v1/auth/login"
            f" -H 'Content-Type: application/json' -d '{body}'",
        ]
    )


def main() -> None:
    try:
        app()
    except InvalidSettingsError as exc:  # a bad APIFORGE_* variable: its name, not a traceback
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
