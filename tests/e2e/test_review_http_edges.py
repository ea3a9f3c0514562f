"""The HTTP layer under review: requests the stack runs as another method (`HEAD` as `GET`, a
method override) are counted and logged under their route template; a list sorted by a field
many rows share pages through them without repeating or losing any; the gateway's fast path
reads a cut-short body and an odd `Content-Length` as the management API's stack does."""

import re
from datetime import UTC, datetime

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import update
from starlette.types import Message

from apiforge.accounts.models import AppSetting
from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._asgi import raw_post
from tests.e2e._workspaces import data_of, new_workspace
from tests.factories import register

REQUESTS = "apiforge_http_requests_total"


def _count(text: str, labels: dict[str, str]) -> float:
    rendered = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{REQUESTS}\{{{re.escape(rendered)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_head_and_overridden_requests_are_counted_under_their_route(
    client: AsyncClient,
) -> None:
    """Both ran on a copy of the request's scope, which the router named the route in: the
    access log and `/metrics` (outside that copy) counted them as "unmatched", with the 404s."""
    user = await register(client)
    workspace_id = await new_workspace(client, user)
    asked = (
        ({"method": "HEAD", "route": "/healthz", "status": "200"}, 1),
        ({"method": "HEAD", "route": "/api/v1/version", "status": "200"}, 1),
        ({"method": "POST", "route": "/api/v1/workspaces/{workspace_id}", "status": "200"}, 1),
        ({"method": "HEAD", "route": "unmatched", "status": "200"}, 0),
        ({"method": "POST", "route": "unmatched", "status": "200"}, 0),
    )
    before = (await client.get("/metrics")).text
    assert (await client.head("/healthz")).status_code == 200
    assert (await client.head("/api/v1/version")).status_code == 200
    renamed = await client.post(
        f"/api/v1/workspaces/{workspace_id}",
        json={"name": "Renamed"},
        headers={**user.headers, "X-HTTP-Method-Override": "PATCH"},
    )
    assert data_of(renamed)["name"] == "Renamed"
    after = (await client.get("/metrics")).text
    for labels, added in asked:
        assert _count(after, labels) - _count(before, labels) == added, labels


async def test_app_settings_sorted_by_a_shared_time_page_through_every_key_once(
    app: FastAPI, client: AsyncClient
) -> None:
    """`sort=updatedTime` ordered by the time alone: PostgreSQL's top-N sort then put rows of
    one time in a different order for each page, so pages repeated some keys and lost others."""
    user = await register(client)
    keys = sorted(f"k{i:02}" for i in range(30))
    for key in keys:
        path = f"/api/v1/user/settings/apps/notes/{key}"
        data_of(await client.put(path, json={"value": 1}, headers=user.headers))
    async with app.state.engine.begin() as conn:
        await conn.execute(update(AppSetting).values(updated_at=datetime(2025, 5, 5, tzinfo=UTC)))
    for order in ("asc", "desc"):
        seen: list[str] = []
        for page_no in range(1, 11):
            params = {"sort": "updatedTime", "order": order, "pageNo": page_no, "pageSize": 3}
            page = data_of(
                await client.get(
                    "/api/v1/user/settings/apps/notes", params=params, headers=user.headers
                )
            )
            assert page["totalCount"] == 30
            seen += [item["key"] for item in page["list"]]
        assert sorted(seen) == keys, order


async def test_a_gateway_call_cut_short_by_its_client_runs_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    """The body read so far was a whole JSON call, more was announced, then the connection
    dropped: the fast path took the disconnect for the body's end and ran (and answered) the
    call; the management API's stack runs nothing for a body that never arrived whole."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(client, user.headers, app_id, "hello", steps=[set_step("greeting", "hi")])
    call = b'{"appId": "%s", "api": "hello", "version": "dev"}' % app_id.encode()
    headers = [(k.lower().encode(), v.encode()) for k, v in user.headers.items()]
    headers.append((b"content-type", b"application/json"))
    whole = await raw_post(
        app, "/api/v1/invocations", headers, [{"type": "http.request", "body": call}]
    )
    assert whole[0]["status"] == 200  # the same call, sent whole, runs
    cut: list[Message] = [
        {"type": "http.request", "body": call, "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert await raw_post(app, "/api/v1/invocations", headers, cut) == []
    # The management API's stack, for comparison: a 400 to nobody, nothing created.
    body: Message = {"type": "http.request", "body": b'{"name": "Cut"}', "more_body": True}
    cut = [body, {"type": "http.disconnect"}]
    assert (await raw_post(app, "/api/v1/workspaces", headers, cut))[0]["status"] == 400
    listed = data_of(await client.get("/api/v1/workspaces", headers=user.headers))["list"]
    assert "Cut" not in {w["name"] for w in listed}


async def test_a_content_length_of_non_ascii_digits_is_413_on_both_edges(app: FastAPI) -> None:
    """`"²".isdigit()` is true but `int("²")` raises: the fast path answered a 500."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"\xb2")]
    for path in ("/api/v1/invocations", "/api/v1/workspaces"):
        incoming: list[Message] = [{"type": "http.request", "body": b"{}"}]
        sent = await raw_post(app, path, headers, incoming)
        assert sent[0]["status"] == 413, path
        assert b'"error":"payload_too_large"' in sent[1]["body"], path
