"""Step config values: a JSON literal or `{"expr": "<CEL>"}`, at any depth of dicts and lists.

`compile_value` runs once per version; it compiles every expression, records the step ids they
read (`step_refs`, checked by the compiler against the steps that run earlier) and folds constant
parts into literals, so `resolve` per call only evaluates what is dynamic.
"""

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from apiforge.core.errors import ApiforgeError
from apiforge.engine.base import RunContext, RunLimits, limit_exceeded, out_of_time
from apiforge.engine.errors import DefinitionError, step_error
from apiforge.tools.expressions import (
    CompiledExpression,
    ExpressionError,
    compile_expression,
    referenced_steps,
)

_EMPTY: frozenset[str] = frozenset()


@dataclass(slots=True)
class CallMeter:
    """What the running call's expressions may still spend. Expressions run without awaiting
    (the engine cannot be interrupted), so a step's value holding many of them would otherwise
    outlive the call's deadline: each one is checked against it before it starts."""

    deadline: float  # time.monotonic() after which no expression starts
    limits: RunLimits
    chars_left: int  # of `limits.max_expression_chars`


#: The meter of the call running in this task (`runtime.execute` sets it); None outside calls.
CALL_METER: ContextVar[CallMeter | None] = ContextVar("apiforge_call_meter", default=None)


def _copy(value: Any) -> Any:
    """A fresh copy of a JSON literal, so no call can alter the compiled definition."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _split_where(where: str) -> tuple[str | None, str]:
    """`steps.<id>.<field>` -> (id, field); anything else is a path of its own."""
    if where.startswith("steps."):
        step_id, _, field = where[len("steps.") :].partition(".")
        return step_id, field
    return None, where


class CompiledValue:
    """A compiled config value. `resolve(ctx)` gives its value for one call."""

    __slots__ = ("names", "reads_all_steps", "step_refs", "where")

    def __init__(
        self,
        where: str,
        step_refs: frozenset[str],
        names: frozenset[str] = _EMPTY,
        reads_all_steps: bool = False,
    ) -> None:
        self.where = where
        #: Step ids read as `steps.<id>` / `steps["<id>"]`.
        self.step_refs = step_refs
        #: Top-level names the expressions read (`args`, `steps`, a forEach `item`, ...).
        self.names = names
        #: True when some expression reads `steps` dynamically (ids unknown before a call).
        self.reads_all_steps = reads_all_steps

    @property
    def is_literal(self) -> bool:
        """True when the value holds no expression (it is the same for every call)."""
        return False

    @property
    def literal(self) -> Any:
        """The constant value; only meaningful when `is_literal`."""
        raise TypeError(f"{self.where} is not a literal")

    def resolve(self, ctx: RunContext) -> Any:
        return self.evaluate(ctx.variables())

    def evaluate(self, variables: dict[str, Any]) -> Any:
        """The value over prepared expression variables (one `variables()` for many values)."""
        raise NotImplementedError


class _Literal(CompiledValue):
    __slots__ = ("_container", "value")

    def __init__(self, where: str, value: Any) -> None:
        super().__init__(where, _EMPTY)
        self.value = value
        self._container = isinstance(value, dict | list)

    @property
    def is_literal(self) -> bool:
        return True

    @property
    def literal(self) -> Any:
        return self.value

    def evaluate(self, variables: dict[str, Any]) -> Any:
        return _copy(self.value) if self._container else self.value


class _Expression(CompiledValue):
    __slots__ = ("expression",)

    def __init__(self, where: str, expression: CompiledExpression) -> None:
        super().__init__(
            where,
            frozenset(referenced_steps(expression)),
            frozenset(expression.roots),
            expression.reads_all_steps,
        )
        self.expression = expression

    def evaluate(self, variables: dict[str, Any]) -> Any:
        meter = CALL_METER.get()
        if meter is not None and time.monotonic() > meter.deadline:
            raise out_of_time(meter.limits.time_budget_seconds, _split_where(self.where)[0])
        try:
            value, chars = self.expression.evaluate_sized(variables)
        except ExpressionError as exc:
            step_id, field = _split_where(self.where)
            raise step_error(
                step_id or "",
                f"{self.where}: {exc}",
                reason="expression_error",
                field=self.where if step_id is None else field,
            ) from exc
        if meter is not None:
            meter.chars_left -= chars
            if meter.chars_left < 0:
                maximum = meter.limits.max_expression_chars
                message = f"The call's expressions produced more than {maximum} characters"
                step_id = _split_where(self.where)[0]
                raise limit_exceeded("expressionChars", maximum, message, step_id)
        return value


class _Dict(CompiledValue):
    __slots__ = ("items",)

    def __init__(self, where: str, items: list[tuple[str, CompiledValue]]) -> None:
        super().__init__(where, *_merged([value for _, value in items]))
        self.items = items

    def evaluate(self, variables: dict[str, Any]) -> Any:
        return {key: value.evaluate(variables) for key, value in self.items}


class _List(CompiledValue):
    __slots__ = ("values",)

    def __init__(self, where: str, values: list[CompiledValue]) -> None:
        super().__init__(where, *_merged(values))
        self.values = values

    def evaluate(self, variables: dict[str, Any]) -> Any:
        return [value.evaluate(variables) for value in self.values]


class Recorded(CompiledValue):
    """A step input in a traced run: evaluates its value as the step asks and notes what it gave
    (or why it failed) under `name` in `shown`, so a debug trace shows the value the step used
    without evaluating it a second time (which also counted it twice against the call's
    `expressionChars`)."""

    __slots__ = ("_name", "_shown", "_value")

    def __init__(self, value: CompiledValue, name: str, shown: dict[str, Any]) -> None:
        super().__init__(value.where, value.step_refs, value.names, value.reads_all_steps)
        self._value = value
        self._name = name
        self._shown = shown

    def evaluate(self, variables: dict[str, Any]) -> Any:
        try:
            value = self._value.evaluate(variables)
        except ApiforgeError as exc:
            self._shown[self._name] = f"<error: {exc.message}>"
            raise
        # A copy: the trace is rendered after the run, and a step may change what it was given.
        self._shown[self._name] = _copy(value)
        return value


def _merged(values: list[CompiledValue]) -> tuple[frozenset[str], frozenset[str], bool]:
    return (
        frozenset().union(*(value.step_refs for value in values)),
        frozenset().union(*(value.names for value in values)),
        any(value.reads_all_steps for value in values),
    )


def is_expression(raw: Any) -> bool:
    """`{"expr": ...}` and nothing else is an expression; any other dict is a literal object."""
    return isinstance(raw, dict) and len(raw) == 1 and "expr" in raw


def compile_value(raw: Any, where: str) -> CompiledValue:
    """Compile a config value; `where` is the path errors name (`steps.<id>.<field>`)."""
    if is_expression(raw):
        source = raw["expr"]
        step_id, field = _split_where(where)
        if not isinstance(source, str):
            raise DefinitionError(step_id, field, "expr must be a string")
        try:
            expression = compile_expression(source)
        except ExpressionError as exc:
            raise DefinitionError(step_id, field, str(exc)) from exc
        return _Expression(where, expression)
    if isinstance(raw, dict):
        items = [(key, compile_value(item, f"{where}.{key}")) for key, item in raw.items()]
        if all(value.is_literal for _, value in items):
            return _Literal(where, raw)
        return _Dict(where, items)
    if isinstance(raw, list):
        values = [compile_value(item, f"{where}.{index}") for index, item in enumerate(raw)]
        if all(value.is_literal for value in values):
            return _Literal(where, raw)
        return _List(where, values)
    if raw is None or isinstance(raw, str | int | float | bool):
        return _Literal(where, raw)
    step_id, field = _split_where(where)
    raise DefinitionError(step_id, field, f"unsupported value of type {type(raw).__name__}")
