"""Sunset dates of deprecated versions (RFC 8594): set with the deprecation, shown in the read
model, the list, the export and the generated docs, sent as a `Sunset` header, and from the
instant on every call to the version is 410 `version_sunset` — nothing run, charged or counted.
Over HTTP, on both backends; the clock of the gateway is moved forward where a test needs it."""

import asyncio
import time
from datetime import datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from apiforge.core.settings import Settings
from apiforge.datasets.models import Record
from apiforge.gateway.stages.log import request_log_buffer
from apiforge.tools.clock import iso, utcnow
from tests._servers import running_servers
from tests.e2e._apps import app_state
from tests.e2e._billing import balances, market, top_up
from tests.e2e._keys import call, create_key, notes_app
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

POLICY_CLOCK = "apiforge.gateway.stages.policy.utcnow"


def _at(delta: timedelta) -> datetime:
    return (utcnow() + delta).replace(microsecond=0)


def _versions_url(app_id: str, version: str = "") -> str:
    return f"/api/v1/apps/{app_id}/versions" + (f"/{version}" if version else "")


async def _publish(client: AsyncClient, owner: User, app_id: str, bump: str = "patch") -> str:
    response = await client.post(
        _versions_url(app_id), json={"bump": bump, "notes": "n"}, headers=owner.headers
    )
    version: str = data_of(response)["version"]
    return version


async def _patch(
    client: AsyncClient, owner: User, app_id: str, version: str, body: dict[str, Any], **h: str
) -> Response:
    return await client.patch(
        _versions_url(app_id, version), json=body, headers={**owner.headers, **h}
    )


async def _read(client: AsyncClient, owner: User, app_id: str, version: str) -> dict[str, Any]:
    result: dict[str, Any] = data_of(
        await client.get(_versions_url(app_id, version), headers=owner.headers)
    )
    return result


async def _docs(client: AsyncClient, owner: User, app_id: str, version: str) -> Response:
    url = f"/api/v1/apps/{app_id}/openapi.json?version={version}"
    response = await client.get(url, headers=owner.headers)
    assert response.status_code == 200, response.text
    return response


async def _notes(client: AsyncClient) -> tuple[User, str, str]:
    """An owner, a notes app with 1.0.0 (old) and 1.0.1 (`latest`), and an admin `ws-` key."""
    owner = await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    assert await _publish(client, owner, app_id) == "1.0.1"
    _, ws = await create_key(client, owner.headers, type="ws", role="admin")
    return owner, app_id, ws


async def test_a_sunset_is_shown_everywhere_and_sent_with_the_deprecation(
    client: AsyncClient,
) -> None:
    owner, app_id, ws = await _notes(client)
    before = await call(client, ws, app_id, "echo", {"text": "hi"}, version="1.0.0")
    assert data_of(before) == {"echo": "hi"}
    assert "sunset" not in before.headers
    assert "deprecation" not in before.headers
    read = await client.get(_versions_url(app_id, "1.0.0"), headers=owner.headers)
    assert data_of(read)["sunset"] is None
    assert data_of(read)["revision"] == 1
    assert read.headers["etag"] == '"1"'

    sunset = _at(timedelta(days=30))
    response = await _patch(
        client, owner, app_id, "1.0.0", {"deprecated": True, "sunset": iso(sunset)}
    )
    changed = data_of(response)
    assert (changed["deprecated"], changed["sunset"], changed["revision"]) == (1, iso(sunset), 2)
    assert response.headers["etag"] == '"2"'
    assert await _read(client, owner, app_id, "1.0.0") == changed
    listed = data_of(await client.get(_versions_url(app_id), headers=owner.headers))["list"]
    assert [(v["version"], v["sunset"], v["revision"]) for v in listed] == [
        ("1.0.1", None, 1),
        ("1.0.0", iso(sunset), 2),
    ]

    # The gateway: this node forgot its cached target at the commit, so the next call has it.
    called = await call(client, ws, app_id, "echo", {"text": "hi"}, version="1.0.0")
    assert data_of(called) == {"echo": "hi"}
    assert called.headers["deprecation"].startswith("@")
    assert called.headers["sunset"] == format_datetime(sunset, usegmt=True)
    assert parsedate_to_datetime(called.headers["sunset"]) == sunset
    latest = await call(client, ws, app_id, "echo", {"text": "hi"})
    assert "sunset" not in latest.headers
    assert "deprecation" not in latest.headers

    docs = (await _docs(client, owner, app_id, "1.0.0")).json()
    assert docs["info"]["x-deprecated"] is True
    assert docs["info"]["x-sunset"] == iso(sunset)
    assert all("410" in path["post"]["responses"] for path in docs["paths"].values())
    current = (await _docs(client, owner, app_id, "1.0.1")).json()
    assert "x-sunset" not in current["info"]
    for fmt in ("json", "yaml"):  # the export imports again (the sunset is informative there)
        exported = await client.get(
            f"/api/v1/apps/{app_id}/export?format={fmt}", headers=owner.headers
        )
        if fmt == "json":
            assert [(v["version"], v["sunset"]) for v in exported.json()["versions"]] == [
                ("1.0.0", iso(sunset)),
                ("1.0.1", None),
            ]
        kind = exported.headers["content-type"]
        imported = await client.post(
            "/api/v1/apps/import",
            content=exported.content,
            headers={**owner.headers, "Content-Type": kind},
        )
        data_of(imported)

    # Cleared: no header, no date; undeprecating clears a date as well.
    cleared = data_of(await _patch(client, owner, app_id, "1.0.0", {"sunset": None}))
    assert (cleared["deprecated"], cleared["sunset"], cleared["revision"]) == (1, None, 3)
    called = await call(client, ws, app_id, "echo", {"text": "hi"}, version="1.0.0")
    assert "sunset" not in called.headers
    assert called.headers["deprecation"].startswith("@")
    data_of(await _patch(client, owner, app_id, "1.0.0", {"sunset": iso(sunset)}))
    restored = data_of(await _patch(client, owner, app_id, "1.0.0", {"deprecated": 0}))
    assert (restored["deprecated"], restored["sunset"], restored["revision"]) == (0, None, 5)
    called = await call(client, ws, app_id, "echo", {"text": "hi"}, version="1.0.0")
    assert "sunset" not in called.headers
    assert "deprecation" not in called.headers


async def test_from_the_sunset_on_calls_are_410_and_nothing_runs_is_charged_or_counted(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, 3 * 10)
    await on_plan(client, m.admin, m.consumer.workspace_id, "steady", requestsPerMinute=3)
    assert await _publish(client, m.builder, m.app_id) == "1.0.1"
    sunset = _at(timedelta(days=1))
    body = {"deprecated": 1, "sunset": iso(sunset)}
    data_of(await _patch(client, m.builder, m.app_id, "1.0.0", body))

    async def insert(version: str) -> Response:
        return await call(client, m.secret, m.app_id, "insert", {}, version=version)

    assert (await insert("1.0.0")).status_code == 200  # before the sunset: served and charged
    paid = await balances(client, m.consumer)
    earned = await balances(client, m.builder)
    await request_log_buffer(app.state.gateway_state).flush()
    used = await _calls_used(client, m.consumer)
    records = await _records(app, m.consumer.workspace_id)

    monkeypatch.setattr(POLICY_CLOCK, lambda: sunset + timedelta(seconds=1))
    for _ in range(3):  # more than the plan's rate: refusals here take no place in it
        refused = await insert("1.0.0")
        data = assert_error(refused, 410, "version_sunset")
        assert data == {"error": "version_sunset", "version": "1.0.0", "sunset": iso(sunset)}
        assert refused.headers["sunset"] == format_datetime(sunset, usegmt=True)
        assert refused.headers["deprecation"].startswith("@")
        assert 'rel="successor-version"' in refused.headers["link"]
    monkeypatch.setattr(POLICY_CLOCK, lambda: sunset)  # the instant itself is past
    assert_error(await insert("1.0.0"), 410, "version_sunset")

    assert await balances(client, m.consumer) == paid
    assert await balances(client, m.builder) == earned
    assert await _records(app, m.consumer.workspace_id) == records
    await request_log_buffer(app.state.gateway_state).flush()
    assert await _calls_used(client, m.consumer) == used
    logs = data_of(
        await client.get("/api/v1/request-logs", params={"status": 410}, headers=m.consumer.headers)
    )
    assert logs["totalCount"] == 4  # logged as refused calls, not counted as calls
    # `latest` is never sunset: it still answers (and the refusals took no rate places).
    assert (await insert("latest")).status_code == 200
    assert (await insert("1.0.1")).status_code == 200


async def _calls_used(client: AsyncClient, user: User) -> int:
    plans = data_of(await client.get("/api/v1/user/plans", headers=user.headers))
    used: int = {u["quota"]: u for u in plans["usage"]}["callsPerMonth"]["used"]
    return used


async def _records(app: FastAPI, partition: str) -> int:
    async with app.state.engine.connect() as connection:
        stmt = select(func.count()).select_from(Record).where(Record.partition == partition)
        return int(await connection.scalar(stmt) or 0)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"sunset": "+30d"}, 400, "invalid_input"),
        ({"deprecated": 1, "sunset": "2099-01-01T00:00:00"}, 400, "invalid_input"),  # no zone
        ({"deprecated": 1, "sunset": "2099-01-01"}, 400, "invalid_input"),
        ({"deprecated": 1, "sunset": 4_070_908_800}, 400, "invalid_input"),  # a number
        ({"deprecated": 1, "sunset": "2099-02-30T00:00:00Z"}, 400, "invalid_input"),
        ({"deprecated": 1, "sunset": "2099-01-01T24:00:00Z"}, 400, "invalid_input"),
        ({"deprecated": 1, "sunset": "9999-12-31T23:00:00-02:00"}, 400, "invalid_input"),
        ({"deprecated": 1, "sunset": "٢٠٩٩-01-01T00:00:00Z"}, 400, "invalid_input"),
        ({"deprecated": 1, "sunset": "2001-01-01T00:00:00Z"}, 400, "invalid_input"),  # past
        ({"sunset": "2099-01-01T00:00:00Z"}, 400, "sunset_requires_deprecation"),
        ({"deprecated": 0, "sunset": "2099-01-01T00:00:00Z"}, 400, "sunset_requires_deprecation"),
        ({"deprecated": None, "sunset": None}, 400, "invalid_input"),
        ({"sunset": "2099-01-01T00:00:00Z", "notes": "x"}, 409, "version_immutable"),
    ],
)
async def test_bad_sunsets_are_refused_and_change_nothing(
    client: AsyncClient, body: dict[str, Any], status: int, reason: str
) -> None:
    owner, app_id, _ = await _notes(client)
    before = await app_state(client, owner.headers, app_id)
    response = await _patch(client, owner, app_id, "1.0.0", body)
    data = assert_error(response, status, reason)
    if status == 400:  # the field at fault is named
        assert data["errors"]
        assert {e["field"] for e in data["errors"]} <= {"sunset", "deprecated"}
    assert await app_state(client, owner.headers, app_id) == before


async def test_latest_never_gets_a_sunset(client: AsyncClient) -> None:
    owner, app_id, _ = await _notes(client)
    sunset = iso(_at(timedelta(days=1)))
    before = await app_state(client, owner.headers, app_id)
    for label in ("latest", "1.0.1"):
        response = await _patch(client, owner, app_id, label, {"deprecated": 1, "sunset": sunset})
        data = assert_error(response, 409, "latest_version_sunset")
        assert data["version"] == "1.0.1"
    assert await app_state(client, owner.headers, app_id) == before
    # Deprecating `latest` stays allowed; once a newer version is published it may get a date.
    data_of(await _patch(client, owner, app_id, "1.0.1", {"deprecated": 1}))
    assert await _publish(client, owner, app_id) == "1.0.2"
    dated = data_of(await _patch(client, owner, app_id, "1.0.1", {"sunset": sunset}))
    assert (dated["latest"], dated["sunset"]) == (0, sunset)


async def test_a_sunset_patch_is_locked_and_idempotent(client: AsyncClient) -> None:
    owner, app_id, _ = await _notes(client)
    sunset = iso(_at(timedelta(days=7)))
    body = {"deprecated": 1, "sunset": sunset}
    stale = await _patch(client, owner, app_id, "1.0.0", body, **{"If-Match": '"7"'})
    assert assert_error(stale, 412, "precondition_failed")["revision"] == 1
    assert (await _read(client, owner, app_id, "1.0.0"))["sunset"] is None

    key = {"Idempotency-Key": "sunset-1", "If-Match": '"1"'}
    first = await _patch(client, owner, app_id, "1.0.0", body, **key)
    assert (data_of(first)["sunset"], data_of(first)["revision"]) == (sunset, 2)
    again = await _patch(client, owner, app_id, "1.0.0", body, **key)
    assert again.headers["idempotent-replayed"] == "1"
    assert again.json() == first.json()
    assert again.headers["etag"] == '"2"'
    other = await _patch(client, owner, app_id, "1.0.0", {"sunset": None}, **key)
    assert_error(other, 422, "idempotency_key_mismatch")
    assert (await _read(client, owner, app_id, "1.0.0"))["revision"] == 2

    # The same values again change nothing (no new revision); the old ETag is stale now.
    same = await _patch(client, owner, app_id, "1.0.0", body, **{"If-Match": '"2"'})
    assert data_of(same)["revision"] == 2
    assert_error(
        await _patch(client, owner, app_id, "1.0.0", {"sunset": None}, **{"If-Match": '"1"'}),
        412,
        "precondition_failed",
    )


async def test_racing_sunset_changes_never_lose_one(client: AsyncClient) -> None:
    owner, app_id, _ = await _notes(client)
    bodies = [{"deprecated": 1, "sunset": iso(_at(timedelta(days=d)))} for d in (1, 2, 3, 4)]
    answers = await asyncio.gather(*(_patch(client, owner, app_id, "1.0.0", b) for b in bodies))
    won = [a for a in answers if a.status_code == 200]
    assert won
    assert all(a.status_code in (200, 409) for a in answers), [a.text for a in answers]
    for lost in answers:
        if lost.status_code == 409:
            assert_error(lost, 409, "concurrent_update")
    final = await _read(client, owner, app_id, "1.0.0")
    assert final["revision"] == 1 + len(won)
    assert final["sunset"] in {data_of(a)["sunset"] for a in won}


# --- two server processes -------------------------------------------------------------------


async def test_a_sunset_reaches_the_other_node_and_ends_its_calls_on_time(
    settings: Settings,
) -> None:
    """Set on one node, the date is sent by the other within the resolved-app window (1 s),
    and the other refuses from the instant on, by its own clock, with nothing else changed."""
    async with (
        running_servers(settings) as urls,
        AsyncClient(base_url=urls[0], timeout=30) as one,
        AsyncClient(base_url=urls[1], timeout=30) as two,
    ):
        owner, app_id, ws = await _notes(one)

        async def old() -> Response:
            return await call(two, ws, app_id, "echo", {"text": "x"}, version="1.0.0")

        for _ in range(8):  # the other node has 1.0.0 cached, without a sunset
            assert "sunset" not in (await old()).headers
            await asyncio.sleep(0.1)
        sunset = _at(timedelta(seconds=4))
        data_of(await _patch(one, owner, app_id, "1.0.0", {"deprecated": 1, "sunset": iso(sunset)}))
        changed = time.monotonic()
        while "sunset" not in (response := await old()).headers:
            assert response.status_code == 200, response.text
            assert time.monotonic() - changed <= 1.1, "the sunset did not reach the other node"
            await asyncio.sleep(0.05)
        assert parsedate_to_datetime(response.headers["sunset"]) == sunset
        while True:
            sent = utcnow()
            response = await old()
            if response.status_code != 200:
                break
            assert sent < sunset, "served after its sunset"
            await asyncio.sleep(0.05)
        assert_error(response, 410, "version_sunset")
        assert utcnow() >= sunset
        assert utcnow() - sunset < timedelta(seconds=2)
        assert (await call(two, ws, app_id, "echo", {"text": "x"})).status_code == 200
