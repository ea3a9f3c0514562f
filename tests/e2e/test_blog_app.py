"""Acceptance of the builder and step engine: the canonical blog app, built over HTTP only.

The app is `examples/blog-app.json`: the test builds it route by route (apps, datasets, APIs),
checks that exporting the result gives back that file, calls every API on `dev`, publishes 1.0.0,
changes `dev`, shows 1.0.0 and `latest` unchanged, publishes 1.1.0 and shows `latest` moved. A
second test imports the file into a fresh workspace and runs the same calls there.

`/api/v1/invocations` is called with the console token; the end-user token `signIn` issued
travels in `X-End-User-Token` (where console callers pass it). `createPost` reads its author from
`token.sub` when there is one and from the `authorId` arg otherwise, so the calls send both.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.engine.tokens import verify_end_user_token
from apiforge.tools.ids import new_id
from tests.e2e._apps import in_workspace, new_api, new_app, signing_secret
from tests.e2e._workspaces import SCRIPT, assert_error, data_of, new_workspace
from tests.factories import register

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "blog-app.json"
PASSWORD = "s3cret-passphrase"


def example() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    return document


@dataclass
class Blog:
    """One blog app as a console member calls it."""

    client: AsyncClient
    headers: dict[str, str]
    app_id: str

    async def call(
        self, api: str, at: str = "dev", end_user_token: str | None = None, **args: Any
    ) -> Response:
        """`api` at version `at` (dev, latest or X.Y.Z) with `args`, as one of the app's users
        when `end_user_token` is given."""
        body = {"appId": self.app_id, "api": api, "version": at, "args": args}
        headers = dict(self.headers)
        if end_user_token is not None:
            headers["X-End-User-Token"] = end_user_token
        return await self.client.post("/api/v1/invocations", json=body, headers=headers)

    async def data(
        self, api: str, at: str = "dev", end_user_token: str | None = None, **args: Any
    ) -> Any:
        return data_of(await self.call(api, at, end_user_token, **args))

    async def get(self, path: str) -> Any:
        return data_of(
            await self.client.get(f"/api/v1/apps/{self.app_id}{path}", headers=self.headers)
        )

    async def export(self) -> dict[str, Any]:
        response = await self.client.get(f"/api/v1/apps/{self.app_id}/export", headers=self.headers)
        assert response.status_code == 200, response.text
        document: dict[str, Any] = orjson.loads(response.content)
        return document

    async def api_id(self, api: str) -> str:
        listing = await self.get(f"/apis?q={api}")
        (found,) = [item for item in listing["list"] if item["api"] == api]
        api_id: str = found["id"]
        return api_id

    async def published_titles(self, at: str = "dev", **args: Any) -> list[str]:
        page = (await self.data("getManyPost", at, **args))["posts"]
        return [post["title"] for post in page["list"]]


async def build_blog(client: AsyncClient, headers: dict[str, str]) -> Blog:
    """The example app, created through the management API only."""
    document = example()
    info = document["app"]
    app_id = await new_app(client, headers, info["name"], description=info["description"])
    for collection in document["collections"]:
        body = {"appId": app_id, **collection}
        data_of(await client.post("/api/v1/datasets", json=body, headers=headers))
    for definition in document["apis"]:
        fields = {key: value for key, value in definition.items() if key != "api"}
        await new_api(client, headers, app_id, definition["api"], **fields)
    return Blog(client, headers, app_id)


@dataclass
class Written:
    """What `exercise_dev` created: the author and the published posts, oldest first."""

    author_id: str
    posts: list[dict[str, Any]]


async def exercise_dev(blog: Blog, app: FastAPI) -> Written:
    """Every API of the blog on `dev`, with its refusals."""
    # signUp: an argon2 hash is stored, never returned.
    response = await blog.call("signUp", email="alice@example.com", password=PASSWORD, name="Alice")
    signed_up = data_of(response)
    assert set(signed_up) == {"id", "email", "name"}
    assert "$argon2" not in response.text
    assert PASSWORD not in response.text
    assert (signed_up["email"], signed_up["name"]) == ("alice@example.com", "Alice")
    author_id = signed_up["id"]
    duplicate = await blog.call("signUp", email="alice@example.com", password=PASSWORD)
    assert assert_error(duplicate, 409, "duplicate_value")["stepId"] == "user"
    missing = await blog.call("signUp", email="bob@example.com")
    assert missing.json()["message"] == "Missing required parameters"
    errors = assert_error(missing, 400, "missing_parameters")["errors"]
    assert [e["field"] for e in errors] == ["password"]

    # signIn: getOne by email + password verify + assert + jwtSign with sub = the user id.
    for email, password in [("alice@example.com", "wrong-password"), ("nobody@x.io", PASSWORD)]:
        refused = await blog.call("signIn", email=email, password=password)
        assert assert_error(refused, 401, "invalid_credentials")["stepId"] == "check"
    session = await blog.data("signIn", email="alice@example.com", password=PASSWORD)
    assert set(session) == {"token", "expiresIn", "userId"}
    assert (session["userId"], session["expiresIn"]) == (author_id, 86400)
    claims = verify_end_user_token(
        await signing_secret(app, blog.app_id), blog.app_id, session["token"]
    )
    assert claims["sub"] == author_id
    assert claims["aud"] == blog.app_id

    # createPost: the author is the token's sub (see the module docstring); no author, no post.
    anonymous = await blog.call("createPost", title="Anonymous")
    assert anonymous.status_code == 401, anonymous.text
    as_alice = {"end_user_token": session["token"], "authorId": claims["sub"]}
    missing_title = await blog.call("createPost", body="no title", **as_alice)
    assert_error(missing_title, 400, "missing_parameters")
    posts = []
    for title, published in [("First", True), ("Draft", False), ("Second", True), (SCRIPT, True)]:
        created = await blog.data(
            "createPost", title=title, body=f"{title} body", published=published, **as_alice
        )
        post = created["post"]
        assert set(created) == {"post"}
        assert (post["title"], post["published"], post["authorId"]) == (title, published, author_id)
        assert post["version"] == 1
        if published:
            posts.append(post)

    # getManyPost: published only, newest first, paged, with the total.
    page = (await blog.data("getManyPost"))["posts"]
    assert [p["title"] for p in page["list"]] == [SCRIPT, "Second", "First"]
    assert (page["pageNo"], page["pageSize"], page["totalCount"], page["totalPage"]) == (
        1,
        10,
        3,
        1,
    )
    second = (await blog.data("getManyPost", pageNo=2, pageSize=2))["posts"]
    assert [p["title"] for p in second["list"]] == ["First"]
    assert (second["totalCount"], second["totalPage"]) == (3, 2)
    too_big = await blog.call("getManyPost", pageSize=51)
    assert assert_error(too_big, 400, "invalid_arguments")["errors"][0]["field"] == "pageSize"

    # getPost: by id, 404 when missing (unknown or malformed id).
    first = posts[0]
    assert (await blog.data("getPost", id=first["id"]))["post"] == first
    for unknown in (new_id(), "not-an-id"):
        missing_post = await blog.call("getPost", id=unknown)
        assert assert_error(missing_post, 404, "record_not_found")["stepId"] == "post"

    # updatePost: optimistic lock on `version`.
    updated = (
        await blog.data(
            "updatePost", "dev", session["token"], id=first["id"], version=1, title="First, edited"
        )
    )["post"]
    assert (updated["title"], updated["body"], updated["version"]) == (
        "First, edited",
        "First body",
        2,
    )
    stale = await blog.call(
        "updatePost", "dev", session["token"], id=first["id"], version=1, title="Lost update"
    )
    conflict = assert_error(stale, 409, "version_conflict")
    assert (conflict["stepId"], conflict["currentVersion"]) == ("post", 2)
    assert (await blog.data("getPost", id=first["id"]))["post"] == updated
    nowhere = await blog.call("updatePost", "dev", session["token"], id=new_id(), version=1)
    assert_error(nowhere, 404, "record_not_found")
    posts[0] = updated
    return Written(author_id, posts)


async def test_canonical_blog_app_is_built_called_and_versioned(
    client: AsyncClient, app: FastAPI
) -> None:
    user = await register(client)
    blog = await build_blog(client, user.headers)

    # What was built over HTTP is exactly the example document.
    document = example()
    exported = await blog.export()
    for part in ("app", "collections", "apis"):
        assert exported[part] == document[part], part
    listed = await blog.get("/apis")
    assert [a["api"] for a in listed["list"]] == [
        "createPost",
        "getManyPost",
        "getPost",
        "signIn",
        "signUp",
        "updatePost",
    ]
    for item in listed["list"]:
        assert item["cost"] <= item["price"], item

    written = await exercise_dev(blog, app)
    newest_first = [SCRIPT, "Second", "First, edited"]

    # Publish 1.0.0.
    first = data_of(
        await client.post(
            f"/api/v1/apps/{blog.app_id}/versions",
            json={"bump": "minor", "notes": "First release"},
            headers=user.headers,
        )
    )
    assert (first["version"], first["previousVersion"], first["breaking"]) == ("1.0.0", None, 0)
    assert {(c["api"], c["kind"]) for c in first["changes"]} == {
        (a["api"], "api_added") for a in document["apis"]
    }
    v1 = await blog.get("/versions/1.0.0")
    assert v1["latest"] == 1
    assert await blog.get("/versions/latest") == v1
    frozen = {p["name"]: p for p in v1["snapshot"]["apis"]["getManyPost"]["params"]}
    assert frozen["pageSize"]["default"] == 10
    for version in ("1.0.0", "latest"):
        assert await blog.published_titles(version) == newest_first
        post = (await blog.data("getPost", version, id=written.posts[0]["id"]))["post"]
        assert post == written.posts[0]

    # Change dev: getManyPost pages by 2 by default.
    get_many = await blog.api_id("getManyPost")
    params = [
        {"name": "pageNo", "type": "integer", "default": 1, "min": 1},
        {"name": "pageSize", "type": "integer", "default": 2, "min": 1, "max": 50},
    ]
    data_of(
        await client.patch(
            f"/api/v1/apps/{blog.app_id}/apis/{get_many}",
            json={"params": params},
            headers=user.headers,
        )
    )
    dev_page = (await blog.data("getManyPost"))["posts"]
    assert [p["title"] for p in dev_page["list"]] == newest_first[:2]
    assert (dev_page["pageSize"], dev_page["totalPage"]) == (2, 2)
    # 1.0.0 and latest are unchanged: by calling them and by their snapshots.
    for version in ("1.0.0", "latest"):
        page = (await blog.data("getManyPost", version))["posts"]
        assert (page["pageSize"], page["totalPage"]) == (10, 1)
        assert [p["title"] for p in page["list"]] == newest_first
    assert await blog.get("/versions/1.0.0") == v1
    assert await blog.get("/versions/latest") == v1
    assert (await blog.get(""))["latestVersion"] == "1.0.0"

    # Publish 1.1.0: latest moves, 1.0.0 stays as it was.
    second = data_of(
        await client.post(
            f"/api/v1/apps/{blog.app_id}/versions",
            json={"bump": "minor", "notes": "Smaller pages"},
            headers=user.headers,
        )
    )
    assert (second["version"], second["previousVersion"], second["breaking"]) == (
        "1.1.0",
        "1.0.0",
        0,
    )
    assert [(c["api"], c["kind"]) for c in second["changes"]] == [("getManyPost", "api_changed")]
    latest = await blog.get("/versions/latest")
    assert (latest["version"], latest["latest"], latest["notes"]) == ("1.1.0", 1, "Smaller pages")
    assert latest["snapshot"]["apis"]["getManyPost"]["params"] == params
    assert await blog.get("/versions/1.0.0") == {**v1, "latest": 0}
    assert (await blog.get(""))["latestVersion"] == "1.1.0"
    listing = await blog.get("/versions")
    assert [(v["version"], v["latest"]) for v in listing["list"]] == [("1.1.0", 1), ("1.0.0", 0)]
    assert (await blog.data("getManyPost", "latest"))["posts"]["pageSize"] == 2
    assert (await blog.data("getManyPost", "1.1.0"))["posts"]["pageSize"] == 2
    assert (await blog.data("getManyPost", "1.0.0"))["posts"]["pageSize"] == 10
    # Every version reads the same partition: what dev wrote, the published versions see.
    signed_in = await blog.data("signIn", "1.0.0", email="alice@example.com", password=PASSWORD)
    assert signed_in["userId"] == written.author_id


async def test_example_file_imports_into_a_fresh_workspace_and_runs(
    client: AsyncClient, app: FastAPI
) -> None:
    user = await register(client)
    workspace_id = await new_workspace(client, user, "Imported")
    headers = in_workspace(user, workspace_id)
    response = await client.post(
        "/api/v1/apps/import",
        content=EXAMPLE.read_bytes(),
        headers={**headers, "Content-Type": "application/json"},
    )
    app_id = data_of(response)["id"]
    blog = Blog(client, headers, app_id)
    shown = await blog.get("")
    assert (shown["workspaceId"], shown["name"], shown["latestVersion"]) == (
        workspace_id,
        "Blog",
        None,
    )
    assert shown["apiCount"] == len(example()["apis"])
    # It lives in the fresh workspace only.
    assert_error(
        await client.get(f"/api/v1/apps/{app_id}", headers=user.headers), 404, "app_not_found"
    )
    datasets = data_of(
        await client.get("/api/v1/datasets", params={"appId": app_id}, headers=headers)
    )
    assert sorted(d["name"] for d in datasets["list"]) == ["posts", "users"]

    exported = await blog.export()
    document = example()
    for part in ("app", "collections", "apis"):
        assert exported[part] == document[part], part

    written = await exercise_dev(blog, app)
    assert await blog.published_titles() == [SCRIPT, "Second", "First, edited"]
    assert written.posts[0]["authorId"] == written.author_id
    # The records are in the fresh workspace's partition, seen through the datasets API too.
    (posts,) = [d for d in datasets["list"] if d["name"] == "posts"]
    records = data_of(await client.get(f"/api/v1/datasets/{posts['id']}/records", headers=headers))
    assert records["totalCount"] == 4
    published = data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=headers
        )
    )
    assert published["version"] == "1.0.0"
    assert await blog.published_titles("latest") == [SCRIPT, "Second", "First, edited"]
