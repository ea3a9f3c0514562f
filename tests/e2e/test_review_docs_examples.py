"""The examples of README.md and docs/*.md run as written, and the facts they state hold.

test_builder_guide.py runs docs/builder.md's JSON examples and test_readme_first_steps.py follows
the README's first steps with httpx. Here the shell examples run verbatim (bash, curl, jq,
md5sum, openssl) against a real `apiforge serve`, the Python and HTTP examples are executed
against the app, and the names and numbers the prose states — routes, settings and their
defaults, Make targets, error reasons, metric labels, step costs, per-call limits — are checked
against the code, so none of them can drift unnoticed.
"""

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.cli import AdminBootstrap
from apiforge.core.settings import Settings
from apiforge.engine.base import RunLimits
from apiforge.engine.catalog import STEP_TYPES
from tests._servers import running_servers, settings_env
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key
from tests.e2e._workspaces import data_of
from tests.factories import User, make_admin, register

ROOT = Path(__file__).resolve().parents[2]
DOCS_DIR = ROOT / "docs"
DOCS = sorted(DOCS_DIR.glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
BLOG = ROOT / "examples" / "blog-app.json"
APIFORGE = Path(sys.executable).with_name("apiforge")
SHELL_TIMEOUT = 60.0

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
_ROUTE = re.compile(
    r"\b((?:GET|POST|PUT|PATCH|DELETE)(?:/(?:GET|POST|PUT|PATCH|DELETE))*)\s+`?"
    r"(/(?:api/v1/)?[A-Za-z][^\s`?#,)|]*)"
)
_SETTING = re.compile(r"APIFORGE_([A-Z][A-Z0-9_]*[A-Z0-9])")
# "`APIFORGE_X` (120 s", "`APIFORGE_X` (default 60", "`APIFORGE_X`, default 20"
_SETTING_DEFAULT = re.compile(
    r"`APIFORGE_([A-Z0-9_]+)`(?:\s*\((?:default\s+)?|, default )(\d[\d,.]*)"
)
_STATUS_REASON = re.compile(r"\b[1-5]\d\d\b\s*(?:\|\s*)?`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`")
# Variables read outside `Settings`: `apiforge admin ensure`'s, and the test harness's.
ADMIN_SETTINGS = {f"ADMIN_{name.upper()}" for name in AdminBootstrap.model_fields}
TEST_SETTINGS = {"TEST_DATABASE_URL", "TEST_REDIS_URL", "TEST_REQUIRE_SERVICES"}


def text_of(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def blocks(page: Path, language: str) -> list[str]:
    """The fenced code blocks of `page` in `language`, in order."""
    return [body for lang, body in _FENCE.findall(text_of(page)) if lang == language]


def section(page: Path, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    text = text_of(page)
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1 :]
    ends = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)]
    return rest[: ends[0]] if ends else rest


def replaced(text: str, replacements: dict[str, str]) -> str:
    """`text` with each placeholder replaced; a placeholder the page lost fails the test, so a
    rewritten example is noticed rather than silently run half-substituted."""
    for placeholder, value in replacements.items():
        assert placeholder in text, f"the example no longer holds {placeholder!r}"
        text = text.replace(placeholder, value)
    return text


async def bash(script: str, cwd: Path, env: dict[str, str]) -> str:
    """Run `script` with bash (errexit, pipefail) and return its stdout; a failure shows both
    streams."""
    done = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", "set -eo pipefail\n" + script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def shell_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("APIFORGE_")}
    env.update(extra)
    return env


# `curl -s` prints a body without a newline: give each one its own line, so every answer of a
# script can be read back as one JSON envelope a line.
CURL_LINES = 'curl() { command curl "$@"; local rc=$?; echo; return $rc; }\n'


def envelopes(output: str) -> list[dict[str, Any]]:
    answers = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    for answer in answers:
        assert answer["code"] == 200, answer
    return answers


# --- names and numbers the prose states ---------------------------------------------------------


async def test_every_documented_route_exists_with_its_method(app: FastAPI) -> None:
    schema = app.openapi()
    known = {re.sub(r"\{[^}]+\}", "{}", path): set(ops) for path, ops in schema["paths"].items()}
    checked = 0
    for page in PAGES:
        for methods, path in _ROUTE.findall(text_of(page)):
            path = path.rstrip(".:")
            if not path.startswith("/api/v1/"):
                if path.startswith("/api/") or path in ("/metrics", "/healthz", "/readyz"):
                    continue  # another server's route (PocketBase's in benchmarks.md), or system
                path = "/api/v1" + path  # the idempotency table's short form: `GET /apps/{id}`
            template = re.sub(r"\{[^}]+\}", "{}", path)
            assert template in known, f"{page.name}: {methods} {path} is no route"
            for method in methods.split("/"):
                assert method.lower() in known[template], f"{page.name}: no {method} {path}"
                checked += 1
    assert checked > 100  # the pattern still finds the docs' routes


def test_every_documented_setting_exists() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    conftest = (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")
    for page in [*PAGES, ROOT / "Makefile"]:
        for name in set(_SETTING.findall(text_of(page))):
            if name in TEST_SETTINGS:
                assert f"APIFORGE_{name}" in conftest, name
            else:
                assert name in fields | ADMIN_SETTINGS, f"{page.name}: APIFORGE_{name} is unknown"


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("."))


def test_documented_setting_defaults_are_the_defaults() -> None:
    defaults = Settings.model_fields
    found = 0
    for page in PAGES:
        text = text_of(page)
        for name, value in _SETTING_DEFAULT.findall(text):
            field = defaults[name.lower()]
            assert field.default == _number(value), f"{page.name}: APIFORGE_{name} ({value})"
            found += 1
        for name, cell in re.findall(r"^\| `APIFORGE_([A-Z0-9_]+)` \| ([^|]+) \|", text, re.M):
            default = defaults[name.lower()].get_default(call_default_factory=True)
            value = cell.strip().strip("`")
            if re.fullmatch(r"[\d,.]+", value.split()[0]):
                assert default == _number(value.split()[0]), f"{page.name}: {name} ({value})"
            elif value == "none":
                assert not default, f"{page.name}: {name} has a default"
            elif " " not in value and "<" not in value:
                assert str(default) == value, f"{page.name}: {name} ({value})"
            else:
                continue  # described, not a literal ("SQLite in the data dir")
            found += 1
    readme = text_of(ROOT / "README.md")
    assert "| `APIFORGE_HOST` / `APIFORGE_PORT` | `127.0.0.1` / `8000` |" in readme
    assert (defaults["host"].default, defaults["port"].default) == ("127.0.0.1", 8000)
    assert "| `APIFORGE_FILES_DIR` | `<APIFORGE_DATA_DIR>/files` |" in text_of(
        DOCS_DIR / "files.md"
    )
    assert Settings(data_dir=Path("d")).resolved_files_dir == Path("d") / "files"
    assert "5 failures in 15 minutes" in text_of(DOCS_DIR / "decisions.md")
    assert (defaults["login_max_failures"].default, defaults["login_window_seconds"].default) == (
        5,
        15 * 60,
    )
    assert found >= 15


def test_documented_make_targets_exist() -> None:
    makefile = text_of(ROOT / "Makefile")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.MULTILINE))
    named = {
        name
        for page in PAGES
        for name in re.findall(r"(?:`|^)make ([a-z][\w-]*)", text_of(page), re.M)
    }
    assert {"run", "test", "test-services", "bench"} <= named
    assert named <= targets, f"no such Make targets: {named - targets}"
    assert (ROOT / ".ci" / "run").exists()  # the README names it


def test_every_documented_error_reason_is_one_the_code_gives() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src").rglob("*.py"))
    reasons = {reason for page in PAGES for reason in _STATUS_REASON.findall(text_of(page))}
    refusals = section(ROOT / "docs" / "signing.md", "## Refusals")
    reasons |= set(re.findall(r"^\| `([a-z_]+)`", refusals, re.MULTILINE))
    assert len(reasons) > 50
    missing = sorted(reason for reason in reasons if f'"{reason}"' not in source)
    assert not missing, f"documented reasons no code gives: {missing}"


def test_per_call_limits_table_is_the_engines() -> None:
    table = section(ROOT / "docs" / "builder.md", "## Per-call limits")
    rows = {
        name: value for value, name in re.findall(r"^\|[^|]+\| ([^|]+?) \| `(\w+)` \|", table, re.M)
    }
    limits = RunLimits()
    assert rows == {
        "steps": f"{limits.max_steps}",
        "iterations": f"{limits.max_iterations:,}",
        "maxIterations": "per step",
        "time": f"{limits.time_budget_seconds:g} s",
        "responseBytes": f"{limits.max_response_bytes // 2**20} MB",
        "expressionChars": f"{limits.max_expression_chars // 10**6} million characters",
        "callDepth": f"{limits.max_call_depth}",
    }


async def test_the_step_cost_table_is_the_seeded_pricing(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    listed = data_of(await client.get("/api/v1/admin/pricing?pageSize=100", headers=admin.headers))
    seeded = {row["stepType"]: row["cost"] for row in listed["list"]}
    table = section(ROOT / "docs" / "builder.md", "## Cost and price")
    documented: dict[str, int] = {}
    for cost, types in re.findall(r"^\| (\d+) \| (.+) \|$", table, re.MULTILINE):
        for step_type in re.findall(r"`(\w+)`", types):
            assert step_type not in documented, step_type
            documented[step_type] = int(cost)
    assert set(documented) == set(STEP_TYPES)
    assert documented == {step_type: seeded[step_type] for step_type in STEP_TYPES}


# --- the shell examples, verbatim, against a server -----------------------------------------


@pytest.fixture
def fresh_install(settings: Settings) -> Settings:
    """A fresh install's money settings: new workspaces start at 0 RU."""
    return settings.model_copy(update={"welcome_credits": Settings().welcome_credits})


async def admin_ensure(settings: Settings, port: int) -> tuple[str, str]:
    """`apiforge admin ensure` as `make run` runs it: (the password it prints, its curl line)."""
    env = shell_env(**settings_env(settings), APIFORGE_PORT=str(port))
    done = await asyncio.to_thread(
        subprocess.run,
        [str(APIFORGE), "admin", "ensure"],
        cwd=settings.data_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    password = re.search(r"^\s*password:\s+(\S+)", done.stdout, re.MULTILINE)
    curl_line = re.search(r"^\s*(curl .*)$", done.stdout, re.MULTILINE)
    assert password, done.stdout
    assert curl_line, done.stdout
    return password.group(1), curl_line.group(1)


async def test_the_readme_shell_first_steps_run_verbatim(
    fresh_install: Settings, tmp_path: Path
) -> None:
    readme = ROOT / "README.md"
    steps = [block for block in blocks(readme, "sh") if "localhost:8000" in block]
    assert len(steps) == 2, "the README's first steps and its gateway call"
    async with running_servers(fresh_install, count=1) as servers:
        port = int(servers[0].rsplit(":", 1)[1])
        password, curl_line = await admin_ensure(fresh_install, port)
        # The sign-in line `make run` prints works as printed.
        signed_in = envelopes(await bash(CURL_LINES + curl_line, tmp_path, shell_env()))
        assert signed_in[0]["data"]["accessToken"]

        script = replaced(
            "\n".join(steps),
            {
                "localhost:8000": f"127.0.0.1:{port}",
                "<printed by make run>": password,
                "@examples/blog-app.json": f"@{BLOG}",
            },
        )
        # Every value the steps capture with jq was found.
        check = 'for v in "$TOKEN" "$WS" "$APP" "$SUB" "$KEY"; do [ -n "$v" ] || exit 9; '
        check += '[ "$v" != null ] || exit 9; done'
        output = await bash(CURL_LINES + script + "\n" + check, tmp_path, shell_env())
    credit, traced, published, consumer = envelopes(output)
    assert credit["data"]["balance"] == 100000
    assert traced["data"]["trace"]
    assert "getMany" in json.dumps(traced["data"]["trace"])
    assert published["data"]["version"] == "1.0.0"
    assert "list" in json.dumps(consumer["data"])
    page = (tmp_path / "blog-docs.html").read_text(encoding="utf-8")
    assert page.lower().startswith("<!doctype html")
    assert "getManyPost" in page


async def test_the_files_guide_shell_examples_run_verbatim(
    settings: Settings, tmp_path: Path
) -> None:
    upload, several, download = blocks(ROOT / "docs" / "files.md", "sh")
    contract = b"%PDF-1.4\n" + os.urandom(4096)
    (tmp_path / "contract.pdf").write_bytes(contract)
    (tmp_path / "a.png").write_bytes(b"\x89PNG a")
    (tmp_path / "b.png").write_bytes(b"\x89PNG b")
    async with running_servers(settings, count=1) as servers:
        async with httpx.AsyncClient(base_url=servers[0]) as http:
            user = await register(http)
        env = shell_env(TOKEN=user.access_token)
        base = {"http://127.0.0.1:8000": servers[0]}
        own_token = {"TOKEN=…            # console access token, or a ws- key\n": ""}
        (stored,) = envelopes(await bash(replaced(upload, base | own_token), tmp_path, env))
        file = stored["data"]
        assert file["name"] == "contract.pdf"
        assert file["md5"] == hashlib.md5(contract).hexdigest()  # noqa: S324 - the file's md5
        assert file["contentType"] == "application/pdf"
        assert file["size"] == len(contract)

        (pair,) = envelopes(await bash(replaced(several, base), tmp_path, env))
        assert [item["name"] for item in pair["data"]] == ["a.png", "b.png"]

        example_id = {"01jd8v6q3k2m9x4t7b5n0c1r8e": file["id"]}
        shown = await bash(replaced(download, base | example_id), tmp_path, env)
    assert (tmp_path / "received.pdf").read_bytes() == contract
    header, digest = shown.split()[1], shown.split()[2]
    assert header == digest == file["md5"], shown


async def test_the_signing_shell_example_prints_the_documented_signature(tmp_path: Path) -> None:
    page = ROOT / "docs" / "signing.md"
    (script,) = blocks(page, "sh")
    documented = re.search(r"^\| X-Sign \| `([0-9a-f]{64})` \|$", text_of(page), re.MULTILINE)
    assert documented
    assert (await bash(script, tmp_path, shell_env())).strip() == documented.group(1)


# --- the Python and HTTP examples, against the app ------------------------------------------


async def blog_with_key(client: AsyncClient, user: User) -> tuple[str, str, str]:
    """The example blog app imported and published in `user`'s workspace: (app id, key id,
    `app-` secret)."""
    document = json.loads(BLOG.read_text(encoding="utf-8"))
    app_id = data_of(await client.post("/api/v1/apps/import", json=document, headers=user.headers))[
        "id"
    ]
    publish = {"bump": "major", "notes": "first release"}
    data_of(
        await client.post(f"/api/v1/apps/{app_id}/versions", json=publish, headers=user.headers)
    )
    key_id, secret = await app_key(client, user, app_id)
    return app_id, key_id, secret


async def test_the_signing_python_example_signs_real_calls(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register(client)
    app_id, key_id, secret = await blog_with_key(client, user)
    (code,) = blocks(ROOT / "docs" / "signing.md", "python")
    code = replaced(
        code,
        {
            '"01jgq4x7…"': json.dumps(key_id),
            '"app-…"': json.dumps(secret),
            '"appId": "…"': f'"appId": "{app_id}"',
            "https://api.example.com": "http://testserver",
        },
    )
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(httpx, "post", lambda url, **kwargs: sent.append({"url": url, **kwargs}))
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/signing.md", "exec"), namespace)  # noqa: S102 - the doc's own code
    (request,) = sent
    answer = await client.post(
        request["url"], content=request["content"], headers=request["headers"]
    )
    assert "list" in json.dumps(data_of(answer))

    # Its `canonical_query` signs a query the way the server reads one.
    body = request["content"]
    headers = namespace["signed_headers"](key_id, secret, body, query="lang=en&debug=0&x=a+b")
    headers["Content-Type"] = "application/json"
    answer = await client.post(
        "/api/v1/invocations?lang=en&debug=0&x=a+b", content=body, headers=headers
    )
    assert "list" in json.dumps(data_of(answer))
    replayed = await client.post(
        "/api/v1/invocations?lang=en&debug=0&x=a+b", content=body, headers=headers
    )
    assert replayed.json()["data"]["error"] == "nonce_reused"


def http_request(block: str, replacements: dict[str, str]) -> tuple[str, str, dict[str, str], Any]:
    """(method, path, headers, JSON body or None) of an ```http request block."""
    head, _, body = replaced(block, replacements).partition("\n\n")
    request_line, *header_lines = head.splitlines()
    method, path = request_line.split()[:2]
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip()] = re.split(r"\s{2,}", value.strip())[0]  # drop aligned notes
    return method, path, headers, json.loads(body) if body.strip() else None


async def test_the_idempotency_examples_run(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers, "Shop")
    orders = {"appId": app_id, "name": "orders", "fields": [{"name": "sku", "type": "string"}]}
    data_of(await client.post("/api/v1/datasets", json=orders, headers=user.headers))
    params = [{"name": "sku", "type": "string"}, {"name": "qty", "type": "integer"}]
    insert = {
        "id": "order",
        "type": "insert",
        "collection": "orders",
        "data": {"sku": {"expr": "args.sku"}},
    }
    await new_api(
        client, user.headers, app_id, "placeOrder", params=params, steps=[insert], price=2
    )
    data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=user.headers
        )
    )
    _, secret = await app_key(client, user, app_id)

    examples = blocks(ROOT / "docs" / "idempotency.md", "http")
    (keyed,) = [block for block in examples if "Idempotency-Key:" in block]
    (token_block,) = [block for block in examples if "idempotency-tokens" in block]
    method, path, headers, body = http_request(
        keyed, {"app-…": secret, '"appId": "…"': f'"appId": "{app_id}"'}
    )
    first = await client.request(method, path, json=body, headers=headers)
    again = await client.request(method, path, json=body, headers=headers)
    assert data_of(first)["order"]["sku"] == "A7"
    assert again.headers["Idempotent-Replayed"] == "1"
    assert again.content == first.content
    other = {**body, "args": {"sku": "B8", "qty": 1}}
    mismatch = await client.request(method, path, json=other, headers=headers)
    assert mismatch.status_code == 422
    assert mismatch.json()["data"]["error"] == "idempotency_key_mismatch"

    request, _, answer = token_block.partition("\n\n")
    method, path, headers, _ = http_request(request, {"app-…": secret})
    documented = json.loads(answer)
    issued = await client.request(method, path, headers=headers)
    assert set(issued.json()) == set(documented)
    assert set(data_of(issued)) == set(documented["data"])
    assert data_of(issued)["header"] == documented["data"]["header"]
    spend = {"X-Api-Key": secret, data_of(issued)["header"]: data_of(issued)["token"]}
    call = {"appId": app_id, "api": "placeOrder", "args": {"sku": "C9", "qty": 1}}
    assert (await client.post("/api/v1/invocations", json=call, headers=spend)).status_code == 200
    spent = await client.post("/api/v1/invocations", json=call, headers=spend)
    assert spent.status_code == 409
    assert spent.json()["data"]["error"] == "duplicate_request"


async def test_the_traffic_examples_run(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers, "Shop")
    ok = [{"id": "ok", "type": "set", "value": True}]
    await new_api(client, user.headers, app_id, "createOrder", steps=ok)
    data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=user.headers
        )
    )
    _, secret = await app_key(client, user, app_id)

    put_block, refusal = blocks(ROOT / "docs" / "traffic.md", "http")
    method, path, headers, limits = http_request(
        put_block, {"{appId}": app_id, "<the app's workspace>": user.workspace_id}
    )
    data_of(await client.request(method, path, json=limits, headers={**headers, **user.headers}))
    stored = data_of(await client.get(path, headers=user.headers))
    assert {key: stored[key] for key in limits if key != "apis"} == {
        key: value for key, value in limits.items() if key != "apis"
    }
    for api, set_here in limits["apis"].items():
        assert {key: stored["apis"][api][key] for key in set_here} == set_here

    call = {"appId": app_id, "api": "createOrder", "args": {}}
    allowed = limits["apis"]["createOrder"]["keyPerMinute"]
    for _ in range(allowed):
        data_of(await client.post("/api/v1/invocations", json=call, headers={"X-Api-Key": secret}))
    refused = await client.post("/api/v1/invocations", json=call, headers={"X-Api-Key": secret})

    head, _, body = refusal.partition("\n\n")
    status_line, *header_lines = head.splitlines()
    assert refused.status_code == int(status_line.split()[1])
    for line in header_lines:
        assert line.split(":")[0] in refused.headers, line
    documented = json.loads(body)
    answer = refused.json()
    assert answer["message"] == documented["message"]
    assert set(answer["data"]) == set(documented["data"])
    assert {k: v for k, v in answer["data"].items() if k != "retryAfter"} == {
        k: v for k, v in documented["data"].items() if k != "retryAfter"
    }
    assert refused.headers["Retry-After"] == str(answer["data"]["retryAfter"])


async def test_limit_metrics_use_the_documented_labels(app: FastAPI, client: AsyncClient) -> None:
    app.state.settings = app.state.settings.model_copy(update={"idempotency_tokens_per_minute": 1})
    user = await register(client)
    data_of(await client.get("/api/v1/idempotency-tokens", headers=user.headers))
    refused = await client.get("/api/v1/idempotency-tokens", headers=user.headers)
    assert refused.status_code == 429
    assert (refused.json()["data"]["limit"], refused.json()["data"]["scope"]) == (
        "idempotency_token",
        "caller",
    )
    metrics = (await client.get("/metrics")).text
    sample = 'apiforge_limit_rejections_total{kind="idempotency_token",scope="caller"} 1.0'
    assert sample in metrics
    documented = section(ROOT / "docs" / "traffic.md", "## Metrics")
    bullet = documented[documented.index("apiforge_limit_rejections_total") :].split("\n- ")[0]
    assert "`idempotency_token`" in bullet
    assert "`caller`" in bullet


async def test_app_secrets_limit_answers_as_documented(client: AsyncClient) -> None:
    guide = " ".join(text_of(ROOT / "docs" / "builder.md").split())
    stated = guide[guide.index("An app holds at most 50 secrets") :].split(".")[0]
    assert "`invalid_input`" in stated
    assert "`too_many_secrets`" in stated
    user = await register(client)
    app_id = await new_app(client, user.headers, "Vault")
    at_once = {"secrets": {f"s{i}": "x" for i in range(51)}}
    refused = await client.patch(f"/api/v1/apps/{app_id}", json=at_once, headers=user.headers)
    assert refused.status_code == 400
    assert refused.json()["data"]["error"] == "invalid_input"
    assert refused.json()["data"]["errors"][0]["field"] == "secrets"
    fifty = {"secrets": {f"s{i}": "x" for i in range(50)}}
    data_of(await client.patch(f"/api/v1/apps/{app_id}", json=fifty, headers=user.headers))
    one_more = {"secrets": {"extra": "x"}}
    merged = await client.patch(f"/api/v1/apps/{app_id}", json=one_more, headers=user.headers)
    assert merged.status_code == 400
    assert merged.json()["data"]["error"] == "too_many_secrets"
