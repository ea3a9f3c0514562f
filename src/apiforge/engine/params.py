"""API params (DESIGN.md §5) → one JSON Schema, compiled once with fastjsonschema.

The same schema validates every call and feeds the generated docs. Checks that fastjsonschema
reports one at a time are ordered so callers get the most useful answer first: every missing
required name at once (400 `Missing required parameters`), then the first wrong type or broken
constraint, naming the param.
"""

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import fastjsonschema
import re2
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError

from apiforge.engine.errors import ArgumentsError, DefinitionError, MissingArgumentsError

ParamType = Literal["string", "integer", "number", "boolean", "object", "array"]

MAX_PARAMS = 100
MAX_PATTERN_LENGTH = 500
MAX_ENUM = 200
# What an `integer` arg may hold: a signed 64-bit integer, CEL's `int` and the collections'
# integer fields. A larger one would reach the steps as a rounded float.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

# What `min`/`max` bound for each type.
_BOUNDS: dict[str, tuple[str, str]] = {
    "string": ("minLength", "maxLength"),
    "integer": ("minimum", "maximum"),
    "number": ("minimum", "maximum"),
    "array": ("minItems", "maxItems"),
    "object": ("minProperties", "maxProperties"),
}
_PY_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


class ParamSpec(BaseModel):
    """One param as saved."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    type: ParamType = "string"
    required: bool = False
    default: Any = None
    description: str = Field(default="", max_length=2000)
    enum: list[Any] | None = Field(default=None, min_length=1, max_length=MAX_ENUM)
    # `int` first: a bound beyond 2^53 kept as a float would refuse the bound itself.
    min: int | float | None = None
    max: int | float | None = None
    pattern: str | None = Field(default=None, max_length=MAX_PATTERN_LENGTH)
    sensitive: bool = False


def _whole(value: int | float) -> int | None:
    """`value` as an int when it is a whole number (`5.0` → 5), else None."""
    if isinstance(value, int):
        return value
    return int(value) if value.is_integer() else None


def _definition_error(index: int, attr: str, message: str) -> DefinitionError:
    return DefinitionError(None, f"params.{index}.{attr}" if attr else f"params.{index}", message)


_sre_parse: Any = importlib.import_module("re._parser")
_REPEATS = {_sre_parse.MAX_REPEAT, _sre_parse.MIN_REPEAT, _sre_parse.POSSESSIVE_REPEAT}


def _nested_repeat(items: Any, inside_repeat: bool) -> bool:
    """True when an unbounded repeat contains another repeat: `(a+)+`, `(a|aa)*` style patterns
    that backtrack exponentially on Python's regex engine (ReDoS)."""
    for op, arg in items:
        if op in _REPEATS:
            _low, high, sub = arg
            unbounded = high == _sre_parse.MAXREPEAT or high > 100
            if inside_repeat and high > 1:
                return True
            if _nested_repeat(sub, inside_repeat or unbounded):
                return True
        elif op == _sre_parse.SUBPATTERN:
            if _nested_repeat(arg[-1], inside_repeat):
                return True
        elif op == _sre_parse.BRANCH:
            if inside_repeat and len(arg[1]) > 1:
                return True
            if any(_nested_repeat(branch, inside_repeat) for branch in arg[1]):
                return True
        elif op in (_sre_parse.ASSERT, _sre_parse.ASSERT_NOT) and _nested_repeat(
            arg[1], inside_repeat
        ):
            return True
    return False


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a pattern RE2 can't run is expected (lookarounds), not news


def pattern_search(pattern: str) -> Callable[[str], object]:
    """How a call's argument is matched against a param's `pattern` (unanchored, as JSON Schema
    says). RE2 runs in time linear in the argument: Python's engine backtracks polynomially even
    on patterns without nested repeats (`a*a*a*b` took 81 s on 1,000 characters, `a+b` about 9
    minutes on a 1 MB body). A pattern RE2 can't run (a lookaround, a backreference) stays on
    Python's engine, which `check_pattern` keeps from nesting repeats."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS).search  # type: ignore[no-any-return]
    except re2.error:
        return re.compile(pattern).search


def check_pattern(pattern: str) -> str | None:
    """Why a param `pattern` is refused, or None: it must compile and must not nest repeats."""
    try:
        re.compile(pattern)
        tree = _sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"invalid regular expression: {exc}"
    if _nested_repeat(tree, False):
        return "nested repetition (catastrophic backtracking) is not allowed"
    return None


def _param_schema(index: int, spec: ParamSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": spec.type}
    if spec.description:
        schema["description"] = spec.description
    if spec.enum is not None:
        if len(set(map(repr, spec.enum))) != len(spec.enum):
            raise _definition_error(index, "enum", "values must be unique")
        for position, value in enumerate(spec.enum):
            if not _PY_TYPES[spec.type](value):
                raise _definition_error(index, f"enum.{position}", f"must be of type {spec.type}")
        schema["enum"] = spec.enum
    for attr, bound in (("min", spec.min), ("max", spec.max)):
        if bound is None:
            continue
        if spec.type == "boolean":
            raise _definition_error(index, attr, "not allowed for boolean params")
        keyword = _BOUNDS[spec.type][0 if attr == "min" else 1]
        whole = _whole(bound)
        if spec.type in ("integer", "number"):
            schema[keyword] = bound if whole is None else whole
        else:
            if whole is None or whole < 0:
                raise _definition_error(index, attr, "must be a non-negative integer")
            schema[keyword] = whole
    if spec.min is not None and spec.max is not None and spec.min > spec.max:
        raise _definition_error(index, "min", "must not be greater than max")
    if spec.pattern is not None:
        if spec.type != "string":
            raise _definition_error(index, "pattern", "only string params take a pattern")
        problem = check_pattern(spec.pattern)
        if problem:
            raise _definition_error(index, "pattern", problem)
        schema["pattern"] = spec.pattern
    if spec.sensitive:
        # OpenAPI: accepted in requests, never shown back; the runtime masks it in traces.
        schema["writeOnly"] = True
    return schema


@dataclass(frozen=True, slots=True)
class CompiledParams:
    """The params of one API version, ready to validate calls."""

    specs: tuple[ParamSpec, ...]
    schema: dict[str, Any]
    required: tuple[str, ...]
    sensitive: frozenset[str]
    integers: tuple[str, ...]
    numbers: tuple[str, ...]
    _validate: Callable[[Any], Any]
    # (param, pattern, matcher): checked here, not by the JSON Schema validator (Python's engine).
    patterns: tuple[tuple[str, str, Callable[[str], object]], ...] = ()
    # An ad-hoc workflow's args: any object, passed through as given (nulls included).
    passes_through: bool = False
    # `boolean` params: `1`/`0` are taken for `true`/`false`, as every platform input takes them
    # (spec 003 §2.4.1; record fields alike).
    booleans: tuple[str, ...] = ()

    def validate(self, args: Any) -> dict[str, Any]:
        """Checked args with defaults filled in; 400 naming the params at fault."""
        if not isinstance(args, dict):
            raise ArgumentsError(
                "Invalid parameters", [{"field": "args", "message": "must be an object"}]
            )
        if self.passes_through:
            return dict(args)
        # An explicit null means "not given": defaults apply and required params are missing.
        present = {key: value for key, value in args.items() if value is not None}
        missing = [name for name in self.required if name not in present]
        if missing:
            raise MissingArgumentsError(missing)
        if len(present) != len(args):
            # ... but only for a declared param: an undeclared one is refused, null or not.
            unknown = sorted(args.keys() - self.schema["properties"].keys())
            if unknown:
                raise _invalid_arg(unknown[0], "unknown parameter")
        for name in self.booleans:
            value = present.get(name)
            if (value == 0 or value == 1) and type(value) is int:
                present[name] = value == 1
        try:
            checked: dict[str, Any] = self._validate(present)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise ArgumentsError("Invalid parameters", [_field_error(exc)]) from None
        for name in self.integers:
            value = checked.get(name)
            if isinstance(value, float):
                value = checked[name] = int(value)
            if value is not None and not INT_MIN <= value <= INT_MAX:
                raise _invalid_arg(name, f"must be between {INT_MIN} and {INT_MAX}")
        for name in self.numbers:
            value = checked.get(name)
            if isinstance(value, int):
                # A `number` is a CEL double however the client wrote it: CEL keeps `1` an int,
                # so `args.x / 2` divided as integers and `args.x + 0.5` failed for `1` only.
                try:
                    checked[name] = float(value)
                except OverflowError:  # a 400-digit integer literal: `1e400` is refused too
                    raise _invalid_arg(name, "must be a finite number") from None
            elif isinstance(value, float) and not math.isfinite(value):
                # `NaN` (which the JSON parser accepts) passes every `min`/`max` check.
                raise _invalid_arg(name, "must be a finite number")
        for name, pattern, search in self.patterns:
            value = checked.get(name)
            if isinstance(value, str) and search(value) is None:
                raise _invalid_arg(name, f"must match pattern {pattern}")
        return checked


def _invalid_arg(name: str, message: str) -> ArgumentsError:
    return ArgumentsError("Invalid parameters", [{"field": name, "message": message}])


def _field_error(exc: fastjsonschema.JsonSchemaValueException) -> dict[str, str]:
    path = [str(part) for part in (exc.path or [])[1:]]
    if exc.rule == "additionalProperties":
        extra = sorted(set(exc.value) - set(exc.definition.get("properties", {})))
        name = extra[0] if extra else "args"
        return {"field": name, "message": "unknown parameter"}
    field = ".".join(path) or "args"
    message = (exc.message or "is invalid").replace(exc.name or "data", "", 1).strip()
    return {"field": field, "message": message or "is invalid"}


def compile_params(raw: Any) -> CompiledParams:
    """Validate a saved param list and compile its JSON Schema (400 naming `params.<i>.<attr>`)."""
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise DefinitionError(None, "params", "must be a list")
    if len(raw) > MAX_PARAMS:
        raise DefinitionError(None, "params", f"at most {MAX_PARAMS} params")
    specs: list[ParamSpec] = []
    properties: dict[str, Any] = {}
    for index, item in enumerate(raw):
        try:
            spec = ParamSpec.model_validate(item)
        except PydanticError as exc:
            first = exc.errors()[0]
            attr = ".".join(str(part) for part in first["loc"])
            raise _definition_error(index, attr, first["msg"]) from None
        if spec.name in properties:
            raise _definition_error(index, "name", f"duplicate param {spec.name!r}")
        properties[spec.name] = _param_schema(index, spec)
        specs.append(spec)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": [spec.name for spec in specs if spec.required],
        "additionalProperties": False,
    }
    patterns = tuple(
        (spec.name, spec.pattern, pattern_search(spec.pattern))
        for spec in specs
        if spec.pattern is not None
    )
    for index, spec in enumerate(specs):
        if spec.default is None:
            continue
        if spec.required:
            raise _definition_error(index, "default", "a required param takes no default")
        try:
            fastjsonschema.compile(_unpatterned(properties[spec.name]))(spec.default)
        except fastjsonschema.JsonSchemaValueException as exc:
            message = (exc.message or "").replace("data", "default", 1)
            raise _definition_error(index, "default", message) from None
        if spec.pattern is not None and pattern_search(spec.pattern)(spec.default) is None:
            raise _definition_error(index, "default", f"must match pattern {spec.pattern}")
        properties[spec.name]["default"] = _checked_default(index, spec)
    # The schema keeps its patterns (the docs show them); the validator leaves them to `patterns`.
    validate = fastjsonschema.compile(
        {**schema, "properties": {name: _unpatterned(p) for name, p in properties.items()}}
    )
    return CompiledParams(
        specs=tuple(specs),
        schema=schema,
        required=tuple(spec.name for spec in specs if spec.required),
        sensitive=frozenset(spec.name for spec in specs if spec.sensitive),
        integers=tuple(spec.name for spec in specs if spec.type == "integer"),
        numbers=tuple(spec.name for spec in specs if spec.type == "number"),
        _validate=validate,
        patterns=patterns,
        booleans=tuple(spec.name for spec in specs if spec.type == "boolean"),
    )


def _checked_default(index: int, spec: ParamSpec) -> Any:
    """The default as calls get it: an `integer` one (`5.0` is one) as an int within 64 bits,
    the range every call's arg is held to, so no default fails every call that relies on it."""
    if spec.type != "integer":
        return spec.default
    value = int(spec.default)
    if not INT_MIN <= value <= INT_MAX:
        raise _definition_error(index, "default", f"must be between {INT_MIN} and {INT_MAX}")
    return value


def _unpatterned(schema: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in schema.items() if key != "pattern"}


def _pass_through(args: Any) -> Any:
    return dict(args)


def open_params() -> CompiledParams:
    """Params of an ad-hoc workflow: any JSON object is accepted as `args`, unchecked."""
    return CompiledParams(
        specs=(),
        schema={"type": "object"},
        required=(),
        sensitive=frozenset(),
        integers=(),
        numbers=(),
        _validate=_pass_through,
        passes_through=True,
    )
