"""Gateway answers that may carry a secret are sealed while kept for replay: a sign-in API's
stored answer never holds its token in clear (answer log or `idempotency_records`), and its
replay is still byte-identical; an answer with nothing secret is stored as it is."""

import re

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.errors import ConflictError
from apiforge.idempotency.keys import record_id
from apiforge.idempotency.sealed import open_answer, seal_answer
from tests.e2e._idempotency import stored_body
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import data_of
from tests.factories import register

KEY = "Idempotency-Key"
JWT = re.compile(rb"eyJ[\w-]+\.[\w-]+\.[\w-]+")


async def test_a_sign_in_answer_is_stored_sealed_and_replayed_exactly(
    app: FastAPI, client: AsyncClient
) -> None:
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    key_id, secret = await app_key(client, consumer, app_id)
    scope = f"{consumer.workspace_id}|key:{key_id}"

    signed = await call(client, secret, app_id, "signIn", {"user": "alice"}, headers={KEY: "s-1"})
    assert signed.status_code == 200, signed.text
    [token] = JWT.findall(signed.content)
    stored = await stored_body(app, record_id("key", scope, "s-1"))
    assert token not in stored
    assert b"alice" not in stored
    again = await call(client, secret, app_id, "signIn", {"user": "alice"}, headers={KEY: "s-1"})
    assert again.headers.get("Idempotent-Replayed") == "1"
    assert again.content == signed.content

    echoed = await call(
        client, secret, app_id, "echo", {"text": "plain-marker"}, headers={KEY: "e"}
    )
    assert data_of(echoed) == {"echo": "plain-marker"}
    assert await stored_body(app, record_id("key", scope, "e")) == echoed.content  # no secret


def test_an_answer_sealed_under_another_server_secret_is_lost_not_garbage() -> None:
    sealed = seal_answer("server-secret-" + "a" * 40, b'{"code":200}')
    assert b"200" not in sealed
    assert open_answer("server-secret-" + "a" * 40, sealed) == b'{"code":200}'
    assert open_answer("any", b'{"code":200}') == b'{"code":200}'  # stored in clear earlier
    with pytest.raises(ConflictError) as caught:
        open_answer("server-secret-" + "b" * 40, sealed)
    assert caught.value.reason == "idempotency_answer_lost"
