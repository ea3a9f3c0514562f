"""The user system under review: user ids, targets and rights holding NUL (which PostgreSQL can't
take as parameters) are refused with a 4xx on every path — the management API, the gateway's
`userSystem` permission check and the `userRight` step — and never stored."""

from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.builder.signing import read_signing_secrets
from apiforge.engine.tokens import sign_end_user_token
from apiforge.tools.clock import utcnow
from tests.e2e._perms import Consumer, consumer, grant, perms_app, user_rights
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

NUL = "a\x00b"


def _path(app_id: str) -> str:
    return f"/api/v1/apps/{app_id}/user-rights"


async def _setup(client: AsyncClient) -> tuple[User, str, Consumer]:
    owner = await register(client)
    app_id = await perms_app(client, owner)
    return owner, app_id, await consumer(client, app_id)


async def _signed_earlier(app: FastAPI, b: Consumer, sub: str) -> str:
    """A token for `sub` as `jwtSign` signed them before it refused NUL (it does now): such
    tokens may still be in use until they expire."""
    async with app.state.engine.connect() as conn:
        secrets = await read_signing_secrets(app.state.settings, conn, b.app_id)
    assert secrets is not None
    return sign_end_user_token(
        secrets.current, b.app_id, sub=sub, now=utcnow(), expires_in=600,
        workspace=b.user.workspace_id,
    )  # fmt: skip


async def test_management_api_refuses_nul_and_stores_nothing(client: AsyncClient) -> None:
    owner, app_id, _ = await _setup(client)
    data_of(await grant(client, owner.headers, app_id, "alice", "org", ["read"]))
    before = await user_rights(client, owner.headers, app_id)

    for user_id, target, rights, field in (
        (NUL, "org", ["read"], "userId"),
        ("alice", NUL, ["read"], "target"),
        ("alice", "org", [NUL], "rights.0"),
    ):
        response = await grant(client, owner.headers, app_id, user_id, target, rights)
        data = assert_error(response, 400, "invalid_input")
        assert data["errors"][0]["field"] == field
    for params in ({"userId": NUL}, {"target": NUL}):
        listed = await client.get(_path(app_id), params=params, headers=owner.headers)
        assert_error(listed, 400, "invalid_input")
    for params in (
        {"userId": NUL},
        {"userId": "alice", "target": NUL},
        {"userId": "alice", "target": "org", "rights": NUL},
    ):
        revoked = await client.delete(_path(app_id), params=params, headers=owner.headers)
        assert_error(revoked, 400, "invalid_input")

    assert await user_rights(client, owner.headers, app_id) == before


async def test_gateway_user_system_target_with_nul_is_refused_not_500(
    app: FastAPI, client: AsyncClient
) -> None:
    _, app_id, b = await _setup(client)
    data_of(await grant(client, b.user.headers, app_id, "alice", "firstOrg", ["read"]))
    alice = await b.sign_in("alice")
    assert_error(await b.call("orgRead", alice, orgId="first\x00Org"), 403, "insufficient_rights")
    # An end user whose id holds NUL (an earlier version signed it in as such) holds nothing.
    odd = await _signed_earlier(app, b, NUL)
    assert_error(await b.call("orgGlobal", odd), 403, "insufficient_rights")
    assert data_of(await b.call("orgRead", alice, orgId="firstOrg")) == {"org": "firstOrg"}


async def test_user_right_step_refuses_to_grant_nul_ids(app: FastAPI, client: AsyncClient) -> None:
    owner, app_id, b = await _setup(client)
    granting = {
        "id": "granted",
        "type": "userRight",
        "action": "grant",
        "userId": {"expr": "token.sub"},
        "target": "global",
        "rights": ["read"],
    }
    api = {
        "api": "joinGlobal",
        "steps": [granting],
        "auth": {"requireToken": True, "mode": "none"},
        "price": 100,
    }
    data_of(await client.post(f"/api/v1/apps/{app_id}/apis", json=api, headers=owner.headers))
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "patch"}, headers=owner.headers
    )
    data_of(published)
    odd = await _signed_earlier(app, b, NUL)
    response = await b.call("joinGlobal", odd)
    assert response.status_code == 400, response.text
    assert await user_rights(client, b.user.headers, app_id) == []
    # The step still works for ordinary ids.
    alice = await b.sign_in("alice")
    assert data_of(await b.call("joinGlobal", alice)) == {"granted": ["read"]}
