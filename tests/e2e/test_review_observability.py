"""Observability as an attack surface: what clients can make the logs, the request-log rows and
`/metrics` hold. Secrets never reach a log line or a row, client-controlled values can neither
forge log lines nor mint metric series, and the request id is one id per request."""

import json
import logging
import random
import re
import string
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, text

from apiforge.core.settings import Settings
from apiforge.gateway.stages.log import request_log_buffer
from apiforge.usage.models import RequestLog
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import app_client, register

SECRET = "s3cr3t-" + "".join(random.choices(string.ascii_lowercase, k=12))
ID_SHAPE = re.compile(r"[A-Za-z0-9._:\-]{8,128}")
RFC_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
SENSITIVE = [
    {"name": "user", "type": "string", "required": True, "max": 64},
    {"name": "password", "type": "string", "sensitive": True},
]


@asynccontextmanager
async def _client(settings: Settings, **update: Any) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    """An app logging every line (INFO, gateway access lines on) with `update` applied."""
    configured = settings.model_copy(
        update={"log_level": "INFO", "gateway_access_log": True, **update}
    )
    async with app_client(configured) as (application, http):
        yield application, http


async def _flush(app: FastAPI) -> None:
    await request_log_buffer(app.state.gateway_state).flush()


async def _stored_logs(app: FastAPI) -> list[dict[str, Any]]:
    async with app.state.engine.connect() as connection:
        rows = await connection.execute(select(RequestLog.__table__))
        return [dict(row._mapping) for row in rows]


@pytest.fixture(autouse=True)
def _quiet_test_client(caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs each request of the test client itself (its URL, query included): only the
    server's lines are under test."""
    caplog.set_level(logging.WARNING, logger="httpx")


def _json_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def _series(metrics: str) -> int:
    return len(re.findall(r"^apiforge_http_requests_total\{", metrics, re.M))


# --- (1) secrets never reach logs, answers or request-log rows ---------------------------------


async def test_credentials_and_sensitive_values_never_reach_logs_answers_or_rows(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    password = f"pw-{SECRET}"
    async with _client(settings) as (app, client):
        capsys.readouterr()
        email = f"obs-{SECRET[-6:]}@example.com"
        body = {"email": email, "password": password, "name": "Obs"}
        registered = data_of(await client.post("/api/v1/auth/register", json=body))
        wrong = await client.post("/api/v1/auth/login", json={"email": email, "password": SECRET})
        assert_error(wrong, 401, "invalid_credentials")
        login = {"email": email, "password": password}
        tokens = data_of(await client.post("/api/v1/auth/login", json=login))
        refreshed = data_of(
            await client.post("/api/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
        )
        headers = {"Authorization": f"Bearer {refreshed['accessToken']}"}
        owner = await register(client)
        app_id = await notes_app(client, owner, visibility="public")
        # An app secret, set and then used by nothing: write-only, never logged.
        patched = await client.patch(
            f"/api/v1/apps/{app_id}", json={"secrets": {"vault": SECRET}}, headers=owner.headers
        )
        data_of(patched)
        await new_api(client, owner.headers, app_id, "vault", params=SENSITIVE, price=100)
        await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
        )
        _key_id, key = await app_key(client, owner, app_id)
        end_user = data_of(await call(client, key, app_id, "signIn", {"user": "ann"}))
        token = end_user["session"]["token"]
        me = await call(client, key, app_id, "whoAmI", headers={"Authorization": f"Bearer {token}"})
        assert data_of(me) == {"me": "ann"}
        # A console caller sends the end user's token in X-End-User-Token.
        as_console = {"appId": app_id, "api": "whoAmI", "version": "latest", "args": {}}
        console = await client.post(
            "/api/v1/invocations",
            json=as_console,
            headers={**owner.headers, "X-End-User-Token": token},
        )
        assert data_of(console) == {"me": "ann"}
        vault = await call(client, key, app_id, "vault", {"user": "ann", "password": SECRET})
        assert vault.status_code == 200, vault.text
        # Secrets in a query string: the access line records the path, not the query.
        await client.get(f"/api/v1/apps?token={SECRET}&apiKey={key}", headers=headers)
        await client.post(f"/api/v1/invocations?token={SECRET}", json={}, headers=headers)
        # Refused credentials are not echoed in the answer.
        bad_key = await call(client, key[:-4] + "zzzz", app_id, "whoAmI")
        bad_token = await client.get("/api/v1/apps", headers={"Authorization": f"Bearer {SECRET}"})
        await _flush(app)
        rows = await _stored_logs(app)
        shown = (await client.get("/api/v1/request-logs?pageSize=100", headers=owner.headers)).text
    logged = capsys.readouterr().err
    secrets = {
        "password": password,
        "secret": SECRET,
        "api key": key,
        "end-user token": token,
        "access token": refreshed["accessToken"],
        "first access token": tokens["accessToken"],
        "refresh token": tokens["refreshToken"],
        "registered access token": registered["accessToken"],
    }
    assert len(rows) >= 5
    answers = bad_key.text + bad_token.text
    for name, value in secrets.items():
        assert value not in logged, f"{name} in the logs"
        assert value not in repr(rows), f"{name} in a request-log row"
        assert value not in shown, f"{name} in /api/v1/request-logs"
        assert value not in answers, f"{name} echoed in a refusal"
    assert "token=" not in logged


async def _refuse_record_writes(app: FastAPI, database_url: str) -> None:
    """The database refuses every new record (a full disk, a lost replica...): the insert fails
    with the statement and its parameters in the exception's text."""
    async with app.state.engine.begin() as conn:
        if database_url.startswith("postgresql"):
            await conn.execute(
                text(
                    "CREATE FUNCTION obs_refuse() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'could not extend file'; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER obs_refuse BEFORE INSERT ON records "
                    "FOR EACH ROW EXECUTE FUNCTION obs_refuse()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER obs_refuse BEFORE INSERT ON records "
                    "BEGIN SELECT * FROM obs_lost_table; END"  # an OperationalError
                )
            )


@pytest.mark.parametrize("log_json", [True, False])
async def test_a_failed_statements_parameters_never_reach_the_log(
    settings: Settings, capsys: pytest.CaptureFixture[str], log_json: bool
) -> None:
    """A sensitive arg written by an `insert` step, and a record posted on the management API,
    are bound parameters of an INSERT the database refuses: the 500 is opaque, and the logged
    traceback names the statement but not the values (DESIGN.md §2: sensitive fields are
    masked in logs)."""
    async with _client(settings, log_json=log_json) as (app, client):
        owner = await register(client)
        app_id = await new_app(client, owner.headers, "Vault")
        fields = [{"name": "user", "type": "string"}, {"name": "password", "type": "string"}]
        dataset = {"appId": app_id, "name": "secrets", "fields": fields}
        dataset_id = data_of(
            await client.post("/api/v1/datasets", json=dataset, headers=owner.headers)
        )["id"]
        keep = {
            "id": "kept",
            "type": "insert",
            "collection": "secrets",
            "data": {"user": {"expr": "args.user"}, "password": {"expr": "args.password"}},
        }
        await new_api(
            client, owner.headers, app_id, "keep", params=SENSITIVE, steps=[keep], price=100
        )
        await _refuse_record_writes(app, settings.database_url)
        capsys.readouterr()
        invocation = {
            "appId": app_id,
            "api": "keep",
            "version": "dev",
            "args": {"user": "ann", "password": SECRET},
        }
        gateway = await client.post("/api/v1/invocations", json=invocation, headers=owner.headers)
        record = {"user": "bob", "password": SECRET}
        management = await client.post(
            f"/api/v1/datasets/{dataset_id}/records", json=record, headers=owner.headers
        )
        logged = capsys.readouterr().err
    for answer in (gateway, management):
        assert_error(answer, 500, "internal_error")
        assert SECRET not in answer.text
    assert logged.count("unhandled_error") >= 2
    assert "INSERT INTO records" in logged  # the statement is still there to debug with
    assert SECRET not in logged


# --- (2) metric series are bounded whatever a client sends --------------------------------------


async def test_clients_cannot_mint_metric_series(client: AsyncClient) -> None:
    """1,000 requests with random methods, paths and app ids add a handful of series: labels are
    route templates and RFC 9110 methods (anything else is `other`), never raw client input."""
    owner = await register(client)
    await client.get("/metrics")
    before = _series((await client.get("/metrics")).text)
    rng = random.Random(7)

    def token(size: int) -> str:
        return "".join(rng.choices(string.ascii_uppercase, k=size))

    for i in range(250):
        await client.request(token(10), "/healthz")
        await client.request(token(10), "/api/v1/invocations")
        await client.get(f"/api/v1/{token(12).lower()}/{i}")
        body = {"appId": token(26).lower(), "api": token(8), "version": token(3)}
        await client.post("/api/v1/invocations", json=body, headers=owner.headers)
    metrics = (await client.get("/metrics")).text
    assert _series(metrics) - before <= 12
    assert 'method="other"' in metrics
    for line in metrics.splitlines():
        if line.startswith("apiforge_http_request"):
            method = re.search(r'method="([^"]*)"', line)
            assert method is not None
            assert method.group(1) in RFC_METHODS | {"other"}


# --- (3) client values can't forge log lines -----------------------------------------------------


FORGED = '\n{"event":"request","forged":true}\r\n\x1b[31mforged\x1b[0m'


@pytest.mark.parametrize("log_json", [True, False])
async def test_control_characters_from_the_client_cannot_forge_log_lines(
    settings: Settings, capsys: pytest.CaptureFixture[str], log_json: bool
) -> None:
    async with _client(settings, log_json=log_json) as (_app, client):
        capsys.readouterr()
        path = "/api/v1/x%0A%7B%22event%22%3A%22forged%22%7D%0D%0A%1B%5B31m"
        await client.get(path, headers={"User-Agent": "ua" + FORGED.replace("\n", " ")})
        await client.post("/api/v1/invocations", json={"appId": FORGED, "api": FORGED})
        await client.request("GET\x1b[31m", "/healthz")
        logged = capsys.readouterr().err
    lines = [line for line in logged.splitlines() if line.strip()]
    assert "\x1b" not in logged
    assert "\r" not in logged
    assert not any(line.startswith('{"event":"forged"') for line in lines)
    assert not any('"forged":true' in line and line.startswith("{") for line in lines)
    if log_json:
        records = _json_lines(logged)  # every line is one JSON document
        paths = [r["path"] for r in records if r.get("event") == "request"]
        assert '/api/v1/x\n{"event":"forged"}\r\n\x1b[31m' in paths
    else:
        assert sum(" request " in line or "] request" in line for line in lines) >= 3
        assert all(re.match(r"^\d{4}-\d\d-\d\dT", line) for line in lines)


# --- (4) the request id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    ["probe-0001\n", "probe-0001\nforged", "short", "x" * 129, "probe 0001", "probe-0001;drop"],
)
async def test_a_malformed_request_id_is_replaced_everywhere(
    settings: Settings, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    """DESIGN.md §2 / docs/decisions.md: kept only when the whole value matches
    `[A-Za-z0-9._:-]{8,128}` — a trailing newline included."""
    async with _client(settings) as (app, client):
        owner = await register(client)
        capsys.readouterr()
        managed = await client.get("/api/v1/apps", headers={**owner.headers, "X-Request-ID": given})
        invocation = {"appId": "nope", "api": "nope", "version": "dev"}
        gateway = await client.post(
            "/api/v1/invocations", json=invocation, headers={**owner.headers, "X-Request-ID": given}
        )
        await _flush(app)
        rows = await _stored_logs(app)
        logged = _json_lines(capsys.readouterr().err)
    for answer in (managed, gateway):
        echoed = answer.headers["x-request-id"]
        assert echoed != given
        assert ID_SHAPE.fullmatch(echoed)
    assert [row["request_id"] for row in rows] == [gateway.headers["x-request-id"]]
    assert given not in {line.get("request_id") for line in logged}


async def test_a_well_formed_request_id_is_kept(client: AsyncClient) -> None:
    given = "trace:0001.abc_DEF-" + "9" * 100
    answered = await client.get("/healthz", headers={"X-Request-ID": given})
    assert answered.headers["x-request-id"] == given


async def test_a_workflow_runs_request_log_row_has_the_echoed_request_id(
    app: FastAPI, client: AsyncClient
) -> None:
    """A charged `/workflows` run writes a request-log row; without a client `X-Request-ID` the
    row must carry the id the answer echoed and the log lines were bound to, not a second one."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Ad hoc")
    fields = [{"name": "n", "type": "integer"}]
    body = {"appId": app_id, "name": "items", "fields": fields}
    data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    run = {"appId": app_id, "steps": [{"id": "total", "type": "count", "collection": "items"}]}
    answered = await client.post("/api/v1/workflows", json=run, headers=owner.headers)
    assert data_of(answered) == {"total": 0}
    await _flush(app)
    page = data_of(await client.get("/api/v1/request-logs", headers=owner.headers))
    assert [item["requestId"] for item in page["list"]] == [answered.headers["x-request-id"]]
