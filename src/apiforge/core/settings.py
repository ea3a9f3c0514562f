"""Settings from `APIFORGE_*` environment variables (and `.env`); embedded defaults need none.

A malformed value stops the process at start with `InvalidSettingsError` naming the variable,
never later at the first request that reads it."""

import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from apiforge.tools.hashing import random_secret

ENV_PREFIX = "APIFORGE_"
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_DATABASE_DRIVERS = ("postgresql+asyncpg", "sqlite+aiosqlite")
_KEY_READ_ATTEMPTS = 50  # x 20 ms
# A JSON list, decoded by `_json_list` rather than pydantic-settings, so a malformed one is
# reported like any other invalid value.
HostList = Annotated[list[str], NoDecode]
# How long one call's steps may run (`engine.base.RunLimits`): gateway calls and workflows.
CALL_TIME_BUDGET_SECONDS = 10
# The shortest lease a concurrency place or an idempotency claim may have. An admitted call may
# also wait outside its steps — for a pooled connection (SQLAlchemy's 30 s pool timeout) and on
# SQLite's 5 s busy timeout when it claims its key and when it commits — so up to about five
# budgets in all; a lease that ran out before the call did would let one call too many run at
# once, or a duplicate run a second time. Six budgets: above that, with room.
MIN_LEASE_SECONDS = 6 * CALL_TIME_BUDGET_SECONDS
# The longest token lifetime, lease or retention (as APIFORGE_SESSION_MAX_DAYS): the time it ends
# must still be a datetime (year 9999), or every sign-in or keyed write that computes it is a 500.
MAX_DURATION_SECONDS = 3650 * 86400


class InvalidSettingsError(ValueError):
    """The configuration cannot start a server: one line per bad `APIFORGE_*` variable."""


def _describe(exc: PydanticValidationError) -> str:
    lines = []
    for err in exc.errors():
        # Never the value itself: a database or Redis URL can hold a password.
        message = str(err["msg"]).removeprefix("Value error, ")
        field = str(err["loc"][0]) if err["loc"] else ""
        lines.append(f"{ENV_PREFIX}{field.upper()}: {message}" if field else message)
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _is_host_or_network(entry: str) -> bool:
    """What `tools/netguard.AllowList` can match: an IP address, a CIDR range or an ASCII host
    name (IDNA names in their `xn--` form, as a URL's host is compared)."""
    text = entry.strip().lower().removesuffix(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return 0 < len(text) <= 253 and all(_HOST_LABEL.fullmatch(p) for p in text.split("."))
    return True


def _in_memory(database: str | None, query: Mapping[str, str | tuple[str, ...]]) -> bool:
    """Whether an SQLite URL's database is in memory: none, `:memory:`, or a `file:` URI naming
    `:memory:` or asking `mode=memory` (a URL's query, which SQLAlchemy passes on to the URI)."""
    name = database or ":memory:"
    if name.removeprefix("file:") == ":memory:":
        return True
    mode = query.get("mode", ())
    return name.startswith("file:") and "memory" in ((mode,) if isinstance(mode, str) else mode)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    data_dir: Path = Path(".apiforge")
    database_url: str = ""  # empty: an SQLite file in data_dir
    db_pool_size: int = Field(default=0, ge=0, le=1000)  # 0: 4 on SQLite, 10 on PostgreSQL
    # PostgreSQL: the longest a connect or one statement waits for the server (then 503).
    db_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    redis_url: str | None = None
    redis_prefix: str = "apiforge:"
    secret_key: str | None = None  # empty: generated once into data_dir/secret.key

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "INFO"
    log_json: bool = True
    # Gateway calls are all in the request log; also print each one's access line (5xx always).
    gateway_access_log: bool = False
    # When set, `GET /metrics` needs `Authorization: Bearer <token>` (empty: open to whoever
    # reaches the port, as Prometheus exporters usually are).
    metrics_token: SecretStr | None = None

    access_token_ttl: int = Field(default=900, ge=30)
    refresh_token_ttl: int = Field(default=30 * 86400, ge=60, le=MAX_DURATION_SECONDS)
    # A console session ends this many days after its sign-in however often it is refreshed.
    session_max_days: int = Field(default=30, ge=1, le=3650)
    # argon2id cost (argon2-cffi's defaults); tests lower them to keep the suite fast.
    password_time_cost: int = Field(default=3, ge=1)
    password_memory_kib: int = Field(default=65536, ge=64)
    password_parallelism: int = Field(default=4, ge=1)
    login_max_failures: int = Field(default=5, ge=1)
    login_window_seconds: int = Field(default=900, ge=1, le=MAX_DURATION_SECONDS)

    page_size_default: int = Field(default=20, ge=1)
    page_size_max: int = Field(default=100, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_setting_bytes: int = Field(default=64 * 1024, ge=64)

    # Traffic control (docs/traffic.md): a concurrency lease outlives any call (at least
    # `MIN_LEASE_SECONDS`), so only a crashed process's leases wait this long; what each limit
    # does while Redis is unreachable.
    traffic_lease_seconds: int = Field(default=60, le=3600)
    traffic_frequency_failure: Literal["open", "closed"] = "open"
    traffic_concurrency_failure: Literal["open", "closed"] = "open"
    key_creations_per_minute: int = Field(default=20, ge=1)
    idempotency_tokens_per_minute: int = Field(default=600, ge=1)
    # Plan quotas (docs/plans.md): how often each process re-reads a workspace's usage (calls
    # this month, records, bytes) for its in-memory checks, so the bound of any overshoot across
    # server processes.
    quota_refresh_seconds: float = Field(default=10.0, gt=0, le=3600)

    # JSON lists: IPs, CIDRs or `*` (tools/netpolicy.py).
    trusted_proxies: HostList = Field(default_factory=list)
    # Hosts, IPs or CIDRs the `httpRequest` step may reach although private (empty: none).
    http_allow_hosts: HostList = Field(default_factory=list)
    # RU granted once per console account, to its first workspace that gets wallets, from the
    # platform's issuance wallet (docs/billing.md, "Welcome credits").
    welcome_credits: int = Field(default=0, ge=0, le=10**12)
    changelog_path: Path | None = None
    # Request logs and quota hits older than this many days are deleted hourly (usage/retention.py);
    # 0 keeps them for good. At least 32 otherwise: `callsPerMonth` counts this month's calls
    # from the request log.
    log_retention_days: int = Field(default=0, ge=0, le=36500)
    # Idempotency (docs/idempotency.md): how long a completed response is replayed, how long an
    # unfinished claim blocks duplicates (longer than the slowest gateway call; a management
    # request renews its claim while it runs), one-time token lifetime.
    idempotency_retention_seconds: int = Field(default=86400, ge=60, le=MAX_DURATION_SECONDS)
    idempotency_lease_seconds: int = Field(default=120, le=MAX_DURATION_SECONDS)
    idempotency_token_ttl_seconds: int = Field(default=3600, ge=10, le=MAX_DURATION_SECONDS)
    # Uploaded files (docs/files.md): where their bytes live (empty: data_dir/files; a directory
    # every server process shares in a cluster), the largest file, files per request.
    files_dir: Path | None = None
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    max_upload_files: int = Field(default=10, ge=1, le=1000)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except PydanticValidationError as exc:
            raise InvalidSettingsError(_describe(exc)) from None
        except PydanticSettingsError as exc:  # a source that could not be read at all
            raise InvalidSettingsError(f"invalid configuration: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:  # the `.env` file: unreadable, not UTF-8
            # The reason only, never the content: the line may hold a password.
            reason = exc.reason if isinstance(exc, UnicodeDecodeError) else exc.strerror or exc
            raise InvalidSettingsError(
                f"invalid configuration: cannot read {self.model_config.get('env_file')}: {reason}"
            ) from None

    @field_validator("trusted_proxies", "http_allow_hosts", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else []
            except ValueError:
                raise ValueError('must be a JSON list of strings, e.g. ["10.0.0.0/8"]') from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry.strip() == "*":
                continue
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address, a CIDR range or *") from None
        return value

    @field_validator("http_allow_hosts")
    @classmethod
    def _allowed_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not _is_host_or_network(entry):
                raise ValueError(f"{entry!r} is not a host name, an IP address or a CIDR range")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value:
            try:
                url = make_url(value)
            except ArgumentError:
                raise ValueError("is not a database URL (e.g. postgresql+asyncpg://...)") from None
            driver = url.drivername
            # The code speaks to these two drivers directly; any other fails at the first
            # connection with an import error or "requires an async driver".
            if driver not in _DATABASE_DRIVERS:
                raise ValueError(
                    f"driver {driver!r} is not supported: use postgresql+asyncpg://... "
                    "or sqlite+aiosqlite:///..."
                )
            # asyncpg raises OverflowError for it at the first connection: a traceback.
            if url.port is not None and not 0 < url.port <= 65535:
                raise ValueError("has a port out of range (1-65535)")
            if driver.startswith("sqlite") and _in_memory(url.database, url.query):
                raise ValueError(
                    "names an in-memory SQLite database, which every connection opens empty "
                    "and which ends with its process (`db upgrade` would migrate one, `serve` "
                    "find another unmigrated): use sqlite+aiosqlite:///path/to/apiforge.db"
                )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(_REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss:// or unix://")
        if value:
            # What the Redis client parses as the app is built: a bad host or port would stop
            # every worker there, with a traceback.
            try:
                urlsplit(value).port  # noqa: B018 - parsing is the check
            except ValueError:
                raise ValueError("has a malformed host or port") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in logging.getLevelNamesMapping():
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _metrics_token(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and len(value.strip()) < 16:
            raise ValueError("must be at least 16 characters (or empty: /metrics open)")
        return value.strip() if isinstance(value, str) else value

    @field_validator("log_retention_days")
    @classmethod
    def _log_retention(cls, value: int) -> int:
        if 0 < value < 32:
            raise ValueError("must be 0 (keep every row) or at least 32 (a month of calls)")
        return value

    @field_validator("traffic_lease_seconds", "idempotency_lease_seconds")
    @classmethod
    def _lease(cls, value: int) -> int:
        if value < MIN_LEASE_SECONDS:
            raise ValueError(
                f"must be at least {MIN_LEASE_SECONDS} s: a lease must outlive the longest call "
                f"(its {CALL_TIME_BUDGET_SECONDS} s of steps and its waits for the database), or "
                "a call still running loses its place or its idempotency key"
            )
        return value

    @model_validator(mode="after")
    def _page_sizes(self) -> Self:
        if self.page_size_default > self.page_size_max:
            raise ValueError(
                f"{ENV_PREFIX}PAGE_SIZE_DEFAULT ({self.page_size_default}) is over "
                f"{ENV_PREFIX}PAGE_SIZE_MAX ({self.page_size_max})"
            )
        return self

    @model_validator(mode="after")
    def _token_lifetimes(self) -> Self:
        # `/user/sessions` lists (and ends) a session while its refresh token is usable: an
        # access token outliving that would keep working for a session no longer listed there.
        if self.access_token_ttl > self.refresh_token_ttl:
            raise ValueError(
                f"{ENV_PREFIX}ACCESS_TOKEN_TTL ({self.access_token_ttl}) is over "
                f"{ENV_PREFIX}REFRESH_TOKEN_TTL ({self.refresh_token_ttl}): an access token would "
                "keep working after its session's refresh token ran out, when /user/sessions "
                "no longer lists the session nor can end it"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'apiforge.db').resolve()}"

    @property
    def resolved_files_dir(self) -> Path:
        return self.files_dir or self.data_dir / "files"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def create_data_dir(self) -> None:
        """The data dir, created owner-only (0700) if it is new: it holds the database (password
        and key hashes, sealed secrets), `secret.key` and uploads, which other users of the host
        must not read whatever the umask. An existing directory keeps the mode it was given."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    @cached_property
    def signing_key(self) -> str:
        """The JWT signing secret; persisted on first use so restarts keep sessions valid.

        Several processes may start on a new data dir together (`serve --workers`): the one
        that creates the file writes its key and the others read it, since a second key would
        reject the first one's tokens and never open what it encrypted. Created private (0600),
        never readable by others even for a moment."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        try:
            self.create_data_dir()
            return _stored_key(path)
        except OSError as exc:  # a data dir that cannot be created, written or read
            raise InvalidSettingsError(
                f"invalid configuration: cannot create or read {path} ({exc.strerror or exc}): "
                f"make {ENV_PREFIX}DATA_DIR writable, or set {ENV_PREFIX}SECRET_KEY"
            ) from None
        except UnicodeDecodeError:  # the reason only, never the content: it is the key
            raise InvalidSettingsError(
                f"invalid configuration: {path} is not UTF-8 text: save it as UTF-8, or set "
                f"{ENV_PREFIX}SECRET_KEY"
            ) from None


def _stored_key(path: Path) -> str:
    """The key in `path`, created there when there is none."""
    key = random_secret(48)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(key)
    except BaseException:
        path.unlink()  # a full disk: no empty key file left behind for the next start
        raise
    return key


def _read_key(path: Path) -> str:
    """The key another process created; it may still be writing it for a few milliseconds."""
    for _ in range(_KEY_READ_ATTEMPTS):
        # UTF-8 whatever the locale: every node sharing the data dir reads the same key.
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key
        time.sleep(0.02)
    raise InvalidSettingsError(
        f"invalid configuration: {path} is empty (set {ENV_PREFIX}SECRET_KEY, or remove the file "
        "to generate a new key)"
    )
