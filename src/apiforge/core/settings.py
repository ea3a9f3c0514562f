"""Settings from `APIFORGE_*` environment variables (and `.env`); embedded defaults need none."""

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from apiforge.tools.hashing import random_secret


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APIFORGE_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".apiforge")
    database_url: str = ""  # empty: an SQLite file in data_dir
    db_pool_size: int = Field(default=0, ge=0, le=1000)  # 0: 4 on SQLite, 10 on PostgreSQL
    redis_url: str | None = None
    redis_prefix: str = "apiforge:"
    secret_key: str | None = None  # empty: generated once into data_dir/secret.key

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_json: bool = True
    # Gateway calls are all in the request log; also print each one's access line (5xx always).
    gateway_access_log: bool = False

    access_token_ttl: int = Field(default=900, ge=30)
    refresh_token_ttl: int = Field(default=30 * 86400, ge=60)
    # argon2id cost (argon2-cffi's defaults); tests lower them to keep the suite fast.
    password_time_cost: int = Field(default=3, ge=1)
    password_memory_kib: int = Field(default=65536, ge=64)
    password_parallelism: int = Field(default=4, ge=1)
    login_max_failures: int = Field(default=5, ge=1)
    login_window_seconds: int = Field(default=900, ge=1)

    page_size_default: int = Field(default=20, ge=1)
    page_size_max: int = Field(default=100, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_setting_bytes: int = Field(default=64 * 1024, ge=64)

    # Traffic control (docs/traffic.md): a concurrency lease outlives any call (the engine stops
    # calls at 10 s), so only a crashed process's leases wait this long; what each limit does
    # while Redis is unreachable.
    traffic_lease_seconds: int = Field(default=60, ge=1, le=3600)
    traffic_frequency_failure: Literal["open", "closed"] = "open"
    traffic_concurrency_failure: Literal["open", "closed"] = "open"
    key_creations_per_minute: int = Field(default=20, ge=1)
    idempotency_tokens_per_minute: int = Field(default=600, ge=1)
    # Plan quotas (docs/plans.md): how often each process re-reads a workspace's usage (calls
    # this month, records, bytes) for its in-memory checks, so the bound of any overshoot across
    # server processes.
    quota_refresh_seconds: float = Field(default=10.0, gt=0, le=3600)

    trusted_proxies: list[str] = Field(default_factory=list)
    # Hosts, IPs or CIDRs the `httpRequest` step may reach although private (empty: none).
    http_allow_hosts: list[str] = Field(default_factory=list)
    # RU granted once to each new workspace's wallet, from the platform's issuance wallet.
    welcome_credits: int = Field(default=0, ge=0, le=10**12)
    changelog_path: Path | None = None
    # Idempotency (docs/idempotency.md): how long a completed response is replayed, how long an
    # unfinished claim blocks duplicates (longer than the slowest call), one-time token lifetime.
    idempotency_retention_seconds: int = Field(default=86400, ge=60)
    idempotency_lease_seconds: int = Field(default=120, ge=5)
    idempotency_token_ttl_seconds: int = Field(default=3600, ge=10)
    # Uploaded files (docs/files.md): where their bytes live (empty: data_dir/files; a directory
    # every server process shares in a cluster), the largest file, files per request.
    files_dir: Path | None = None
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    max_upload_files: int = Field(default=10, ge=1, le=1000)

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

    @cached_property
    def signing_key(self) -> str:
        """The JWT signing secret; persisted on first use so restarts keep sessions valid."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = random_secret(48)
        path.write_text(key)
        path.chmod(0o600)
        return key
