"""Runs a compiled API for one call, inside the per-call limits of `RunLimits`.

The hot path is plain: for each step, count it against the step budget, check the deadline, await
`run`, store the output. Everything debug-only (timing, input capture, masking) sits behind
`ctx.trace is not None`. `asyncio.timeout_at` stops awaits that outlive the deadline; the explicit
deadline check between steps and loop iterations (and before each expression: `values.CallMeter`)
stops work that never awaits (a slow expression over a big list), so every limit ends in a clear
422 `limit_exceeded`, never a hang; such work also gives other tasks a turn (`take_turn`).
"""

import asyncio
import base64
import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson

from apiforge.core.errors import ApiforgeError
from apiforge.engine.base import (
    MIN_SUBSTRING_MASK,
    CompiledStep,
    RunContext,
    TraceEntry,
    limit_exceeded,
    out_of_time,
)
from apiforge.engine.values import CALL_METER, CallMeter, CompiledValue, Recorded

if TYPE_CHECKING:  # the compiler imports the step catalogue, whose steps import this module
    from apiforge.engine.compiler import CompiledApi

MASK = "***"
MAX_TRACE_ENTRIES = 1000
# The longest a call holds the event loop before it lets other tasks run: steps that never await
# (`set`, `if`, a forEach over expressions) would otherwise hold the worker, and every other
# request on it, until the call's deadline.
TURN_SECONDS = 0.02


class StepReturn(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a `return` step: ends the run with `value` as the call's data. Steps must let
    it through (a `transaction` commits its savepoint first)."""

    def __init__(self, value: Any) -> None:
        super().__init__("return")
        self.value = value


def check_deadline(ctx: RunContext, step_id: str = "") -> None:
    if ctx.deadline and time.monotonic() > ctx.deadline:
        raise out_of_time(ctx.limits.time_budget_seconds, step_id)


async def take_turn(ctx: RunContext) -> None:
    """Let other tasks run when this call has held the event loop for `TURN_SECONDS`."""
    if time.monotonic() >= ctx.turn_due:
        await asyncio.sleep(0)
        ctx.turn_due = time.monotonic() + TURN_SECONDS


async def count_iteration(ctx: RunContext, step_id: str) -> None:
    """One forEach iteration against the per-call budget (all loops together) and the deadline."""
    ctx.iterations += 1
    if ctx.iterations > ctx.limits.max_iterations:
        maximum = ctx.limits.max_iterations
        raise limit_exceeded(
            "iterations", maximum, f"More than {maximum} loop iterations in one call", step_id
        )
    check_deadline(ctx, step_id)
    await take_turn(ctx)


async def run_steps(steps: Sequence[CompiledStep], ctx: RunContext) -> None:
    """Run a step list in order, storing each output under its id in `ctx.steps`."""
    for step in steps:
        ctx.steps_run += 1
        if ctx.steps_run > ctx.limits.max_steps:
            maximum = ctx.limits.max_steps
            raise limit_exceeded(
                "steps", maximum, f"More than {maximum} steps in one call", step.id
            )
        check_deadline(ctx, step.id)
        await take_turn(ctx)
        if ctx.trace is None:
            ctx.steps[step.id] = await step.run(ctx)
        else:
            await _run_traced(step, ctx, ctx.trace)


def _traced_step(step: CompiledStep, shown: dict[str, Any]) -> CompiledStep:
    """`step` with its expression inputs wrapped in `Recorded`, which fill `shown` as the step
    evaluates them: evaluated once, as the step does, never before it on the trace's behalf.
    A copy (compiled steps are shared by concurrent calls); only debug calls pay for it."""
    inputs: Mapping[str, CompiledValue] | None = getattr(step, "inputs", None)
    if not inputs or not dataclasses.is_dataclass(step):
        return step
    fields = {id(getattr(step, f.name)): f.name for f in dataclasses.fields(step)}
    changes: dict[str, CompiledValue] = {}
    for name, value in inputs.items():
        if value.is_literal:  # costs nothing and is what the step uses
            shown[name] = value.evaluate({})
        elif id(value) in fields:
            changes[fields[id(value)]] = Recorded(value, name, shown)
    return dataclasses.replace(step, **changes) if changes else step


def _trace_input(step: CompiledStep, shown: dict[str, Any]) -> Any:
    """What the trace shows as the step's input: the inputs it evaluated, in their order (one
    the step never reached, as when it failed before it, is left out)."""
    inputs: Mapping[str, CompiledValue] | None = getattr(step, "inputs", None)
    if not inputs:
        return None
    return {name: shown[name] for name in inputs if name in shown}


async def _run_traced(step: CompiledStep, ctx: RunContext, trace: list[TraceEntry]) -> None:
    sensitive = getattr(step, "sensitive", False)
    shown: dict[str, Any] = {}
    entry = TraceEntry(step.id, step.type, None, None, 0.0)
    if sensitive:
        entry.input = MASK if getattr(step, "inputs", None) else None
        running = step
    else:
        running = _traced_step(step, shown)
    if len(trace) < MAX_TRACE_ENTRIES:
        trace.append(entry)  # before the children of a container, so the trace reads in order
    started = time.perf_counter()
    try:
        output = await running.run(ctx)
    except StepReturn as signal:
        entry.output = MASK if sensitive else signal.value
        raise
    except ApiforgeError as exc:
        entry.error = exc.message
        raise
    except Exception as exc:
        entry.error = f"internal error ({type(exc).__name__})"
        raise
    finally:
        entry.ms = round((time.perf_counter() - started) * 1000, 3)
        if not sensitive:
            entry.input = _trace_input(step, shown)
    if sensitive:
        entry.output = MASK
        # A token or hash shows masked here, and so wherever a later step copies it (a `set`,
        # the answer of a `callApi` that signed it): the trace hides the value, not the entry.
        ctx.masked_values = (*ctx.masked_values, *_texts(output))
    else:
        entry.output = output
        if ctx.masked_keys:
            # An encrypted field read (or a callee's answer holding one) stays masked where a
            # later step copies it under another key: the trace hides the value too.
            found = _keyed_texts(output, ctx.masked_keys)
            if found:
                known = set(ctx.masked_values)
                ctx.masked_values = (*ctx.masked_values, *(t for t in found if t not in known))
    ctx.steps[step.id] = output


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def dump_json(value: Any) -> bytes:
    """Step data as JSON: datetimes ISO, bytes base64, durations in seconds."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


class Masker:
    """Hides sensitive values in traces: keys (sensitive params, encrypted fields) and values
    (sensitive args, env secrets) wherever they appear, also inside longer strings and keys."""

    __slots__ = ("keys", "values")

    def __init__(self, keys: frozenset[str], values: Sequence[str]) -> None:
        self.keys = keys
        self.values = tuple(sorted({v for v in values if v}, key=len, reverse=True))

    def text(self, text: str) -> str:
        """`text` with every occurrence of every value masked. The spans are found in the
        original text and overlapping ones masked as one: replacing one value after another
        would leave the part of a second value that overlaps the first in clear."""
        spans: list[tuple[int, int]] = []
        for secret in self.values:
            if text == secret:
                return MASK
            if len(secret) < MIN_SUBSTRING_MASK:
                continue
            start = text.find(secret)
            while start != -1:
                spans.append((start, start + len(secret)))
                start = text.find(secret, start + 1)
        if not spans:
            return text
        spans.sort()
        parts: list[str] = []
        shown = 0  # where the text not yet copied starts
        begin, end = spans[0]
        for start, stop in spans[1:]:
            if start < end:  # overlapping: one masked span
                end = max(end, stop)
                continue
            parts += (text[shown:begin], MASK)
            shown, (begin, end) = end, (start, stop)
        parts += (text[shown:begin], MASK, text[end:])
        return "".join(parts)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            masked: dict[Any, Any] = {}
            for key, item in value.items():
                shown = MASK if key in self.keys else self(item)
                # A key may be the secret itself (`{env.secrets.key: ...}`): masked as text,
                # numbered when it then meets another key, so no entry is lost.
                if isinstance(key, str):
                    key = self.text(key)
                    base, number = key, 1
                    while key in masked:
                        number += 1
                        key = f"{base} ({number})"
                masked[key] = shown
            return masked
        if isinstance(value, list | tuple):
            return [self(item) for item in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return MASK if str(value) in self.values else value
        return value


def _texts(value: Any, *, numbers: bool = False) -> list[str]:
    """The scalars inside `value` (nested objects and arrays too) as the text a trace or a log
    line may show them in: strings, and with `numbers` integers and floats (never booleans)."""
    found: list[str] = []
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
        elif numbers and isinstance(item, int | float) and not isinstance(item, bool):
            found.append(str(item))
            if isinstance(item, float) and item.is_integer():
                found.append(str(int(item)))  # how CEL's string() writes 4242.0: "4242"
    return found


def _keyed_texts(value: Any, keys: frozenset[str]) -> list[str]:
    """The scalars (numbers too) held under any of `keys` inside `value`, however deep."""
    found: list[str] = []
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, Mapping):
            for key, inner in item.items():
                if key in keys:
                    found.extend(_texts(inner, numbers=True))
                else:
                    pending.append(inner)
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return list(dict.fromkeys(text for text in found if text))


def sensitive_values(
    compiled: "CompiledApi", args: Mapping[str, Any], env: Mapping[str, Any]
) -> tuple[str, ...]:
    """The concrete values a call must never show: its sensitive args (every value inside an
    object or array one: `args.card.number` copied into a step's output is still the card
    number) and the app's secrets."""
    found: list[str] = []
    for name in compiled.params.sensitive:
        found.extend(_texts(args.get(name), numbers=True))
    secrets = env.get("secrets")
    if isinstance(secrets, Mapping):
        found.extend(str(value) for value in secrets.values() if value)
    return tuple(found)


def trace_json(trace: Sequence[TraceEntry], masker: Masker) -> list[dict[str, Any]]:
    return [
        {
            "stepId": entry.step_id,
            "type": entry.type,
            "input": masker(entry.input),
            "output": masker(entry.output),
            "ms": entry.ms,
            "error": masker(entry.error) if entry.error is not None else None,
        }
        for entry in trace
    ]


def _select(compiled: "CompiledApi", steps: dict[str, Any]) -> Any:
    if compiled.return_steps is None:
        return dict(steps)
    return {step_id: steps.get(step_id) for step_id in compiled.return_steps}


@dataclass(frozen=True, slots=True)
class RunResult:
    data: Any
    body: bytes  # `data` serialised (already measured against the response-size limit)
    trace: list[TraceEntry] | None


async def execute(compiled: "CompiledApi", ctx: RunContext) -> RunResult:
    """Run `compiled` with `ctx` (args already validated).

    `data` is the `return` step's value when one ran, else the outputs of `returnSteps` (all by
    default). The caller owns the transaction: commit on return, roll back on any raise.
    """
    if not ctx.deadline:
        ctx.deadline = time.monotonic() + ctx.limits.time_budget_seconds
    # Added to what the context already hides: a `callApi` callee keeps hiding its caller's
    # sensitive args and encrypted fields (a caller's PIN passed on as a plain arg is still a
    # PIN in the callee's `log` lines), and hands its own back (`steps/call.py`).
    values = sensitive_values(compiled, ctx.args, ctx.env)
    if ctx.masked_values:  # each callee of a loop adds only what is new: no growth per call
        known = set(ctx.masked_values)
        values = tuple(value for value in values if value not in known)
        ctx.masked_values = (*ctx.masked_values, *values)
    else:
        ctx.masked_values = values
    if ctx.masked_keys:
        ctx.masked_keys = ctx.masked_keys | compiled.masked_keys
    else:
        ctx.masked_keys = compiled.masked_keys
    loop = asyncio.get_running_loop()
    timeout = asyncio.timeout_at(loop.time() + (ctx.deadline - time.monotonic()))
    ctx.turn_due = time.monotonic() + TURN_SECONDS
    # A `callApi` callee runs in its caller's task and spends its caller's meter.
    metered = None
    if CALL_METER.get() is None:
        limits = ctx.limits
        metered = CALL_METER.set(CallMeter(ctx.deadline, limits, limits.max_expression_chars))
    try:
        async with timeout:
            try:
                await run_steps(compiled.steps, ctx)
                data = _select(compiled, ctx.steps)
            except StepReturn as signal:
                data = signal.value
    except TimeoutError:
        if not timeout.expired():
            raise
        raise out_of_time(ctx.limits.time_budget_seconds) from None
    except ApiforgeError as exc:
        hide_in_message(exc, ctx.masked_values)
        raise
    finally:
        if metered is not None:
            CALL_METER.reset(metered)
    return RunResult(data, check_response_size(data, ctx), ctx.trace)


def hide_in_message(exc: ApiforgeError, values: Sequence[str]) -> None:
    """Mask the call's secrets in a failed call's message, as its trace entry masks them: an
    expression error quotes the value it could not use (`duration(env.secrets.ttl)`: `input:
    "sk-live-..."`), and the message reaches whoever called, a consumer of a published API too."""
    if values:
        exc.message = Masker(frozenset(), values).text(exc.message)
        exc.args = (exc.message,)


async def run_api(compiled: "CompiledApi", ctx: RunContext) -> tuple[Any, list[TraceEntry] | None]:
    """`execute` for callers that only want `(data, trace)` (trace unmasked: see `Masker`)."""
    result = await execute(compiled, ctx)
    return result.data, result.trace


def masker_for(compiled: "CompiledApi", ctx: RunContext) -> Masker:
    """The trace's masker: the API's keys and those its `callApi` callees handed back."""
    return Masker(compiled.masked_keys | ctx.masked_keys, ctx.masked_values)


def check_response_size(data: Any, ctx: RunContext) -> bytes:
    """The data serialised; 422 `limit_exceeded` when over `max_response_bytes`."""
    body = dump_json(data)
    maximum = ctx.limits.max_response_bytes
    if len(body) > maximum:
        raise limit_exceeded(
            "responseBytes", maximum, f"The response is larger than {maximum} bytes"
        )
    return body
