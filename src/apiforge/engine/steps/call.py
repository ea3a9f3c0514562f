"""Step family: call — `callApi`, run another API of the same app at a pinned version.

The callee runs in the caller's partition, with the caller's token and env, sharing the caller's
budgets (steps, iterations, deadline): a chain of calls cannot multiply the per-call limits. Its
context is marked `via_call_api`, which the `admin` permission mode accepts in place of an admin
token. Nesting is capped by `RunLimits.max_call_depth`, so a cycle ends with a clear error.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from apiforge.core.errors import ApiforgeError
from apiforge.engine.base import CALL_LIMITS, LimitExceededError, RunContext, RunLimits
from apiforge.engine.cost import CostBound, called, total
from apiforge.engine.errors import step_error
from apiforge.engine.schemas import SEMVER
from apiforge.engine.spec import StepSpec
from apiforge.engine.values import CompiledValue

_API_NAME = r"^[A-Za-z][A-Za-z0-9]{0,63}$"


class CallApiSpec(StepSpec):
    """`{"type": "callApi", "api": "getPost", "version": "1.2.0", "args": {...}}`.

    `version` pins the callee: `"dev"` or an exact `X.Y.Z`; left out, the callee runs at the
    caller's own version (a published snapshot calls into the same snapshot). `"latest"` is
    refused: a published API's behaviour must not move when the app publishes again.
    """

    type: Literal["callApi"]
    api: str = Field(pattern=_API_NAME)
    version: str | None = None
    args: Any = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _pinned(cls, version: str | None) -> str | None:
        if version is None or version == "dev" or SEMVER.match(version):
            return version
        raise ValueError('must be "dev" or an exact version like "1.2.0" (not "latest")')

    def compile(self, compiler: Any) -> "CallApiStep":
        args = compiler.value(self.args, "args")
        if args.is_literal and not isinstance(args.literal, dict):
            raise compiler.error("args", "must be an object")
        return CallApiStep(
            id=self.id,
            type=self.type,
            api=self.api,
            version=self.version,
            args=args,
            callee=compiler.callee(self.api, self.version),
        )


@dataclass(slots=True)
class CallApiStep:
    id: str
    type: str
    api: str
    version: str | None
    args: CompiledValue
    # What the callee can consume, as the builder found it (`engine/cost.py`): its steps and
    # loops, or only its published cost when it is pinned to another version.
    callee: CostBound = field(default_factory=CostBound)

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"args": self.args}

    def cost(self, prices: Mapping[str, int]) -> int:
        return total(self.bound(prices, CALL_LIMITS), CALL_LIMITS)

    def bound(self, prices: Mapping[str, int], limits: RunLimits) -> CostBound:
        """The step's own price and what its callee consumes: the steps it runs are the
        caller's to pay for (else a free API wrapping a dear one would run it for nothing),
        within the caller's budgets, which the callee shares."""
        return called(prices.get(self.type, 0), self.callee, limits)

    async def run(self, ctx: RunContext) -> Any:
        if ctx.call_depth >= ctx.limits.max_call_depth:
            maximum = ctx.limits.max_call_depth
            raise LimitExceededError(
                f"callApi nests deeper than {maximum} calls",
                details={"limit": "callDepth", "max": maximum, "stepId": self.id},
            )
        version = self.version or ctx.version
        if version == "dev" and ctx.version != "dev":
            raise step_error(
                self.id, "a published version cannot call the dev version", field="version"
            )
        args = self.args.resolve(ctx)
        if not isinstance(args, dict):
            raise step_error(self.id, "args must be an object", field="args")
        callee = dataclasses.replace(
            ctx,
            version=version,
            args=args,
            steps={},
            locals={},
            # Untraced, but a traced caller's callee notes the tokens it signs, which the
            # caller's trace then masks in its answer (`runtime._run_traced`).
            trace=None if ctx.trace is None else [],
            call_depth=ctx.call_depth + 1,
            via_call_api=True,
            api=self.api,
        )
        try:
            return await ctx.services.call_api(callee, self.api, version, args)
        except ApiforgeError as exc:
            # A refusal no callee step made (no such API or version, a disabled one, args its
            # params refuse) names this step, as every call-time failure names its step: else a
            # caller read `api_not_found`, or `invalid_arguments` naming a param it never sent,
            # as being about its own call. A callee step's failure keeps that step's id.
            exc.details.setdefault("stepId", self.id)
            raise
        finally:
            # The callee's work counts against the caller's budgets.
            ctx.steps_run = callee.steps_run
            ctx.iterations = callee.iterations
            # What the callee hides (its sensitive args, encrypted fields, tokens it signed: a
            # superset of the caller's) stays hidden in what the caller shows of its answer.
            ctx.masked_values = callee.masked_values
            ctx.masked_keys = callee.masked_keys


STEPS: dict[str, type[StepSpec]] = {"callApi": CallApiSpec}
