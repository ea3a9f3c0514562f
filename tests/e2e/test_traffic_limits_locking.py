"""Optimistic locking of an app's traffic limits (`version`, `ETag`, `If-Match`, like every other
updatable management resource), and `apis` keys taken exactly as sent."""

import asyncio
from typing import Any

from httpx import AsyncClient, Response
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from apiforge.traffic.models import TrafficLimits
from tests.e2e._traffic import limited_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register


def _version(response: Response) -> int:
    data = data_of(response)
    assert response.headers["ETag"] == f'"{data["version"]}"'
    version: int = data["version"]
    return version


async def test_limits_answer_their_version_and_honour_if_match(client: AsyncClient) -> None:
    owner = await register(client)
    app_id, _ = await limited_app(client, owner)
    url = f"/api/v1/apps/{app_id}/traffic-limits"
    assert _version(await client.get(url, headers=owner.headers)) == 0  # none set yet
    stale = await client.put(
        url, json={"concurrent": 9}, headers={**owner.headers, "If-Match": '"1"'}
    )
    assert assert_error(stale, 412, "precondition_failed")["version"] == 0
    first = await client.put(
        url, json={"concurrent": 5}, headers={**owner.headers, "If-Match": '"0"'}
    )
    assert _version(first) == 1
    lost = await client.put(
        url, json={"concurrent": 9}, headers={**owner.headers, "If-Match": '"0"'}
    )
    assert assert_error(lost, 412, "precondition_failed")["version"] == 1
    for tag in ('W/"1"', "1", '"01"', ""):
        refused = await client.put(url, json={}, headers={**owner.headers, "If-Match": tag})
        assert_error(refused, 412, "precondition_failed")
    read = await client.get(url, headers=owner.headers)
    assert (_version(read), data_of(read)["concurrent"]) == (1, 5)  # nothing changed
    same = await client.put(url, json={"concurrent": 5}, headers=owner.headers)
    assert _version(same) == 1  # the same document again changes nothing
    plain = await client.put(url, json={"ipPerMinute": 7}, headers=owner.headers)
    assert _version(plain) == 2
    anything = await client.put(
        url, json={"concurrent": 3}, headers={**owner.headers, "If-Match": "*"}
    )
    assert _version(anything) == 3
    # A stranger's If-Match is never looked at: the app is not theirs.
    stranger = await register(client)
    denied = await client.put(url, json={}, headers={**stranger.headers, "If-Match": '"3"'})
    assert_error(denied, 404, "app_not_found")


async def test_concurrent_replacements_with_one_version_let_exactly_one_win(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id, _ = await limited_app(client, owner)
    url = f"/api/v1/apps/{app_id}/traffic-limits"
    await client.put(url, json={"concurrent": 1}, headers=owner.headers)
    headers = {**owner.headers, "If-Match": '"1"'}
    responses = await asyncio.gather(
        *(client.put(url, json={"concurrent": 10 + i}, headers=headers) for i in range(8))
    )
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1
    for loser in (r for r in responses if r.status_code != 200):
        assert loser.json()["data"]["error"] in ("precondition_failed", "concurrent_update")
    final = data_of(await client.get(url, headers=owner.headers))
    assert (final["concurrent"], final["version"]) == (data_of(winners[0])["concurrent"], 2)


async def test_a_write_between_the_check_and_the_update_makes_it_409(
    client: AsyncClient,
) -> None:
    """The UPDATE is conditional on the version read: a write landing after the If-Match check
    (here in the same transaction, behind the ORM's back) makes it 409, and nothing changes."""
    owner = await register(client)
    app_id, _ = await limited_app(client, owner, concurrent=4)
    url = f"/api/v1/apps/{app_id}/traffic-limits"

    def race(session: Session, _context: Any, _instances: Any) -> None:
        if any(isinstance(row, TrafficLimits) for row in session.dirty):
            bump = "UPDATE traffic_limits SET version = version + 1 WHERE app_id = :a"
            session.execute(text(bump), {"a": app_id})

    event.listen(Session, "before_flush", race)
    try:
        refused = await client.put(
            url, json={"concurrent": 9}, headers={**owner.headers, "If-Match": '"1"'}
        )
    finally:
        event.remove(Session, "before_flush", race)
    assert_error(refused, 409, "concurrent_update")
    read = await client.get(url, headers=owner.headers)
    assert (_version(read), data_of(read)["concurrent"]) == (1, 4)


async def test_api_names_are_taken_exactly_as_sent(client: AsyncClient) -> None:
    owner = await register(client)
    app_id, _ = await limited_app(client, owner)
    url = f"/api/v1/apps/{app_id}/traffic-limits"
    before = data_of(await client.get(url, headers=owner.headers))
    for name in ("echo ", " echo", "echo\t"):
        body = {"apis": {name: {"concurrent": 1}, "echo": {"concurrent": 2}}}
        refused = assert_error(
            await client.put(url, json=body, headers=owner.headers), 400, "invalid_input"
        )
        assert [e["field"] for e in refused["errors"]] == [f"apis.{name}.[key]"]
    assert data_of(await client.get(url, headers=owner.headers)) == before
