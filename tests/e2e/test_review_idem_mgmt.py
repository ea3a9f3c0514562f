"""Review fixes for the management side of idempotency and traffic limits: header values are
read as HTTP sends them (only spaces and tabs around them are dropped: `k\\xa0` is no alias of
the key `k`), anti-duplicate tokens stay one-time under concurrency, and an app's new traffic
limits are forgotten by the process's cache only once they committed."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from apiforge.traffic.models import TrafficLimits
from apiforge.traffic.rules import LimitRules
from tests.e2e._traffic import limited_app, set_limits
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

KEY = b"idempotency-key"
SEQ = b"x-request-seq"


async def _create(client: AsyncClient, user: User, *headers: tuple[bytes, bytes]) -> Any:
    raw = [(k.encode(), v.encode()) for k, v in user.headers.items()]
    return await client.post("/api/v1/apps", json={"name": "Shop"}, headers=[*raw, *headers])


async def _app_count(client: AsyncClient, user: User) -> int:
    count: int = data_of(await client.get("/api/v1/apps", headers=user.headers))["totalCount"]
    return count


@pytest.mark.parametrize("raw", [b"k\xa0", b"\xa0k", b"k\x85", b"\x1fk", b"k\x0b", b'"k"\x1c'])
async def test_a_key_ending_in_a_control_or_non_ascii_space_is_400_not_another_key(
    client: AsyncClient, raw: bytes
) -> None:
    """Python's `str.strip()` took these characters off a key (read as latin-1), so `k\\xa0`
    replayed the answer stored for `k` instead of being refused."""
    user = await register(client)
    assert (await _create(client, user, (KEY, b"k"))).status_code == 200
    data = assert_error(await _create(client, user, (KEY, raw)), 400, "invalid_idempotency_key")
    assert data["errors"][0]["field"] == "Idempotency-Key"
    seq = await _create(client, user, (SEQ, raw.replace(b"k", b"7")))
    assert_error(seq, 400, "invalid_request_seq")
    assert await _app_count(client, user) == 1


async def test_spaces_and_tabs_around_a_key_are_still_the_same_key(client: AsyncClient) -> None:
    user = await register(client)
    first = await _create(client, user, (KEY, b"k"))
    again = await _create(client, user, (KEY, b' \t"k"\t '))
    assert again.headers.get("Idempotent-Replayed") == "1"
    assert again.content == first.content
    assert await _app_count(client, user) == 1


async def test_one_token_spent_by_concurrent_requests_lets_exactly_one_run(
    client: AsyncClient,
) -> None:
    user = await register(client)
    token = data_of(await client.get("/api/v1/idempotency-tokens", headers=user.headers))["token"]
    responses = await asyncio.gather(
        *(_create(client, user, (b"x-idempotency-token", token.encode())) for _ in range(10))
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 9
    for refused in (r for r in responses if r.status_code == 409):
        assert_error(refused, 409, "duplicate_request")
    assert await _app_count(client, user) == 1


@pytest.fixture
def commits_of_limits() -> Iterator[list[str]]:
    """Appends "commit" each time a session that wrote a `TrafficLimits` row commits."""
    events: list[str] = []
    writers: set[int] = set()

    def before_flush(session: Session, _context: Any, _instances: Any) -> None:
        if any(isinstance(row, TrafficLimits) for row in (*session.new, *session.dirty)):
            writers.add(id(session))

    def before_commit(session: Session) -> None:
        if id(session) in writers:
            writers.discard(id(session))
            events.append("commit")

    event.listen(Session, "before_flush", before_flush)
    event.listen(Session, "before_commit", before_commit)
    yield events
    event.remove(Session, "before_flush", before_flush)
    event.remove(Session, "before_commit", before_commit)


async def test_new_limits_are_forgotten_by_the_cache_only_once_committed(
    app: FastAPI,
    client: AsyncClient,
    commits_of_limits: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway call reading the limits between the forgetting and the commit cached the old
    ones again for 2 s; the docs promise a change applies at once on the server that took it."""
    owner = await register(client)
    app_id, _ = await limited_app(client, owner)
    rules: LimitRules = app.state.traffic.rules
    forget = rules.forget_app

    def spy(forgotten: str) -> None:
        commits_of_limits.append("forget")
        forget(forgotten)

    monkeypatch.setattr(rules, "forget_app", spy)
    commits_of_limits.clear()
    await set_limits(client, owner, app_id, keyPerMinute=1)
    assert commits_of_limits == ["commit", "forget"]
