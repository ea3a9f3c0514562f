"""An API definition as stored and snapshotted, and its validation by the step engine.

One shape serves the snapshot of a version, the export document and the engine: the camelCase
document of `api_document`. Validation is a single call to `engine.compiler.compile_api` with the
app's collections and the current step prices; the builder adds only what the engine cannot know
(the price against the computed cost, the permission target against the params).
"""

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from apiforge.builder.models import ApiDefinition, AppVersion, StepPrice
from apiforge.builder.schemas import ApiCreate, json_problem
from apiforge.core.errors import ValidationError
from apiforge.datasets.models import Collection
from apiforge.datasets.schema import CollectionSchema
from apiforge.engine.base import CALL_LIMITS, MAX_RU, RunLimits
from apiforge.engine.compiler import CalleeBound, check_cost, compile_api
from apiforge.engine.cost import CostBound, opaque, steps_bound
from apiforge.engine.errors import DefinitionError

MAX_CALL_DEPTH = RunLimits().max_call_depth
_PINNED = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
_DEV = (None, "dev")  # a `dev` API's `callApi` versions that run `dev`


def api_document(row: Any) -> dict[str, Any]:
    """The full definition of a saved API (what a version freezes), with its computed cost: of
    an `ApiDefinition`, or of a row of its table (the same names)."""
    return {
        "api": row.api,
        "name": row.name,
        "description": row.description,
        "docExtra": row.doc_extra,
        "group": row.group,
        "enabled": row.enabled,
        "price": row.price,
        "cost": row.cost,
        "params": list(row.params or []),
        "steps": list(row.steps or []),
        "returnSteps": None if row.return_steps is None else list(row.return_steps),
        "auth": dict(row.auth or {}),
    }


def definition_of(data: ApiCreate) -> dict[str, Any]:
    """The camelCase document of a validated input, as `compile_api` and the snapshot read it."""
    return {
        "api": data.api,
        "name": data.name,
        "description": data.description,
        "docExtra": data.doc_extra,
        "group": data.group,
        "enabled": data.enabled,
        "price": data.price,
        "params": list(data.params),
        "steps": list(data.steps),
        "returnSteps": None if data.return_steps is None else list(data.return_steps),
        "auth": data.auth.document(),
    }


async def load_prices(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(StepPrice.step_type, StepPrice.cost))
    return {step_type: int(cost) for step_type, cost in rows}


async def load_collections(session: AsyncSession, app_id: str) -> dict[str, CollectionSchema]:
    rows = await session.scalars(select(Collection).where(Collection.app_id == app_id))
    return {
        row.name: CollectionSchema.build(
            id=row.id, app_id=row.app_id, name=row.name, fields=row.fields or []
        )
        for row in rows
    }


async def dev_documents(
    bind: AsyncSession | AsyncConnection, app_id: str
) -> dict[str, dict[str, Any]]:
    """The app's `dev` APIs as documents (`api_document`) by name: what its `callApi` steps run.
    Read as rows, so a connection without an ORM session can read them too."""
    table = ApiDefinition.__table__
    rows = await bind.execute(select(table).where(table.c.app_id == app_id))
    return {row.api: api_document(row) for row in rows}


async def pinned_costs(
    bind: AsyncSession | AsyncConnection,
    app_id: str | None,
    definitions: Iterable[Mapping[str, Any]],
    own_version: str | None = None,
) -> dict[tuple[str, str], int]:
    """(version, api) -> the cost it was published with, for each published version the `callApi`
    steps of `definitions` pin (but `own_version`, being published)."""
    wanted = {v for d in definitions for v in pinned_versions(d.get("steps"))}
    wanted.discard(own_version or "")
    pinned: dict[tuple[str, str], int] = {}
    if wanted and app_id is not None:
        found = await bind.execute(
            select(AppVersion.version, AppVersion.snapshot).where(
                AppVersion.app_id == app_id, AppVersion.version.in_(sorted(wanted))
            )
        )
        for version, snapshot in found:
            for api, document in ((snapshot or {}).get("apis") or {}).items():
                pinned[(str(version), api)] = int(document.get("cost") or 0)
    return pinned


def price_below_cost(price: int, cost: int, field: str = "price") -> ValidationError:
    return ValidationError(
        f"The price ({price} RU) is below the API's cost ({cost} RU)",
        reason="price_below_cost",
        errors=[{"field": field, "message": f"must be at least the cost, {cost}"}],
    )


def price_above_limit(price: int, field: str = "price") -> ValidationError:
    """A price no call could be charged (saved before prices were held to `MAX_RU`): the same
    400 a save of it gets."""
    return ValidationError(
        f"The price ({price} RU) is above the most one call may be charged ({MAX_RU} RU)",
        errors=[{"field": field, "message": f"Input should be less than or equal to {MAX_RU}"}],
    )


def _prefixed(exc: ValidationError, prefix: str) -> ValidationError:
    errors = [
        {"field": f"{prefix}{e.get('field', '')}", "message": e.get("message", "")}
        for e in exc.details.get("errors", [])
    ]
    return ValidationError(exc.message, errors=errors, reason=exc.reason)


class DefinitionChecker:
    """Compiles API definitions against an app's collections and the current step prices.

    Prices are read once per checker (one request), collections once per app.
    """

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._prices: dict[str, int] | None = None
        self._collections: dict[str, dict[str, CollectionSchema]] = {}

    async def prices(self) -> dict[str, int]:
        if self._prices is None:
            self._prices = await load_prices(self.session)
        return self._prices

    async def collections(self, app_id: str) -> dict[str, CollectionSchema]:
        if app_id not in self._collections:
            self._collections[app_id] = await load_collections(self.session, app_id)
        return self._collections[app_id]

    async def check_api(self, app_id: str, data: ApiCreate, replacing: str | None = None) -> int:
        """The API's cost (its `callApi` callees' included, as `dev` has them; `replacing`: the
        name the API is saved under now); 400 naming the step and field, or
        `price_below_cost`."""
        definition = definition_of(data)
        collections, prices = await self.collections(app_id), await self.prices()
        rows = await self.session.scalars(
            select(ApiDefinition).where(ApiDefinition.app_id == app_id)
        )
        siblings = {row.api: api_document(row) for row in rows if row.api != replacing}
        siblings[data.api] = definition
        callees = await self.callee_costs(app_id, siblings, collections, prices)
        return self.check(definition, collections, prices, callee_cost=callees.at(0))

    async def reprice_callers(
        self, app_id: str, changed: Iterable[str] | None, *, refuse_over_limit: bool = True
    ) -> None:
        """Price again the `dev` APIs that run an API named in `changed` (just saved, renamed or
        deleted) through `callApi`, directly or through other callers: a `dev` call is charged
        the stored cost, so a caller saved before its callee existed, or before it grew, would
        run the callee's steps unpaid. `changed` None: the app's collections changed, so any
        callee may now compile (its steps run) or fail (they don't): every caller is priced
        again. 400 `invalid_definition` (with `refuse_over_limit`) when a caller would cost
        more than one call may be charged; a price now below the cost is left for publishing
        to refuse (a `dev` call of the builder's own pays the cost)."""
        rows = list(
            await self.session.scalars(select(ApiDefinition).where(ApiDefinition.app_id == app_id))
        )
        calls = {
            row.api: {api for api, version in callee_refs(row.steps) if version in _DEV}
            for row in rows
        }
        if changed is None:
            names = set(calls)
            callers = [row for row in rows if calls[row.api] & names]
        else:
            callers = _callers(rows, calls, set(changed))
        if not callers:
            return
        collections, prices = await self.collections(app_id), await self.prices()
        documents = {row.api: api_document(row) for row in rows}
        callees = await self.callee_costs(app_id, documents, collections, prices)
        for row in callers:
            try:
                compiled = compile_api(
                    documents[row.api], collections, prices, callee_cost=callees.at(0)
                )
            except (ValidationError, RecursionError):  # it fails at run time: nothing charged
                continue
            cost = int(compiled.cost)
            if refuse_over_limit and cost > MAX_RU:
                most = f"over the most a call may cost ({MAX_RU})"
                callee = "another API" if changed is None else "this API"
                raise DefinitionError(
                    None,
                    "steps",
                    f"API {row.api}, which calls {callee}, could then cost {cost} RU, {most}",
                )
            if cost != row.cost:
                row.cost = cost
        await self.session.flush()

    async def callee_costs(
        self,
        app_id: str | None,
        definitions: Mapping[str, Mapping[str, Any]],
        collections: Mapping[str, CollectionSchema],
        prices: Mapping[str, int],
        own_version: str | None = None,
    ) -> "CalleeCosts":
        """The callee costs of `definitions` (one version of an app: `dev`, or `own_version`
        being published), with the frozen costs of the published versions they pin."""
        pinned = await pinned_costs(self.session, app_id, definitions.values(), own_version)
        return CalleeCosts(definitions, collections, prices, pinned, own_version)

    def check(
        self,
        definition: dict[str, Any],
        collections: Mapping[str, CollectionSchema],
        prices: Mapping[str, int],
        *,
        prefix: str = "",
        callee_cost: CalleeBound | None = None,
    ) -> int:
        """Compile one definition document; errors name `<prefix><field>`. A cost or a price
        above `MAX_RU` is refused: no call could be charged it."""
        try:
            _check_nesting(definition)
            _check_target(definition)
            compiled = compile_api(
                definition, dict(collections), prices, callee_cost=callee_cost, saving=True
            )
            cost, price = int(compiled.cost), int(definition.get("price") or 0)
            check_cost(cost)
            if price > MAX_RU:
                raise price_above_limit(price)
            if price < cost:
                raise price_below_cost(price, cost)
        except ValidationError as exc:
            raise _prefixed(exc, prefix) if prefix else exc from None
        except RecursionError:
            raise ValidationError(
                "The definition nests too deeply",
                reason="invalid_definition",
                errors=[{"field": f"{prefix}steps", "message": "nests too deeply"}],
            ) from None
        return cost


def _callers(
    rows: list[ApiDefinition], calls: Mapping[str, set[str]], reached: set[str]
) -> list[ApiDefinition]:
    """The rows that run an API of `reached` through `callApi`, directly or through others."""
    callers: list[ApiDefinition] = []
    found = True
    while found:  # callers of callers too: at most every API once
        found = False
        for row in rows:
            if row.api not in reached and calls[row.api] & reached:
                reached.add(row.api)
                callers.append(row)
                found = True
    return callers


def _check_nesting(definition: dict[str, Any]) -> None:
    """Steps nested deeper than `MAX_JSON_DEPTH` are refused before the engine sees them: deeper
    ones were saved, then every read of the API (or its version, or an export) failed."""
    problem = json_problem(definition.get("steps"))
    if problem is not None:
        raise ValidationError(
            "The definition nests too deeply",
            reason="invalid_definition",
            errors=[{"field": "steps", "message": problem}],
        )


def _check_target(definition: dict[str, Any]) -> None:
    """A `userSystem` target read from an arg must name one of the API's params."""
    target = (definition.get("auth") or {}).get("target") or {}
    if target.get("source") != "arg":
        return
    names = {p.get("name") for p in definition.get("params") or [] if isinstance(p, dict)}
    if target.get("value") not in names:
        raise ValidationError(
            "The permission target names an unknown param",
            reason="invalid_definition",
            errors=[{"field": "auth.target.value", "message": "must name one of the params"}],
        )


class CalleeCosts:
    """What an API of one app version consumes when a `callApi` step runs it (`engine/cost.py`
    bounds): its own steps and, in turn, its callees', as deep as calls may nest at run time (a
    step that would nest deeper fails before its callee runs: it adds nothing). Callees of the
    same version are compiled from `definitions`, their steps and loops counted within the
    caller's budgets; a pinned other version adds the cost it was published with."""

    def __init__(
        self,
        definitions: Mapping[str, Mapping[str, Any]],
        collections: Mapping[str, CollectionSchema],
        prices: Mapping[str, int],
        pinned: Mapping[tuple[str, str], int],
        own_version: str | None = None,
    ) -> None:
        self.definitions = definitions
        self.collections = dict(collections)
        self.prices = prices
        self.pinned = pinned
        self.own_version = own_version
        self._costs: dict[tuple[str, int], CostBound] = {}

    def at(self, depth: int) -> CalleeBound:
        """The callee bounds for the `callApi` steps of an API running at call depth `depth`."""

        def callee_cost(api: str, version: str | None) -> CostBound:
            if depth >= MAX_CALL_DEPTH:
                return CostBound()
            if version not in (None, "dev", self.own_version):
                return opaque(self.pinned.get((str(version), api), 0))
            definition = self.definitions.get(api)
            if definition is None:  # an unknown API: the step fails at run time
                return CostBound()
            key = (api, depth)
            if key not in self._costs:
                try:
                    compiled = compile_api(
                        definition, self.collections, self.prices, callee_cost=self.at(depth + 1)
                    )
                except (ValidationError, RecursionError):  # it fails at run time too
                    self._costs[key] = CostBound()
                else:
                    bound = steps_bound(compiled.steps, self.prices, CALL_LIMITS)
                    self._costs[key] = bound
            return self._costs[key]

        return callee_cost


# The fields of the container step types that hold child steps (`engine/steps/control.py`;
# a spec's field name is accepted as well as its alias: `else_` for `else`).
_CHILD_STEPS: dict[str, tuple[str, ...]] = {
    "if": ("then", "else", "else_"),
    "forEach": ("steps",),
    "transaction": ("steps",),
}


def callee_refs(steps: Any) -> Iterator[tuple[str, str | None]]:
    """(api, version) of every `callApi` step in `steps`, nested ones too; version is None
    when the step leaves it out (the caller's own version). Only step lists are searched: a
    value that merely looks like a `callApi` step (a `set` step's literal, an `insert`'s data)
    calls nothing, and publishing must not refuse it."""
    if not isinstance(steps, list):
        return
    for step in steps:
        if not isinstance(step, dict):
            continue
        kind, api, version = str(step.get("type")), step.get("api"), step.get("version")
        if kind == "callApi" and isinstance(api, str):
            yield api, version if isinstance(version, str) else None
        for field in _CHILD_STEPS.get(kind, ()):
            yield from callee_refs(step.get(field))


def pinned_versions(steps: Any) -> Iterator[str]:
    """The exact versions (`X.Y.Z`) that the `callApi` steps in `steps`, nested ones too, pin."""
    return (version for _, version in callee_refs(steps) if version and _PINNED.fullmatch(version))
