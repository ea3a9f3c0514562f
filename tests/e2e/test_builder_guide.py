"""`docs/builder.md` runs as written: every example block of the guide is executed over HTTP.

The guide marks each runnable block with an HTML comment the reader does not see:

- `<!-- fixture: NAME -->` before a JSON collection (`name`, `fields`, optional `records`) that
  examples pull in by name (`"collections": ["posts"]`);
- `<!-- example: NAME -->` before a JSON example. `NAME` is a step type (`getMany`) or a step type
  or concept with a variant (`update/conflict`, `concept/filters`).

An example may hold `app` (extra fields of `POST /api/v1/apps`: `config`, `secrets`),
`collections` (fixture names or inline definitions, created with `POST /api/v1/datasets` and
seeded through the records API), `apis` (saved on `dev` with `POST /api/v1/apps/{appId}/apis`),
then exactly one of: `steps` (+ `args`) run with `POST /api/v1/workflows`; `invoke` (a body of
`POST /api/v1/invocations`, on `dev` unless it says otherwise); `calls` (a list of HTTP calls,
each with its own `expect`). `expect` holds `status` (default 200), optionally `message`, `data`
(a subset of the envelope's `data`), `body` (a subset of a non-envelope JSON answer), `text` (a
piece of a non-JSON answer), `headers` and `logs` (structured log lines the call wrote). A subset
match means: objects need the listed keys (others may be present), lists match item by item and
have the same length, `"<string>"` stands for any non-empty string and `"<timestamp>"` for a
`YYYY-MM-DDTHH:MM:SSZ` time. `{appId}`, `{apiId.NAME}` and `{datasetId.NAME}` in call paths and
bodies become the ids the example created; `{{LOCAL_SERVER}}` becomes the base URL of a small HTTP
server on 127.0.0.1 that this test starts, allow-listed for that example only.
"""

import dataclasses
import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from structlog.testing import capture_logs

from apiforge.engine.catalog import STEP_TYPES
from apiforge.engine.service import build_engine_state
from tests.e2e._workspaces import data_of
from tests.factories import User, register

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "builder.md"
# The catalogue; the guide must also cover anything added to the engine since.
REQUIRED_TYPES = frozenset(
    {
        "assert",
        "set",
        "getOne",
        "getMany",
        "count",
        "aggregate",
        "insert",
        "update",
        "delete",
        "upsert",
        "transaction",
        "if",
        "forEach",
        "jwtSign",
        "jwtRevoke",
        "password",
        "userRight",
        "httpRequest",
        "callApi",
        "return",
        "throw",
        "log",
    }
)
CONTAINER_FIELDS = ("steps", "then", "else")
EXAMPLE_KEYS = frozenset(
    {"app", "collections", "apis", "steps", "args", "invoke", "calls", "expect"}
)
RUNNERS = ("steps", "invoke", "calls")
LOCAL_SERVER = "{{LOCAL_SERVER}}"
WEATHER_KEY = "wx-demo-key-0001"  # the key the guide's httpRequest example sets as an app secret
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_BLOCK = re.compile(r"<!-- (example|fixture): (\S+) -->\s*\n```json\n(.*?)\n```", re.DOTALL)
_MARKER = re.compile(r"<!-- (?:example|fixture):")
_PLACEHOLDER = re.compile(r"\{(appId|apiId\.[A-Za-z0-9]+|datasetId\.[A-Za-z0-9_]+)\}")


# --- reading the guide ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Guide:
    examples: dict[str, dict[str, Any]]
    fixtures: dict[str, dict[str, Any]]
    markers: int


def read_guide() -> Guide:
    text = GUIDE.read_text(encoding="utf-8")
    examples: dict[str, dict[str, Any]] = {}
    fixtures: dict[str, dict[str, Any]] = {}
    for kind, name, body in _BLOCK.findall(text):
        target = examples if kind == "example" else fixtures
        assert name not in target, f"two {kind}s named {name}"
        target[name] = json.loads(body)
    return Guide(examples, fixtures, len(_MARKER.findall(text)))


GUIDE_CONTENT = read_guide()


def step_types(steps: Any) -> Iterator[str]:
    """Every step type in a step list, nested ones included."""
    for step in steps or []:
        yield step["type"]
        for field in CONTAINER_FIELDS:
            if isinstance(step.get(field), list):
                yield from step_types(step[field])


def example_types(example: dict[str, Any]) -> set[str]:
    types = set(step_types(example.get("steps")))
    for api in example.get("apis", []):
        types.update(step_types(api.get("steps")))
    for call in example.get("calls", []):
        body = call.get("body")
        if isinstance(body, dict):
            types.update(step_types(body.get("steps")))
    return types


# --- matching -------------------------------------------------------------------------------


def mismatches(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Where `actual` departs from `expected` under the guide's subset rules."""
    if expected == "<string>":
        return [] if isinstance(actual, str) and actual else [f"{path}: {actual!r} is no string"]
    if expected == "<timestamp>":
        ok = isinstance(actual, str) and TIMESTAMP.match(actual)
        return [] if ok else [f"{path}: {actual!r} is no timestamp"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        problems: list[str] = []
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{path}.{key}: missing (have {sorted(actual)})")
            else:
                problems.extend(mismatches(value, actual[key], f"{path}.{key}"))
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {len(expected)} items, got {actual!r}"]
        return [
            problem
            for index, (want, got) in enumerate(zip(expected, actual, strict=True))
            for problem in mismatches(want, got, f"{path}[{index}]")
        ]
    if type(expected) is not type(actual) or expected != actual:  # 1 is not true, 1.0 not 1
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return []


def check(response: Response, expect: dict[str, Any], logs: Sequence[Mapping[str, Any]]) -> None:
    status = expect.get("status", 200)
    assert response.status_code == status, response.text
    problems: list[str] = []
    if "data" in expect or "message" in expect:
        envelope = response.json()
        assert envelope["code"] == status, envelope
        if status == 200:
            assert envelope["message"] == "success", envelope
        if "message" in expect:
            problems += mismatches(expect["message"], envelope["message"], "message")
        if "data" in expect:
            problems += mismatches(expect["data"], envelope["data"], "data")
    if "body" in expect:
        problems += mismatches(expect["body"], response.json(), "body")
    if "text" in expect:
        assert expect["text"] in response.text, response.text[:2000]
    if "headers" in expect:
        shown = {name.lower(): value for name, value in response.headers.items()}
        wanted = {name.lower(): value for name, value in expect["headers"].items()}
        problems += mismatches(wanted, shown, "headers")
    if "logs" in expect:
        api_logs = [entry for entry in logs if entry.get("event") == "api_log"]
        problems += mismatches(expect["logs"], api_logs, "logs")
    assert not problems, "\n".join(problems) + "\n" + response.text[:4000]


# --- a local upstream for httpRequest -------------------------------------------------------


class _Weather(BaseHTTPRequestHandler):
    """`GET /weather?city=...` with `Authorization: Bearer <WEATHER_KEY>` → a JSON forecast."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        city = parse_qs(url.query).get("city", [""])[0]
        if self.headers.get("Authorization") != f"Bearer {WEATHER_KEY}":
            self._send(401, {"error": "bad key"})
        elif url.path != "/weather" or not city:
            self._send(404, {"error": "unknown"})
        else:
            self._send(200, {"city": city, "tempC": 21, "sky": "clear"})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        content = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is the place for failures only."""


@contextmanager
def local_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Weather)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def allow_local_targets(app: FastAPI) -> None:
    """The operator's allow-list (engine services), set to 127.0.0.1 for this app only."""
    state = build_engine_state(app.state.engine, app.state.settings)
    state.services = dataclasses.replace(state.services, http_allow_hosts=frozenset({"127.0.0.1"}))
    app.state.engine_state = state


def substituted(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, replacement in names.items():
            value = value.replace(placeholder, replacement)
        return value
    if isinstance(value, dict):
        return {key: substituted(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [substituted(item, names) for item in value]
    return value


# --- running an example ---------------------------------------------------------------------


class Run:
    """One example in a fresh workspace: its app, collections, records and APIs, then the call."""

    def __init__(self, client: AsyncClient, user: User, names: dict[str, str]) -> None:
        self.client = client
        self.user = user
        self.names = names  # placeholder -> value

    async def setup(self, example: dict[str, Any]) -> str:
        body = {"name": "Guide example", **example.get("app", {})}
        response = await self.client.post("/api/v1/apps", json=body, headers=self.user.headers)
        app_id: str = data_of(response)["id"]
        self.names["{appId}"] = app_id
        for item in example.get("collections", []):
            collection = GUIDE_CONTENT.fixtures[item] if isinstance(item, str) else item
            await self.collection(app_id, collection)
        for api in example.get("apis", []):
            response = await self.client.post(
                f"/api/v1/apps/{app_id}/apis", json=api, headers=self.user.headers
            )
            self.names[f"{{apiId.{api['api']}}}"] = data_of(response)["id"]
        return app_id

    async def collection(self, app_id: str, collection: dict[str, Any]) -> None:
        definition = {key: value for key, value in collection.items() if key != "records"}
        response = await self.client.post(
            "/api/v1/datasets", json={"appId": app_id, **definition}, headers=self.user.headers
        )
        dataset_id = data_of(response)["id"]
        self.names[f"{{datasetId.{collection['name']}}}"] = dataset_id
        for record in collection.get("records", []):
            response = await self.client.post(
                f"/api/v1/datasets/{dataset_id}/records", json=record, headers=self.user.headers
            )
            data_of(response)

    async def call(self, method: str, path: str, body: Any = None) -> Response:
        path = self._ids(path)
        if body is None:
            return await self.client.request(method, path, headers=self.user.headers)
        return await self.client.request(
            method, path, json=self._ids(body), headers=self.user.headers
        )

    def _ids(self, value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda match: self.names[match.group(0)], value)
        if isinstance(value, dict):
            return {key: self._ids(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._ids(item) for item in value]
        return value


async def run_example(app: FastAPI, client: AsyncClient, example: dict[str, Any]) -> None:
    user = await register(client)
    run = Run(client, user, {})
    app_id = await run.setup(example)
    if "steps" in example:
        body = {"appId": app_id, "steps": example["steps"], "args": example.get("args", {})}
        with capture_logs() as logs:
            response = await run.call("POST", "/api/v1/workflows", body)
        check(response, example["expect"], logs)
    elif "invoke" in example:
        body = {"appId": app_id, "version": "dev", **example["invoke"]}
        with capture_logs() as logs:
            response = await run.call("POST", "/api/v1/invocations", body)
        check(response, example["expect"], logs)
    else:
        for index, call in enumerate(example["calls"]):
            with capture_logs() as logs:
                response = await run.call(call["method"], call["path"], call.get("body"))
            try:
                check(response, call["expect"], logs)
            except AssertionError as exc:
                where = f"call {index} ({call['method']} {call['path']})"
                raise AssertionError(f"{where}: {exc}") from None


# --- tests ----------------------------------------------------------------------------------


def test_every_step_type_has_a_running_example() -> None:
    covered = {name.split("/", 1)[0] for name in GUIDE_CONTENT.examples}
    missing = sorted((REQUIRED_TYPES | set(STEP_TYPES)) - covered)
    assert not missing, f"docs/builder.md has no example for: {', '.join(missing)}"


def test_each_example_uses_the_step_type_it_is_named_for() -> None:
    for name, example in GUIDE_CONTENT.examples.items():
        kind = name.split("/", 1)[0]
        if kind in STEP_TYPES:
            assert kind in example_types(example), f"example {name} has no {kind} step"


def test_examples_are_well_formed() -> None:
    # A marker whose block did not parse would silently drop an example.
    assert GUIDE_CONTENT.markers == len(GUIDE_CONTENT.examples) + len(GUIDE_CONTENT.fixtures)
    for name, example in GUIDE_CONTENT.examples.items():
        assert set(example) <= EXAMPLE_KEYS, f"{name}: unknown keys {set(example) - EXAMPLE_KEYS}"
        runners = [key for key in RUNNERS if key in example]
        assert len(runners) == 1, f"{name}: give exactly one of steps, invoke, calls"
        assert ("expect" in example) != ("calls" in example), f"{name}: expect misplaced"
        for item in example.get("collections", []):
            assert not isinstance(item, str) or item in GUIDE_CONTENT.fixtures, item


def test_matcher_refuses_what_differs() -> None:
    """The examples prove something only if a wrong answer fails them."""
    assert mismatches({"a": 1}, {"a": 1, "b": 2}) == []
    assert mismatches({"a": 1}, {"a": 2})
    assert mismatches({"a": 1}, {"b": 1})
    assert mismatches([1, 2], [1, 2, 3])
    assert mismatches(True, 1)
    assert mismatches(1, 1.0)
    assert mismatches("<string>", "")
    assert mismatches("<timestamp>", "2024-01-01 00:00:00")
    assert mismatches("<timestamp>", "2024-01-01T00:00:00Z") == []


@pytest.mark.parametrize("name", sorted(GUIDE_CONTENT.examples))
async def test_guide_example(name: str, app: FastAPI, client: AsyncClient) -> None:
    example = GUIDE_CONTENT.examples[name]
    if LOCAL_SERVER not in json.dumps(example):
        await run_example(app, client, example)
        return
    allow_local_targets(app)
    with local_server() as base_url:
        await run_example(app, client, substituted(example, {LOCAL_SERVER: base_url}))
