"""Secrets sweep: realistic flows with every kind of secret in play, then every place another
party (or an operator) reads — the process's log lines at DEBUG, request-log rows seen by another
member and by the app's builder, `/metrics`, the export document, the generated docs, the
OpenAPI document, `/api/v1/version`, debug traces, and error envelopes — is searched for each
secret and its obvious encodings (base64, percent-encoding, the part after a key's prefix).

A failure names the secret and where it appeared."""

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from httpx import Response

from apiforge.core.settings import Settings
from apiforge.engine.tokens import sign_end_user_token
from apiforge.gateway.stages.log import request_log_buffer
from apiforge.tools.clock import utcnow
from tests.e2e._accounts import NEW_PASSWORD, bearer, change_password, login, refresh, stored_hash
from tests.e2e._apps import new_api, new_app, signing_secret
from tests.e2e._keys import app_key, call, create_key
from tests.e2e._workspaces import add_member, data_of
from tests.e2e.test_gateway_signing import signed_headers
from tests.factories import PASSWORD, app_client, register

UPSTREAM_KEY = "upk-9f2c71d04be85a63e1"
MAIL_KEY = "mk-live-3a8e5c0f91d27b46"
PIN = "pin-5d0e8b13c7a942f6"
UPSTREAM_COOKIE = "sess-0b7e4c2a9d1f"
END_USER_PASSWORD = "end-user-pw-61c0e9a4"
PHONE = "+44 20 7946 0958"
WRONG_PASSWORD = "wrong horse battery 7c1f"
ORIGIN = "https://shop.example"
USERS = [
    {"name": "name", "type": "string"},
    {"name": "phone", "type": "string", "encrypted": True},
    {"name": "pw", "type": "string"},
]
PRICE = 1000


@dataclass
class Upstream:
    """A local HTTP/1.1 server: `/ok` answers JSON, `/boom` closes without an answer."""

    port: int
    heads: list[str] = field(default_factory=list)


@asynccontextmanager
async def upstream() -> AsyncIterator[Upstream]:
    server_state = Upstream(0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        server_state.heads.append(head)
        if head.split(" ", 2)[1].startswith("/ok"):
            body = b'{"fine": 1}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Set-Cookie: session={UPSTREAM_COOKIE}\r\n".encode()
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    server_state.port = server.sockets[0].getsockname()[1]
    try:
        yield server_state
    finally:
        server.close()
        await server.wait_closed()


def _forms(value: str) -> set[str]:
    """`value` and the encodings a careless line would show it in."""
    forms = {value, quote(value, safe="")}
    for prefix in ("app-", "pk-", "ws-", "rt_"):
        if value.startswith(prefix):
            forms.add(value[len(prefix) :])
    if value.count(".") == 2:  # a JWT: its header is the same for every token; the rest is not
        forms.update(value.split(".")[1:])
    if value.startswith("$argon2"):
        forms.update(value.rsplit("$", 2)[1:])
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(value.encode()).decode()
        forms.update({text, text.rstrip("=")})
    return {form for form in forms if len(form) >= 8}


@dataclass
class Sweep:
    """The secrets in play (name -> value), and a search of any text for them."""

    secrets: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str) -> str:
        self.secrets[name] = value
        return value

    def found(self, text: str, *, allowed: frozenset[str] = frozenset()) -> list[str]:
        return [
            f"{name} (as {form!r})"
            for name, value in self.secrets.items()
            if name not in allowed
            for form in sorted(_forms(value))
            if form in text
        ]

    def assert_clean(self, where: str, text: str, *, allowed: frozenset[str] = frozenset()) -> None:
        leaks = self.found(text, allowed=allowed)
        assert not leaks, f"secret(s) {leaks} appeared in {where}:\n{text[:4000]}"


def _own_input(sweep: Sweep, response: Response) -> frozenset[str]:
    """Secrets the request itself carried: an error may echo the caller's own input."""
    request = response.request
    sent = request.content.decode("utf-8", "replace") + json.dumps(dict(request.headers))
    return frozenset(name for name, value in sweep.secrets.items() if value in sent)


@pytest.fixture
def sweep_settings(settings: Settings) -> Settings:
    """DEBUG logs, and 127.0.0.1 allowed as an `httpRequest` target (the local upstream)."""
    return settings.model_copy(update={"log_level": "DEBUG", "http_allow_hosts": ["127.0.0.1"]})


async def test_no_secret_reaches_logs_rows_metrics_exports_or_others_errors(
    sweep_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = Sweep()
    sweep.add("server secret key", str(sweep_settings.secret_key))
    sweep.add("password", PASSWORD)
    sweep.add("new password", NEW_PASSWORD)
    sweep.add("wrong password", WRONG_PASSWORD)
    sweep.add("app secret upstreamKey", UPSTREAM_KEY)
    sweep.add("app secret mailKey", MAIL_KEY)
    sweep.add("sensitive arg pin", PIN)
    sweep.add("encrypted field phone", PHONE)
    sweep.add("upstream session cookie", UPSTREAM_COOKIE)
    sweep.add("end-user password", END_USER_PASSWORD)
    errors: list[Response] = []  # every 4xx/5xx answer, checked at the end
    traces: list[Response] = []  # debug traces

    async def keep(response: Response) -> None:
        if response.status_code >= 400:
            await response.aread()
            errors.append(response)

    async with upstream() as server, app_client(sweep_settings) as (app, client):
        client.event_hooks["response"].append(keep)
        # --- console accounts: register, sign in, refresh, a wrong password, a password change
        owner = await register(client)
        sweep.add("owner access token", owner.access_token)
        sweep.add("owner refresh token", owner.refresh_token)
        sweep.add("owner password hash", await stored_hash(app, owner.account_id))
        signed_in = data_of(await login(client, owner.email))
        sweep.add("owner second access token", signed_in["accessToken"])
        refreshed = data_of(await refresh(client, signed_in["refreshToken"]))
        sweep.add("owner refreshed token", refreshed["refreshToken"])
        assert (await refresh(client, signed_in["refreshToken"])).status_code == 401  # reuse
        assert (await login(client, owner.email, WRONG_PASSWORD)).status_code == 401
        assert (await refresh(client, "rt_" + "Q" * 43)).status_code == 401
        assert (
            await client.get("/api/v1/user/profile", headers=bearer("x.y.z"))
        ).status_code == 401
        consumer = await register(client)
        sweep.add("consumer access token", consumer.access_token)
        sweep.add("consumer refresh token", consumer.refresh_token)
        changed = await change_password(client, consumer.access_token)
        assert changed.status_code == 200, changed.text
        sweep.add("consumer new password hash", await stored_hash(app, consumer.account_id))
        consumer = await register(client)  # a fresh session for the rest of the flow

        # --- the owner's app: secrets, a sensitive arg, an encrypted field, an upstream call
        app_id = await new_app(
            client,
            owner.headers,
            "Vault",
            visibility="public",
            secrets={"upstreamKey": UPSTREAM_KEY, "mailKey": MAIL_KEY},
        )
        sweep.add("app signing secret", await signing_secret(app, app_id))
        body = {"appId": app_id, "name": "users", "fields": USERS}
        data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
        base = f"http://127.0.0.1:{server.port}"
        auth = {"expr": "'Bearer ' + env.secrets.upstreamKey"}
        pin_params = [{"name": "pin", "sensitive": True}]
        apis: dict[str, dict[str, Any]] = {
            "signUp": {
                "params": [{"name": "name"}, {"name": "password", "sensitive": True}],
                "steps": [
                    {
                        "id": "hash",
                        "type": "password",
                        "action": "hash",
                        "password": {"expr": "args.password"},
                    },
                    {
                        "id": "account",
                        "type": "insert",
                        "collection": "users",
                        "data": {"name": {"expr": "args.name"}, "pw": {"expr": "steps.hash"}},
                    },
                ],
            },
            "addUser": {
                "params": [{"name": "name"}, {"name": "phone", "sensitive": True}],
                "steps": [
                    {
                        "id": "user",
                        "type": "insert",
                        "collection": "users",
                        "data": {"name": {"expr": "args.name"}, "phone": {"expr": "args.phone"}},
                    },
                    {
                        "id": "note",
                        "type": "log",
                        "level": "warning",
                        "message": {"expr": "'mail ' + env.secrets.mailKey + ' ' + args.phone"},
                    },
                ],
            },
            "fetch": {
                "params": pin_params,
                "steps": [
                    {
                        "id": "up",
                        "type": "httpRequest",
                        "url": f"{base}/ok",
                        "headers": {"Authorization": auth, "X-Pin": {"expr": "args.pin"}},
                        "query": {"key": {"expr": "env.secrets.mailKey"}},
                    }
                ],
            },
            "broken": {
                "params": pin_params,
                "steps": [
                    {
                        "id": "up",
                        "type": "httpRequest",
                        "url": f"{base}/boom",
                        "headers": {"Authorization": auth},
                        "query": {"pin": {"expr": "args.pin"}},
                    }
                ],
            },
            "signIn": {
                "params": [{"name": "user"}],
                "steps": [
                    {
                        "id": "session",
                        "type": "jwtSign",
                        "sub": {"expr": "args.user"},
                        "expiresIn": 600,
                    }
                ],
            },
            "whoAmI": {
                "steps": [{"id": "me", "type": "set", "value": {"expr": "token.sub"}}],
                "auth": {"requireToken": True, "mode": "none"},
            },
        }
        for api, fields in apis.items():
            await new_api(client, owner.headers, app_id, api, price=PRICE, **fields)
        published = await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
        )
        data_of(published)

        # --- the owner's dev calls with debug traces, by console token and by a ws- key
        _ws_id, ws_key = await create_key(client, owner.headers, type="ws", role="editor")
        sweep.add("ws key", ws_key)
        for headers in (owner.headers, {"X-Api-Key": ws_key}):
            for api, args in (
                ("signUp", {"name": "ada", "password": END_USER_PASSWORD}),
                ("addUser", {"name": "ada", "phone": PHONE}),
                ("fetch", {"pin": PIN}),
                ("broken", {"pin": PIN}),
                ("signIn", {"user": "ada"}),
            ):
                invocation = {
                    "appId": app_id,
                    "api": api,
                    "version": "dev",
                    "args": args,
                    "debug": 1,
                }
                traced = await client.post("/api/v1/invocations", json=invocation, headers=headers)
                assert traced.json()["data"]["trace"], traced.text
                traces.append(traced)
                if api == "signUp":
                    stored = traced.json()["data"]["result"]["hash"]
                    sweep.add(f"end-user password hash {len(traces)}", stored)
                if api == "signIn":
                    issued_token = traced.json()["data"]["result"]["session"]["token"]
                    sweep.add(f"dev end-user token {len(traces)}", issued_token)
        assert server.heads, "the upstream was never called"
        assert any(UPSTREAM_KEY in head for head in server.heads)

        # --- another tenant calls the published app: keys, a signed call, end-user tokens
        key_id, key = await app_key(client, consumer, app_id)
        sweep.add("app key", key)
        _pk_id, pk = await create_key(
            client, consumer.headers, type="pk", appId=app_id, allowedOrigins=[ORIGIN]
        )
        sweep.add("pk key", pk)
        assert (
            await call(client, key, app_id, "addUser", {"name": "bo", "phone": PHONE})
        ).is_success
        assert (await call(client, key, app_id, "fetch", {"pin": PIN})).is_success
        assert (await call(client, key, app_id, "broken", {"pin": PIN})).status_code == 502
        token = data_of(await call(client, key, app_id, "signIn", {"user": "bo"}))["session"]
        sweep.add("end-user token", token["token"])
        me = await call(client, key, app_id, "whoAmI", headers=bearer(token["token"]))
        assert data_of(me)["me"] == "bo"
        by_pk = await call(
            client, pk, app_id, "whoAmI", headers={**bearer(token["token"]), "Origin": ORIGIN}
        )
        assert by_pk.is_success, by_pk.text
        expired = sign_end_user_token(
            await signing_secret(app, app_id),
            app_id,
            sub="bo",
            now=utcnow() - timedelta(hours=1),
            expires_in=60,
            workspace=consumer.workspace_id,
        )
        sweep.add("expired end-user token", expired)
        late = await call(client, key, app_id, "whoAmI", headers=bearer(expired))
        assert late.status_code == 401, late.text
        forged = token["token"][:-4] + ("AAAA" if not token["token"].endswith("AAAA") else "BBBB")
        assert (
            await call(client, key, app_id, "whoAmI", headers=bearer(forged))
        ).status_code == 401
        assert (
            await call(client, "app-" + "Z" * 40, app_id, "fetch", {"pin": PIN})
        ).status_code == 401
        body_bytes = json.dumps(
            {"appId": app_id, "api": "fetch", "version": "latest", "args": {"pin": PIN}}
        ).encode()
        signed = await client.post(
            "/api/v1/invocations",
            content=body_bytes,
            headers={"Content-Type": "application/json", **signed_headers(key_id, key, body_bytes)},
        )
        assert signed.is_success, signed.text
        bad_sign = await client.post(
            "/api/v1/invocations",
            content=body_bytes,
            headers={
                "Content-Type": "application/json",
                **signed_headers(
                    key_id, key[:-1] + ("y" if key.endswith("x") else "x"), body_bytes
                ),
            },
        )
        assert bad_sign.status_code == 401
        issued = data_of(await client.get("/api/v1/idempotency-tokens", headers={"X-Api-Key": key}))
        sweep.add("anti-duplicate token", issued["token"])
        idem = {"X-Idempotency-Token": issued["token"]}
        assert (await call(client, key, app_id, "fetch", {"pin": PIN}, headers=idem)).is_success
        assert (
            await call(client, key, app_id, "fetch", {"pin": PIN}, headers=idem)
        ).status_code == 409

        # --- what others see
        colleague = await register(client)
        sweep.add("colleague access token", colleague.access_token)
        await add_member(client, consumer, consumer.workspace_id, colleague, "viewer")
        await request_log_buffer(app.state.gateway_state).flush()
        seen_by: dict[str, str] = {}
        in_consumer = {**colleague.headers, "X-Workspace-Id": consumer.workspace_id}
        rows = await client.get("/api/v1/request-logs?pageSize=100", headers=in_consumer)
        assert len(data_of(rows)["list"]) >= 8
        assert {"pin": "***"} in [row["args"] for row in data_of(rows)["list"]]
        seen_by["the caller workspace's request log (another member)"] = rows.text
        builder = await client.get(
            "/api/v1/request-logs?scope=builder&pageSize=100", headers=owner.headers
        )
        assert len(data_of(builder)["list"]) >= 8
        seen_by["the app's builder request log"] = builder.text
        own_rows = await client.get("/api/v1/request-logs?pageSize=100", headers=owner.headers)
        seen_by["the owner's own request log"] = own_rows.text
        metrics = await client.get("/metrics")
        assert "apiforge_http_requests_total" in metrics.text
        seen_by["/metrics"] = metrics.text
        exported = await client.get(f"/api/v1/apps/{app_id}/export", headers=owner.headers)
        assert exported.status_code == 200, exported.text
        seen_by["the export document"] = exported.text
        for who, headers in (("owner", owner.headers), ("consumer", consumer.headers)):
            docs = await client.get(f"/api/v1/apps/{app_id}/docs", headers=headers)
            seen_by[f"the app's docs page ({who})"] = docs.text
            spec = await client.get(f"/api/v1/apps/{app_id}/openapi.json", headers=headers)
            seen_by[f"the app's OpenAPI document ({who})"] = spec.text
            shown = await client.get(f"/api/v1/apps/{app_id}", headers=headers)
            seen_by[f"the app as shown ({who})"] = shown.text
        server_spec = await client.get("/openapi.json")
        assert server_spec.status_code == 200
        seen_by["the server's OpenAPI document"] = server_spec.text
        seen_by["/api/v1/version"] = (await client.get("/api/v1/version")).text

    logged = capsys.readouterr()
    log_text = logged.err + logged.out
    # The capture sees the process's own lines, a `log` step's among them (masked).
    assert '"event":"request"' in log_text
    assert "mail *** ***" in log_text
    for line in log_text.splitlines():
        sweep.assert_clean("a log line", line)
    for where, text in seen_by.items():
        sweep.assert_clean(where, text)
    for traced in traces:
        # The trace (not the API's own answer) masks what docs/builder.md says, even from the
        # dev caller who sent it.
        trace = json.dumps(traced.json().get("data", {}).get("trace"))
        where = f"a debug trace of {traced.request.content[:80]!r}"
        # An upstream's answer is the step's output, which the trace shows as it came.
        sweep.assert_clean(where, trace, allowed=frozenset({"upstream session cookie"}))
    for error in errors:
        where = f"the error answer to {error.request.method} {error.request.url.path}"
        sweep.assert_clean(where, error.text, allowed=_own_input(sweep, error))


async def test_an_outbound_query_holding_an_app_secret_is_not_logged_at_the_default_level(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """httpx logs every request's URL whole at INFO: an `httpRequest` step's `?key=` from the
    app's secrets went to the process's log at the default level."""
    configured = settings.model_copy(
        update={"log_level": "INFO", "http_allow_hosts": ["127.0.0.1"]}
    )
    async with upstream() as server, app_client(configured) as (_app, client):
        owner = await register(client)
        app_id = await new_app(client, owner.headers, "Weather", secrets={"apiKey": UPSTREAM_KEY})
        step = {
            "id": "up",
            "type": "httpRequest",
            "url": f"http://127.0.0.1:{server.port}/ok",
            "query": {"key": {"expr": "env.secrets.apiKey"}},
        }
        await new_api(client, owner.headers, app_id, "weather", steps=[step], price=PRICE)
        body = {"appId": app_id, "api": "weather", "version": "dev", "args": {}}
        answer = await client.post("/api/v1/invocations", json=body, headers=owner.headers)
        assert data_of(answer)["up"]["status"] == 200
        assert any(UPSTREAM_KEY in head for head in server.heads)
    logged = capsys.readouterr().err
    assert '"event":"request"' in logged  # the capture sees the process's lines
    sweep = Sweep({"app secret apiKey": UPSTREAM_KEY})
    for line in logged.splitlines():
        sweep.assert_clean("a log line", line)
