"""The management API fuzzed from its own OpenAPI document (schemathesis, in process over ASGI).

Every documented operation gets a few generated requests, valid and invalid ones, sent as a
signed-in administrator acting in their personal workspace, where an app, an API, a dataset with
a record, a subscription and an API key exist: path ids of those are filled in (except for
deletions, which get generated ids), so bodies reach the services instead of stopping at a 404.
Each answer must not be a 5xx, must be documented (status, content type, headers, schema), must
be the envelope with `code` equal to the status when it is JSON, and must be a 4xx when the
request was invalid; a write answered 4xx must leave what `GET` on its path shows unchanged.

Bounded and reproducible: derandomized Hypothesis, no example database, no deadline, a few
examples per operation. One app and one database serve the whole run; failures are collected
per operation and reported together."""

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from limits.aio.storage import MemoryStorage
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.python.asgi import shutdown_lifespans

from apiforge.accounts.service import AccountService
from apiforge.accounts.throttle import LoginThrottle
from apiforge.app import create_app
from apiforge.core.db import make_engine, make_sessionmaker, unit_of_work
from apiforge.core.settings import Settings
from apiforge.idempotency.openapi import HEADERS
from tests.factories import PASSWORD

EXAMPLES = 8  # per operation and generation mode: ~113 operations x 2 modes in well under 2 min
ADMIN_EMAIL = "fuzz-admin@example.com"

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
# JSON answers outside the envelope (DESIGN.md §2): documents, not platform payloads.
DOCUMENTS = {"/openapi.json", "/api/v1/apps/{app_id}/openapi.json", "/api/v1/apps/{app_id}/export"}
# Not fuzzed, with the reason: the run's one sign-in must stay valid. (Account deletion, disabling
# and session ends are fuzzed with generated ids only, which never name the run's own.)
EXCLUDED = {
    # Ends the calling session whatever the body says: every later request would be 401.
    ("POST", "/api/v1/auth/logout"),
}

# Not generated: the idempotency middleware answers before any route, so generated values would
# stop most writes at its 400/409 before their bodies reach a service (its own tests cover them).
IDEMPOTENCY = {header["name"] for header in HEADERS}

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]


@schemathesis.check
def envelope_code_is_status(ctx: Any, response: schemathesis.Response, case: Case[Any]) -> None:
    """DESIGN.md §2: a JSON answer is the envelope and its `code` equals the HTTP status."""
    if not response.headers.get("content-type", [""])[0].startswith("application/json"):
        return
    if case.operation.path in DOCUMENTS:
        return
    body = response.json()
    assert isinstance(body, dict), f"not the envelope: {body!r}"
    assert body.get("code") == response.status_code, f"code {body.get('code')!r} != status"


async def _create_admin(settings: Settings) -> None:
    """An administrator account (with its personal workspace), as `apiforge admin create` makes
    one, before the app starts."""
    engine = make_engine(settings.resolved_database_url, pool=False)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as session:
            throttle = LoginThrottle(MemoryStorage(), 1, 1)
            await AccountService(session, settings, throttle).create_account(
                ADMIN_EMAIL, PASSWORD, "Fuzz", is_admin=True
            )
    finally:
        await engine.dispose()


def _data(case: Case[Any], headers: dict[str, str] | None = None) -> Any:
    response = case.call(headers=dict(headers or {}))  # `call` adds to the dict it is given
    assert response.status_code == 200, (case.path, response.text)
    return response.json()["data"]


@pytest.fixture
def fuzz_schema(settings: Settings) -> Iterator[schemathesis.BaseSchema]:
    """The schema of a live app (its lifespan runs on schemathesis' own event loop, which every
    request of the run shares), stopped after the test."""
    asyncio.run(_create_admin(settings))
    app = create_app(settings)
    document = copy.deepcopy(app.openapi())
    for item in document["paths"].values():
        for operation in item.values():
            operation["parameters"] = [
                p for p in operation.get("parameters", []) if p["name"] not in IDEMPOTENCY
            ]
    schema = schemathesis.openapi.from_dict(document)
    schema.app = app  # requests go to the app in process, as `from_asgi` would send them
    try:
        yield schema
    finally:
        shutdown_lifespans()


def _seed(schema: schemathesis.BaseSchema) -> tuple[dict[str, str], dict[str, str]]:
    """Sign in and create one of each resource the paths name; returns (headers, path ids)."""
    login = schema["/api/v1/auth/login"]["POST"]
    signed = _data(login.Case(body={"email": ADMIN_EMAIL, "password": PASSWORD}))
    headers = {
        "Authorization": f"Bearer {signed['accessToken']}",
        "X-Workspace-Id": signed["workspaceId"],
    }
    app_id = _data(schema["/api/v1/apps"]["POST"].Case(body={"name": "Blog"}), headers)["id"]
    api: dict[str, Any] = {"api": "hello", "steps": [{"id": "s", "type": "set", "value": 1}]}
    apis = schema["/api/v1/apps/{app_id}/apis"]["POST"]
    api_id = _data(apis.Case(path_parameters={"app_id": app_id}, body=api), headers)["id"]
    fields = [{"name": "title", "type": "string"}, {"name": "views", "type": "integer"}]
    dataset: dict[str, Any] = {"appId": app_id, "name": "posts", "fields": fields}
    dataset_id = _data(schema["/api/v1/datasets"]["POST"].Case(body=dataset), headers)["id"]
    records = schema["/api/v1/datasets/{dataset_id}/records"]["POST"]
    record = records.Case(path_parameters={"dataset_id": dataset_id}, body={"title": "a"})
    record_id = _data(record, headers)["id"]
    subscriptions = schema["/api/v1/subscriptions"]["POST"]
    subscription_id = _data(subscriptions.Case(body={"appId": app_id}), headers)["id"]
    key = {"type": "app", "name": "fuzz", "appId": app_id}
    key_id = _data(schema["/api/v1/api-keys"]["POST"].Case(body=key), headers)["id"]
    ids = {
        "workspace_id": signed["workspaceId"],
        "app_id": app_id,
        "api_id": api_id,
        "dataset_id": dataset_id,
        "record_id": record_id,
        "key_id": key_id,
        "subscription_id": subscription_id,
        "version": "dev",
    }
    return headers, ids


def _read(schema: schemathesis.BaseSchema, case: Case[Any], headers: dict[str, str]) -> Any:
    """What `GET` on the path of a write `case` shows (the resource or the collection it writes
    to), or None when the path has no `GET` or it does not answer 200."""
    if "get" not in schema.raw_schema["paths"][case.operation.path]:
        return None
    read = schema[case.operation.path]["GET"]
    names = {p.name for p in read.path_parameters}
    params = {k: v for k, v in (case.path_parameters or {}).items() if k in names}
    response = read.Case(path_parameters=params).call(headers=dict(headers))
    return response.json() if response.status_code == 200 else None


def _fuzz(schema: schemathesis.BaseSchema, strategy: Any, headers: dict[str, str]) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )
    @hypothesis.given(case=strategy)
    def run(case: Case[Any]) -> None:
        write = case.operation.method.upper() in WRITES
        before = _read(schema, case, headers) if write else None
        response = case.call_and_validate(
            headers=dict(headers), checks=CHECKS, additional_checks=[envelope_code_is_status]
        )
        if before is not None and 400 <= response.status_code < 500:
            after = _read(schema, case, headers)
            assert after == before, (
                f"{response.status_code} {response.text}, yet GET changed:\n"
                f"{before}\n-> {after}\n{case.as_curl_command(headers=dict(headers))}"
            )

    run()


def test_management_api_answers_as_documented(fuzz_schema: schemathesis.BaseSchema) -> None:
    headers, ids = _seed(fuzz_schema)
    failures = []
    for result in fuzz_schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document itself is checked elsewhere
        operation = result.ok()
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue
        names = {p.name for p in operation.path_parameters}
        # Deletions get generated ids: the seeded resources must outlive the operations after.
        fixed = {} if operation.method == "delete" else {n: ids[n] for n in names & ids.keys()}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(
                generation_mode=mode, path_parameters=fixed or None, headers=headers
            )
            try:
                _fuzz(fuzz_schema, strategy, headers)
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing of this operation can be made invalid (no body, no query)
            except (Exception, FailureGroup) as exc:  # a group of check failures is a BaseException
                failures.append(f"{operation.label} ({mode.value}):\n{exc}")
    assert not failures, "\n\n".join(failures)
