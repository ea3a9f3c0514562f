"""Idempotency payload fingerprints are keyed under the server secret (a database dump must not
let anyone confirm a guess of a body's secret values offline), records stored in the earlier,
plain form still answer their retries, and `apiforge admin ensure` checks the bootstrap password
only when it will create an administrator with it."""

import asyncio
import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import insert, select
from typer.testing import CliRunner

from apiforge.accounts.models import Account
from apiforge.cli import app as cli
from apiforge.core.db import make_engine
from apiforge.core.settings import Settings
from apiforge.gateway.stages import idempotency as stage
from apiforge.idempotency.keys import record_id
from apiforge.idempotency.models import IdempotencyRecord
from apiforge.tools.clock import utcnow
from apiforge.tools.hashing import KeyedSha256
from apiforge.tools.ids import new_id
from tests.e2e._apps import new_app
from tests.e2e._idempotency import hit, hits_app, stored_answer, total
from tests.e2e._keys import app_key, notes_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

KEY = "Idempotency-Key"
SEQ = "X-Request-Seq"
JSON = {"Content-Type": "application/json"}


def _head(method: str, path: str, query: str = "") -> bytes:
    return f"{method}\x00{path}\x00{query}\x00".encode()


def _plain(method: str, path: str, body: bytes) -> str:
    """The fingerprint anyone with a dump could compute for a guessed body (the earlier form)."""
    return hashlib.sha256(_head(method, path) + body).hexdigest()


def _keyed(settings: Settings, method: str, path: str, body: bytes) -> str:
    """HMAC-SHA256 under the key HKDF derives from the server secret for fingerprints: what
    every process and node sharing that secret computes."""
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"apiforge/idempotency/payload-fingerprints/v1",
    ).derive(settings.signing_key.encode())
    return hmac.new(key, _head(method, path) + body, "sha256").hexdigest()


async def _rows(app: FastAPI) -> list[Any]:
    async with app.state.engine.connect() as conn:
        return list((await conn.execute(select(IdempotencyRecord))).all())


async def _stored_fingerprint(app: FastAPI, rid: str) -> str:
    """The fingerprint a gateway key's answer is stored with (the answer log or a row)."""
    return (await stored_answer(app, rid))[1]


def _replayed(response: Response) -> bool:
    return bool(response.headers.get("Idempotent-Replayed") == "1")


@pytest.mark.parametrize("size", [0, 16, 32, 64, 65, 200])
def test_the_pre_keyed_digest_is_hmac_sha256(size: int) -> None:
    key = bytes(range(256))[:size]
    keyed = KeyedSha256(key)
    for message in (b"", b"a", b"x" * 63, b"y" * 64, b"z" * 1000):
        assert keyed.hexdigest(message) == hmac.new(key, message, "sha256").hexdigest()
        inner = keyed.begin(message[:5])
        inner.update(message[5:])
        assert keyed.end(inner) == keyed.hexdigest(message)
    assert "key hidden" in repr(keyed)


async def test_a_management_fingerprint_is_keyed_not_a_plain_hash_of_a_secret(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers, "Mail")
    path = f"/api/v1/apps/{app_id}"
    body = json.dumps({"secrets": {"mailKey": "mk-guessable-0001"}}).encode()
    headers = {**user.headers, **JSON, KEY: "set-mail-key"}

    first = await client.patch(path, content=body, headers=headers)
    assert first.status_code == 200, first.text
    [row] = await _rows(app)
    assert row.fingerprint != _plain("PATCH", path, body)  # a guess can't be confirmed
    assert row.fingerprint == _keyed(app.state.settings, "PATCH", path, body)

    again = await client.patch(path, content=body, headers=headers)
    assert _replayed(again)
    assert again.content == first.content
    other = json.dumps({"secrets": {"mailKey": "mk-guessable-0002"}}).encode()
    assert_error(
        await client.patch(path, content=other, headers=headers), 422, "idempotency_key_mismatch"
    )


async def test_a_gateway_fingerprint_is_keyed_not_a_plain_hash_of_an_arg(
    app: FastAPI, client: AsyncClient
) -> None:
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    key_id, secret = await app_key(client, consumer, app_id)
    call = {"appId": app_id, "api": "echo", "version": "latest", "args": {"text": "pin-4242"}}
    body = json.dumps(call).encode()
    headers = {"X-Api-Key": secret, **JSON, KEY: "echo-1"}

    first = await client.post("/api/v1/invocations", content=body, headers=headers)
    assert data_of(first) == {"echo": "pin-4242"}
    rid = record_id("key", f"{consumer.workspace_id}|key:{key_id}", "echo-1")
    stored = await _stored_fingerprint(app, rid)
    assert stored != _plain("POST", "/api/v1/invocations", body)
    assert stored == _keyed(app.state.settings, "POST", "/api/v1/invocations", body)

    again = await client.post("/api/v1/invocations", content=body, headers=headers)
    assert _replayed(again)
    assert again.content == first.content
    changed = body.replace(b"pin-4242", b"pin-4243")
    refused = await client.post("/api/v1/invocations", content=changed, headers=headers)
    assert_error(refused, 422, "idempotency_key_mismatch")


async def test_a_gateway_answer_stored_with_a_plain_fingerprint_still_answers_its_retry(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As stored by the release before the upgrade (answer log embedded, row on PostgreSQL),
    within its retention: the retry is replayed, never 422 nor run again; another payload is
    still 422."""
    owner, consumer = await register(client), await register(client)
    app_id = await hits_app(client, owner)
    _, secret = await app_key(client, consumer, app_id)

    def plain(_key: object, method: str, path: str, query: str, body: bytes) -> str:
        return hashlib.sha256(_head(method, path, query) + body).hexdigest()

    with monkeypatch.context() as patched:
        patched.setattr(stage, "fingerprint", plain)
        first = await hit(client, secret, app_id, 1, **{KEY: "before-upgrade"})
    assert first.status_code == 200, first.text

    again = await hit(client, secret, app_id, 1, **{KEY: "before-upgrade"})
    assert _replayed(again), again.text
    assert again.content == first.content
    assert_error(
        await hit(client, secret, app_id, 2, **{KEY: "before-upgrade"}),
        422,
        "idempotency_key_mismatch",
    )
    assert await total(client, secret, app_id) == 1


async def _insert_answered(app: FastAPI, rid: str, fingerprint: str, body: bytes) -> None:
    now = utcnow()
    row = {
        "id": rid,
        "fingerprint": fingerprint,
        "owner": new_id(),  # a process of the earlier release
        "status": 200,
        "headers": {"content-type": "application/json"},
        "body": body,
        "created_at": now,
        "expires_at": now + timedelta(hours=24),
    }
    async with app.state.engine.begin() as conn:
        await conn.execute(insert(IdempotencyRecord).values(**row))


@pytest.mark.parametrize("header", [KEY, SEQ])
async def test_a_management_answer_stored_with_a_plain_fingerprint_still_answers_its_retry(
    app: FastAPI, client: AsyncClient, header: str
) -> None:
    user = await register(client)
    body = json.dumps({"name": "Shop"}).encode()
    plain = _plain("POST", "/api/v1/apps", body)
    who = f"acct:{user.account_id}"
    if header == KEY:
        rid = record_id("key", f"{user.workspace_id}|{who}", "41")
    else:
        rid = record_id("seq", who, "41")
        ws = user.workspace_id
        plain = hashlib.sha256(f"{len(ws)}:{ws}:{plain}".encode()).hexdigest()
    answer = b'{"code":200,"message":"success","data":{"id":"created-before-the-upgrade"}}'
    await _insert_answered(app, rid, plain, answer)

    headers = {**user.headers, **JSON, header: "41"}
    again = await client.post("/api/v1/apps", content=body, headers=headers)
    assert _replayed(again), again.text
    assert again.content == answer
    other = json.dumps({"name": "Other"}).encode()
    refused = await client.post("/api/v1/apps", content=other, headers=headers)
    assert_error(refused, 422, "idempotency_key_mismatch")
    listed = data_of(await client.get("/api/v1/apps", headers=user.headers))
    assert listed["totalCount"] == 0  # neither request ran


# --- `apiforge admin ensure` ------------------------------------------------------------------

runner = CliRunner()
Env = dict[str, str | None]


@pytest.fixture
def cli_env(settings: Settings, tmp_path: Path) -> Env:
    """The commands' environment: the test's database, no inherited bootstrap variables."""
    env: Env = {
        "APIFORGE_DATA_DIR": str(tmp_path / "cli-data"),
        "APIFORGE_DATABASE_URL": settings.database_url,
        "APIFORGE_REDIS_URL": settings.redis_url,
        "APIFORGE_SECRET_KEY": settings.secret_key,
        "APIFORGE_ADMIN_EMAIL": None,
        "APIFORGE_ADMIN_PASSWORD": None,
    }
    result = runner.invoke(cli, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    return env


async def _admins_async(env: Env) -> list[str]:
    settings = Settings(
        data_dir=Path(env["APIFORGE_DATA_DIR"] or ""),
        database_url=env["APIFORGE_DATABASE_URL"] or "",
        secret_key=env["APIFORGE_SECRET_KEY"],
    )
    engine = make_engine(settings.resolved_database_url, pool=False)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(Account.email).where(Account.is_admin))
            return sorted(rows.scalars())
    finally:
        await engine.dispose()


def _admins(env: Env) -> list[str]:
    return asyncio.run(_admins_async(env))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("APIFORGE_ADMIN_PASSWORD", "short"),  # rules tightened since it was set
        ("APIFORGE_ADMIN_EMAIL", "not-an-email"),
    ],
)
def test_admin_ensure_with_an_admin_ignores_bootstrap_values_it_will_not_use(
    cli_env: Env, variable: str, value: str
) -> None:
    first = {
        **cli_env,
        "APIFORGE_ADMIN_EMAIL": "ops@example.com",
        "APIFORGE_ADMIN_PASSWORD": "long-enough-1",
    }
    created = runner.invoke(cli, ["admin", "ensure"], env=first)
    assert created.exit_code == 0, created.output
    assert created.stdout.startswith("created the first administrator")

    again = runner.invoke(cli, ["admin", "ensure"], env={**first, variable: value})
    assert again.exit_code == 0, again.output
    assert "already exists" in again.stdout
    assert _admins(cli_env) == ["ops@example.com"]


def test_admin_ensure_without_an_admin_still_refuses_a_short_password(cli_env: Env) -> None:
    env = {**cli_env, "APIFORGE_ADMIN_PASSWORD": "short"}
    refused = runner.invoke(cli, ["admin", "ensure"], env=env)
    assert refused.exit_code == 1
    assert "password" in refused.stderr
    assert _admins(cli_env) == []
