"""An API definition as stored and snapshotted, and its validation by the step engine.

One shape serves the snapshot of a version, the export document and the engine: the camelCase
document of `api_document`. Validation is a single call to `engine.compiler.compile_api` with the
app's collections and the current step prices; the builder adds only what the engine cannot know
(the price against the computed cost, the permission target against the params).
"""

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder.models import ApiDefinition, StepPrice
from apiforge.builder.schemas import ApiCreate
from apiforge.core.errors import ValidationError
from apiforge.datasets.models import Collection
from apiforge.datasets.schema import CollectionSchema
from apiforge.engine.compiler import compile_api


def api_document(row: ApiDefinition) -> dict[str, Any]:
    """The full definition of a saved API (what a version freezes), with its computed cost."""
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


def price_below_cost(price: int, cost: int, field: str = "price") -> ValidationError:
    return ValidationError(
        f"The price ({price} RU) is below the API's cost ({cost} RU)",
        reason="price_below_cost",
        errors=[{"field": field, "message": f"must be at least the cost, {cost}"}],
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

    async def check_api(self, app_id: str, data: ApiCreate) -> int:
        """The API's cost; 400 naming the step and field, or `price_below_cost`."""
        return self.check(definition_of(data), await self.collections(app_id), await self.prices())

    def check(
        self,
        definition: dict[str, Any],
        collections: Mapping[str, CollectionSchema],
        prices: Mapping[str, int],
        *,
        prefix: str = "",
    ) -> int:
        """Compile one definition document; errors name `<prefix><field>`."""
        try:
            _check_target(definition)
            compiled = compile_api(definition, dict(collections), prices)
            cost = int(compiled.cost)
            if int(definition.get("price", 0)) < cost:
                raise price_below_cost(int(definition.get("price", 0)), cost)
        except ValidationError as exc:
            raise _prefixed(exc, prefix) if prefix else exc from None
        except RecursionError:
            raise ValidationError(
                "The definition nests too deeply",
                reason="invalid_definition",
                errors=[{"field": f"{prefix}steps", "message": "nests too deeply"}],
            ) from None
        return cost


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
