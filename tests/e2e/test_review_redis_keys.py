"""What apiforge writes to Redis: every key under its deployment's `APIFORGE_REDIS_PREFIX` (two
deployments on one Redis count nothing of each other's), and every key with an expiry (nothing
grows without bound). Against a redis-server of the test's own, so the scan sees only this."""

import hashlib
import hmac
import json
import time
import uuid

from httpx import AsyncClient, Response
from redis.asyncio import Redis

from apiforge.core.settings import Settings
from tests.e2e._keys import app_key, call
from tests.e2e._traffic import limited_app, redis_server
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import app_client, register

PATH = "/api/v1/invocations"
FAMILIES = {"rate", "conc", "idem-token", "nonce", "nonce-count", "limits"}


async def _signed(
    client: AsyncClient, key_id: str, secret: str, body: bytes, nonce: str
) -> Response:
    stamp = str(int(time.time()))
    digest = hashlib.sha256(body).hexdigest()
    canonical = "\n".join(["POST", PATH, "", digest, stamp, nonce])
    sign = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    headers = {"X-App-Id": key_id, "X-Timestamp": stamp, "X-Nonce": nonce, "X-Sign": sign}
    return await client.post(
        PATH, content=body, headers={"Content-Type": "application/json", **headers}
    )


async def test_two_prefixes_share_nothing_and_every_key_expires(settings: Settings) -> None:
    async with redis_server() as server:
        one = settings.model_copy(update={"redis_url": server.url, "redis_prefix": "one:"})
        two = settings.model_copy(update={"redis_url": server.url, "redis_prefix": "two:"})
        async with app_client(one) as (_, first), app_client(two) as (_, second):
            owner = await register(first)
            app_id, secret = await limited_app(first, owner, keyPerMinute=2, concurrentPerKey=3)
            for _ in range(2):
                data_of(await call(first, secret, app_id, "echo"))
            assert_error(await call(first, secret, app_id, "echo"), 429, "too_many_requests")
            data_of(await call(second, secret, app_id, "echo"))  # its own counters
            key_id, signing = await app_key(first, owner, app_id)
            body = json.dumps({"appId": app_id, "api": "echo", "args": {}}).encode()
            nonce = uuid.uuid4().hex
            data_of(await _signed(first, key_id, signing, body, nonce))
            assert_error(await _signed(first, key_id, signing, body, nonce), 401, "nonce_reused")
            data_of(await _signed(second, key_id, signing, body, nonce))  # its own nonces
            data_of(await first.get("/api/v1/idempotency-tokens", headers=owner.headers))
            wrong = {"email": owner.email, "password": "not the password"}
            assert (await first.post("/api/v1/auth/login", json=wrong)).status_code == 401
        redis = Redis.from_url(server.url)
        try:
            keys = [key.decode() async for key in redis.scan_iter()]
            families = {key.split(":")[1] for key in keys}
            assert {key.split(":")[0] for key in keys} == {"one", "two"}
            assert families <= FAMILIES
            assert {"rate", "idem-token", "nonce", "nonce-count", "limits"} <= families
            for key in keys:
                assert await redis.pttl(key) > 0, key  # -1: kept for ever
        finally:
            await redis.aclose()
