"""The management API's role matrix: every route of the OpenAPI document has the minimum caller
the docs give it, one rank below is refused (403) and changes nothing, and the minimum passes.

Sources: docs/decisions.md (roles `viewer < editor < admin < owner`; ws- keys act with the lesser
of their role and their creator's current role, and are refused on account routes and on changes
of who belongs to a workspace; editors create keys, admins revoke them; workflows need editor;
moving money out needs admin), docs/builder.md (apps: viewers read, editors change, admins
delete), docs/files.md, docs/traffic.md and docs/billing.md. A new route fails
`test_every_route_has_a_documented_minimum` until it is classified here.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from itertools import count
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response

from tests.e2e._apps import in_workspace, new_api, new_app
from tests.e2e._keys import app_key, call, create_key
from tests.e2e._plans import on_plan
from tests.e2e._snapshots import snapshot
from tests.e2e._workspaces import add_member, assert_error, data_of, new_workspace
from tests.factories import User, make_admin, register

Route = tuple[str, str]
Params = dict[str, Any]

# --- the classification of every route ---------------------------------------------------------

PUBLIC: set[Route] = {
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("GET", "/api/v1/version"),
    ("GET", "/api/v1/idempotency-tokens"),
    ("POST", "/api/v1/invocations"),  # the gateway: its own credentials (test_gateway_*)
}

# A signed-in person, whatever their roles; a ws- key gets 403 `workspace_key_not_allowed`.
PERSON: set[Route] = {
    ("POST", "/api/v1/auth/logout"),
    ("GET", "/api/v1/user/profile"),
    ("PATCH", "/api/v1/user/profile"),
    ("POST", "/api/v1/user/password"),
    ("GET", "/api/v1/user/sessions"),
    ("DELETE", "/api/v1/user/sessions/{session_id}"),
    ("GET", "/api/v1/user/settings"),
    ("PUT", "/api/v1/user/settings"),
    ("GET", "/api/v1/user/settings/apps/{appId}"),
    ("GET", "/api/v1/user/settings/apps/{appId}/{key}"),
    ("PUT", "/api/v1/user/settings/apps/{appId}/{key}"),
    ("DELETE", "/api/v1/user/settings/apps/{appId}/{key}"),
    ("GET", "/api/v1/workspaces"),
    ("POST", "/api/v1/workspaces"),
}

# Platform administrators: 403 `admin_required` for anyone else, `workspace_key_not_allowed`
# for keys (even a platform administrator's).
PLATFORM_ADMIN: set[Route] = {
    ("GET", "/api/v1/admin/users"),
    ("GET", "/api/v1/admin/users/{user_id}"),
    ("PATCH", "/api/v1/admin/users/{user_id}"),
    ("DELETE", "/api/v1/admin/users/{user_id}"),
    ("GET", "/api/v1/admin/plans"),
    ("POST", "/api/v1/admin/plans"),
    ("GET", "/api/v1/admin/plans/{plan_id}"),
    ("PATCH", "/api/v1/admin/plans/{plan_id}"),
    ("DELETE", "/api/v1/admin/plans/{plan_id}"),
    ("PUT", "/api/v1/admin/workspaces/{workspace_id}/plan"),
    ("GET", "/api/v1/admin/pricing"),
    ("PUT", "/api/v1/admin/pricing/{step_type}"),
    ("GET", "/api/v1/admin/quota-hits"),
    ("GET", "/api/v1/admin/wallets"),
    ("POST", "/api/v1/admin/wallets/{workspace_id}/credits"),
    ("GET", "/api/v1/admin/withdrawals"),
    ("PATCH", "/api/v1/admin/withdrawals/{withdrawal_id}"),
}

# Reads of the current workspace open to every member (and to ws- keys of any role).
VIEWER_READS: set[Route] = {
    ("GET", "/api/v1/apps"),
    ("GET", "/api/v1/apps/{app_id}"),
    ("GET", "/api/v1/apps/{app_id}/api-groups"),
    ("GET", "/api/v1/apps/{app_id}/apis"),
    ("GET", "/api/v1/apps/{app_id}/apis/{api_id}"),
    ("GET", "/api/v1/apps/{app_id}/docs"),
    ("GET", "/api/v1/apps/{app_id}/export"),
    ("GET", "/api/v1/apps/{app_id}/openapi.json"),
    ("GET", "/api/v1/apps/{app_id}/traffic-limits"),
    ("GET", "/api/v1/apps/{app_id}/user-rights"),
    ("GET", "/api/v1/apps/{app_id}/versions"),
    ("GET", "/api/v1/apps/{app_id}/versions/{version}"),
    ("GET", "/api/v1/datasets"),
    ("GET", "/api/v1/datasets/{dataset_id}"),
    ("GET", "/api/v1/datasets/{dataset_id}/records"),
    ("GET", "/api/v1/datasets/{dataset_id}/records/{record_id}"),
    ("GET", "/api/v1/files"),
    ("GET", "/api/v1/files/{file_id}"),
    ("GET", "/api/v1/subscriptions"),
    ("GET", "/api/v1/subscriptions/{subscription_id}"),
    ("GET", "/api/v1/wallets"),
    ("GET", "/api/v1/ledger-entries"),
    ("GET", "/api/v1/earnings"),
    ("GET", "/api/v1/redemptions"),
    ("GET", "/api/v1/withdrawals"),
    ("GET", "/api/v1/request-logs"),
    ("GET", "/api/v1/usage/calls"),
    ("GET", "/api/v1/usage/spend"),
    ("GET", "/api/v1/usage/earnings"),
    ("GET", "/api/v1/user/plans"),
    ("GET", "/api/v1/workspaces/{workspace_id}"),
    ("GET", "/api/v1/workspaces/{workspace_id}/members"),
}

# The owner only (separate test: they end the workspace's life as the matrix knows it).
OWNER_ONLY: set[Route] = {
    ("DELETE", "/api/v1/workspaces/{workspace_id}"),
    ("POST", "/api/v1/workspaces/{workspace_id}/transfer"),
}

# Served outside the envelope and the management API's auth (DESIGN.md §3).
UNAUTHENTICATED_PAGES = {"/docs", "/docs/oauth2-redirect", "/redoc", "/healthz", "/readyz"}
UNAUTHENTICATED_PAGES |= {"/metrics", "/openapi.json"}


# --- the world the matrix runs in --------------------------------------------------------------

SECRET_VALUE = "s3cret-value-never-shown"
NOTES = [{"name": "text", "type": "string", "required": True}]
SET_STEP = [{"id": "hi", "type": "set", "value": "hello"}]
_seq = count(1)


@dataclass
class World:
    """A team workspace (on a roomy plan) with one member per role, ws- keys whose role is
    capped below their creator's or whose creator was demoted, and one of everything."""

    app: FastAPI
    client: AsyncClient
    workspace_id: str
    people: dict[str, User]
    keys: dict[str, str]  # name -> secret
    params: Params
    stranger: User
    platform_admin: User

    def headers(self, actor: str) -> dict[str, str]:
        if actor in self.keys:
            return {"X-Api-Key": self.keys[actor]}
        return in_workspace(self.people[actor], self.workspace_id)

    @property
    def owner(self) -> dict[str, str]:
        return self.headers("owner")

    async def post(self, path: str, body: Any) -> Any:
        return data_of(await self.client.post(path, json=body, headers=self.owner))


async def _world(app: FastAPI, client: AsyncClient) -> World:
    owner = await register(client)
    platform_admin = await make_admin(app, client)
    workspace_id = await new_workspace(client, owner, "Matrix")
    await on_plan(client, platform_admin, workspace_id, code="roomy", members=50, apps=50)
    people = {"owner": owner}
    for role in ("admin", "editor", "viewer"):
        people[role] = await register(client)
        await add_member(client, owner, workspace_id, people[role], role)
    people["demoted"] = await register(client)
    await add_member(client, owner, workspace_id, people["demoted"], "admin")

    def as_(name: str) -> dict[str, str]:
        return in_workspace(people[name], workspace_id)

    keys = {
        "admin key": (await create_key(client, as_("owner"), type="ws", role="admin"))[1],
        "editor key": (await create_key(client, as_("admin"), type="ws", role="editor"))[1],
        "viewer key": (await create_key(client, as_("admin"), type="ws", role="viewer"))[1],
        "demoted key": (await create_key(client, as_("demoted"), type="ws", role="admin"))[1],
    }
    # The demoted member's key is used (and cached) while they are admin; then they are demoted.
    data_of(await client.get("/api/v1/apps", headers={"X-Api-Key": keys["demoted key"]}))
    demoted = await client.patch(
        f"/api/v1/workspaces/{workspace_id}/members/{people['demoted'].account_id}",
        json={"role": "viewer"},
        headers=owner.headers,
    )
    assert data_of(demoted)["role"] == "viewer"

    world = World(
        app, client, workspace_id, people, keys, {}, await register(client), platform_admin
    )
    app_id = await new_app(
        client, as_("owner"), "Team app", visibility="public", secrets={"mail": SECRET_VALUE}
    )
    dataset = await world.post(
        "/api/v1/datasets", {"appId": app_id, "name": "notes", "fields": NOTES}
    )
    record = await world.post(f"/api/v1/datasets/{dataset['id']}/records", {"text": "one"})
    api_id = await new_api(client, as_("owner"), app_id, "hello", steps=SET_STEP, price=100)
    await world.post(f"/api/v1/apps/{app_id}/versions", {"bump": "major"})
    subscription = await world.post("/api/v1/subscriptions", {"appId": app_id})
    key_id, _ = await create_key(client, as_("owner"), type="app", appId=app_id)
    uploaded = await client.post(
        "/api/v1/files", files={"file": ("a.txt", b"abc", "text/plain")}, headers=as_("owner")
    )
    await world.post(
        f"/api/v1/apps/{app_id}/user-rights", {"userId": "u1", "target": "t", "rights": ["r"]}
    )
    # A consumer's call earns the team RU, so redemptions and withdrawals can succeed.
    consumer = await register(client)
    _, secret = await app_key(client, consumer, app_id)
    data_of(await call(client, secret, app_id, "hello"))
    world.params = {
        "workspace_id": workspace_id,
        "app_id": app_id,
        "api_id": api_id,
        "version": "1.0.0",
        "dataset_id": dataset["id"],
        "record_id": record["id"],
        "subscription_id": subscription["id"],
        "key_id": key_id,
        "file_id": data_of(uploaded)["id"],
    }
    return world


# --- fresh targets, made by the owner, for routes that consume theirs --------------------------

Prepare = Callable[[World], Awaitable[Params]]


async def _fresh_api(w: World) -> Params:
    body = {"api": f"spare{next(_seq)}", "steps": SET_STEP}
    return {"api_id": (await w.post(f"/api/v1/apps/{w.params['app_id']}/apis", body))["id"]}


async def _fresh_dataset(w: World) -> Params:
    body = {"appId": w.params["app_id"], "name": f"spare{next(_seq)}", "fields": NOTES}
    dataset_id = (await w.post("/api/v1/datasets", body))["id"]
    read = await w.client.get(f"/api/v1/datasets/{dataset_id}", headers=w.owner)
    return {"dataset_id": dataset_id, "If-Match": read.headers["ETag"]}


async def _fresh_record(w: World) -> Params:
    path = f"/api/v1/datasets/{w.params['dataset_id']}/records"
    return {"record_id": (await w.post(path, {"text": "spare"}))["id"]}


async def _fresh_file(w: World) -> Params:
    response = await w.client.post(
        "/api/v1/files", files={"file": ("b.txt", b"spare", "text/plain")}, headers=w.owner
    )
    return {"file_id": data_of(response)["id"]}


async def _fresh_public_app(w: World) -> Params:
    """A public app of another workspace, not yet enabled by the team."""
    provider = await register(w.client)
    return {"other_app": await new_app(w.client, provider.headers, "Other", visibility="public")}


async def _fresh_subscription(w: World) -> Params:
    other = (await _fresh_public_app(w))["other_app"]
    return {"subscription_id": (await w.post("/api/v1/subscriptions", {"appId": other}))["id"]}


async def _fresh_app(w: World) -> Params:
    return {"app_id": await new_app(w.client, w.owner, f"Spare {next(_seq)}")}


async def _fresh_key(w: World) -> Params:
    return {"key_id": (await create_key(w.client, w.owner, type="ws", role="viewer"))[0]}


async def _fresh_account(w: World) -> Params:
    return {"email": (await register(w.client)).email}


async def _fresh_member(w: World) -> Params:
    member = await register(w.client)
    await add_member(w.client, w.people["owner"], w.workspace_id, member, "viewer")
    return {"account_id": member.account_id}


async def _granted(w: World) -> Params:
    body = {"userId": "u2", "target": "t", "rights": ["r"]}
    await w.post(f"/api/v1/apps/{w.params['app_id']}/user-rights", body)
    return {}


@dataclass(frozen=True)
class Case:
    """One route: the least role that may use it; a body built from the case's parameters."""

    method: str
    path: str
    minimum: str  # "editor" | "admin"
    body: Callable[[Params], Any] | None = None
    prepare: Prepare | None = None
    query: str = ""
    files: bool = False
    keys: bool = True  # False: ws- keys are refused whatever their role
    success: int = 200  # what the minimum role gets (a 409 still shows the role check passed)

    @property
    def route(self) -> Route:
        return (self.method, self.path)


def _const(body: Any) -> Callable[[Params], Any]:
    return lambda _params: body


def _named(prefix: str, **extra: Any) -> Callable[[Params], Any]:
    return lambda params: {"name": f"{prefix}{next(_seq)}", **extra}


IMPORT_DOC = {
    "format": "apiforge-app",
    "formatVersion": 1,
    "app": {"name": "Imported", "secretNames": []},
    "collections": [],
    "apis": [],
    "versions": [],
}

CASES: list[Case] = [
    # builder: viewers read, editors change, admins delete (docs/builder.md "Apps")
    Case("POST", "/api/v1/apps", "editor", _named("App ")),
    Case("PATCH", "/api/v1/apps/{app_id}", "editor", _const({"secrets": {"mail": "stolen"}})),
    Case("DELETE", "/api/v1/apps/{app_id}", "admin", prepare=_fresh_app),
    # the app's token signing secret is managed as its keys are: admins (docs/builder.md)
    Case(
        "POST", "/api/v1/apps/{app_id}/signing-secret/rotate", "admin", _const({"graceSeconds": 60})
    ),
    Case("POST", "/api/v1/apps/import", "editor", _const(IMPORT_DOC)),
    Case(
        "POST",
        "/api/v1/apps/{app_id}/apis",
        "editor",
        lambda p: {"api": f"made{next(_seq)}", "steps": SET_STEP},
    ),
    Case("PATCH", "/api/v1/apps/{app_id}/apis/{api_id}", "editor", _const({"price": 7})),
    Case("DELETE", "/api/v1/apps/{app_id}/apis/{api_id}", "editor", prepare=_fresh_api),
    Case(
        "PUT", "/api/v1/apps/{app_id}/traffic-limits", "editor", _const({"ipPerMinute": 1000})
    ),  # docs/traffic.md: editor or above
    Case(
        "POST",
        "/api/v1/apps/{app_id}/user-rights",
        "editor",
        _const({"userId": "u9", "target": "t", "rights": ["all"]}),
    ),
    Case(
        "DELETE",
        "/api/v1/apps/{app_id}/user-rights",
        "editor",
        prepare=_granted,
        query="?userId=u2&target=t",
    ),
    Case("POST", "/api/v1/apps/{app_id}/versions", "editor", _const({"bump": "minor"})),
    Case("PATCH", "/api/v1/apps/{app_id}/versions/{version}", "editor", _const({"deprecated": 1})),
    Case("PUT", "/api/v1/apps/{app_id}/versions/{version}", "editor", success=409),
    Case("DELETE", "/api/v1/apps/{app_id}/versions/{version}", "editor", success=409),
    # collections and records
    Case(
        "POST",
        "/api/v1/datasets",
        "editor",
        lambda p: {"appId": p["app_id"], "name": f"made{next(_seq)}", "fields": NOTES},
    ),
    Case(
        "PUT",
        "/api/v1/datasets/{dataset_id}",
        "editor",
        _const({"name": "renamed", "fields": NOTES}),
        prepare=_fresh_dataset,
    ),
    Case("DELETE", "/api/v1/datasets/{dataset_id}", "editor", prepare=_fresh_dataset),
    Case("POST", "/api/v1/datasets/{dataset_id}/records", "editor", _const({"text": "new"})),
    Case(
        "PATCH",
        "/api/v1/datasets/{dataset_id}/records/{record_id}",
        "editor",
        _const({"text": "patched"}),
        prepare=_fresh_record,
    ),
    Case(
        "PUT",
        "/api/v1/datasets/{dataset_id}/records/{record_id}",
        "editor",
        _const({"text": "replaced", "version": 1}),
        prepare=_fresh_record,
    ),
    Case(
        "DELETE",
        "/api/v1/datasets/{dataset_id}/records/{record_id}",
        "editor",
        prepare=_fresh_record,
    ),
    # files (docs/files.md: editor+ for uploads and deletions)
    Case("POST", "/api/v1/files", "editor", files=True),
    Case("POST", "/api/v1/multiple-files", "editor", files=True),
    Case("DELETE", "/api/v1/files/{file_id}", "editor", prepare=_fresh_file),
    # subscriptions and keys (decisions.md: editors create, admins revoke; keys never manage keys)
    Case(
        "POST",
        "/api/v1/subscriptions",
        "editor",
        lambda p: {"appId": p["other_app"]},
        prepare=_fresh_public_app,
    ),
    Case(
        "PATCH",
        "/api/v1/subscriptions/{subscription_id}",
        "editor",
        _const({"enabled": 0}),
        prepare=_fresh_subscription,
    ),
    Case(
        "DELETE",
        "/api/v1/subscriptions/{subscription_id}",
        "admin",
        prepare=_fresh_subscription,
    ),
    Case("POST", "/api/v1/api-keys", "editor", _named("k", type="ws", role="viewer"), keys=False),
    Case("GET", "/api/v1/api-keys", "editor"),
    Case("GET", "/api/v1/api-keys/{key_id}", "editor"),
    Case(
        "PATCH",
        "/api/v1/api-keys/{key_id}",
        "admin",
        _const({"name": "renamed"}),
        prepare=_fresh_key,
        keys=False,
    ),
    Case("DELETE", "/api/v1/api-keys/{key_id}", "admin", prepare=_fresh_key, keys=False),
    # workflows (decisions.md: the editor role)
    Case(
        "POST",
        "/api/v1/workflows",
        "editor",
        lambda p: {"appId": p["app_id"], "steps": SET_STEP},
    ),
    # money out of a workspace needs its admin (docs/billing.md)
    Case("POST", "/api/v1/redemptions", "admin", _const({"amount": 1})),
    Case("POST", "/api/v1/withdrawals", "admin", _const({"amount": 1, "note": "payout"})),
    # the workspace and its members (decisions.md: in person only)
    Case("PATCH", "/api/v1/workspaces/{workspace_id}", "admin", _const({"name": "Renamed"})),
    Case(
        "POST",
        "/api/v1/workspaces/{workspace_id}/members",
        "admin",
        lambda p: {"email": p["email"], "role": "viewer"},
        prepare=_fresh_account,
        keys=False,
    ),
    Case(
        "PATCH",
        "/api/v1/workspaces/{workspace_id}/members/{account_id}",
        "admin",
        _const({"role": "editor"}),
        prepare=_fresh_member,
        keys=False,
    ),
    Case(
        "DELETE",
        "/api/v1/workspaces/{workspace_id}/members/{account_id}",
        "admin",
        prepare=_fresh_member,
        keys=False,
    ),
]

# Who is one rank short of each minimum: the member with the role below, a key whose own role
# is below (its creator's is not), and the key of a member demoted to viewer since making it.
REFUSED = {
    "editor": ("viewer", "viewer key", "demoted key"),
    "admin": ("editor", "editor key", "demoted key"),
}


# --- helpers ---------------------------------------------------------------------------------


# Tables a refused request may still touch: sign-ins, idempotency bookkeeping, logs of calls.
def _changes(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, Any]:
    return {
        name: {
            "gone": sorted(set(rows) - set(after[name])),
            "new": sorted(set(after[name]) - set(rows)),
        }
        for name, rows in before.items()
        if rows != after[name]
    }


async def _send(w: World, case: Case, params: Params, headers: dict[str, str]) -> Response:
    path = case.path.format(**params) + case.query
    extra = {"If-Match": params["If-Match"]} if "If-Match" in params else {}
    if case.files:
        form = [("files" if "multiple" in case.path else "file", ("c.txt", b"new", "text/plain"))]
        return await w.client.post(path, files=form, headers={**headers, **extra})
    body = case.body(params) if case.body is not None else None
    return await w.client.request(case.method, path, json=body, headers={**headers, **extra})


def _openapi_routes(app: FastAPI) -> set[Route]:
    methods = {"get", "post", "put", "patch", "delete"}
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method in methods and path not in UNAUTHENTICATED_PAGES
    }


# The role an operation's summary announces on /docs (first marker found wins).
SUMMARY_ROLES = [
    ("(administrators)", "platform"),
    ("(admin)", "platform"),
    ("editor", "editor"),
    ("admin", "admin"),
    ("owner", "owner"),
]


def _summary_role(summary: str) -> str | None:
    for marker, role in SUMMARY_ROLES:
        if marker in summary:
            return role
    return None


# --- tests -------------------------------------------------------------------------------------


async def test_every_route_has_a_documented_minimum(app: FastAPI) -> None:
    classified = [PUBLIC, PERSON, PLATFORM_ADMIN, VIEWER_READS, OWNER_ONLY]
    matrix = {case.route: case.minimum for case in CASES}
    every = set().union(*classified) | set(matrix)
    assert sum(len(group) for group in classified) + len(matrix) == len(every), "classified twice"
    assert _openapi_routes(app) == every
    # The role a route's own summary announces is the one the matrix holds it to.
    expected = {
        **dict.fromkeys(PLATFORM_ADMIN, "platform"),
        **dict.fromkeys(OWNER_ONLY, "owner"),
        **matrix,
    }
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            named = _summary_role(operation.get("summary", ""))
            if named is not None and (method.upper(), path) in every:
                assert expected.get((method.upper(), path)) == named, (method, path, named)


async def test_one_rank_below_the_minimum_is_refused_and_changes_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    w = await _world(app, client)
    for case in CASES:
        params = {**w.params, **(await case.prepare(w) if case.prepare else {})}
        for actor in REFUSED[case.minimum]:
            before = await snapshot(app)
            response = await _send(w, case, params, w.headers(actor))
            where = f"{case.method} {case.path} as {actor}"
            if actor.endswith("key") and not case.keys:
                assert_error(response, 403, "workspace_key_not_allowed")
            else:
                data = assert_error(response, 403, "insufficient_role")
                assert data["requiredRole"] == case.minimum, where
            assert _changes(before, await snapshot(app)) == {}, where
        if case.method in ("PUT", "PATCH", "DELETE") and not case.files:
            # The same write through `POST` + `X-HTTP-Method-Override` is the same refusal.
            person = REFUSED[case.minimum][0]
            overridden = {**w.headers(person), "X-HTTP-Method-Override": case.method}
            response = await _send(w, replace(case, method="POST"), params, overridden)
            assert assert_error(response, 403, "insufficient_role")["requiredRole"] == case.minimum
        if case.method == "GET":
            head = await client.head(case.path.format(**params), headers=w.headers("viewer"))
            assert (head.status_code, head.content) == (403, b""), case.route
        if not case.keys:  # not a matter of rank: even the strongest key is refused
            before = await snapshot(app)
            response = await _send(w, case, params, w.headers("admin key"))
            assert_error(response, 403, "workspace_key_not_allowed")
            assert _changes(before, await snapshot(app)) == {}, case.route
        done = await _send(w, case, params, w.headers(case.minimum))
        assert done.status_code == case.success, (case.route, done.text)


async def test_workspace_keys_act_at_their_role_up_to_the_minimum(
    app: FastAPI, client: AsyncClient
) -> None:
    """The key side of the matrix: a key at the minimum role passes where a person would."""
    w = await _world(app, client)
    for case in CASES:
        if not case.keys:
            continue
        params = {**w.params, **(await case.prepare(w) if case.prepare else {})}
        done = await _send(w, case, params, w.headers(f"{case.minimum} key"))
        assert done.status_code == case.success, (case.route, done.text)


async def test_other_tenants_find_nothing_to_change(app: FastAPI, client: AsyncClient) -> None:
    """Existence is hidden: another tenant's owner naming the team's workspace, or the team's
    ids from their own workspace, gets a 404 and changes nothing."""
    w = await _world(app, client)
    stranger_key = (await create_key(client, w.stranger.headers, type="ws", role="admin"))[1]
    as_member_elsewhere = {"owner": w.stranger.headers, "key": {"X-Api-Key": stranger_key}}
    for case in CASES:
        params = {**w.params, **(await case.prepare(w) if case.prepare else {})}
        for name, own in as_member_elsewhere.items():
            before = await snapshot(app)
            naming_the_team = {**own, "X-Workspace-Id": w.workspace_id}
            response = await _send(w, case, params, naming_the_team)
            if name == "key" and not case.keys and "{workspace_id}" not in case.path:
                assert_error(response, 403, "workspace_key_not_allowed")
            else:
                assert_error(response, 404, "workspace_not_found")
            foreign_ids = "{" in case.path or case.path in ("/api/v1/datasets", "/api/v1/workflows")
            if foreign_ids and (case.keys or name == "owner"):
                response = await _send(w, case, params, own)
                assert response.status_code == 404, (case.route, name, response.text)
            assert _changes(before, await snapshot(app)) == {}, (case.route, name)


async def test_every_member_and_key_reads_the_workspace_and_strangers_get_404(
    app: FastAPI, client: AsyncClient
) -> None:
    w = await _world(app, client)
    stranger_key = (await create_key(client, w.stranger.headers, type="ws", role="admin"))[1]
    for method, path in sorted(VIEWER_READS):
        url = path.format(**w.params)
        for actor in ("viewer", "viewer key", "demoted key"):
            response = await client.request(method, url, headers=w.headers(actor))
            assert response.status_code == 200, (path, actor, response.text)
        for outsider in (
            in_workspace(w.stranger, w.workspace_id),
            {"X-Api-Key": stranger_key, "X-Workspace-Id": w.workspace_id},
        ):
            response = await client.request(method, url, headers=outsider)
            assert_error(response, 404, "workspace_not_found")
    # What a viewer reads of the app never holds a secret's value (only its name).
    for url in ("/api/v1/apps/{app_id}", "/api/v1/apps/{app_id}/export"):
        response = await client.get(url.format(**w.params), headers=w.headers("viewer"))
        assert SECRET_VALUE not in response.text
        assert "mail" in response.text
    # Keys are listed to editors and editor keys, never with a secret.
    for actor in ("editor", "editor key"):
        listed = await client.get("/api/v1/api-keys?pageSize=100", headers=w.headers(actor))
        assert data_of(listed)["totalCount"] == 5
        assert not any(secret in listed.text for secret in w.keys.values())


async def test_workspace_keys_are_refused_on_account_and_platform_routes(
    app: FastAPI, client: AsyncClient
) -> None:
    """Even an admin key made by a platform administrator in their own workspace."""
    w = await _world(app, client)
    admin = w.platform_admin
    key = (await create_key(client, admin.headers, type="ws", role="admin"))[1]
    params = {
        "appId": w.params["app_id"],
        "key": "theme",
        "user_id": admin.account_id,
        "plan_id": "01jgq4x7m2c9v5t8r3n6p1k0hd",
        "workspace_id": admin.workspace_id,
        "step_type": "set",
        "withdrawal_id": "01jgq4x7m2c9v5t8r3n6p1k0hd",
        "session_id": "01jgq4x7m2c9v5t8r3n6p1k0hd",
    }
    for method, path in sorted(PERSON | PLATFORM_ADMIN):
        before = await snapshot(app)
        body: dict[str, Any] | None = None if method in ("GET", "DELETE") else {}
        response = await client.request(
            method, path.format(**params), json=body, headers={"X-Api-Key": key}
        )
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["data"]["error"] == "workspace_key_not_allowed", (method, path)
        assert _changes(before, await snapshot(app)) == {}, (method, path)
    # Members, however high their role, are no platform administrators.
    for method, path in sorted(PLATFORM_ADMIN):
        before = await snapshot(app)
        body = None if method in ("GET", "DELETE") else {}
        response = await client.request(
            method, path.format(**params), json=body, headers=w.headers("owner")
        )
        assert_error(response, 403, "admin_required")
        assert _changes(before, await snapshot(app)) == {}, (method, path)


async def test_only_the_owner_deletes_or_hands_over_the_workspace(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    workspace_id = await new_workspace(client, owner)
    admin = await register(client)
    await add_member(client, owner, workspace_id, admin, "admin")
    key = (await create_key(client, in_workspace(owner, workspace_id), type="ws", role="admin"))[1]
    base = f"/api/v1/workspaces/{workspace_id}"
    transfer = {"accountId": admin.account_id}
    before = await snapshot(app)
    refused = await client.delete(base, headers=admin.headers)
    assert assert_error(refused, 403, "insufficient_role")["requiredRole"] == "owner"
    refused = await client.post(f"{base}/transfer", json=transfer, headers=admin.headers)
    assert assert_error(refused, 403, "insufficient_role")["requiredRole"] == "owner"
    refused = await client.delete(base, headers={"X-Api-Key": key})  # keys are never owners
    assert assert_error(refused, 403, "insufficient_role")["requiredRole"] == "owner"
    refused = await client.post(f"{base}/transfer", json=transfer, headers={"X-Api-Key": key})
    assert_error(refused, 403, "workspace_key_not_allowed")
    assert _changes(before, await snapshot(app)) == {}

    data_of(await client.post(f"{base}/transfer", json=transfer, headers=owner.headers))
    refused = await client.delete(base, headers=owner.headers)  # now an admin
    assert assert_error(refused, 403, "insufficient_role")["requiredRole"] == "owner"
    data_of(await client.delete(base, headers=admin.headers))
