"""API definitions → compiled, costed plans; every check of a definition on save happens here.

`compile_api` parses each step with its type's `StepSpec`, lets the spec compile itself through a
`Compiler` (values, filters, collections, child steps), and checks that expressions only read steps
that run earlier. Errors name `steps.<stepId>.<field>` (`DefinitionError`, 400). The result is
immutable and reused for every call of that version.
"""

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError as PydanticError

from apiforge.datasets.schema import CollectionSchema
from apiforge.datasets.sql import BUILTIN_TYPES
from apiforge.engine.base import MAX_RU, CompiledStep
from apiforge.engine.catalog import STEP_TYPES
from apiforge.engine.cost import CostBound, steps_cost
from apiforge.engine.errors import DefinitionError, step_field
from apiforge.engine.params import CompiledParams, compile_params, open_params
from apiforge.engine.spec import StepSpec
from apiforge.engine.values import CompiledValue, compile_value
from apiforge.tools.filters import FilterError, validate_filter

MAX_STEPS = 200  # steps in one definition, nested ones included
MAX_DEPTH = 6  # nesting of if / forEach / transaction
# The variables every expression may read (a forEach binds more inside its body).
ROOT_NAMES = frozenset({"args", "token", "steps", "env", "now"})
# CEL's type names, which the engine lists among the variables an expression reads:
# `type(args.x) == double` reads no variable called `double`.
_TYPE_NAMES = frozenset(
    {"bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint"}
)
_READABLE = "args, token, steps, env, now"
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

# (api, pinned version) -> what a `callApi` of it can consume (builder/definitions.py).
CalleeBound = Callable[[str, str | None], CostBound]


@dataclass(slots=True)
class _PendingRef:
    step_id: str
    field: str
    ref: str


@dataclass(slots=True)
class Compiler:
    """Compiles one API's steps. Step specs call back into it from `StepSpec.compile`."""

    collections: Mapping[str, CollectionSchema]
    prices: Mapping[str, int] = field(default_factory=dict)
    # Ids whose output is readable at the point being compiled.
    available: set[str] = field(default_factory=set)
    declared: set[str] = field(default_factory=set)
    # Ids that stay readable after their container ends (not inside a forEach body).
    visible_at_end: set[str] = field(default_factory=set)
    locals: frozenset[str] = frozenset()
    # Record fields to mask in debug traces (encrypted fields of the collections used).
    masked_keys: set[str] = field(default_factory=set)
    used_collections: set[str] = field(default_factory=set)
    current: str | None = None
    depth: int = 0
    # What a `callApi` step's callee can consume (by name and pinned version); None: the
    # callee is not costed here (a run compiles a definition whose cost was frozen on save).
    callee_cost: CalleeBound | None = None
    # The definition is being saved (or run ad hoc), not loaded as stored: checks made stricter
    # since apply, while a stored version keeps compiling (and running) as it was accepted.
    saving: bool = False
    _pending: list[_PendingRef] = field(default_factory=list)

    # --- called by step specs ------------------------------------------------------------

    def callee(self, api: str, version: str | None) -> CostBound:
        """What a `callApi` of `api` at `version` adds to the caller's cost: the callee's own
        bound (`engine/cost.py`)."""
        return self.callee_cost(api, version) if self.callee_cost is not None else CostBound()

    def error(self, field: str, message: str) -> DefinitionError:
        """A `DefinitionError` naming `steps.<current step>.<field>`."""
        return DefinitionError(self.current, field, message)

    def value(self, raw: Any, field: str) -> CompiledValue:
        """Compile a config value of the current step: expressions may read only `args`,
        `token`, `steps`, `env`, `now` and names a container binds, and only steps that run
        earlier (by id: `steps.<id>` or `steps["<id>"]`)."""
        compiled = compile_value(raw, step_field(self.current, field))
        unknown = compiled.names - ROOT_NAMES - self.locals - _TYPE_NAMES
        if unknown:
            names = ", ".join(sorted(unknown))
            raise self.error(field, f"unknown name {names} (expressions read {_READABLE})")
        if compiled.reads_all_steps:
            raise self.error(
                field,
                "read earlier steps by id (steps.<id> or steps['<id>']), so the order "
                "can be checked",
            )
        for ref in sorted(compiled.step_refs):
            if ref not in self.available:
                self._pending.append(_PendingRef(self.current or "", field, ref))
        return compiled

    def literal(self, raw: Any, field: str) -> Any:
        """A config value that must be fixed when saved (no `{"expr"}`)."""
        compiled = self.value(raw, field)
        if not compiled.is_literal:
            raise self.error(field, "must be a constant, not an expression")
        return compiled.literal

    def collection(self, name: Any, field: str = "collection") -> CollectionSchema:
        if not isinstance(name, str) or name not in self.collections:
            raise self.error(field, f"unknown collection {name!r}")
        schema = self.collections[name]
        self.used_collections.add(name)
        self.masked_keys.update(f.name for f in schema.encrypted_fields)
        return schema

    def filter(
        self, tree: Any, collection: CollectionSchema, field: str = "filter"
    ) -> CompiledValue:
        """A collection filter: shape, operators and field names checked now against the
        collection's filterable fields (and the built-in `id`, `version`, `createdTime`,
        `updatedTime`); its values compiled like any other, so `{"expr"}` operands and their step
        references are checked too. `evaluate` gives the concrete tree per call, which the record
        store turns into parameterised SQL."""
        known = {f.name for f in collection.fields if f.filterable} | set(BUILTIN_TYPES)
        try:
            validate_filter(tree, known)
        except FilterError as exc:
            path = exc.dotted_path
            raise self.error(f"{field}.{path}" if path else field, exc.message) from None
        return self.value(tree, field)

    @contextmanager
    def bind(self, *names: str) -> Iterator[None]:
        """Let expressions compiled inside read `names` (forEach's item and index)."""
        previous = self.locals
        self.locals = previous | frozenset(names)
        try:
            yield
        finally:
            self.locals = previous

    def steps(
        self, specs: Sequence[StepSpec | Mapping[str, Any]], field: str = "steps"
    ) -> list[CompiledStep]:
        """Compile a step list in order (top level, or a container's children under `field`)."""
        parent = self.current
        where = step_field(parent, field) if parent is not None else field
        if not isinstance(specs, Sequence) or isinstance(specs, str | bytes):
            raise DefinitionError(None, where, "must be a list of steps")
        if self.depth >= MAX_DEPTH:
            raise DefinitionError(None, where, f"steps nest deeper than {MAX_DEPTH} levels")
        self.depth += 1
        compiled: list[CompiledStep] = []
        try:
            for index, raw in enumerate(specs):
                spec = raw if isinstance(raw, StepSpec) else parse_step(raw, f"{where}.{index}")
                if spec.id in self.declared:
                    raise DefinitionError(spec.id, "id", f"duplicate step id {spec.id!r}")
                self.declared.add(spec.id)
                if len(self.declared) > MAX_STEPS:
                    raise DefinitionError(None, where, f"at most {MAX_STEPS} steps")
                self.current = spec.id
                step = spec.compile(self)
                self.current = parent
                self.available.add(spec.id)
                self.visible_at_end.add(spec.id)
                compiled.append(step)
        finally:
            self.depth -= 1
            self.current = parent
        return compiled

    def alternatives(
        self, branches: Sequence[tuple[Sequence[Any], str]]
    ) -> list[list[CompiledStep]]:
        """Compile step lists of which one runs (`if`): no branch reads another's steps; after
        the container, each branch's steps are readable (absent when their branch did not run)."""
        before = set(self.available)
        compiled: list[list[CompiledStep]] = []
        added: set[str] = set()
        for specs, branch_field in branches:
            self.available = set(before)
            compiled.append(self.steps(specs, branch_field))
            added |= self.available - before
        self.available = before | added
        return compiled

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Steps declared inside are unreadable after it: a forEach body's outputs belong to one
        iteration; after the loop only the loop's own output is read."""
        before = set(self.declared)
        try:
            yield
        finally:
            inner = self.declared - before
            self.available -= inner
            self.visible_at_end -= inner

    def raise_pending(self) -> None:
        """Report the first reference to a step that does not run before the reader."""
        if not self._pending:
            return
        first = self._pending[0]
        if first.ref == first.step_id:
            message = f"step {first.ref!r} cannot read its own output"
        elif first.ref in self.declared:
            message = f"step {first.ref!r} does not run before this step"
        else:
            message = f"unknown step {first.ref!r}"
        raise DefinitionError(first.step_id, first.field, message)


def parse_step(raw: Any, where: str) -> StepSpec:
    """A raw step dict → its type's validated spec; errors name `steps.<id>.<field>`."""
    if not isinstance(raw, Mapping):
        raise DefinitionError(None, where, "a step must be an object")
    step_id = raw.get("id")
    if not isinstance(step_id, str) or not _ID.fullmatch(step_id):
        raise DefinitionError(
            None, f"{where}.id", "a step id starts with a letter or _, then letters, digits or _"
        )
    step_type = raw.get("type")
    spec_class = STEP_TYPES.get(step_type) if isinstance(step_type, str) else None
    if spec_class is None:
        raise DefinitionError(step_id, "type", f"unknown step type {step_type!r}")
    try:
        return spec_class.model_validate(dict(raw))
    except PydanticError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise DefinitionError(step_id, loc, message) from None


@dataclass(frozen=True, slots=True)
class CompiledApi:
    """One API at one version, ready to run: immutable, shared by every call."""

    api: str
    params: CompiledParams
    steps: tuple[CompiledStep, ...]
    return_steps: tuple[str, ...] | None
    auth: Mapping[str, Any]
    cost: int
    price: int
    enabled: bool
    masked_keys: frozenset[str]
    # Its answers may carry a secret (a token it signs, a sensitive arg, an encrypted field, an
    # app secret, what another API or host answered): a stored answer is sealed at rest.
    sealed_answers: bool = False

    @property
    def params_schema(self) -> dict[str, Any]:
        return self.params.schema

    def validate_args(self, args: Any) -> dict[str, Any]:
        """Checked args with defaults (400 `Missing required parameters` / naming the field)."""
        return self.params.validate(args)


def _return_steps(raw: Any, visible: set[str]) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise DefinitionError(None, "returnSteps", "must be a list of step ids")
    for index, step_id in enumerate(raw):
        if step_id not in visible:
            raise DefinitionError(
                None,
                f"returnSteps.{index}",
                f"no step {step_id!r} to return (top level or inside if/transaction)",
            )
    if len(set(raw)) != len(raw):
        raise DefinitionError(None, "returnSteps", "step ids must be unique")
    return tuple(raw)


def _get(definition: Mapping[str, Any], camel: str, snake: str, default: Any) -> Any:
    if camel in definition:
        return definition[camel]
    return definition.get(snake, default)


def compile_api(
    definition: Mapping[str, Any],
    collections: Mapping[str, CollectionSchema],
    prices: Mapping[str, int],
    *,
    callee_cost: CalleeBound | None = None,
    saving: bool = False,
) -> CompiledApi:
    """Validate and compile one API definition (`api`, `params`, `steps`, `returnSteps`, `auth`,
    `price`, `enabled`; camelCase or snake_case keys). Raises `DefinitionError` (400).
    `callee_cost` costs the APIs its `callApi` steps run (builder/definitions.py); `saving`
    adds the checks only new definitions get (`Compiler.saving`)."""
    params = compile_params(definition.get("params"))
    compiler = Compiler(
        collections=collections, prices=prices, callee_cost=callee_cost, saving=saving
    )
    steps = compiler.steps(definition.get("steps") or [], "steps")
    compiler.raise_pending()
    return_steps = _return_steps(
        _get(definition, "returnSteps", "return_steps", None), compiler.visible_at_end
    )
    masked = set(compiler.masked_keys) | set(params.sensitive)
    return CompiledApi(
        api=str(definition.get("api", "")),
        params=params,
        steps=tuple(steps),
        return_steps=return_steps,
        auth=dict(definition.get("auth") or {}),
        cost=steps_cost(steps, prices),
        price=int(definition.get("price") or 0),
        enabled=bool(definition.get("enabled", True)),
        masked_keys=frozenset(masked),
        sealed_answers=bool(masked) or _may_answer_secrets(definition.get("steps")),
    )


# Steps whose output can hold a secret the API's definition does not show: a token it signs,
# what another API (perhaps one that signs) or a remote host answers.
_SECRET_STEPS = frozenset({"jwtSign", "callApi", "httpRequest"})


# `env` read other than as `env.config`: `env` whole, or `env[args.part]`, holds the secrets too.
_ENV_BEYOND_CONFIG = re.compile(r"\benv\b(?!\s*\.\s*config\b)")


def _may_answer_secrets(steps: Any) -> bool:
    """Whether `steps` (nested ones too) sign tokens, call out, or may read the app's secrets
    (an expression mentioning `secrets`, or reading `env` other than `env.config`): sealing
    more answers than needed costs a cipher pass; sealing fewer leaves a secret in clear."""
    if isinstance(steps, list):
        return any(_may_answer_secrets(item) for item in steps)
    if isinstance(steps, dict):
        if steps.get("type") in _SECRET_STEPS:
            return True
        return any(_may_answer_secrets(value) for value in steps.values())
    return isinstance(steps, str) and (
        "secrets" in steps or _ENV_BEYOND_CONFIG.search(steps) is not None
    )


def compile_workflow(
    steps: Any,
    collections: Mapping[str, CollectionSchema],
    prices: Mapping[str, int],
    *,
    callee_cost: CalleeBound | None = None,
) -> CompiledApi:
    """An ad-hoc step list (`/api/v1/workflows`): no params, `args` passed through as given.
    Its cost is what the run is charged, so it is held to what an API's price may be
    (`check_cost`). `callee_cost` costs what its `callApi` steps run, as for a saved API."""
    compiled = compile_api(
        {"api": "", "steps": steps}, collections, prices, callee_cost=callee_cost, saving=True
    )
    check_cost(compiled.cost)
    return replace(compiled, params=open_params())


def check_cost(cost: int) -> None:
    """400 `invalid_definition` (naming `steps`) for steps costing more than one call may be
    charged (`MAX_RU`, one ledger movement): dear step prices, `getMany` pages and `callApi`
    callees can add up past it, and no price could cover them."""
    if cost > MAX_RU:
        most = f"over the most a call may cost ({MAX_RU})"
        raise DefinitionError(None, "steps", f"these steps could cost {cost} RU, {most}")
