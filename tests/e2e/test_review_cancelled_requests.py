"""Review of requests cancelled mid-way (their client gone, the server stopping) outside the
gateway's charge: a management write cancelled as its idempotency claim commits leaves the key
free for its retry, and a cancelled request (gateway call or management write) is counted in
`/metrics` and the access log as the 499 it is, not as a 500."""

import asyncio

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.gateway.context import CANCELLED, GatewayContext
from apiforge.gateway.stages.run import RunStage
from apiforge.idempotency.claims import Claim, StoredResponse
from apiforge.idempotency.store import IdempotencyStore
from tests.e2e._billing import invoke, market
from tests.e2e._workspaces import data_of
from tests.factories import register

GATEWAY = "/api/v1/invocations"
APPS = "/api/v1/apps"


async def _cancel_me() -> None:
    """The client goes away here: the request's task is cancelled at its next wait."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)


def _requests(route: str, status: int) -> float:
    labels = {"method": "POST", "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("apiforge_http_requests_total", labels) or 0.0


def _cancel_after_the_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next idempotency claim commits, and its request is cancelled before it has it."""
    claim = IdempotencyStore.claim
    armed = [True]

    async def claimed_then_cancelled(
        self: IdempotencyStore, *args: str, **kwargs: str
    ) -> Claim | StoredResponse:
        outcome = await claim(self, *args, **kwargs)  # type: ignore[arg-type]
        if armed:
            armed.clear()
            await _cancel_me()
        return outcome

    monkeypatch.setattr(IdempotencyStore, "claim", claimed_then_cancelled)


async def _create(client: AsyncClient, headers: dict[str, str]) -> Response:
    return await client.post("/api/v1/apps", json={"name": "Shop"}, headers=headers)


async def test_a_write_cancelled_as_its_idempotency_claim_commits_leaves_the_key_free(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim row committed, and the request was cancelled before the middleware had it:
    nothing released it, and the retry with the key was 409 `idempotency_key_in_use` until
    the claim's lease ran out."""
    user = await register(client)
    headers = {**user.headers, "Idempotency-Key": "cancelled-claim"}
    _cancel_after_the_claim(monkeypatch)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(_create(client, headers))
    retry = await _create(client, headers)
    assert retry.status_code == 200, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    apps = data_of(await client.get("/api/v1/apps", headers=user.headers))
    assert apps["totalCount"] == 1


async def test_a_write_cancelled_as_its_claim_commit_is_on_the_wire_leaves_the_key_free(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the cancellation reaches the request while its claim's COMMIT is on its way;
    the server commits it all the same (on SQLite the claim is one hop on the store's own
    connection, whose thread commits it all the same: the test above)."""
    if app.state.engine.dialect.name == "sqlite":
        pytest.skip("the embedded database's management claims commit on the store's thread")
    user = await register(client)
    headers = {**user.headers, "Idempotency-Key": "cancelled-commit"}
    claim, commit = IdempotencyStore.claim, AsyncConnection.commit
    armed: list[object] = []  # the claim's connection, while it claims

    async def arming(
        self: IdempotencyStore, conn: AsyncConnection, *args: str
    ) -> Claim | StoredResponse:
        armed.append(conn)
        try:
            return await claim(self, conn, *args)
        finally:
            armed.clear()

    async def cancelled_commit(self: AsyncConnection) -> None:
        if armed and armed[0] is self:
            armed.clear()
            asyncio.current_task().cancel()  # type: ignore[union-attr]
        await commit(self)

    monkeypatch.setattr(IdempotencyStore, "claim", arming)
    monkeypatch.setattr(AsyncConnection, "commit", cancelled_commit)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(_create(client, headers))
    monkeypatch.undo()
    retry = await _create(client, headers)
    assert retry.status_code == 200, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    apps = data_of(await client.get("/api/v1/apps", headers=user.headers))
    assert apps["totalCount"] == 1


async def test_a_cancelled_management_request_is_counted_as_499_not_500(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register(client)
    _cancel_after_the_claim(monkeypatch)
    before = _requests(APPS, CANCELLED), _requests(APPS, 500)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(_create(client, {**user.headers, "Idempotency-Key": "gone"}))
    assert (_requests(APPS, CANCELLED), _requests(APPS, 500)) == (before[0] + 1, before[1])


async def test_a_cancelled_call_is_counted_as_499_not_500(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = await market(app, client)
    assert await invoke(client, m, "listed") == 200
    run = RunStage.on_request

    async def cancelled(self: RunStage, ctx: GatewayContext) -> None:
        await _cancel_me()
        await run(self, ctx)

    monkeypatch.setattr(RunStage, "on_request", cancelled)
    before = _requests(GATEWAY, CANCELLED), _requests(GATEWAY, 500)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(invoke(client, m, "listed"))
    assert (_requests(GATEWAY, CANCELLED), _requests(GATEWAY, 500)) == (before[0] + 1, before[1])
