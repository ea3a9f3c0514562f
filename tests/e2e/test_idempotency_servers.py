"""Idempotency across two real server processes sharing one database (and Redis when set): the
claim is a database row, so one key executes once whichever process each request reaches."""

import asyncio

from httpx import AsyncClient

from apiforge.core.settings import Settings
from tests._servers import running_servers
from tests.e2e._idempotency import hit, hits_app, total
from tests.e2e._keys import app_key
from tests.e2e._workspaces import data_of
from tests.factories import register


async def test_one_key_runs_once_across_two_processes(settings: Settings) -> None:
    async with (
        running_servers(settings, count=2) as urls,
        AsyncClient(base_url=urls[0], timeout=60) as first,
        AsyncClient(base_url=urls[1], timeout=60) as second,
    ):
        owner, consumer = await register(first), await register(first)
        app_id = await hits_app(first, owner)
        _, secret = await app_key(first, consumer, app_id)
        clients = (first, second)
        responses = await asyncio.gather(
            *(
                hit(clients[i % 2], secret, app_id, 3, **{"Idempotency-Key": "across"})
                for i in range(100)
            )
        )
        # 429: shed by the plan's concurrency limit before the idempotency stage.
        assert {r.status_code for r in responses} <= {200, 409, 429}, [
            r.text for r in responses if r.status_code >= 500
        ]
        successes = [r for r in responses if r.status_code == 200]
        assert successes
        assert len({r.content for r in successes}) == 1
        assert sum("Idempotent-Replayed" not in r.headers for r in successes) == 1
        for client in clients:
            again = await hit(client, secret, app_id, 3, **{"Idempotency-Key": "across"})
            assert again.headers["Idempotent-Replayed"] == "1"
            assert again.content == successes[0].content
        assert await total(second, secret, app_id) == 1

        creates = await asyncio.gather(
            *(
                clients[i % 2].post(
                    "/api/v1/apps",
                    json={"name": "Once"},
                    headers={**owner.headers, "Idempotency-Key": "create-once"},
                )
                for i in range(20)
            )
        )
        assert {r.status_code for r in creates} <= {200, 409}
        apps = data_of(await second.get("/api/v1/apps?pageSize=100", headers=owner.headers))
        assert [a["name"] for a in apps["list"]].count("Once") == 1
