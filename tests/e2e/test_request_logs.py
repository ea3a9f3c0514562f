"""Request logs end to end: every gateway call leaves a row (buffered, written in batches), which
`/api/v1/request-logs` shows to the calling workspace and, without the caller's args, client IP or
key, to the builder of the app. Tests await the buffer's `flush()` instead of sleeping."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import event, select

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.gateway.stages.log import request_log_buffer
from apiforge.usage.models import RequestLog
from tests.e2e._apps import in_workspace, new_api, new_app
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import INJECTION, SCRIPT, assert_error, data_of, team
from tests.factories import User, register

PARAMS = [
    {"name": "user", "type": "string", "required": True, "max": 64},
    {"name": "password", "type": "string", "sensitive": True},
]
STEPS = [{"id": "hello", "type": "set", "value": {"expr": "'Hello ' + args.user"}}]
SECRET = "hunter2-correct-horse"
APP_CALL_FIELDS = {
    "id",
    "createdTime",
    "requestId",
    "callerWorkspaceId",
    "appId",
    "api",
    "version",
    "status",
    "reason",
    "latencyMs",
    "amount",
}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def _vault(client: AsyncClient, headers: dict[str, str], *, publish: bool = True) -> str:
    """A public app with `login` (a sensitive `password` param) and `ping`, published once."""
    app_id = await new_app(client, headers, "Vault", visibility="public")
    await new_api(client, headers, app_id, "login", params=PARAMS, steps=STEPS, price=100)
    ping = [{"id": "pong", "type": "set", "value": 1}]
    await new_api(client, headers, app_id, "ping", steps=ping, price=100)
    if publish:
        response = await client.post(
            f"/api/v1/apps/{app_id}/versions",
            json={"bump": "minor", "notes": "first"},
            headers=headers,
        )
        data_of(response)
    return app_id


async def _console_call(
    client: AsyncClient, user: User, app_id: str, api: str, args: dict[str, Any]
) -> Response:
    body = {"appId": app_id, "api": api, "version": "dev", "args": args}
    return await client.post("/api/v1/invocations", json=body, headers=user.headers)


async def _flush(app: FastAPI) -> None:
    await request_log_buffer(app.state.gateway_state).flush()


async def _logs(client: AsyncClient, headers: dict[str, str], **query: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/request-logs", params=query, headers=headers)
    page: dict[str, Any] = data_of(response)
    return page


async def _stored(app: FastAPI) -> list[RequestLog]:
    async with app.state.engine.connect() as connection:
        rows = await connection.execute(select(RequestLog).order_by(RequestLog.id))
        return [RequestLog(**row._asdict()) for row in rows]


@contextmanager
def _log_inserts(app: FastAPI) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "request_logs" in statement and statement.lstrip().upper().startswith("INSERT"):
            seen.append(statement)

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


# --- what a row holds -------------------------------------------------------------------------


async def test_a_call_is_logged_with_its_details_and_sensitive_args_masked(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await _vault(client, owner.headers, publish=False)
    response = await _console_call(
        client, owner, app_id, "login", {"user": "ann", "password": SECRET}
    )
    assert data_of(response) == {"hello": "Hello ann"}
    await _flush(app)
    page = await _logs(client, owner.headers)
    assert page["totalCount"] == 1
    (item,) = page["list"]
    assert ISO.match(item["createdTime"])
    assert item["latencyMs"] > 0
    assert item == {
        "id": item["id"],
        "createdTime": item["createdTime"],
        "requestId": response.headers["x-request-id"],
        "appId": app_id,
        "api": "login",
        "version": "dev",
        "status": 200,
        "reason": "",
        "latencyMs": item["latencyMs"],
        "amount": 0,  # its own app, whose cost is 0
        "callerKind": "console",
        "keyId": None,
        "accountId": owner.account_id,
        "clientIp": "127.0.0.1",
        "args": {"user": "ann", "password": "***"},
    }
    # The secret is nowhere in the stored row either.
    (row,) = await _stored(app)
    assert SECRET not in repr(row.args)
    assert row.workspace_id == row.app_workspace_id == owner.workspace_id


async def test_logging_adds_no_database_round_trip_to_the_call(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await _vault(client, owner.headers, publish=False)
    buffer = request_log_buffer(app.state.gateway_state)
    await buffer.close()  # no background writer: any INSERT now would be the calls' own
    with _log_inserts(app) as inserts:
        for _ in range(3):
            data_of(await _console_call(client, owner, app_id, "ping", {}))
        assert inserts == []  # the calls only queued their rows
        await _flush(app)
        assert len(inserts) == 1  # one multi-row INSERT for all three
    assert (await _logs(client, owner.headers))["totalCount"] == 3


async def test_published_calls_log_the_version_they_ran(app: FastAPI, client: AsyncClient) -> None:
    builder, consumer = await register(client), await register(client)
    app_id = await _vault(client, builder.headers)
    key_id, secret = await app_key(client, consumer, app_id)
    data_of(await call(client, secret, app_id, "ping"))
    await _flush(app)
    (item,) = (await _logs(client, consumer.headers))["list"]
    built = data_of(await client.get(f"/api/v1/apps/{app_id}", headers=builder.headers))
    # `latest` was asked for; the row names the version that ran.
    assert (item["version"], item["callerKind"], item["keyId"]) == (
        built["latestVersion"],
        "app_key",
        key_id,
    )
    assert re.match(r"^\d+\.\d+\.\d+$", item["version"])
    assert item["accountId"] is None


# --- refusals ---------------------------------------------------------------------------------


async def test_refused_calls_are_logged_for_the_calling_workspace(
    app: FastAPI, client: AsyncClient
) -> None:
    builder, consumer = await register(client), await register(client)
    app_id = await _vault(client, builder.headers)
    key_id, secret = await app_key(client, consumer, app_id)
    missing = await call(client, secret, app_id, "login", {"password": SECRET})
    assert_error(missing, 400, "missing_parameters")
    unknown_api = await call(client, secret, app_id, "nope", {"password": SECRET})
    assert_error(unknown_api, 404, "api_not_found")
    await _flush(app)
    page = await _logs(client, consumer.headers)
    by_request = {item["requestId"]: item for item in page["list"]}
    refused = by_request[missing.headers["x-request-id"]]
    assert (refused["status"], refused["reason"], refused["keyId"]) == (
        400,
        "missing_parameters",
        key_id,
    )
    # Params were known: the sensitive one is masked.
    assert refused["args"] == {"password": "***"}
    not_found = by_request[unknown_api.headers["x-request-id"]]
    assert (not_found["status"], not_found["reason"]) == (404, "api_not_found")
    # Which params are sensitive was never known: the args are not kept at all.
    assert not_found["args"] is None


async def test_a_refused_callers_log_reveals_nothing_of_an_app_it_may_not_see(
    app: FastAPI, client: AsyncClient
) -> None:
    builder, consumer = await register(client), await register(client)
    public = await _vault(client, builder.headers)
    private = await new_app(client, builder.headers, "Hidden")
    await new_api(client, builder.headers, private, "login", params=PARAMS, steps=STEPS)
    published = await client.post(
        f"/api/v1/apps/{private}/versions", json={"bump": "minor"}, headers=builder.headers
    )
    data_of(published)
    _, secret = await app_key(client, consumer, public)
    refused = await call(client, secret, private, "login", {"user": "x", "password": SECRET})
    assert refused.status_code in (403, 404)
    await _flush(app)
    (mine,) = (await _logs(client, consumer.headers))["list"]
    # The label sent, not the private app's published version; no args, no secret.
    assert (mine["appId"], mine["version"], mine["args"]) == (private, "latest", None)
    assert mine["status"] == refused.status_code
    # The builder sees the attempt on its app, without what was sent.
    (attempt,) = (await _logs(client, builder.headers, scope="builder"))["list"]
    assert (attempt["requestId"], attempt["callerWorkspaceId"]) == (
        refused.headers["x-request-id"],
        consumer.workspace_id,
    )
    assert SECRET not in repr([row.args for row in await _stored(app)])


async def test_calls_refused_before_any_workspace_is_known_are_kept_but_shown_to_nobody(
    app: FastAPI, client: AsyncClient
) -> None:
    builder = await register(client)
    app_id = await _vault(client, builder.headers)
    body = {"appId": app_id, "api": "login", "args": {"user": "x", "password": SECRET}}
    anonymous = await client.post("/api/v1/invocations", json=body)
    assert_error(anonymous, 401, "unauthenticated")
    bad_key = await client.post(
        "/api/v1/invocations", json=body, headers={"X-Api-Key": "app-not-a-real-key"}
    )
    assert bad_key.status_code == 401
    await _flush(app)
    rows = {row.request_id: row for row in await _stored(app)}
    for response in (anonymous, bad_key):
        row = rows[response.headers["x-request-id"]]
        assert (row.workspace_id, row.app_workspace_id, row.args) == (None, None, None)
        assert (row.app_id, row.status) == (app_id, 401)
    for scope in ("caller", "builder"):
        assert (await _logs(client, builder.headers, scope=scope))["totalCount"] == 0


# --- who sees what ----------------------------------------------------------------------------


async def test_builders_see_calls_to_their_apps_without_the_callers_args_ips_or_keys(
    app: FastAPI, client: AsyncClient
) -> None:
    owner, workspace_id, members = await team(client, "viewer")
    builder_headers = in_workspace(owner, workspace_id)
    app_id = await _vault(client, builder_headers)
    consumer = await register(client)
    _, secret = await app_key(client, consumer, app_id)
    consumed = await call(client, secret, app_id, "login", {"user": "bo", "password": SECRET})
    data_of(consumed)
    own = await _console_call(client, owner, app_id, "ping", {})
    data_of(own)
    await _flush(app)

    # Any member of the builder's workspace, a viewer too, reads both lists.
    viewer_headers = in_workspace(members["viewer"], workspace_id)
    builder_view = await _logs(client, viewer_headers, scope="builder")
    assert [(i["requestId"], i["callerWorkspaceId"]) for i in builder_view["list"]] == [
        (own.headers["x-request-id"], workspace_id),
        (consumed.headers["x-request-id"], consumer.workspace_id),
    ]
    assert all(set(item) == APP_CALL_FIELDS for item in builder_view["list"])
    assert SECRET not in str(builder_view)
    assert "***" not in str(builder_view)
    # The builder's own list holds only the calls its workspace made.
    caller_view = await _logs(client, viewer_headers)
    assert [i["requestId"] for i in caller_view["list"]] == [own.headers["x-request-id"]]
    # The consumer sees its call with everything, and nothing of the builder's.
    (mine,) = (await _logs(client, consumer.headers))["list"]
    assert (mine["requestId"], mine["args"]) == (
        consumed.headers["x-request-id"],
        {"user": "bo", "password": "***"},
    )
    assert (await _logs(client, consumer.headers, scope="builder"))["totalCount"] == 0


async def test_other_workspaces_never_see_a_workspaces_logs(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await _vault(client, owner.headers, publish=False)
    data_of(await _console_call(client, owner, app_id, "ping", {}))
    await _flush(app)
    stranger = await register(client)
    for scope in ("caller", "builder"):
        assert (await _logs(client, stranger.headers, scope=scope))["totalCount"] == 0
        response = await client.get(
            "/api/v1/request-logs",
            params={"scope": scope},
            headers=in_workspace(stranger, owner.workspace_id),
        )
        assert_error(response, 404, "workspace_not_found")
    response = await client.get("/api/v1/request-logs")
    assert response.status_code == 401


# --- filters, order, pages --------------------------------------------------------------------


async def test_filters_by_app_api_status_and_time_range(app: FastAPI, client: AsyncClient) -> None:
    owner = await register(client)
    first = await _vault(client, owner.headers, publish=False)
    second = await _vault(client, owner.headers, publish=False)
    ok_call = await _console_call(client, owner, first, "login", {"user": "a"})
    bad_call = await _console_call(client, owner, first, "login", {})
    other_app = await _console_call(client, owner, second, "ping", {})
    await _flush(app)
    ids = {
        "ok": ok_call.headers["x-request-id"],
        "bad": bad_call.headers["x-request-id"],
        "other": other_app.headers["x-request-id"],
    }
    hour = timedelta(hours=1)
    now = datetime.now(UTC)
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, ["other", "bad", "ok"]),
        ({"appId": first}, ["bad", "ok"]),
        ({"api": "ping"}, ["other"]),
        ({"status": 400}, ["bad"]),
        ({"appId": first, "status": 200}, ["ok"]),
        ({"from": (now - hour).strftime("%Y-%m-%dT%H:%M:%SZ")}, ["other", "bad", "ok"]),
        ({"from": (now + hour).isoformat()}, []),  # an explicit +00:00 offset
        ({"to": (now - hour).replace(tzinfo=None).isoformat()}, []),  # no offset: UTC
        (
            {"from": (now - hour).isoformat(), "to": (now + hour).isoformat()},
            ["other", "bad", "ok"],
        ),
        ({"api": INJECTION}, []),
        ({"appId": SCRIPT}, []),
    ]
    for query, expected in cases:
        page = await _logs(client, owner.headers, **query)
        assert [item["requestId"] for item in page["list"]] == [ids[n] for n in expected], query
    page = await _logs(client, owner.headers, sort="createdTime", order="asc", pageSize=2)
    assert [item["requestId"] for item in page["list"]] == [ids["ok"], ids["bad"]]
    assert (page["totalCount"], page["totalPage"]) == (3, 2)
    page = await _logs(client, owner.headers, pageNo=2, pageSize=2)
    assert [item["requestId"] for item in page["list"]] == [ids["ok"]]


async def test_bad_query_input_is_refused_and_changes_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await _vault(client, owner.headers, publish=False)
    data_of(await _console_call(client, owner, app_id, "ping", {}))
    await _flush(app)
    before = await _stored(app)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"status": "abc"}, "status", "invalid_input"),
        ({"status": "99999999999999999999"}, "status", "invalid_input"),
        ({"status": 99}, "status", "invalid_input"),
        ({"from": "yesterday"}, "from", "invalid_input"),
        ({"to": "2026-13-01T00:00:00Z"}, "to", "invalid_input"),
        ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to", "invalid_input"),
        ({"from": "x" * 41}, "from", "invalid_input"),
        ({"from": "0001-01-01T00:00:00+01:00"}, "from", "invalid_input"),  # before year 1 in UTC
        ({"to": "9999-12-31T23:59:59-01:00"}, "to", "invalid_input"),  # after year 9999
        ({"pageNo": "²"}, "pageNo", "invalid_input"),
        ({"appId": "a" * 27}, "appId", "invalid_input"),
        ({"api": "a" * 65}, "api", "invalid_input"),
        ({"scope": "everyone"}, "scope", "invalid_input"),
        ({"sort": "args"}, "sort", "invalid_sort_field"),
        ({"order": "sideways"}, "order", "invalid_input"),
        ({"pageSize": 100000}, "pageSize", "invalid_input"),
    ]
    for query, field, reason in cases:
        response = await client.get("/api/v1/request-logs", params=query, headers=owner.headers)
        data = assert_error(response, 400, reason)
        assert field in [error["field"] for error in data["errors"]], (query, data)
    assert [(r.id, r.status) for r in await _stored(app)] == [(r.id, r.status) for r in before]


# --- usage and shutdown -----------------------------------------------------------------------


async def test_user_plans_counts_the_successful_calls_of_this_month(
    app: FastAPI, client: AsyncClient
) -> None:
    builder, consumer = await register(client), await register(client)
    app_id = await _vault(client, builder.headers)
    _, secret = await app_key(client, consumer, app_id)
    for _ in range(2):
        data_of(await call(client, secret, app_id, "ping"))
    assert_error(await call(client, secret, app_id, "login", {}), 400, "missing_parameters")
    await _flush(app)

    async def calls_used(user: User) -> int:
        plans = data_of(await client.get("/api/v1/user/plans", headers=user.headers))
        (usage,) = [u for u in plans["usage"] if u["quota"] == "callsPerMonth"]
        assert usage["limit"] == plans["currentPlan"]["quotas"]["callsPerMonth"]
        used: int = usage["used"]
        return used

    assert await calls_used(consumer) == 2
    assert await calls_used(builder) == 0  # calls to its app are the consumer's usage


async def test_shutdown_writes_the_rows_still_buffered(app: FastAPI, settings: Settings) -> None:
    second = create_app(settings)
    transport = ASGITransport(app=second, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        user = await register(http)
        app_id = await _vault(http, user.headers, publish=False)
        response = await _console_call(http, user, app_id, "ping", {})
        data_of(response)
    assert len(request_log_buffer(second.state.gateway_state)) == 1
    await shutdown(second)
    rows = await _stored(app)
    assert [row.request_id for row in rows] == [response.headers["x-request-id"]]
