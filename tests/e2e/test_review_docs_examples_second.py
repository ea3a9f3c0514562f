"""More of the docs' examples run as written: those test_review_docs_examples.py leaves out.

The request and answer examples of docs/accounts.md, docs/plans.md and docs/billing.md (the
password change, the sessions page, the quota refusal, a quota hit, `/user/plans`, the usage
charts, the wallet and ledger tables), the list `sort=` values the guides name, and the README's
command-line summary are each checked against what the code answers or offers, so a renamed
field, a dropped sort or a changed option fails here rather than in a reader's hands.
"""

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any, get_args

import typer
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.billing.models import PLATFORM_KINDS, WORKSPACE_KINDS
from apiforge.billing.schemas import EntryKind
from apiforge.cli import app as cli_app
from apiforge.gateway.stages.log import request_log_buffer
from apiforge.plans.meter import quota_meter
from tests.e2e._apps import new_api, new_app
from tests.e2e._billing import market
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import data_of
from tests.e2e.test_review_docs_examples import ROOT, blocks, replaced, section, text_of
from tests.factories import PASSWORD, register

DOCS = ROOT / "docs"


def json_blocks(page: Path) -> list[Any]:
    """The ```json blocks of `page`, parsed; `…` (an elided part) made parseable."""
    parsed = []
    for body in blocks(page, "json"):
        body = re.sub(r",\s*…", "", body)  # `{"a": 1, …}` / `[x, …]`: the rest left out
        parsed.append(json.loads(body.replace('"…"', '"x"')))
    return parsed


def shape(value: Any) -> Any:
    """`value`'s keys, nested: what an example promises about the answer's form."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list) and value:
        return [shape(value[0])]
    return None


def has_shape(answer: Any, documented: Any, where: str = "data") -> None:
    """Every key the example shows is in the answer, at the same place (more may be there)."""
    if isinstance(documented, dict):
        assert isinstance(answer, dict), where
        missing = set(documented) - set(answer)
        assert not missing, f"{where}: documented {sorted(missing)} not answered"
        for key, item in documented.items():
            has_shape(answer[key], item, f"{where}.{key}")
    elif isinstance(documented, list) and documented:
        assert isinstance(answer, list), where
        assert answer, f"{where}: an empty list"
        has_shape(answer[0], documented[0], f"{where}[0]")


# --- docs/accounts.md --------------------------------------------------------------------------


async def test_the_password_change_example_answers_as_shown(client: AsyncClient) -> None:
    """The curl example's request runs, and its answer is the commented one: the account's id
    and the other sessions ended (two of them, as in the example)."""
    (example,) = blocks(DOCS / "accounts.md", "sh")
    command, answer = example.split("\n# ")
    body = json.loads(re.search(r"-d '(\{.*\})'", command).group(1))  # type: ignore[union-attr]
    path = re.search(r"localhost:8000(/\S+)", command).group(1)  # type: ignore[union-attr]
    documented = json.loads(answer)

    user = await register(client, "pw-example@example.com")
    # The example's passwords; the account made with the documented current one.
    data_of(
        await client.post(
            "/api/v1/user/password",
            json={"currentPassword": PASSWORD, "newPassword": body["currentPassword"]},
            headers=user.headers,
        )
    )
    for _ in range(2):
        signed_in = {"email": user.email, "password": body["currentPassword"]}
        data_of(await client.post("/api/v1/auth/login", json=signed_in))

    changed = await client.post(path, json=body, headers=user.headers)
    assert {k: v for k, v in changed.json().items() if k != "data"} == {
        k: v for k, v in documented.items() if k != "data"
    }
    assert set(data_of(changed)) == set(documented["data"])
    assert data_of(changed) == {"id": user.account_id, "endedSessions": 2}
    new_password = {"email": user.email, "password": body["newPassword"]}
    data_of(await client.post("/api/v1/auth/login", json=new_password))


async def test_the_sessions_example_is_the_answers_form(client: AsyncClient) -> None:
    (documented,) = json_blocks(DOCS / "accounts.md")
    user = await register(client)
    data_of(
        await client.post("/api/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    )
    line = re.search(r"^`GET (/api/v1/user/sessions\?\S+)`$", text_of(DOCS / "accounts.md"), re.M)
    assert line
    listed: list[dict[str, Any]] = []
    for sort in re.search(r"sort=([\w|]+)", line.group(1)).group(1).split("|"):  # type: ignore[union-attr]
        path = re.sub(r"sort=[\w|]+", f"sort={sort}", line.group(1))
        page = data_of(await client.get(path, headers=user.headers))
        assert shape(page) == shape(documented)
        listed.append(page)
    assert [session["current"] for session in listed[0]["list"]].count(1) == 1


async def test_the_documented_sign_in_answer_fields_are_answered(client: AsyncClient) -> None:
    table = text_of(DOCS / "accounts.md")
    login = re.search(r"`POST /api/v1/auth/login` `\{[^}]*\}` \| signs in: `\{([^}]*)\}`", table)
    assert login
    fields = {name.strip() for name in login.group(1).split(",")}
    user = await register(client)
    answer = data_of(
        await client.post("/api/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    )
    assert fields <= set(answer), fields - set(answer)
    assert (answer["accountId"], answer["workspaceId"]) == (user.account_id, user.workspace_id)


# --- docs/plans.md -----------------------------------------------------------------------------


async def test_the_plans_guide_examples_are_the_answers(app: FastAPI, client: AsyncClient) -> None:
    page = DOCS / "plans.md"
    refusal, hit_row, user_plans, line, pie = json_blocks(page)
    m = await market(app, client)
    limit = 2
    plan_id = await on_plan(client, m.admin, m.consumer.workspace_id, callsPerMonth=limit)
    call = {"appId": m.app_id, "api": "free", "args": {}}
    for _ in range(limit):
        data_of(
            await client.post("/api/v1/invocations", json=call, headers={"X-Api-Key": m.secret})
        )
    refused = await client.post("/api/v1/invocations", json=call, headers={"X-Api-Key": m.secret})

    # The refusal: its status, message (the example's numbers being the limit) and data.
    assert refused.status_code == refusal["code"]
    documented_limit = refusal["data"]["limit"]
    assert refused.json()["message"] == refusal["message"].replace(
        str(documented_limit), str(limit)
    )
    # When the month resets: now, not the example's (docs/plans.md; test_review_quota_reset.py).
    data = refused.json()["data"]
    assert re.fullmatch(r"\d{4}-\d{2}-01T00:00:00Z", data["resetTime"])
    assert int(refused.headers["Retry-After"]) >= 1
    assert data == {
        **refusal["data"],
        "limit": limit,
        "used": limit,
        "resetTime": data["resetTime"],
    }

    # The row it leaves for admins, at the documented query.
    await quota_meter(app.state.engine).hits.flush()
    (query,) = [block for block in blocks(page, "") if "quota-hits" in block]
    path = " ".join(query.split()).replace("=… &", "=…&").replace("&to=…", "")
    path = replaced(path, {"GET ": "", "workspaceId=…": f"workspaceId={m.consumer.workspace_id}"})
    path = path.replace("from=2026-11-01T00:00:00Z", "from=2000-01-01T00:00:00Z")
    for sort in ("createdTime", "hits"):
        hits = data_of(
            await client.get(path.replace("createdTime|hits", sort), headers=m.admin.headers)
        )
        (row,) = hits["list"]
        assert set(row) == set(hit_row)
        assert {k: row[k] for k in ("quota", "operation", "limit", "used", "hits")} == {
            **{k: hit_row[k] for k in ("quota", "operation")},
            "limit": limit,
            "used": limit,
            "hits": 1,
        }
        assert (row["workspaceId"], row["planId"]) == (m.consumer.workspace_id, plan_id)

    # `/user/plans`: the example's keys, and a usage row's (the calls' log rows written).
    await request_log_buffer(app.state.gateway_state).flush()
    shown = data_of(await client.get("/api/v1/user/plans", headers=m.consumer.headers))
    has_shape(shown, user_plans)
    assert set(shown["usage"][0]) == set(user_plans["usage"][0])
    calls = {row["quota"]: row for row in shown["usage"]}["callsPerMonth"]
    assert (calls["limit"], calls["used"], calls["warning"]) == (limit, limit, 1)

    # The usage charts, in the examples' shapes and the table's defaults.
    answered = data_of(await client.get("/api/v1/usage/calls", headers=m.consumer.headers))
    assert shape(answered) == shape(line)
    assert len(answered["xAxis"]) == 30  # `day`, 30 days before now
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", answered["xAxis"][-1])
    (series,) = answered["series"]
    # `outcome=all` by default: the refused call too; `success` only the 2xx ones
    assert (series["id"], series["name"], series["data"][-1]) == (m.app_id, "Shop", limit + 1)
    succeeded = data_of(
        await client.get("/api/v1/usage/calls?outcome=success", headers=m.consumer.headers)
    )
    assert succeeded["series"][0]["data"][-1] == limit
    hourly = data_of(
        await client.get("/api/v1/usage/calls?granularity=hour", headers=m.consumer.headers)
    )
    assert len(hourly["xAxis"]) == 24
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:00:00Z", hourly["xAxis"][-1])
    assert shape(pie) == shape(
        data_of(await client.get("/api/v1/usage/calls?chart=pie", headers=m.consumer.headers))
    )


async def test_the_pie_example_runs_as_shown(app: FastAPI, client: AsyncClient) -> None:
    """The pie example's app: `Vault` with `ping` called 4 times and `pong` once."""
    *_, pie = json_blocks(DOCS / "plans.md")
    user = await register(client)
    app_id = await new_app(client, user.headers, "Vault")
    for api in ("ping", "pong"):
        await new_api(
            client, user.headers, app_id, api, steps=[{"id": "s", "type": "set", "value": 1}]
        )
    for api, times in (("ping", 4), ("pong", 1)):
        for _ in range(times):
            body = {"appId": app_id, "api": api, "version": "dev", "args": {}}
            data_of(await client.post("/api/v1/invocations", json=body, headers=user.headers))
    await request_log_buffer(app.state.gateway_state).flush()
    answered = data_of(
        await client.get("/api/v1/usage/calls?chart=pie&groupBy=api", headers=user.headers)
    )
    expected = json.loads(json.dumps(pie).replace("<appId>", app_id))
    assert answered == expected


# --- docs/billing.md ---------------------------------------------------------------------------


def table_first_column(text: str) -> list[str]:
    return re.findall(r"^\| `(\w+)` \|", text, re.MULTILINE)


def test_the_wallet_and_ledger_tables_are_the_codes() -> None:
    page = DOCS / "billing.md"
    wallets = section(page, "## Wallets")
    documented = table_first_column(wallets)
    assert set(documented) == set(WORKSPACE_KINDS) | set(PLATFORM_KINDS)
    owners = dict(re.findall(r"^\| `(\w+)` \| (\w[\w ]*?) \|", wallets, re.MULTILINE))
    assert {kind for kind, owner in owners.items() if owner == "every workspace"} == set(
        WORKSPACE_KINDS
    )
    ledger = section(page, "## The ledger")
    assert table_first_column(ledger) == list(get_args(EntryKind))


async def test_the_billing_guide_calls_answer_as_described(
    app: FastAPI, client: AsyncClient
) -> None:
    page = text_of(DOCS / "billing.md")
    m = await market(app, client)
    topup = re.search(r"`POST (/api/v1/admin/wallets/\{workspaceId\}/credits) (\{[^}]*\})`", page)
    assert topup
    body = {
        name: 10 if name == "amount" else "docs" for name in re.findall(r'"(\w+)"', topup.group(2))
    }
    path = topup.group(1).replace("{workspaceId}", m.consumer.workspace_id)
    before = {
        w["kind"]: w["balance"]
        for w in data_of(await client.get("/api/v1/wallets", headers=m.consumer.headers))["list"]
    }
    data_of(await client.post(path, json=body, headers=m.admin.headers))
    wallets = data_of(await client.get("/api/v1/wallets", headers=m.consumer.headers))["list"]
    assert {w["kind"] for w in wallets} == set(WORKSPACE_KINDS)
    assert {w["kind"]: w["balance"] for w in wallets}["balance"] == before["balance"] + 10
    platform = data_of(await client.get("/api/v1/admin/wallets", headers=m.admin.headers))["list"]
    assert {w["kind"] for w in platform} == set(PLATFORM_KINDS)

    # A call, then the lists the guide names with their filters.
    call = {"appId": m.app_id, "api": "priced", "args": {}}
    data_of(await client.post("/api/v1/invocations", json=call, headers={"X-Api-Key": m.secret}))
    entries = data_of(
        await client.get(
            f"/api/v1/ledger-entries?kind=call&walletKind=earnings&appId={m.app_id}"
            "&from=2000-01-01T00:00:00Z",
            headers=m.builder.headers,
        )
    )
    (entry,) = entries["list"]
    assert (entry["kind"], entry["walletKind"], entry["appId"], entry["api"]) == (
        "call",
        "earnings",
        m.app_id,
        "priced",
    )
    assert entry["counterpartyWorkspaceId"] == m.consumer.workspace_id
    assert entry["requestId"]
    earnings = data_of(
        await client.get("/api/v1/earnings?sort=day&order=desc", headers=m.builder.headers)
    )
    for key in ("pageNo", "pageSize", "totalCount", "totalPage", "list", "total"):
        assert key in earnings, key
    assert {"calls", "amount", "day", "appId", "api"} <= set(earnings["list"][0])
    assert earnings["total"] == entry["amount"]


# --- list sorts the guides name ----------------------------------------------------------------


async def test_every_documented_sort_value_is_accepted(app: FastAPI, client: AsyncClient) -> None:
    """`sort=a|b` in a guide's list line: each value lists (200), and a value not named is a 400."""
    m = await market(app, client)
    sorts = []
    for page in (DOCS / "accounts.md", DOCS / "files.md", DOCS / "plans.md", DOCS / "builder.md"):
        text = " ".join(text_of(page).split())
        for path, values in re.findall(
            r"`?(?:GET )?(/api/v1/[\w/{}-]+)\??[^`]*?sort=([\w|]+)", text
        ):
            sorts.append((page.name, path, values.split("|")))
    # builder.md names the versions' sorts in prose, after its path
    versions = re.search(r"`sort=([\w|]+)`, `order=desc\|asc`", text_of(DOCS / "builder.md"))
    assert versions
    sorts.append(("builder.md", "/api/v1/apps/{appId}/versions", versions.group(1).split("|")))
    named = {path for _, path, _ in sorts}
    assert {
        "/api/v1/user/sessions",
        "/api/v1/files",
        "/api/v1/admin/quota-hits",
        "/api/v1/apps/{appId}/versions",
    } <= named, named
    for name, documented, values in sorts:
        route = documented.replace("{appId}", m.app_id)
        headers = m.admin.headers if "/admin/" in route else m.builder.headers
        for value in values:
            listed = await client.get(f"{route}?sort={value}&order=desc", headers=headers)
            assert listed.status_code == 200, f"{name}: {route}?sort={value}: {listed.text}"
        bogus = await client.get(f"{route}?sort=bogus", headers=headers)
        assert bogus.status_code == 400, f"{name}: {route}?sort=bogus"


# --- README.md ---------------------------------------------------------------------------------


def test_the_readme_command_line_is_the_cli() -> None:
    """Each line of the README's command summary names a command the CLI has, with the options
    and arguments it shows."""
    summary = section(ROOT / "README.md", "## Command line")
    (listing,) = [body for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", summary, re.S | re.M)]
    root: Any = typer.main.get_command(cli_app)
    documented_commands = set()
    for line in listing.splitlines():
        usage = re.split(r"\s{2,}", line.strip())[0]
        words = usage.split()
        assert words[0] == "apiforge"
        command: Any = root  # typer's own click: groups are the commands with `commands`
        path = []
        rest = words[1:]
        while hasattr(command, "commands") and rest and rest[0] in command.commands:
            path.append(rest[0])
            command = command.commands[rest.pop(0)]
        assert path, f"README: {usage!r} names no command"
        documented_commands.add(" ".join(path))
        options = {opt for param in command.params for opt in param.opts}
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        for word in rest:
            word = word.strip("[]")
            if word.startswith("--"):
                assert word in options, f"README: `{' '.join(path)}` has no {word}"
        positional = [
            w
            for i, w in enumerate(rest)
            if w.isupper() and not (i and rest[i - 1].startswith("--"))
        ]
        assert len(positional) == len(arguments), f"README: `{usage}` arguments"
    every = {
        f"{name} {sub}"
        for name, group in root.commands.items()
        for sub in getattr(group, "commands", [""])
    }
    assert documented_commands == {c.strip() for c in every}


# --- docs/files.md -----------------------------------------------------------------------------


async def test_the_download_headers_table_is_what_a_download_carries(client: AsyncClient) -> None:
    table = section(DOCS / "files.md", "## Downloading")
    rows = re.findall(r"^\| (`[^|]+`) \| ([^|]+) \|$", table, re.MULTILINE)
    documented = {
        name: value.strip() for names, value in rows for name in re.findall(r"`([\w-]+)`", names)
    }
    assert "ETag" in documented
    assert "X-Content-MD5" in documented
    user = await register(client)
    content = b"%PDF-1.4 the d\xc3\xa9j\xc3\xa0-vu contract"
    form = {"file": ("contrat-d\u00e9j\u00e0.pdf", content, "application/pdf")}
    stored = data_of(await client.post("/api/v1/files", files=form, headers=user.headers))
    got = await client.get(stored["url"], headers=user.headers)
    assert got.status_code == 200
    assert got.content == content
    missing = [name for name in documented if name not in got.headers]
    assert not missing, f"documented download headers not sent: {missing}"
    md5 = hashlib.md5(content)  # noqa: S324 - the file's md5, as the table describes it
    assert got.headers["Content-Type"] == "application/pdf"
    assert got.headers["ETag"] == f'"{md5.hexdigest()}"'
    assert got.headers["Content-MD5"] == base64.b64encode(md5.digest()).decode()
    assert got.headers["X-Content-MD5"] == md5.hexdigest() == stored["md5"]
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in got.headers["Content-Security-Policy"].split(";")[0]
    assert got.headers["Accept-Ranges"] == "bytes"
    disposition = got.headers["Content-Disposition"]
    assert re.fullmatch(
        r"attachment; filename=\"[\x20-\x7e]+\"; filename\*=UTF-8''contrat-d%C3%A9j%C3%A0\.pdf",
        disposition,
    ), disposition
