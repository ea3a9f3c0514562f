"""Fifth review of billing and costs: `callApi` callees within the caller's budgets.

Bug found:
- A `callApi` step counted its callee as one step costing the callee's whole cost (what a call
  of the callee alone may consume, its own 1,000 iterations and 500 steps spent). In a loop
  that is once per caller iteration, and the 500-step bound took 500 of them: a loop calling
  an API that reads one 1,000-record page (50 RU) next to a loop of its own was costed
  525,000 RU, while the callee's steps share the caller's budgets and no call can consume more
  than 25,000 RU of it. Builders had to price such APIs (and pay the platform) 20x and more
  what any call could run. A callee of the same version is now part of its caller's bound, its
  steps and loops counted within the caller's budgets; the property test below checks that no
  call, callees included, consumes more than it is charged.
"""

import itertools
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apiforge.core.settings import Settings
from apiforge.engine import runtime
from apiforge.engine.base import CompiledStep, RunContext
from apiforge.engine.steps import control
from apiforge.engine.steps.data import GetManyStep
from tests.e2e._apps import new_api
from tests.e2e._billing import balances, ledger_invariants, top_up
from tests.e2e._costs import api_cost, for_each, hits_app
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import data_of
from tests.factories import User, make_admin, register

STEPS = 500  # RunLimits.max_steps: steps one call runs, callees' and loop bodies included
PAGE = {"id": "page", "type": "getMany", "collection": "hits", "pageSize": 1000}  # 50 RU
COUNT = {"id": "n", "type": "count", "collection": "hits"}  # 1 RU at the seeded price


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def test_a_loop_of_calls_is_costed_within_the_caller_s_budgets(
    app: FastAPI, client: AsyncClient
) -> None:
    """A loop of 10,000 calls to an API reading a 50 RU page (and looping over counts): the
    callee's page read can run at most 500 times in one call, 25,000 RU; it was costed as 500
    whole calls of 1,050 RU, 525,000 RU. A published call of it is charged the new cost."""
    owner, consumer = await register(client), await register(client)
    admin = await make_admin(app, client)
    app_id = await hits_app(client, owner, "Fifth")
    params = [{"name": "items", "type": "array", "default": []}]
    inner_steps = [PAGE, for_each("each", 10_000, COUNT, items={"expr": "args.items"})]
    await new_api(
        client, owner.headers, app_id, "inner", price=1050, params=params, steps=inner_steps
    )
    step = {"id": "call", "type": "callApi", "api": "inner", "args": {"items": [1, 2]}}
    outer_steps = [for_each("calls", 10_000, step, items={"expr": "args.n"})]
    price = STEPS * 50
    outer = await new_api(
        client,
        owner.headers,
        app_id,
        "outer",
        price=price,
        params=[{"name": "n", "type": "array"}],
        steps=outer_steps,
    )
    assert await api_cost(client, owner, app_id, outer) == price
    url = f"/api/v1/apps/{app_id}/versions"
    data_of(await client.post(url, json={"bump": "minor"}, headers=owner.headers))
    await top_up(client, admin, consumer.workspace_id, 2 * price)
    _, secret = await app_key(client, consumer, app_id)
    called = await call(client, secret, app_id, "outer", args={"n": [1, 2, 3]})
    assert [len(entry["call"]["each"]) for entry in data_of(called)["calls"]] == [2, 2, 2]
    assert (await balances(client, consumer))["balance"] == price
    await ledger_invariants(app)


# --- property: no call, callees included, consumes more than its cost -------------------------

PRICES = {
    "set": 3,
    "count": 5,
    "getMany": 2,  # x 5: a page of 100 records
    "forEach": 2,
    "if": 1,
    "transaction": 1,
    "callApi": 4,
    "return": 7,
}
CALLEES = ("calleeA", "calleeB")  # calleeB may call calleeA; workflows call either

Tree = dict[str, Any]


def _own_price(step: CompiledStep) -> int:
    """What one run of `step` consumes on its own (a `callApi` without its callee, a container
    without its children): what the static cost must cover for every step a call runs."""
    price = PRICES.get(step.type, 0)
    if isinstance(step, GetManyStep):
        return price * math.ceil(step.page_cap / 20)
    return price


class Meter:
    """Counts what the steps of calls consume, callees included: every step list is run
    through `run_steps`, a callee's too (`runtime.execute`), one step at a time here."""

    def __init__(self, original: Callable[[Sequence[CompiledStep], RunContext], Awaitable[None]]):
        self.original = original
        self.consumed = 0

    async def run_steps(self, steps: Sequence[CompiledStep], ctx: RunContext) -> None:
        for step in steps:
            self.consumed += _own_price(step)
            await self.original((step,), ctx)


def _leaves(calls: Sequence[str]) -> st.SearchStrategy[Tree]:
    kinds = ["set", "count", "getMany", "return"]
    plain = st.sampled_from(kinds).map(lambda kind: {"kind": kind})
    if not calls:
        return plain
    calling = st.sampled_from(list(calls)).map(lambda api: {"kind": "callApi", "api": api})
    return st.one_of(plain, calling)


def _containers(children: st.SearchStrategy[list[Tree]]) -> st.SearchStrategy[Tree]:
    loops = st.fixed_dictionaries(
        {
            "kind": st.just("forEach"),
            "most": st.sampled_from([1, 3, 20, 400, 1000, 10_000]),
            "items": st.integers(0, 600),
            "body": children,
        }
    )
    branches = st.fixed_dictionaries(
        {"kind": st.just("if"), "take": st.booleans(), "then": children, "else": children}
    )
    groups = st.fixed_dictionaries({"kind": st.just("transaction"), "body": children})
    return st.one_of(loops, branches, groups)


def _trees(calls: Sequence[str]) -> st.SearchStrategy[list[Tree]]:
    tree = st.recursive(
        _leaves(calls), lambda inner: _containers(st.lists(inner, max_size=3)), max_leaves=8
    )
    return st.lists(tree, min_size=1, max_size=4)


def _steps(trees: list[Tree], ids: "itertools.count[int]") -> list[dict[str, Any]]:
    """Step definitions of generated trees; a loop gets `min(items, maxIterations)` items."""
    steps: list[dict[str, Any]] = []
    for tree in trees:
        step_id, kind = f"s{next(ids)}", tree["kind"]
        if kind == "set":
            steps.append({"id": step_id, "type": "set", "value": 1})
        elif kind == "count":
            steps.append({"id": step_id, "type": "count", "collection": "hits"})
        elif kind == "getMany":
            steps.append({"id": step_id, "type": "getMany", "collection": "hits", "pageSize": 100})
        elif kind == "return":
            steps.append({"id": step_id, "type": "return", "value": 1})
        elif kind == "callApi":
            steps.append({"id": step_id, "type": "callApi", "api": tree["api"], "args": {}})
        elif kind == "forEach":
            items = list(range(min(tree["items"], tree["most"])))
            steps.append(for_each(step_id, tree["most"], *_steps(tree["body"], ids), items=items))
        elif kind == "if":
            then, otherwise = _steps(tree["then"], ids), _steps(tree["else"], ids)
            condition = tree["take"]
            steps.append(
                {
                    "id": step_id,
                    "type": "if",
                    "condition": condition,
                    "then": then,
                    "else": otherwise,
                }
            )
        else:
            body = _steps(tree["body"], ids)
            steps.append({"id": step_id, "type": "transaction", "steps": body})
    return steps


class World:
    """What the examples of one run share (hypothesis calls the test once per example)."""

    app: Any = None
    owner: User | None = None
    app_id = ""
    api_ids: dict[str, str] = {}  # replaced per run


WORLD = World()
FUNDS = 10**10


async def _world(app: FastAPI, client: AsyncClient) -> User:
    if WORLD.app is not app:
        WORLD.app, WORLD.owner = app, await register(client)
        WORLD.app_id = await hits_app(client, WORLD.owner, "Fifth")
        admin = await make_admin(app, client)
        for step_type, price in PRICES.items():
            url = f"/api/v1/admin/pricing/{step_type}"
            data_of(await client.put(url, json={"cost": price}, headers=admin.headers))
        await top_up(client, admin, WORLD.owner.workspace_id, FUNDS)
        WORLD.api_ids = {}
        for api in CALLEES:
            steps = [{"id": "x", "type": "set", "value": 1}]
            WORLD.api_ids[api] = await new_api(
                client, WORLD.owner.headers, WORLD.app_id, api, price=10**12, steps=steps
            )
    assert WORLD.owner is not None
    return WORLD.owner


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(callee_a=_trees(()), callee_b=_trees(CALLEES[:1]), trees=_trees(CALLEES))
async def test_no_call_consumes_more_than_its_cost_callees_included(
    app: FastAPI,
    client: AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    callee_a: list[Tree],
    callee_b: list[Tree],
    trees: list[Tree],
) -> None:
    """Random steps calling random APIs (loops up to 10,000, nested, in branches and
    transactions, `return` anywhere, callees with loops of their own) run as a workflow, which
    is charged its static cost: what every step run consumed, the callees' steps included,
    never costs more than what was charged; a call over a budget is charged nothing."""
    owner = await _world(app, client)
    for api, callee in zip(CALLEES, (callee_a, callee_b), strict=True):
        url = f"/api/v1/apps/{WORLD.app_id}/apis/{WORLD.api_ids[api]}"
        saved = {"steps": _steps(callee, itertools.count())}
        data_of(await client.patch(url, json=saved, headers=owner.headers))
    meter = Meter(runtime.run_steps)
    monkeypatch.setattr(runtime, "run_steps", meter.run_steps)
    monkeypatch.setattr(control, "run_steps", meter.run_steps)
    before = (await balances(client, owner))["balance"]
    body: dict[str, Any] = {"appId": WORLD.app_id, "steps": _steps(trees, itertools.count())}
    try:
        response = await client.post("/api/v1/workflows", json=body, headers=owner.headers)
    finally:
        monkeypatch.undo()
    charged = before - (await balances(client, owner))["balance"]
    if response.status_code == 422:  # a budget ran out: nothing is charged
        assert response.json()["data"]["error"] == "limit_exceeded", response.text
        assert charged == 0
        return
    assert response.status_code == 200, response.text
    assert meter.consumed <= charged, (meter.consumed, charged, body, callee_a, callee_b)
