"""Step family: control — `assert`, `set`, `if`, `forEach`, `transaction`, `return`, `throw`, `log`.

Containers (`if`, `forEach`, `transaction`) hold child step lists compiled by the same `Compiler`,
so their children are validated, scoped and costed like top-level steps. Steps inside an `if` or a
`transaction` run at most once and stay readable afterwards; a `forEach` body runs many times, so
its steps are readable only inside the body and the loop's output collects them.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import structlog
from pydantic import Field, StrictInt, field_validator, model_validator

from apiforge.core.db import open_savepoint
from apiforge.core.errors import ApiforgeError
from apiforge.engine.base import (
    CALL_LIMITS,
    CompiledStep,
    LimitExceededError,
    RunContext,
    RunLimits,
    limit_exceeded,
)
from apiforge.engine.cost import CostBound, either, repeated, sequence, single, steps_bound, total
from apiforge.engine.errors import step_error
from apiforge.engine.runtime import (
    Masker,
    StepReturn,
    count_iteration,
    dump_json,
    hide_in_message,
    run_steps,
)
from apiforge.engine.spec import StepSpec
from apiforge.engine.values import CompiledValue
from apiforge.tools.expressions import UNBINDABLE_NAMES

log = structlog.get_logger("apiforge.engine")

# The most a `maxIterations` may say. A call runs fewer (`RunLimits.max_iterations`, all loops
# together), and the loop's cost counts only those (`engine/cost.py`).
MAX_LOOP_ITERATIONS = 10_000
_REASON = r"^[a-z][a-z0-9_]{0,63}$"
_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_RESERVED_NAMES = frozenset({"args", "token", "steps", "env", "now"})

ClientStatus = Annotated[StrictInt, Field(ge=400, le=499)]
RawSteps = Annotated[list[Any], Field(max_length=200)]


def _price(prices: Mapping[str, int], step_type: str) -> int:
    return prices.get(step_type, 0)


def _own(prices: Mapping[str, int], step_type: str) -> CostBound:
    return single(_price(prices, step_type))


def _condition(step_id: str, value: Any, field: str = "condition") -> bool:
    if not isinstance(value, bool):
        raise step_error(
            step_id, f"{field} must be true or false, not {type(value).__name__}", field=field
        )
    return value


# --- assert ---------------------------------------------------------------------------------


class AssertSpec(StepSpec):
    """`{"type": "assert", "condition": {"expr": "args.pageSize <= 50"}, "status": 400,
    "error": "page_too_large", "message": "pageSize too large"}`: stop the call when false."""

    type: Literal["assert"]
    condition: Any
    status: ClientStatus = 400
    error: str = Field(default="assertion_failed", pattern=_REASON)
    message: Any = "Assertion failed"

    def compile(self, compiler: Any) -> "AssertStep":
        return AssertStep(
            id=self.id,
            type=self.type,
            condition=compiler.value(self.condition, "condition"),
            status=self.status,
            error=self.error,
            message=compiler.value(self.message, "message"),
        )


@dataclass(frozen=True, slots=True)
class AssertStep:
    id: str
    type: str
    condition: CompiledValue
    status: int
    error: str
    message: CompiledValue

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"condition": self.condition}

    def cost(self, prices: Mapping[str, int]) -> int:
        return _price(prices, self.type)

    async def run(self, ctx: RunContext) -> Any:
        variables = ctx.variables()
        if _condition(self.id, self.condition.evaluate(variables)):
            return True
        message = self.message.evaluate(variables)
        raise ApiforgeError(
            str(message)[:1000], reason=self.error, status=self.status, details={"stepId": self.id}
        )


# --- set --------------------------------------------------------------------------------------


class SetSpec(StepSpec):
    """`{"type": "set", "value": {"total": {"expr": "steps.posts.totalCount"}}}`: the step's
    output is the value, for later steps or the response."""

    type: Literal["set"]
    value: Any

    def compile(self, compiler: Any) -> "SetStep":
        return SetStep(id=self.id, type=self.type, value=compiler.value(self.value, "value"))


@dataclass(frozen=True, slots=True)
class SetStep:
    id: str
    type: str
    value: CompiledValue

    def cost(self, prices: Mapping[str, int]) -> int:
        return _price(prices, self.type)

    async def run(self, ctx: RunContext) -> Any:
        return self.value.resolve(ctx)


# --- if ---------------------------------------------------------------------------------------


class IfSpec(StepSpec):
    """`{"type": "if", "condition": ..., "then": [steps], "else": [steps]}`; output: the
    condition. Steps of the branch that ran stay readable; read the other's with `has()`."""

    type: Literal["if"]
    condition: Any
    then: RawSteps
    else_: RawSteps = Field(default_factory=list, alias="else")

    container = True

    def compile(self, compiler: Any) -> "IfStep":
        condition = compiler.value(self.condition, "condition")
        then, otherwise = compiler.alternatives([(self.then, "then"), (self.else_, "else")])
        return IfStep(
            id=self.id,
            type=self.type,
            condition=condition,
            then=tuple(then),
            otherwise=tuple(otherwise),
        )


@dataclass(frozen=True, slots=True)
class IfStep:
    id: str
    type: str
    condition: CompiledValue
    then: tuple[CompiledStep, ...]
    otherwise: tuple[CompiledStep, ...]

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"condition": self.condition}

    def cost(self, prices: Mapping[str, int]) -> int:
        return total(self.bound(prices, CALL_LIMITS), CALL_LIMITS)

    def bound(self, prices: Mapping[str, int], limits: RunLimits) -> CostBound:
        """The dearest branch: the cost is known before the call decides."""
        branches = (
            steps_bound(self.then, prices, limits),
            steps_bound(self.otherwise, prices, limits),
        )
        return either(_price(prices, self.type), branches, limits)

    async def run(self, ctx: RunContext) -> Any:
        chosen = _condition(self.id, self.condition.resolve(ctx))
        await run_steps(self.then if chosen else self.otherwise, ctx)
        return chosen


# --- forEach ----------------------------------------------------------------------------------


class ForEachSpec(StepSpec):
    """`{"type": "forEach", "items": {"expr": "args.ids"}, "maxIterations": 50, "as": "item",
    "steps": [...], "collect": {"expr": "steps.one.title"}}` → a list, one entry per item: the
    `collect` value, or (without it) the body's outputs by step id (the item itself when the body
    is empty). More items than `maxIterations` is a 422, never a silent cut."""

    type: Literal["forEach"]
    items: Any
    max_iterations: StrictInt = Field(alias="maxIterations", ge=1, le=MAX_LOOP_ITERATIONS)
    as_: str = Field(default="item", alias="as", pattern=_NAME)
    index_as: str = Field(default="index", alias="indexAs", pattern=_NAME)
    steps: RawSteps = Field(default_factory=list)
    collect: Any = None

    container = True

    @field_validator("as_", "index_as")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in _RESERVED_NAMES:
            raise ValueError(f"{name!r} is a reserved name")
        return name

    @model_validator(mode="after")
    def _distinct(self) -> "ForEachSpec":
        if self.as_ == self.index_as:
            raise ValueError("`as` and `indexAs` must differ")
        return self

    def compile(self, compiler: Any) -> "ForEachStep":
        if compiler.saving:  # checked since versions were stored: they keep running as accepted
            for field, name in (("as", self.as_), ("indexAs", self.index_as)):
                if name in UNBINDABLE_NAMES:
                    message = f"{name!r} is a CEL keyword or built-in name, not a variable"
                    raise compiler.error(field, message)
        items = compiler.value(self.items, "items")
        if items.is_literal and not isinstance(items.literal, list):
            raise compiler.error("items", "must be a list")
        before = set(compiler.declared)
        with compiler.bind(self.as_, self.index_as), compiler.scope():
            body = compiler.steps(self.steps, "steps")
            collect = compiler.value(self.collect, "collect") if self.collect is not None else None
        return ForEachStep(
            id=self.id,
            type=self.type,
            items=items,
            max_iterations=self.max_iterations,
            as_=self.as_,
            index_as=self.index_as,
            body=tuple(body),
            collect=collect,
            nested_ids=tuple(sorted(compiler.declared - before)),
        )


@dataclass(frozen=True, slots=True)
class ForEachStep:
    id: str
    type: str
    items: CompiledValue
    max_iterations: int
    as_: str
    index_as: str
    body: tuple[CompiledStep, ...]
    collect: CompiledValue | None
    # Every step id inside the body, however deep (an `if` in the body holds steps too): each
    # iteration starts without the last one's outputs, and none outlives the loop.
    nested_ids: tuple[str, ...]

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"items": self.items}

    def cost(self, prices: Mapping[str, int]) -> int:
        return total(self.bound(prices, CALL_LIMITS), CALL_LIMITS)

    def bound(self, prices: Mapping[str, int], limits: RunLimits) -> CostBound:
        """Its body as often as a call can run it: `maxIterations`, and never more than the
        call's iteration budget, which nested loops share (`engine/cost.py`)."""
        body = steps_bound(self.body, prices, limits)
        return repeated(_price(prices, self.type), body, self.max_iterations, limits)

    async def run(self, ctx: RunContext) -> Any:
        items = self.items.resolve(ctx)
        if isinstance(items, dict):
            items = list(items)
        if not isinstance(items, list):
            raise step_error(self.id, "items must be a list", field="items")
        if len(items) > self.max_iterations:
            raise limit_exceeded(
                "maxIterations",
                self.max_iterations,
                f"forEach {self.id}: {len(items)} items exceed maxIterations {self.max_iterations}",
                self.id,
            )
        outer = ctx.locals
        body_ids = [step.id for step in self.body]
        results: list[Any] = []
        try:
            for index, item in enumerate(items):
                await count_iteration(ctx, self.id)
                self._forget(ctx)
                ctx.locals = {**outer, self.as_: item, self.index_as: index}
                await run_steps(self.body, ctx)
                if self.collect is not None:
                    results.append(self.collect.resolve(ctx))
                elif body_ids:
                    results.append({step_id: ctx.steps.get(step_id) for step_id in body_ids})
                else:
                    results.append(item)
        finally:
            ctx.locals = outer
            self._forget(ctx)
        return results

    def _forget(self, ctx: RunContext) -> None:
        for step_id in self.nested_ids:
            ctx.steps.pop(step_id, None)


# --- transaction ------------------------------------------------------------------------------


class TransactionSpec(StepSpec):
    """`{"type": "transaction", "steps": [...], "onError": "fail"|"continue"}`: the children's
    writes commit or roll back together (a SAVEPOINT). With `continue`, a failing child rolls the
    group back and the call goes on; the output says `{"committed": false, "error": {...}}`."""

    type: Literal["transaction"]
    steps: RawSteps
    on_error: Literal["fail", "continue"] = Field(default="fail", alias="onError")

    container = True

    def compile(self, compiler: Any) -> "TransactionStep":
        before = set(compiler.declared)
        children = compiler.steps(self.steps, "steps")
        return TransactionStep(
            id=self.id,
            type=self.type,
            children=tuple(children),
            on_error=self.on_error,
            nested_ids=tuple(sorted(compiler.declared - before)),
        )


@dataclass(frozen=True, slots=True)
class TransactionStep:
    id: str
    type: str
    children: tuple[CompiledStep, ...]
    on_error: str
    # Every step id inside, however deep: a rolled-back group shows none of its outputs.
    nested_ids: tuple[str, ...]

    def cost(self, prices: Mapping[str, int]) -> int:
        return total(self.bound(prices, CALL_LIMITS), CALL_LIMITS)

    def bound(self, prices: Mapping[str, int], limits: RunLimits) -> CostBound:
        children = steps_bound(self.children, prices, limits)
        return sequence((_own(prices, self.type), children), limits)

    async def run(self, ctx: RunContext) -> Any:
        savepoint = await open_savepoint(ctx.connection)
        try:
            await run_steps(self.children, ctx)
        except StepReturn:
            await savepoint.commit()
            raise
        except ApiforgeError as exc:
            await savepoint.rollback()
            # Budgets are absolute: running out is never "continued" past.
            if self.on_error == "continue" and not isinstance(exc, LimitExceededError):
                for step_id in self.nested_ids:
                    ctx.steps.pop(step_id, None)
                # The message becomes step output, which the answer shows: masked as a failed
                # call's message is (an expression error quotes the app secret it could not use).
                hide_in_message(exc, ctx.masked_values)
                error = {"error": exc.reason, "message": exc.message}
                if "stepId" in exc.details:
                    error["stepId"] = str(exc.details["stepId"])
                return {"committed": False, "error": error}
            raise
        except BaseException:
            if savepoint.is_active:
                await savepoint.rollback()
            raise
        await savepoint.commit()
        return {"committed": True}


# --- return, throw, log -----------------------------------------------------------------------


class ReturnSpec(StepSpec):
    """`{"type": "return", "value": ...}`: end the call now; `data` is the value."""

    type: Literal["return"]
    value: Any = None

    def compile(self, compiler: Any) -> "ReturnStep":
        return ReturnStep(id=self.id, type=self.type, value=compiler.value(self.value, "value"))


@dataclass(frozen=True, slots=True)
class ReturnStep:
    id: str
    type: str
    value: CompiledValue

    def cost(self, prices: Mapping[str, int]) -> int:
        return _price(prices, self.type)

    async def run(self, ctx: RunContext) -> Any:
        raise StepReturn(self.value.resolve(ctx))


class ThrowSpec(StepSpec):
    """`{"type": "throw", "status": 404, "error": "post_not_found", "message": "No such post"}`:
    fail the call with the API's own client error (4xx); its writes roll back."""

    type: Literal["throw"]
    status: ClientStatus = 400
    error: str = Field(default="api_error", pattern=_REASON)
    message: Any = "Request refused"

    def compile(self, compiler: Any) -> "ThrowStep":
        return ThrowStep(
            id=self.id,
            type=self.type,
            status=self.status,
            error=self.error,
            message=compiler.value(self.message, "message"),
        )


@dataclass(frozen=True, slots=True)
class ThrowStep:
    id: str
    type: str
    status: int
    error: str
    message: CompiledValue

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"message": self.message}

    def cost(self, prices: Mapping[str, int]) -> int:
        return _price(prices, self.type)

    async def run(self, ctx: RunContext) -> Any:
        message = self.message.resolve(ctx)
        raise ApiforgeError(
            str(message)[:1000], reason=self.error, status=self.status, details={"stepId": self.id}
        )


class LogSpec(StepSpec):
    """`{"type": "log", "level": "info", "message": {"expr": "'signed in ' + args.email"}}`:
    one structured log line (sensitive args and secrets masked); output `null`."""

    type: Literal["log"]
    message: Any
    level: Literal["debug", "info", "warning", "error"] = "info"

    def compile(self, compiler: Any) -> "LogStep":
        return LogStep(
            id=self.id,
            type=self.type,
            message=compiler.value(self.message, "message"),
            level=self.level,
        )


LOG_CHARS = 4000  # of a `log` step's line


@dataclass(frozen=True, slots=True)
class LogStep:
    id: str
    type: str
    message: CompiledValue
    level: str

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"message": self.message}

    def cost(self, prices: Mapping[str, int]) -> int:
        return _price(prices, self.type)

    async def run(self, ctx: RunContext) -> Any:
        message = self.message.resolve(ctx)
        masker = Masker(ctx.masked_keys, ctx.masked_values)
        # A record (or anything holding one) is masked by key before it becomes text: its
        # encrypted fields are decrypted values here, which no value list could name.
        text = (
            masker.text(message)
            if isinstance(message, str)
            else dump_json(masker(message)).decode()
        )
        # Masked whole, then cut: cut first, a secret across the cut would show its start.
        text = text[:LOG_CHARS]
        getattr(log, self.level)(
            "api_log",
            app_id=ctx.app_id,
            api=ctx.api,
            version=ctx.version,
            step_id=self.id,
            text=text,
        )
        return None


STEPS: dict[str, type[StepSpec]] = {
    "assert": AssertSpec,
    "set": SetSpec,
    "if": IfSpec,
    "forEach": ForEachSpec,
    "transaction": TransactionSpec,
    "return": ReturnSpec,
    "throw": ThrowSpec,
    "log": LogSpec,
}
