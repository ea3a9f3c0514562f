"""Review: a cross-tenant sweep driven by the management app's own OpenAPI document.

Workspace A (its owner, a member, a second team workspace) holds one of every resource the
management API has: an app with secrets, an API, a published version, a collection with records,
a file, a subscription, `ws-` and `app-` keys, user-right grants, traffic limits, an app setting,
a plan of its own, a sign-in session. B, the owner of another workspace with the same kinds of
resources, then calls every operation of every route of `app.openapi()["paths"]`:

1. every route with a path parameter, with A's real ids substituted (alone, and mixed with B's own
   ids, e.g. B's dataset and A's record), and with write methods repeated under `If-Match`;
2. every operation that takes `X-Workspace-Id`, with A's workspace in that header;
3. the operations that take ids in the body or query string (`appId`, `targetWorkspaceId`, ...).

Tenant data of another workspace is the same 404 as an id that never existed (docs/decisions.md
"Current workspace", docs/files.md, docs/idempotency.md "A resource of another workspace is 404
whatever the If-Match"): each refusal is the standard error envelope, and has the status and
reason of the same request with guessed ids in A's places. Afterwards every durable row of the
database and every stored file is what it was, and nothing B was answered names A's data.

`test_sweep_knows_every_route` keeps the sweep honest: a new route with a path parameter, a path
parameter it cannot fill, or an operation with a body it has no body for fails it, until the route
is added to `ROUTES` (or, with a reason, to the allow-lists below).
"""

import hashlib
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.tools.ids import new_id
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import create_key, subscribe
from tests.e2e._snapshots import snapshot
from tests.e2e._workspaces import add_member, data_of, new_workspace
from tests.factories import User, make_admin, register

V1 = "/api/v1"
METHODS = ("get", "put", "post", "patch", "delete")
WRITES = {"put", "post", "patch", "delete"}
HEADER = "X-Workspace-Id"

# What B must get for A's ids in a route's path:
# - "tenant": workspace data, 404 like an unknown id (never 403: that would confirm it exists);
# - "account": rows of the signed-in account (sessions, app settings): B's own, so A's ids name
#   nothing and answer 404 like unknown ones;
# - "admin": platform administration, 403 `admin_required` for a non-administrator whatever the
#   ids (these are not workspace-scoped, so A's ids there are just ids).
Scope = Literal["tenant", "account", "admin"]

ROUTES: dict[str, Scope] = {
    f"{V1}/user/sessions/{{session_id}}": "account",
    f"{V1}/user/settings/apps/{{appId}}": "account",
    f"{V1}/user/settings/apps/{{appId}}/{{key}}": "account",
    f"{V1}/workspaces/{{workspace_id}}": "tenant",
    f"{V1}/workspaces/{{workspace_id}}/members": "tenant",
    f"{V1}/workspaces/{{workspace_id}}/members/{{account_id}}": "tenant",
    f"{V1}/workspaces/{{workspace_id}}/transfer": "tenant",
    f"{V1}/admin/plans/{{plan_id}}": "admin",
    f"{V1}/admin/workspaces/{{workspace_id}}/plan": "admin",
    f"{V1}/admin/users/{{user_id}}": "admin",
    f"{V1}/admin/pricing/{{step_type}}": "admin",
    f"{V1}/admin/wallets/{{workspace_id}}/credits": "admin",
    f"{V1}/admin/withdrawals/{{withdrawal_id}}": "admin",
    f"{V1}/apps/{{app_id}}": "tenant",
    f"{V1}/apps/{{app_id}}/apis": "tenant",
    f"{V1}/apps/{{app_id}}/api-groups": "tenant",
    f"{V1}/apps/{{app_id}}/apis/{{api_id}}": "tenant",
    f"{V1}/apps/{{app_id}}/versions": "tenant",
    f"{V1}/apps/{{app_id}}/versions/{{version}}": "tenant",
    f"{V1}/apps/{{app_id}}/export": "tenant",
    f"{V1}/apps/{{app_id}}/openapi.json": "tenant",  # A's app is private (public: see docs)
    f"{V1}/apps/{{app_id}}/docs": "tenant",
    f"{V1}/apps/{{app_id}}/user-rights": "tenant",
    f"{V1}/apps/{{app_id}}/traffic-limits": "tenant",
    f"{V1}/apps/{{app_id}}/signing-secret/rotate": "tenant",
    f"{V1}/datasets/{{dataset_id}}": "tenant",
    f"{V1}/datasets/{{dataset_id}}/records": "tenant",
    f"{V1}/datasets/{{dataset_id}}/records/{{record_id}}": "tenant",
    f"{V1}/files/{{file_id}}": "tenant",
    f"{V1}/subscriptions/{{subscription_id}}": "tenant",
    f"{V1}/api-keys/{{key_id}}": "tenant",
}

# Operations of `ROUTES` not swept, each with why (the allow-list of legitimate 2xx answers).
NOT_SWEPT: dict[tuple[str, str], str] = {
    # Account-scoped: stores the caller's own setting under any appId string (docs: app ids are
    # free-form there); B's PUT writes B's row, never A's. Checked separately below.
    ("put", f"{V1}/user/settings/apps/{{appId}}/{{key}}"): "creates the caller's own setting",
    # Account-scoped: the caller's own settings under that appId string, an empty page for B.
    ("get", f"{V1}/user/settings/apps/{{appId}}"): "lists the caller's own settings",
}

# Path parameters that are labels, not some tenant's ids: the values to sweep.
LABELS: dict[str, list[str]] = {
    "version": ["1.0.0", "latest", "dev"],
    "key": ["theme"],
    "step_type": ["getMany"],
}

# Operations with a request body: a valid one, so the route gets past validation to its tenancy
# check (a 400 would hide what the route does with A's ids). Multipart bodies are ("files", ...).
MARKER = "zz-a-only-7c1f"  # in A's names and values: never in an answer to B
FIELDS = [{"name": "title", "type": "string", "required": True}]
STEPS = [{"id": "posts", "type": "getMany", "collection": "posts", "pageSize": 20}]
BODIES: dict[tuple[str, str], Any] = {
    ("patch", f"{V1}/workspaces/{{workspace_id}}"): {"name": "Stolen"},
    ("post", f"{V1}/workspaces/{{workspace_id}}/members"): {"email": "@Bemail", "role": "admin"},
    ("patch", f"{V1}/workspaces/{{workspace_id}}/members/{{account_id}}"): {"role": "viewer"},
    ("post", f"{V1}/workspaces/{{workspace_id}}/transfer"): {"accountId": "@B"},
    ("patch", f"{V1}/admin/plans/{{plan_id}}"): {"name": "Stolen"},
    ("put", f"{V1}/admin/workspaces/{{workspace_id}}/plan"): {"planId": "@plan"},
    ("patch", f"{V1}/admin/users/{{user_id}}"): {"status": "disabled"},
    ("put", f"{V1}/admin/pricing/{{step_type}}"): {"cost": 1},
    ("post", f"{V1}/admin/wallets/{{workspace_id}}/credits"): {"amount": 5},
    ("patch", f"{V1}/admin/withdrawals/{{withdrawal_id}}"): {"status": "approved"},
    ("put", f"{V1}/user/settings/apps/{{appId}}/{{key}}"): {"value": "stolen"},
    ("patch", f"{V1}/apps/{{app_id}}"): {"name": "Stolen", "visibility": "public"},
    ("post", f"{V1}/apps/{{app_id}}/apis"): {"api": "planted", "steps": []},
    ("patch", f"{V1}/apps/{{app_id}}/apis/{{api_id}}"): {"name": "Stolen", "price": 5},
    ("post", f"{V1}/apps/{{app_id}}/versions"): {"bump": "major", "force": True},
    ("patch", f"{V1}/apps/{{app_id}}/versions/{{version}}"): {"deprecated": True},
    ("post", f"{V1}/apps/{{app_id}}/user-rights"): {"userId": "u1", "rights": ["admin"]},
    ("put", f"{V1}/apps/{{app_id}}/traffic-limits"): {"ipPerMinute": 1},
    ("post", f"{V1}/apps/{{app_id}}/signing-secret/rotate"): {"graceSeconds": 60},
    ("put", f"{V1}/datasets/{{dataset_id}}"): {"name": "stolen", "fields": FIELDS},
    ("post", f"{V1}/datasets/{{dataset_id}}/records"): {"title": "planted"},
    ("put", f"{V1}/datasets/{{dataset_id}}/records/{{record_id}}"): {"title": "stolen"},
    ("patch", f"{V1}/datasets/{{dataset_id}}/records/{{record_id}}"): {"title": "stolen"},
    ("patch", f"{V1}/subscriptions/{{subscription_id}}"): {"enabled": False},
    ("patch", f"{V1}/api-keys/{{key_id}}"): {"name": "stolen", "allowedIps": []},
    # Operations without a path parameter that take `X-Workspace-Id` (sweep 2).
    ("post", f"{V1}/apps"): {"name": "Planted"},
    ("post", f"{V1}/apps/import"): "@export",
    ("post", f"{V1}/datasets"): {"appId": "@Bapp", "name": "planted", "fields": FIELDS},
    ("post", f"{V1}/files"): ("files", {"file": ("x.txt", b"planted", "text/plain")}),
    ("post", f"{V1}/multiple-files"): ("files", {"files": ("x.txt", b"planted", "text/plain")}),
    ("post", f"{V1}/workflows"): {"appId": "@Bapp", "steps": STEPS},
    ("post", f"{V1}/subscriptions"): {"appId": "@Bapp"},
    ("post", f"{V1}/api-keys"): {"type": "ws", "name": "planted", "role": "viewer"},
    ("post", f"{V1}/redemptions"): {"amount": 1},
    ("post", f"{V1}/withdrawals"): {"amount": 1},
}

# Query parameters a route needs to get to its tenancy check.
# Query strings to send (each one a request); routes not named here get none.
QUERIES: dict[tuple[str, str], list[dict[str, str]]] = {
    ("delete", f"{V1}/apps/{{app_id}}/user-rights"): [{"userId": "u1", "target": "items"}],
    ("get", f"{V1}/apps/{{app_id}}/openapi.json"): [
        {},
        {"version": "dev"},
        {"version": "latest"},
        {"version": "1.0.0"},
    ],
    ("get", f"{V1}/apps/{{app_id}}/docs"): [{}, {"version": "dev"}, {"version": "1.0.0"}],
    ("get", f"{V1}/apps/{{app_id}}/export"): [{}, {"format": "yaml"}],
}


@dataclass
class World:
    a: User
    member: User
    b: User
    plan_id: str
    # parameter -> A's values / B's own value
    a_ids: dict[str, list[str]] = field(default_factory=dict)
    b_ids: dict[str, str] = field(default_factory=dict)
    export: bytes = b""
    b_team: str = ""  # a workspace of B's that can be handed over (a personal one can't)
    b_ws_key: str = ""  # secret of a `ws-` key of B's workspace, admin role
    public_app: str = ""  # A's public app, which B has enabled


async def build_a(client: AsyncClient, app: FastAPI) -> World:
    """A's workspaces with one of everything; B's with the same kinds of resources."""
    a = await register(client, name=f"A {MARKER}")
    member = await register(client)
    await add_member(client, a, a.workspace_id, member, "editor")
    team = await new_workspace(client, a, f"Team {MARKER}")
    await add_member(client, a, team, member, "viewer")
    admin = await make_admin(app, client)
    # A plan of A's alone: not public, so only A's workspace (put on it) may see it.
    body = {"code": "aonly", "name": f"A {MARKER}", "isPublic": False}
    plan_id = data_of(await client.post(f"{V1}/admin/plans", json=body, headers=admin.headers))[
        "id"
    ]
    moved = await client.put(
        f"{V1}/admin/workspaces/{a.workspace_id}/plan",
        json={"planId": plan_id},
        headers=admin.headers,
    )
    assert data_of(moved)["planId"] == plan_id
    b = await register(client)
    world = World(a=a, member=member, b=b, plan_id=plan_id)

    for owner in (a, b):
        h = owner.headers
        app_id = await new_app(
            client, h, f"Blog {MARKER}" if owner is a else "B blog",
            description=MARKER if owner is a else "", secrets={"token": f"s-{MARKER}"},
        )  # fmt: skip
        body = {"appId": app_id, "name": "posts", "fields": FIELDS}
        dataset_id = data_of(await client.post(f"{V1}/datasets", json=body, headers=h))["id"]
        records = [
            data_of(
                await client.post(
                    f"{V1}/datasets/{dataset_id}/records",
                    json={"title": f"{owner.email} {MARKER if owner is a else ''} {n}"},
                    headers=h,
                )
            )["id"]
            for n in range(2)
        ]
        api_id = await new_api(
            client, h, app_id, "listPosts", steps=STEPS, price=1, group="posts",
            description=MARKER if owner is a else "",
        )  # fmt: skip
        published = await client.post(
            f"{V1}/apps/{app_id}/versions", json={"bump": "major"}, headers=h
        )
        assert data_of(published)["version"] == "1.0.0"
        subscription_id = await subscribe(client, h, app_id)
        app_key_id, _ = await create_key(client, h, type="app", appId=app_id)
        ws_key_id, _ = await create_key(client, h, type="ws", role="viewer")
        upload = await client.post(
            f"{V1}/files",
            files={"file": ("a.txt", f"{owner.email} {MARKER}".encode(), "text/plain")},
            headers=h,
        )
        file_id = data_of(upload)["id"]
        grant = {"userId": "u1", "target": "posts", "rights": ["read"]}
        data_of(await client.post(f"{V1}/apps/{app_id}/user-rights", json=grant, headers=h))
        limits = {"ipPerMinute": 600, "apis": {"listPosts": {"keyPerMinute": 60}}}
        data_of(await client.put(f"{V1}/apps/{app_id}/traffic-limits", json=limits, headers=h))
        setting = {"value": f"dark {MARKER}" if owner is a else "light"}
        url = f"{V1}/user/settings/apps/{app_id}/theme"
        data_of(await client.put(url, json=setting, headers=h))
        sessions = data_of(await client.get(f"{V1}/user/sessions", headers=h))["list"]
        if owner is a:
            world.a_ids.update(
                workspace_id=[a.workspace_id, team],
                account_id=[member.account_id, a.account_id],
                app_id=[app_id],
                appId=[app_id],
                api_id=[api_id],
                dataset_id=[dataset_id],
                record_id=records,
                file_id=[file_id],
                subscription_id=[subscription_id],
                key_id=[app_key_id, ws_key_id],
                session_id=[str(s["id"]) for s in sessions],
                user_id=[a.account_id],
                plan_id=[plan_id],
                withdrawal_id=[new_id()],  # none exist; the route is for administrators only
            )
        else:
            own = {
                "workspace_id": b.workspace_id,
                "account_id": b.account_id,
                "app_id": app_id,
                "appId": app_id,
                "api_id": api_id,
                "dataset_id": dataset_id,
                "record_id": records[0],
                "file_id": file_id,
                "subscription_id": subscription_id,
                "key_id": ws_key_id,
                "session_id": sessions[0]["id"],
            }
            world.b_ids.update(own)
    exported = await client.get(f"{V1}/apps/{world.a_ids['app_id'][0]}/export", headers=a.headers)
    assert exported.status_code == 200, exported.text
    world.export = exported.content
    world.b_team = await new_workspace(client, b, "B team")
    _, world.b_ws_key = await create_key(client, b.headers, type="ws", role="admin")
    await public_app_of_a(client, world)
    return world


async def public_app_of_a(client: AsyncClient, world: World) -> None:
    """A's public app: published `listItems`, a dev-only draft, secrets and records, a grant;
    B enables it and keeps a grant of its own. Its ids join A's in the sweep."""
    h = world.a.headers
    app_id = await new_app(client, h, "Shop", visibility="public", secrets={"k": f"s-{MARKER}"})
    body = {"appId": app_id, "name": "items", "fields": FIELDS}
    dataset_id = data_of(await client.post(f"{V1}/datasets", json=body, headers=h))["id"]
    url = f"{V1}/datasets/{dataset_id}/records"
    record_id = data_of(await client.post(url, json={"title": MARKER}, headers=h))["id"]
    items = [{"id": "items", "type": "getMany", "collection": "items", "pageSize": 20}]
    api_id = await new_api(client, h, app_id, "listItems", steps=items, price=1)
    published = await client.post(f"{V1}/apps/{app_id}/versions", json={"bump": "major"}, headers=h)
    assert data_of(published)["version"] == "1.0.0"
    draft = await new_api(client, h, app_id, "draft", steps=items, price=1, description=MARKER)
    grant = {"userId": "u1", "target": f"t-{MARKER}", "rights": ["read"]}
    data_of(await client.post(f"{V1}/apps/{app_id}/user-rights", json=grant, headers=h))
    await subscribe(client, world.b.headers, app_id)
    grant = {"userId": "u2", "target": "items", "rights": ["read"]}
    rights = f"{V1}/apps/{app_id}/user-rights"
    data_of(await client.post(rights, json=grant, headers=world.b.headers))
    world.public_app = app_id
    for name, value in [
        ("app_id", app_id),
        ("appId", app_id),
        ("api_id", api_id),
        ("api_id", draft),
        ("dataset_id", dataset_id),
        ("record_id", record_id),
    ]:
        world.a_ids[name].append(value)


def spec_of(app: FastAPI) -> dict[str, Any]:
    spec: dict[str, Any] = app.openapi()
    return spec


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def has_body(op: dict[str, Any]) -> bool:
    return "requestBody" in op


def takes_workspace_header(op: dict[str, Any]) -> bool:
    return any(
        p["in"] == "header" and p["name"].lower() == HEADER.lower()
        for p in op.get("parameters", [])
    )


async def test_sweep_knows_every_route(app: FastAPI) -> None:
    """Fails on a route the sweep would silently skip: add it to `ROUTES` (and its body)."""
    spec = spec_of(app)
    with_params = {path for path in spec["paths"] if "{" in path}
    assert with_params - ROUTES.keys() == set(), "new path-parameter routes: add them to ROUTES"
    assert ROUTES.keys() - with_params == set(), "routes gone: remove them from ROUTES"
    fillable = {"workspace_id", "account_id", "app_id", "appId", "api_id", "dataset_id"}
    fillable |= {"record_id", "file_id", "subscription_id", "key_id", "session_id", "user_id"}
    fillable |= {"plan_id", "withdrawal_id", *LABELS}
    for path in with_params:
        assert set(path_params(path)) <= fillable, f"{path}: a parameter the sweep can't fill"
    for method, path, op in operations(spec):
        swept = "{" in path or takes_workspace_header(op)
        if swept and has_body(op):
            assert (method, path) in BODIES, f"{method.upper()} {path}: add a body to BODIES"
    # The workspace header is declared where the dependency is used: the sweep relies on it.
    assert takes_workspace_header(spec["paths"][f"{V1}/apps"]["get"])


@dataclass
class Call:
    method: str
    path: str  # the template, as in the OpenAPI document
    url: str
    headers: dict[str, str]
    body: Any = None
    query: dict[str, str] = field(default_factory=dict)


def resolve_body(world: World, body: Any) -> Any:
    if body == "@export":
        return ("content", world.export)
    if isinstance(body, dict):
        names = {
            "@B": world.b.account_id,
            "@Bemail": world.b.email,
            "@Bapp": world.b_ids["app_id"],
            "@plan": world.plan_id,
        }
        return {k: names.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    return body


async def send(client: AsyncClient, call: Call) -> Response:
    kwargs: dict[str, Any] = {"headers": call.headers, "params": call.query}
    body = call.body
    if isinstance(body, tuple) and body[0] == "files":
        kwargs["files"] = body[1]
    elif isinstance(body, tuple) and body[0] == "content":
        kwargs["content"] = body[1]
        kwargs["headers"] = {**call.headers, "Content-Type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    return await client.request(call.method.upper(), call.url, **kwargs)


def refusal(response: Response) -> tuple[int, str]:
    """(status, reason) of a response that must be the standard error envelope."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"code", "message", "data"}, body
    assert body["code"] == response.status_code, body
    assert isinstance(body["message"], str), body
    assert body["message"] != "success", body
    assert isinstance(body["data"], dict), body
    assert isinstance(body["data"].get("error"), str), body
    return response.status_code, body["data"]["error"]


def combos(world: World, path: str) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(values, guessed) pairs for `path`: every mix of A's ids and B's own ids with at least
    one of A's, and the same mix with a fresh guessed id in each of A's places."""
    names = path_params(path)
    choices: list[list[tuple[str, bool]]] = []
    for name in names:
        if name in LABELS:
            choices.append([(v, False) for v in LABELS[name]])
            continue
        options = [(v, True) for v in world.a_ids[name]]
        if name in world.b_ids:
            options.append((world.b_ids[name], False))
        choices.append(options)
    result = []
    for picked in itertools.product(*choices):
        if not any(is_a for _, is_a in picked):
            continue
        values = {n: v for n, (v, _) in zip(names, picked, strict=True)}
        guessed = {n: (new_id() if is_a else v) for n, (v, is_a) in zip(names, picked, strict=True)}
        result.append((values, guessed))
    return result


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


async def files_state(app: FastAPI) -> dict[str, str]:
    root = Path(app.state.settings.resolved_files_dir)
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            full = Path(directory) / name
            found[str(full.relative_to(root))] = hashlib.sha256(full.read_bytes()).hexdigest()
    return found


@dataclass
class Sweep:
    """Sends B's requests and collects what went wrong, so one run reports every route."""

    client: AsyncClient
    world: World
    who: str = "B's console sign-in"
    problems: list[str] = field(default_factory=list)
    count: int = 0

    async def refused(self, call: Call, guess: Call | None, scope: Scope) -> None:
        """`call` is refused as the same request with guessed ids is: the standard error
        envelope, 404 for tenant data (403 for administration), nothing of A's in it."""
        self.count += 1
        extra = {k: v for k, v in call.headers.items() if k != "Authorization"}
        where = f"{call.method.upper()} {call.url} {call.query or ''} {extra or ''} ({self.who})"
        response = await send(self.client, call)
        if MARKER in response.text:
            self.problems.append(f"{where}: shows A's data: {response.text[:300]}")
        if response.status_code < 400:
            self.problems.append(f"{where}: {response.status_code} {response.text[:300]}")
            return
        got = refusal(response)
        if got[0] != (403 if scope == "admin" else 404) and got[1] not in KEY_REFUSALS:
            self.problems.append(f"{where}: {got}, expected {'403' if scope == 'admin' else 404}")
        if guess is None:
            return
        guessed = refusal(await send(self.client, guess))
        if guessed != got:
            self.problems.append(f"{where}: {got}, but {guessed} for guessed ids")

    async def readable(self, call: Call) -> None:
        """`call` names A's public app where any workspace may read: 2xx, nothing private."""
        self.count += 1
        response = await send(self.client, call)
        where = f"{call.method.upper()} {call.url} {call.query or ''}"
        if response.status_code != 200:
            self.problems.append(f"{where}: {response.status_code}, expected 200 (public)")
        if MARKER in response.text or "x-cost" in response.text:
            self.problems.append(f"{where}: shows A's private data: {response.text[:300]}")


# Refusals a `ws-` key meets before any lookup (the same for every id): not a 404, no leak.
KEY_REFUSALS = {"workspace_key_not_allowed"}


async def _refused_in_bodies(
    run: Sweep, b: dict[str, str], a_app: str, bodies: list[tuple[str, dict[str, Any]]]
) -> None:
    """Each POST with A's app id where the body says "@" is refused as with a made-up id."""
    for url, body in bodies:
        real = {k: (a_app if v == "@" else v) for k, v in body.items()}
        fake = {k: (new_id() if v == "@" else v) for k, v in body.items()}
        await run.refused(
            Call("post", url, url, b, real), Call("post", url, url, b, fake), "tenant"
        )


def public_allowance(world: World, call: Call) -> Literal["read", "known", "own"] | None:
    """What B may do with A's public app, which B has enabled: read its published docs and
    list its versions (`read`), and keep user-right grants in B's own partition (`own`, checked
    separately). Its `dev` docs are refused, but the app itself is public: a 404 other than for
    an unknown app (`known`) gives nothing away."""
    if world.public_app not in call.url.split("/"):
        return None
    if call.path.endswith(("/openapi.json", "/docs")):
        return "read" if call.query.get("version") != "dev" else "known"
    if call.path.endswith("/user-rights"):
        return "read" if call.method == "get" else "own"
    if call.path.endswith("/versions") and call.method == "get":
        return "read"  # the list only (no snapshot, no `publishedBy`): test_version_catalogue
    return None


async def sweep(
    client: AsyncClient, spec: dict[str, Any], world: World, b: dict[str, str], who: str
) -> Sweep:
    """Sweeps 1 and 2 of the module docstring, B authenticated by `b`."""
    run = Sweep(client, world, who)
    # 1. Every route with a path parameter, A's ids substituted (with If-Match on writes too).
    for method, path, op in operations(spec):
        if "{" not in path or (method, path) in NOT_SWEPT:
            continue
        scope = ROUTES[path]
        body = resolve_body(world, BODIES.get((method, path)))
        tags = [None, '"1"', "*"] if method in WRITES else [None]
        for query in QUERIES.get((method, path), [{}]):
            query = dict(query)
            if any(p["name"] == "force" for p in op.get("parameters", [])):
                query["force"] = "true"
            for values, guessed in combos(world, path):
                for tag in tags:
                    headers = b if tag is None else {**b, "If-Match": tag}
                    call = Call(method, path, fill(path, values), headers, body, query)
                    guess = Call(method, path, fill(path, guessed), headers, body, query)
                    allowance = public_allowance(world, call)
                    if allowance == "read":
                        await run.readable(call)
                    elif allowance == "known":
                        await run.refused(call, None, scope)
                    elif allowance is None:
                        await run.refused(call, guess, scope)

    # 2. Every operation taking `X-Workspace-Id`, with A's workspaces in it (B's own path ids).
    for method, path, op in operations(spec):
        if not takes_workspace_header(op) or (method, path) in NOT_SWEPT:
            continue
        values = {n: (LABELS[n][0] if n in LABELS else world.b_ids[n]) for n in path_params(path)}
        body = resolve_body(world, BODIES.get((method, path)))
        for query in QUERIES.get((method, path), [{}]):
            for workspace_id in world.a_ids["workspace_id"]:
                call = Call(method, path, fill(path, values), {**b, HEADER: workspace_id}, body)
                guess = Call(method, path, fill(path, values), {**b, HEADER: new_id()}, body)
                call.query = guess.query = dict(query)
                await run.refused(call, guess, "tenant")
    return run


async def test_b_reaches_nothing_of_a_through_any_route(client: AsyncClient, app: FastAPI) -> None:
    world = await build_a(client, app)
    spec = spec_of(app)
    before = await snapshot(app)
    files_before = await files_state(app)
    b = world.b.headers

    # B's console sign-in, then B's workspace key (admin role) for the same sweeps.
    run = await sweep(client, spec, world, b, "B's console sign-in")
    key = {"Authorization": f"Bearer {world.b_ws_key}"}
    by_key = await sweep(client, spec, world, key, "B's ws- key")
    run.problems += by_key.problems
    run.count += by_key.count

    # 3. A's ids in bodies and query strings, in B's own workspace.
    in_bodies: list[tuple[str, dict[str, Any]]]
    for a_app in (world.a_ids["app_id"][0], world.public_app):
        in_bodies = [
            (f"{V1}/datasets", {"appId": "@", "name": "planted", "fields": FIELDS}),
            (f"{V1}/workflows", {"appId": "@", "steps": STEPS}),
            (f"{V1}/invocations", {"appId": "@", "api": "listPosts", "version": "dev"}),
        ]
        await _refused_in_bodies(run, b, a_app, in_bodies)
    a_app = world.a_ids["app_id"][0]  # private: B can neither enable it nor hold keys of it
    in_bodies = [
        (f"{V1}/subscriptions", {"appId": "@"}),
        (f"{V1}/api-keys", {"type": "app", "name": "planted", "appId": "@"}),
        (
            f"{V1}/api-keys",
            {"type": "pk", "name": "p", "appId": "@", "allowedOrigins": ["https://b.example"]},
        ),
        (f"{V1}/invocations", {"appId": "@", "api": "listPosts", "version": "1.0.0"}),
    ]
    await _refused_in_bodies(run, b, a_app, in_bodies)
    for workspace_id in world.a_ids["workspace_id"]:
        body = {"amount": 1, "targetWorkspaceId": workspace_id}
        fake = {**body, "targetWorkspaceId": new_id()}
        url = f"{V1}/redemptions"
        await run.refused(
            Call("post", url, url, b, body), Call("post", url, url, b, fake), "tenant"
        )
    for account_id in world.a_ids["account_id"]:
        url = f"{V1}/workspaces/{world.b_team}/transfer"
        await run.refused(
            Call("post", url, url, b, {"accountId": account_id}),
            Call("post", url, url, b, {"accountId": new_id()}),
            "tenant",
        )
    # Filters naming A's apps: B's own (empty) answer, nothing of A's.
    for a_app in (world.a_ids["app_id"][0], world.public_app):
        for url in [
            f"{V1}/datasets",
            f"{V1}/api-keys",
            f"{V1}/request-logs",
            f"{V1}/request-logs?scope=builder",
            f"{V1}/usage/calls",
            f"{V1}/usage/calls?scope=builder",
            f"{V1}/usage/spend",
            f"{V1}/usage/earnings",
            f"{V1}/ledger-entries",
        ]:
            response = await client.get(url, params={"appId": a_app}, headers=b)
            run.count += 1
            data = data_of(response)
            assert MARKER not in response.text, (url, data)
            if "list" in data and url != f"{V1}/api-keys":
                assert data["list"] == [], (url, data)

    # Listings in B's workspace show nothing of A's.
    for url in [f"{V1}/{p}" for p in ("apps", "datasets", "files", "subscriptions", "api-keys")]:
        response = await client.get(url, headers=b)
        assert MARKER not in response.text, response.text
    plans = await client.get(f"{V1}/user/plans", headers=b)
    assert world.plan_id not in plans.text, plans.text

    assert run.problems == [], "\n".join(run.problems)
    assert run.count > 1000, run.count
    # Not one row nor one stored byte of anyone's changed.
    assert await snapshot(app) == before
    assert await files_state(app) == files_before

    # The legitimate 2xx of `NOT_SWEPT`: B's own settings under A's app id, A's left alone.
    a_app = world.a_ids["app_id"][0]
    listed = data_of(await client.get(f"{V1}/user/settings/apps/{a_app}", headers=b))
    assert listed["list"] == []
    own = f"{V1}/user/settings/apps/{a_app}/theme"
    data_of(await client.put(own, json={"value": "b's"}, headers=b))
    assert data_of(await client.get(own, headers=b))["value"] == "b's"
    assert data_of(await client.get(own, headers=world.a.headers))["value"] == f"dark {MARKER}"
    # ... and grants in B's partition of A's public app: A's grants stay A's.
    rights = f"{V1}/apps/{world.public_app}/user-rights"
    grant = {"userId": "u1", "target": "items", "rights": ["write"]}
    data_of(await client.post(rights, json=grant, headers=b))
    data_of(await client.delete(rights, params={"userId": "u1", "target": "items"}, headers=b))
    a_grants = data_of(await client.get(rights, headers=world.a.headers))["list"]
    assert [(g["userId"], g["target"], g["rights"]) for g in a_grants] == [
        ("u1", f"t-{MARKER}", ["read"])
    ]

    # A still reads its file.
    a_file = world.a_ids["file_id"][0]
    downloaded = await client.get(f"{V1}/files/{a_file}", headers=world.a.headers)
    assert downloaded.content == f"{world.a.email} {MARKER}".encode()


async def test_b_never_gets_a_stored_answer_of_a(client: AsyncClient, app: FastAPI) -> None:
    """Idempotency keys, sequence numbers and anti-duplicate tokens belong to their caller
    (docs/idempotency.md "Scope"): B sending what A sent gets its own answer or A's refusal,
    never A's stored answer (a key secret, A's record), and does not spend A's token."""
    a = await register(client)
    b = await register(client)
    app_id = await new_app(client, a.headers, "Blog")
    body = {"appId": app_id, "name": "posts", "fields": FIELDS}
    dataset_id = data_of(await client.post(f"{V1}/datasets", json=body, headers=a.headers))["id"]
    new_key = {"type": "ws", "name": "ci", "role": "viewer"}
    record = {"title": MARKER}
    records = f"{V1}/datasets/{dataset_id}/records"
    for header, value, other in (("Idempotency-Key", "k-1", "k-2"), ("X-Request-Seq", "7", "8")):
        first = await client.post(
            f"{V1}/api-keys", json=new_key, headers={**a.headers, header: value}
        )
        mine = await client.post(
            f"{V1}/api-keys", json=new_key, headers={**b.headers, header: value}
        )
        assert "idempotent-replayed" not in mine.headers
        assert data_of(mine)["key"] != data_of(first)["key"]
        data_of(await client.post(records, json=record, headers={**a.headers, header: other}))
        before = await snapshot(app)
        refused = await client.post(records, json=record, headers={**b.headers, header: other})
        assert "idempotent-replayed" not in refused.headers
        assert refusal(refused) == (404, "dataset_not_found")
        assert await snapshot(app) == before

    token = data_of(await client.get(f"{V1}/idempotency-tokens", headers=a.headers))["token"]
    with_token = {"X-Idempotency-Token": token}
    stolen = await client.post(
        f"{V1}/apps", json={"name": "B's"}, headers={**b.headers, **with_token}
    )
    assert refusal(stolen) == (409, "duplicate_request")
    used = await client.post(
        f"{V1}/apps", json={"name": "A's"}, headers={**a.headers, **with_token}
    )
    assert data_of(used)["id"]
