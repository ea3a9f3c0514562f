"""`/api/v1/invocations` and `/api/v1/workflows` end to end: apps and APIs built over HTTP, then
called on `dev` and on published versions with the control steps."""

from typing import Any

from httpx import AsyncClient

from tests.e2e._workspaces import INJECTION, SCRIPT, add_member, assert_error, data_of
from tests.factories import User, register

SUMMARY_STEPS: list[dict[str, Any]] = [
    {
        "id": "check",
        "type": "assert",
        "condition": {"expr": "size(args.scores) <= 5"},
        "status": 400,
        "error": "too_many_scores",
        "message": "at most 5 scores",
    },
    {
        "id": "doubled",
        "type": "forEach",
        "items": {"expr": "args.scores"},
        "maxIterations": 5,
        "steps": [{"id": "d", "type": "set", "value": {"expr": "item * 2"}}],
        "collect": {"expr": "steps.d"},
    },
    {
        "id": "label",
        "type": "if",
        "condition": {"expr": "args.title == 'secret'"},
        "then": [
            {
                "id": "denied",
                "type": "throw",
                "status": 403,
                "error": "title_forbidden",
                "message": "That title is not allowed",
            }
        ],
        "else": [{"id": "greeting", "type": "set", "value": {"expr": "'Hello ' + args.title"}}],
    },
    {
        "id": "early",
        "type": "if",
        "condition": {"expr": "args.short"},
        "then": [{"id": "done", "type": "return", "value": {"expr": "steps.greeting"}}],
    },
    {
        "id": "summary",
        "type": "set",
        "value": {
            "title": {"expr": "args.title"},
            "doubled": {"expr": "steps.doubled"},
            "greeting": {"expr": "steps.greeting"},
        },
    },
]
SUMMARY_PARAMS: list[dict[str, Any]] = [
    {"name": "title", "type": "string", "required": True, "max": 200},
    {"name": "scores", "type": "array", "default": []},
    {"name": "short", "type": "boolean", "default": False},
    {"name": "password", "type": "string", "sensitive": True},
]


async def _app(
    client: AsyncClient, user: User, workspace_id: str | None = None, **extra: Any
) -> str:
    headers = dict(user.headers)
    if workspace_id:
        headers["X-Workspace-Id"] = workspace_id
    response = await client.post("/api/v1/apps", json={"name": "Blog", **extra}, headers=headers)
    app_id: str = data_of(response)["id"]
    return app_id


async def _api(
    client: AsyncClient,
    user: User,
    app_id: str,
    api: str,
    steps: list[Any],
    workspace_id: str | None = None,
    **extra: Any,
) -> str:
    headers = dict(user.headers)
    if workspace_id:
        headers["X-Workspace-Id"] = workspace_id
    response = await client.post(
        f"/api/v1/apps/{app_id}/apis",
        json={"api": api, "steps": steps, **extra},
        headers=headers,
    )
    api_id: str = data_of(response)["id"]
    return api_id


async def _invoke(
    client: AsyncClient,
    user: User,
    app_id: str,
    api: str,
    *,
    version: str | None = "dev",
    **body: Any,
) -> Any:
    payload: dict[str, Any] = {"appId": app_id, "api": api, **body}
    if version is not None:
        payload["version"] = version
    return await client.post("/api/v1/invocations", json=payload, headers=user.headers)


async def _summary_app(client: AsyncClient) -> tuple[User, str]:
    user = await register(client)
    app_id = await _app(client, user, secrets={"apiKey": "sk-live-0123456789"})
    await _api(
        client,
        user,
        app_id,
        "summarize",
        SUMMARY_STEPS,
        params=SUMMARY_PARAMS,
        returnSteps=["summary"],
    )
    return user, app_id


async def _publish(client: AsyncClient, user: User, app_id: str, bump: str = "minor") -> str:
    response = await client.post(
        f"/api/v1/apps/{app_id}/versions",
        json={"bump": bump, "notes": "n"},
        headers=user.headers,
    )
    version: str = data_of(response)["version"]
    return version


# --- running on dev ---------------------------------------------------------------------------


async def test_dev_call_runs_the_control_steps(client: AsyncClient) -> None:
    user, app_id = await _summary_app(client)
    response = await _invoke(
        client, user, app_id, "summarize", args={"title": "World", "scores": [1, 2, 3]}
    )
    assert data_of(response) == {
        "summary": {"title": "World", "doubled": [2, 4, 6], "greeting": "Hello World"}
    }
    assert "deprecation" not in response.headers


async def test_return_step_ends_the_call_with_its_value(client: AsyncClient) -> None:
    user, app_id = await _summary_app(client)
    response = await _invoke(
        client, user, app_id, "summarize", args={"title": "World", "short": True}
    )
    assert data_of(response) == "Hello World"


async def test_every_step_is_returned_without_return_steps(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _app(client, user)
    await _api(
        client,
        user,
        app_id,
        "pair",
        [
            {"id": "a", "type": "set", "value": 1},
            {"id": "b", "type": "set", "value": {"expr": "steps.a + 1"}},
        ],
    )
    assert data_of(await _invoke(client, user, app_id, "pair")) == {"a": 1, "b": 2}


async def test_assert_and_throw_answer_with_the_apis_errors(client: AsyncClient) -> None:
    user, app_id = await _summary_app(client)
    response = await _invoke(
        client, user, app_id, "summarize", args={"title": "x", "scores": [1, 2, 3, 4, 5, 6]}
    )
    assert assert_error(response, 400, "too_many_scores")["stepId"] == "check"
    assert response.json()["message"] == "at most 5 scores"
    response = await _invoke(client, user, app_id, "summarize", args={"title": "secret"})
    assert_error(response, 403, "title_forbidden")
    assert response.json()["message"] == "That title is not allowed"


async def test_missing_required_params_are_named(client: AsyncClient) -> None:
    user, app_id = await _summary_app(client)
    response = await _invoke(client, user, app_id, "summarize", args={"scores": []})
    data = assert_error(response, 400, "missing_parameters")
    assert response.json()["message"] == "Missing required parameters"
    assert [e["field"] for e in data["errors"]] == ["title"]


async def test_wrong_types_and_constraints_name_the_param(client: AsyncClient) -> None:
    user, app_id = await _summary_app(client)
    for args, field in [
        ({"title": 5}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "x", "scores": "1,2"}, "scores"),
        ({"title": "x", "short": "yes"}, "short"),
        ({"title": "x", "admin": True}, "admin"),
    ]:
        response = await _invoke(client, user, app_id, "summarize", args=args)
        data = assert_error(response, 400, "invalid_arguments")
        assert data["errors"][0]["field"] == field, args


async def test_injection_looking_args_are_plain_data(client: AsyncClient) -> None:
    user, app_id = await _summary_app(client)
    for text in (INJECTION, SCRIPT):
        response = await _invoke(client, user, app_id, "summarize", args={"title": text})
        assert data_of(response)["summary"]["title"] == text


async def test_per_call_limits_are_clear_errors(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _app(client, user)
    await _api(
        client,
        user,
        app_id,
        "spin",
        [
            {
                "id": "outer",
                "type": "forEach",
                "items": {"expr": "args.xs"},
                "maxIterations": 1000,
                "steps": [
                    {
                        "id": "inner",
                        "type": "forEach",
                        "items": {"expr": "args.xs"},
                        "maxIterations": 1000,
                    }
                ],
            },
        ],
        params=[{"name": "xs", "type": "array", "required": True}],
        price=0,
    )
    response = await _invoke(client, user, app_id, "spin", args={"xs": list(range(1000))})
    data = assert_error(response, 422, "limit_exceeded")
    assert data["limit"] in {"steps", "iterations"}


# --- debug trace ------------------------------------------------------------------------------


async def test_debug_trace_on_dev_masks_sensitive_values(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _app(client, user, secrets={"apiKey": "sk-live-0123456789"})
    await _api(
        client,
        user,
        app_id,
        "login",
        [
            {
                "id": "seen",
                "type": "set",
                "value": {
                    "user": {"expr": "args.user"},
                    "password": {"expr": "args.password"},
                    "auth": {"expr": "'Bearer ' + env.secrets.apiKey"},
                },
            },
            {"id": "note", "type": "log", "message": {"expr": "'pw ' + args.password"}},
        ],
        params=[
            {"name": "user", "required": True},
            {"name": "password", "required": True, "sensitive": True},
        ],
    )
    response = await _invoke(
        client, user, app_id, "login", debug=1, args={"user": "ann", "password": "hunter2-long"}
    )
    data = data_of(response)
    assert data["result"]["seen"]["user"] == "ann"
    trace = data["trace"]
    assert [(row["stepId"], row["type"]) for row in trace] == [("seen", "set"), ("note", "log")]
    assert trace[0]["output"] == {"user": "ann", "password": "***", "auth": "Bearer ***"}
    assert trace[1]["input"] == {"message": "pw ***"}
    assert all(isinstance(row["ms"], float) and row["error"] is None for row in trace)
    trace_text = response.text.split('"trace"')[1]
    assert "hunter2-long" not in trace_text
    assert "sk-live-0123456789" not in trace_text


async def test_debug_trace_comes_with_errors_too(client: AsyncClient) -> None:
    user, app_id = await _summary_app(client)
    response = await _invoke(
        client, user, app_id, "summarize", debug=True, args={"title": "secret"}
    )
    data = assert_error(response, 403, "title_forbidden")
    failed = [row for row in data["trace"] if row["error"]]
    assert [row["stepId"] for row in failed] == ["label", "denied"]


async def test_debug_is_only_for_dev(client: AsyncClient) -> None:
    user, app_id = await _summary_app(client)
    await _publish(client, user, app_id)
    response = await _invoke(
        client, user, app_id, "summarize", version="latest", debug=1, args={"title": "x"}
    )
    assert assert_error(response, 400, "debug_dev_only")["errors"][0]["field"] == "debug"


# --- versions ---------------------------------------------------------------------------------


async def test_published_versions_keep_their_behaviour(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _app(client, user)
    api_id = await _api(
        client, user, app_id, "hello", [{"id": "msg", "type": "set", "value": "v1"}]
    )
    response = await _invoke(client, user, app_id, "hello", version=None)
    assert_error(response, 404, "version_not_found")
    assert await _publish(client, user, app_id) == "1.0.0"
    response = await client.patch(
        f"/api/v1/apps/{app_id}/apis/{api_id}",
        json={"steps": [{"id": "msg", "type": "set", "value": "v2"}]},
        headers=user.headers,
    )
    data_of(response)
    assert data_of(await _invoke(client, user, app_id, "hello", version=None)) == {"msg": "v1"}
    assert data_of(await _invoke(client, user, app_id, "hello", version="1.0.0")) == {"msg": "v1"}
    assert data_of(await _invoke(client, user, app_id, "hello")) == {"msg": "v2"}
    assert await _publish(client, user, app_id) == "1.1.0"
    assert data_of(await _invoke(client, user, app_id, "hello", version="latest")) == {"msg": "v2"}
    assert data_of(await _invoke(client, user, app_id, "hello", version="1.0.0")) == {"msg": "v1"}
    response = await _invoke(client, user, app_id, "hello", version="9.9.9")
    assert_error(response, 404, "version_not_found")


async def test_deprecated_versions_answer_with_a_deprecation_header(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await _app(client, user)
    await _api(client, user, app_id, "hello", [{"id": "msg", "type": "set", "value": 1}])
    version = await _publish(client, user, app_id)
    response = await client.patch(
        f"/api/v1/apps/{app_id}/versions/{version}", json={"deprecated": 1}, headers=user.headers
    )
    data_of(response)
    response = await _invoke(client, user, app_id, "hello", version=version)
    assert data_of(response) == {"msg": 1}
    assert response.headers["deprecation"].startswith("@")
    assert "deprecation" not in (await _invoke(client, user, app_id, "hello")).headers


async def test_disabled_apis_refuse_published_calls(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _app(client, user)
    await _api(client, user, app_id, "hello", [{"id": "msg", "type": "set", "value": 1}], enabled=0)
    await _publish(client, user, app_id)
    assert_error(
        await _invoke(client, user, app_id, "hello", version="latest"), 403, "api_disabled"
    )
    # The builder can still try it on dev.
    assert data_of(await _invoke(client, user, app_id, "hello")) == {"msg": 1}


async def test_call_api_runs_another_api_of_the_app(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _app(client, user)
    await _api(
        client,
        user,
        app_id,
        "inner",
        [
            {"id": "sum", "type": "return", "value": {"expr": "args.a + args.b"}},
        ],
        params=[
            {"name": "a", "type": "integer", "required": True},
            {"name": "b", "type": "integer", "required": True},
        ],
    )
    await _api(
        client,
        user,
        app_id,
        "outer",
        [
            {
                "id": "called",
                "type": "callApi",
                "api": "inner",
                "version": "dev",
                "args": {"a": {"expr": "args.x"}, "b": 10},
            },
        ],
        params=[{"name": "x", "type": "integer", "required": True}],
    )
    assert data_of(await _invoke(client, user, app_id, "outer", args={"x": 5})) == {"called": 15}
    response = await _invoke(client, user, app_id, "outer", args={"x": "5"})
    assert_error(response, 400, "invalid_arguments")


# --- who may call -----------------------------------------------------------------------------


async def test_other_workspaces_get_the_same_404_as_unknown_apps(client: AsyncClient) -> None:
    user, app_id = await _summary_app(client)
    stranger = await register(client)
    for version in ("dev", "latest", "1.0.0"):
        response = await _invoke(
            client, stranger, app_id, "summarize", version=version, args={"title": "x"}
        )
        assert_error(response, 404, "app_not_found")
    response = await _invoke(client, user, "01" + "0" * 24, "summarize", args={"title": "x"})
    assert_error(response, 404, "app_not_found")
    assert_error(await _invoke(client, user, app_id, "nothing"), 404, "api_not_found")


async def test_any_member_of_the_apps_workspace_may_call(client: AsyncClient) -> None:
    owner = await register(client)
    response = await client.post("/api/v1/workspaces", json={"name": "Team"}, headers=owner.headers)
    workspace_id = data_of(response)["id"]
    viewer = await register(client)
    await add_member(client, owner, workspace_id, viewer, "viewer")
    app_id = await _app(client, owner, workspace_id)
    await _api(
        client,
        owner,
        app_id,
        "hello",
        [{"id": "msg", "type": "set", "value": 1}],
        workspace_id=workspace_id,
    )
    assert data_of(await _invoke(client, viewer, app_id, "hello")) == {"msg": 1}


async def test_invocations_need_a_console_token(client: AsyncClient) -> None:
    response = await client.post("/api/v1/invocations", json={"appId": "x", "api": "y"})
    assert_error(response, 401, "unauthenticated")


async def test_bad_invocation_bodies_are_refused(client: AsyncClient) -> None:
    user, app_id = await _summary_app(client)
    response = await client.post(
        "/api/v1/invocations",
        content=b'{"appId": ',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 400, "malformed_json")
    bad_bodies: list[dict[str, Any]] = [
        {"appId": app_id, "api": "summarize", "extra": 1},
        {"appId": app_id, "api": "summarize", "args": [1]},
        {"appId": app_id, "api": "summarize", "debug": "maybe"},
        {"appId": app_id, "api": "summarize", "version": "v1"},
        {"appId": app_id, "api": "x" * 65},
        {"appId": app_id, "api": INJECTION},
        {"appId": "a" * 27, "api": "summarize"},
        {"api": "summarize"},
    ]
    for body in bad_bodies:
        response = await client.post("/api/v1/invocations", json=body, headers=user.headers)
        assert response.status_code == 400, body
        assert response.json()["data"]["error"] in {"invalid_input", "missing_parameters"}


# --- workflows --------------------------------------------------------------------------------


async def test_workflows_run_ad_hoc_steps(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _app(client, user)
    response = await client.post(
        "/api/v1/workflows",
        headers=user.headers,
        json={
            "appId": app_id,
            "args": {"n": 3, "anything": ["goes"]},
            "steps": [
                {"id": "sq", "type": "set", "value": {"expr": "args.n * args.n"}},
                {
                    "id": "out",
                    "type": "return",
                    "value": {"sq": {"expr": "steps.sq"}, "extra": {"expr": "args.anything"}},
                },
            ],
        },
    )
    assert data_of(response) == {"sq": 9, "extra": ["goes"]}


async def test_workflow_debug_trace(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _app(client, user)
    response = await client.post(
        "/api/v1/workflows",
        headers=user.headers,
        json={
            "appId": app_id,
            "debug": 1,
            "steps": [{"id": "a", "type": "set", "value": 2}],
        },
    )
    data = data_of(response)
    assert data["result"] == {"a": 2}
    assert [row["stepId"] for row in data["trace"]] == ["a"]


async def test_workflow_steps_are_validated(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _app(client, user)
    response = await client.post(
        "/api/v1/workflows",
        headers=user.headers,
        json={
            "appId": app_id,
            "steps": [{"id": "loop", "type": "forEach", "items": [1]}],
        },
    )
    data = assert_error(response, 400, "invalid_definition")
    assert data["errors"][0]["field"] == "steps.loop.maxIterations"
    response = await client.post(
        "/api/v1/workflows",
        headers=user.headers,
        json={
            "appId": app_id,
            "steps": [
                {"id": "a", "type": "set", "value": {"expr": "steps.b"}},
                {"id": "b", "type": "set", "value": 1},
            ],
        },
    )
    data = assert_error(response, 400, "invalid_definition")
    assert data["errors"][0]["field"] == "steps.a.value"


async def test_workflows_need_an_editor_of_the_apps_workspace(client: AsyncClient) -> None:
    owner = await register(client)
    response = await client.post("/api/v1/workspaces", json={"name": "Team"}, headers=owner.headers)
    workspace_id = data_of(response)["id"]
    viewer = await register(client)
    await add_member(client, owner, workspace_id, viewer, "viewer")
    app_id = await _app(client, owner, workspace_id)
    body = {"appId": app_id, "steps": [{"id": "a", "type": "set", "value": 1}]}
    response = await client.post(
        "/api/v1/workflows", json=body, headers={**viewer.headers, "X-Workspace-Id": workspace_id}
    )
    assert_error(response, 403, "insufficient_role")
    # The owner's app is unknown in another workspace, even the owner's own personal one.
    response = await client.post("/api/v1/workflows", json=body, headers=owner.headers)
    assert_error(response, 404, "app_not_found")
    stranger = await register(client)
    response = await client.post("/api/v1/workflows", json=body, headers=stranger.headers)
    assert_error(response, 404, "app_not_found")
    response = await client.post(
        "/api/v1/workflows", json=body, headers={**owner.headers, "X-Workspace-Id": workspace_id}
    )
    assert data_of(response) == {"a": 1}


async def test_bad_workflow_bodies_are_refused(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _app(client, user)
    for body in [
        {"steps": []},
        {"appId": app_id, "steps": "x"},
        {"appId": app_id, "steps": [], "args": 5},
        {"appId": app_id, "steps": [], "unknown": 1},
        {
            "appId": app_id,
            "steps": [{"id": f"s{i}", "type": "set", "value": i} for i in range(201)],
        },
    ]:
        response = await client.post("/api/v1/workflows", json=body, headers=user.headers)
        assert response.status_code == 400, body


# --- with data steps --------------------------------------------------------------------------


async def _posts_app(client: AsyncClient) -> tuple[User, str, str]:
    user = await register(client)
    app_id = await _app(client, user)
    response = await client.post(
        "/api/v1/datasets",
        headers=user.headers,
        json={
            "appId": app_id,
            "name": "posts",
            "fields": [
                {"name": "title", "type": "string", "required": 1},
                {"name": "published", "type": "boolean", "default": False},
                {"name": "ssn", "type": "string", "encrypted": 1},
            ],
        },
    )
    dataset_id: str = data_of(response)["id"]
    insert = {
        "id": "post",
        "type": "insert",
        "collection": "posts",
        "data": {
            "title": {"expr": "args.title"},
            "published": {"expr": "args.published"},
            "ssn": {"expr": "args.ssn"},
        },
    }
    title_params = [
        {"name": "title", "required": True},
        {"name": "published", "type": "boolean", "default": True},
        {"name": "ssn", "default": "000-00-0000"},
    ]
    await _api(client, user, app_id, "createPost", [insert], params=title_params, price=10)
    await _api(
        client,
        user,
        app_id,
        "createThenRefuse",
        [
            insert,
            {"id": "no", "type": "throw", "status": 409, "error": "refused"},
        ],
        params=title_params,
        price=10,
    )
    await _api(
        client,
        user,
        app_id,
        "createInGroup",
        [
            {"id": "kept", "type": "insert", "collection": "posts", "data": {"title": "kept"}},
            {
                "id": "group",
                "type": "transaction",
                "onError": "continue",
                "steps": [insert, {"id": "no", "type": "throw", "error": "refused"}],
            },
        ],
        params=title_params,
        price=10,
    )
    await _api(
        client,
        user,
        app_id,
        "listPosts",
        [
            {
                "id": "posts",
                "type": "getMany",
                "collection": "posts",
                "filter": {"published": {"_eq": True}},
                "sort": ["-createdTime"],
                "pageSize": 10,
                "fields": ["title"],
            },
            {
                "id": "titles",
                "type": "forEach",
                "items": {"expr": "steps.posts.list"},
                "maxIterations": 10,
                "collect": {"expr": "item.title"},
            },
        ],
        returnSteps=["titles"],
        price=10,
    )
    return user, app_id, dataset_id


async def _titles(client: AsyncClient, user: User, app_id: str) -> list[str]:
    titles: list[str] = data_of(await _invoke(client, user, app_id, "listPosts"))["titles"]
    return sorted(titles)


async def test_data_steps_write_and_read_in_the_builders_partition(client: AsyncClient) -> None:
    user, app_id, dataset_id = await _posts_app(client)
    created = data_of(await _invoke(client, user, app_id, "createPost", args={"title": "One"}))
    assert created["post"]["title"] == "One"
    assert created["post"]["version"] == 1
    await _invoke(client, user, app_id, "createPost", args={"title": "Draft", "published": False})
    await _invoke(client, user, app_id, "createPost", args={"title": SCRIPT})
    assert await _titles(client, user, app_id) == sorted(["One", SCRIPT])
    response = await client.get(f"/api/v1/datasets/{dataset_id}/records", headers=user.headers)
    assert data_of(response)["totalCount"] == 3


async def test_a_failed_call_writes_nothing(client: AsyncClient) -> None:
    user, app_id, _ = await _posts_app(client)
    response = await _invoke(client, user, app_id, "createThenRefuse", args={"title": "Ghost"})
    assert_error(response, 409, "refused")
    assert await _titles(client, user, app_id) == []


async def test_a_transaction_group_rolls_back_alone(client: AsyncClient) -> None:
    user, app_id, _ = await _posts_app(client)
    data = data_of(await _invoke(client, user, app_id, "createInGroup", args={"title": "Lost"}))
    assert data["group"]["committed"] is False
    assert data["group"]["error"]["error"] == "refused"
    assert await _titles(client, user, app_id) == []  # "kept" is unpublished by default
    response = await client.post(
        "/api/v1/workflows",
        headers=user.headers,
        json={
            "appId": app_id,
            "steps": [{"id": "n", "type": "count", "collection": "posts"}],
        },
    )
    assert data_of(response) == {"n": 1}


async def test_a_committed_group_rolls_back_with_the_call_that_fails_after_it(
    client: AsyncClient,
) -> None:
    """A transaction group that succeeded is still part of the call: a step failing after it
    rolls the whole call back (on SQLite the group's SAVEPOINT, opened outside a transaction,
    had committed its writes on release)."""
    user, app_id, _ = await _posts_app(client)
    group = {
        "id": "group",
        "type": "transaction",
        "steps": [{"id": "i", "type": "insert", "collection": "posts", "data": {"title": "a"}}],
    }
    failing = [group, {"id": "boom", "type": "throw", "status": 409, "error": "boom"}]
    body = {"appId": app_id, "steps": failing}
    assert_error(
        await client.post("/api/v1/workflows", json=body, headers=user.headers), 409, "boom"
    )
    count = {"appId": app_id, "steps": [{"id": "n", "type": "count", "collection": "posts"}]}
    counted = await client.post("/api/v1/workflows", json=count, headers=user.headers)
    assert data_of(counted) == {"n": 0}


async def test_traces_mask_encrypted_fields(client: AsyncClient) -> None:
    user, app_id, _ = await _posts_app(client)
    response = await _invoke(
        client, user, app_id, "createPost", debug=1, args={"title": "T", "ssn": "123-45-6789"}
    )
    data = data_of(response)
    assert data["result"]["post"]["ssn"] == "123-45-6789"  # the caller may read its own data
    (row,) = data["trace"]
    assert row["output"]["ssn"] == "***"
    assert "123-45-6789" not in response.text.split('"trace"')[1]
