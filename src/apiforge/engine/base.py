"""The contract between the runtime and step types: run context, limits, compiled steps.

A step type is a pydantic model (its config, validated when an API is saved) registered in
`engine.catalog.STEP_TYPES`. `compile()` turns a validated config into a `CompiledStep` once per
version; `CompiledStep.run(ctx)` executes it per call and returns the step's output (plain JSON
values). Expressions inside configs are compiled through `engine.values.compile_value`.
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.errors import ApiforgeError
from apiforge.core.settings import CALL_TIME_BUDGET_SECONDS
from apiforge.datasets.crypto import FieldCipher
from apiforge.tools.expressions import MAX_RESULT_CHARS

# The most RU one amount may be (an API's price, a call's cost): what one ledger movement may
# move (`billing.models.MAX_AMOUNT`, 10**12), so every call a price allows can be charged whole.
MAX_RU = 10**12

# A secret shorter than this is treated as shown only where it is a whole value: masking (or
# spotting) two-letter secrets inside longer strings would hit ordinary text.
MIN_SUBSTRING_MASK = 4


@dataclass(frozen=True, slots=True)
class RunLimits:
    """Per-call budgets; exceeding one is a clear error, never a hang."""

    max_steps: int = 500  # steps executed, loop bodies included
    max_iterations: int = 1000  # forEach iterations in one call, all loops together
    # One constant with the leases that must outlive a call (core/settings.py).
    time_budget_seconds: float = float(CALL_TIME_BUDGET_SECONDS)
    max_response_bytes: int = 1024 * 1024
    # Characters all its expressions may produce together: each result is capped on its own,
    # but a loop keeps them all (a forEach collecting a 1 MB argument 1,000 times held 1.7 GB).
    max_expression_chars: int = 32 * MAX_RESULT_CHARS
    max_call_depth: int = 3  # nested callApi


# The budgets every call runs with, and so the ones static costs are computed against
# (`engine/cost.py`): a cost from other limits than the runtime's would under- or over-charge.
CALL_LIMITS = RunLimits()


class StepFailedError(ApiforgeError):
    """A step refused or failed; carries the step id so callers and traces can name it."""

    status = 400
    reason = "step_failed"
    message = "Step failed"


class LimitExceededError(ApiforgeError):
    status = 422
    reason = "limit_exceeded"
    message = "A per-call limit was exceeded"


def limit_exceeded(
    limit: str, maximum: float, message: str, step_id: str | None = ""
) -> LimitExceededError:
    details: dict[str, Any] = {"limit": limit, "max": maximum}
    if step_id:
        details["stepId"] = step_id
    return LimitExceededError(message, details=details)


def out_of_time(budget: float, step_id: str | None = "") -> LimitExceededError:
    return limit_exceeded("time", budget, f"The call ran longer than {budget:g} s", step_id)


@dataclass(slots=True)
class TraceEntry:
    step_id: str
    type: str
    input: Any
    output: Any
    ms: float
    error: str | None = None


@dataclass(slots=True)
class RunContext:
    """Everything one call sees. `steps` fills as steps finish; expressions read `variables()`."""

    app_id: str
    builder_workspace_id: str
    partition: str  # the calling workspace's id: whose collection records are read/written
    version: str  # "dev" or "X.Y.Z"
    args: dict[str, Any]
    token: dict[str, Any] | None
    env: dict[str, Any]
    now: datetime
    connection: AsyncConnection
    services: "EngineServices"
    limits: RunLimits = field(default_factory=RunLimits)
    steps: dict[str, Any] = field(default_factory=dict)
    deadline: float = 0.0  # time.monotonic() value after which the call is stopped
    turn_due: float = 0.0  # time.monotonic() value after which the call lets other tasks run
    steps_run: int = 0
    iterations: int = 0
    call_depth: int = 0
    via_call_api: bool = False
    trace: list[TraceEntry] | None = None  # set when a debug trace was asked for
    locals: dict[str, Any] = field(default_factory=dict)  # forEach `item`/`index`
    # Values never to show in clear (sensitive args, env secrets): masked in traces and `log`.
    masked_values: tuple[str, ...] = ()
    # Keys whose values are never shown (encrypted record fields, sensitive params): set by
    # `execute` from the running API, masked in traces and in what `log` writes.
    masked_keys: frozenset[str] = frozenset()
    api: str = ""  # the API's name, for logs
    # sub -> when this call revoked the user's tokens (ms, `jwtRevoke`): a token the call signs
    # for them afterwards is issued no earlier, so it outlives the revocation. Shared with the
    # call's `callApi` callees (`dataclasses.replace` copies the reference).
    revocations: dict[str, int] = field(default_factory=dict)

    def variables(self) -> dict[str, Any]:
        return {
            "args": self.args,
            "token": self.token or {},
            "steps": self.steps,
            "env": self.env,
            "now": self.now,
            **self.locals,
        }


class CompiledStep(Protocol):
    # Read-only, so frozen dataclasses (the usual compiled step) satisfy the protocol.
    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    async def run(self, ctx: RunContext) -> Any: ...

    def cost(self, prices: Mapping[str, int]) -> int:
        """Static RU cost: known before any call (DESIGN.md §5)."""
        ...


@dataclass(slots=True)
class EngineServices:
    """Collaborators of steps, built once per process; steps never import app state."""

    # (app id, the call's own connection) -> jwtSign secret. The call's connection, never a second
    # one from the pool: calls holding a connection while waiting for another can exhaust it.
    signing_secret_for: Callable[[str, AsyncConnection], Awaitable[str]]
    call_api: Callable[[RunContext, str, str, dict[str, Any]], Awaitable[Any]]
    http_allow_hosts: frozenset[str] = frozenset()
    # Encrypts collections' `encrypted` fields (data steps); None: such steps refuse to run.
    record_cipher: FieldCipher | None = None
    # (app id, partition, sub) -> a `jwtRevoke` of the user's tokens was committed: this
    # process's gateway forgets what it cached of them (`engine/revocations.py`).
    tokens_revoked: Callable[[str, str, str], None] = lambda app_id, partition, sub: None
    extra: dict[str, Any] = field(default_factory=dict)
