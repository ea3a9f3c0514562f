"""Traffic control reviewed a third time: the rate-limit headers stay valid structured fields
(RFC 8941, as draft-ietf-httpapi-ratelimit-headers requires) whatever a plan's rate, and calls
arriving together while Redis's connects hang wait one timeout, not one each."""

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.settings import Settings
from apiforge.traffic.failure import RETRY_PAUSE_SECONDS
from tests.e2e._keys import call
from tests.e2e._plans import on_plan
from tests.e2e._traffic import limited_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import app_client, make_admin, register

# RFC 8941: an Integer has 1 to 15 digits; each list member here is a String item with Integer
# parameters, members separated by a comma and optional spaces.
_ITEM = r'"[a-z]+"(?:;[a-z]+=-?\d{1,15})+'
SF_LIST = re.compile(rf"^{_ITEM}(?:,[ \t]*{_ITEM})*$")
MAX_QUOTA = 2**53 - 1  # the largest plan quota an administrator may set


async def test_a_plans_huge_rate_keeps_the_rate_limit_headers_valid_structured_fields(
    app: FastAPI, client: AsyncClient
) -> None:
    """A plan allowing 2**53 - 1 calls a minute ("as good as unlimited") named a 16-digit `q`
    in `RateLimit-Policy`, which is no structured-field Integer: strict clients reject the
    whole field. It is shown as the largest Integer there is, on every call and on the 429."""
    admin = await make_admin(app, client)
    owner = await register(client)
    await on_plan(client, admin, owner.workspace_id, "vast", requestsPerMinute=MAX_QUOTA)
    app_id, secret = await limited_app(client, owner, apis={"echo": {"keyPerMinute": 1}})
    admitted = await call(client, secret, app_id, "echo", {"text": "a"})
    assert data_of(admitted) == {"echo": "a"}
    policy = admitted.headers["RateLimit-Policy"]
    assert SF_LIST.match(policy), policy
    assert policy == '"key";q=1;w=60, "plan";q=999999999999999;w=60'

    refused = await call(client, secret, app_id, "echo", {"text": "b"})
    data = assert_error(refused, 429, "too_many_requests")
    assert data["scope"] == "key"
    assert SF_LIST.match(refused.headers["RateLimit-Policy"]), refused.headers
    assert SF_LIST.match(refused.headers["RateLimit"]), refused.headers
    retry = int(refused.headers["Retry-After"])
    assert retry >= 1
    assert refused.headers["X-RateLimit-Reset"] == str(retry)
    assert refused.headers["X-RateLimit-Remaining"] == "0"


@contextmanager
def hanging_redis() -> Iterator[str]:
    """The URL of a "Redis" whose connects hang, as when its host drops packets: a listener
    that never accepts, its accept queue filled, so the kernel answers no more handshakes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_calls_arriving_together_while_redis_connects_hang_wait_one_timeout_at_most(
    settings: Settings,
) -> None:
    """Redis unreachable with connects that hang (its host down, packets dropped): calls that
    arrived together all waited on the one Redis line's connect lock, each then trying a
    connect of its own, one after the other, so the eighth call answered after 8 s and more
    (every failed admission also queued a release whose flush took its turn). Every call
    waiting on an attempt that failed fails with it: each answers within about one timeout,
    following the failure mode (open: 200)."""
    with hanging_redis() as url:
        hung = settings.model_copy(update={"redis_url": url, "redis_prefix": "hung:"})
        async with app_client(hung) as (_, client):
            owner = await register(client)
            app_id, secret = await limited_app(client, owner, apis={"echo": {"concurrent": 50}})
            await asyncio.sleep(RETRY_PAUSE_SECONDS)  # the setup's own failure pause is over

            async def timed(n: int) -> tuple[int, float]:
                started = time.monotonic()
                response = await call(client, secret, app_id, "echo", {"text": str(n)})
                return response.status_code, time.monotonic() - started

            results = await asyncio.gather(*(timed(n) for n in range(8)))
            assert [status for status, _ in results] == [200] * 8
            slowest = max(seconds for _, seconds in results)
            assert slowest < 3.0, results  # one 1 s connect timeout, not one per call
