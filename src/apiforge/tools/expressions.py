"""Guarded CEL expressions (DESIGN.md §5): cheap pre-checks, compile once, evaluate to JSON data.

Expressions read five variables: `args` (the call's parameters), `token` (the caller's claims),
`steps` (outputs of earlier steps, by step id), `env` (app config and secrets) and `now`, which is
a timezone-aware `datetime` and so a CEL timestamp (`now - duration("1h")`,
`timestamp(args.since) < now`); a naive one is read as UTC. Callers may bind more (forEach's item).

Guards, all applied before the engine sees the source: at most `MAX_SOURCE_CHARS` characters,
brackets nested at most `MAX_NESTING` deep, comprehension macros (`all`, `exists`, `exists_one`,
`map`, `filter`) nested at most `MAX_COMPREHENSION_NESTING` deep. They rest on a linear lexical
scan that skips string literals and comments, so hostile input is refused in microseconds.
Evaluation turns every engine failure into `ExpressionError` and caps the result's size.

What the guards cannot do: cel (0.10) holds the GIL and offers no cancellation or cost limit, and
its `map`/`filter` build their result by copying, so they take time quadratic in the list length
(about 0.1 s for 1,000 items, 1.4 s for 4,000, measured). The time a call may spend here is
therefore bounded by the sizes of the lists it reads, which callers must cap.
"""

import asyncio
import base64
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

import cel
import cel.stdlib

from apiforge.tools.clock import iso

MAX_SOURCE_CHARS: Final = 4096
MAX_NESTING: Final = 32  # ( [ { open at once
MAX_COMPREHENSION_NESTING: Final = 2
MAX_RESULT_CHARS: Final = 1_000_000  # about 1 MB of JSON, counted in characters
MAX_RESULT_DEPTH: Final = 100
# Comprehension work the engine may do in one evaluation, estimated before it starts as
# n ** (depth + 1) for the largest list or map n reachable in the variables read: the engine's
# macros cost about n² per level and cannot be interrupted once running (it holds the GIL).
MAX_COMPREHENSION_WORK: Final = 2_000_000
_WALK_BUDGET: Final = 100_000  # containers and items visited to find n, at most
# Characters (or list items) the engine may copy in one evaluation, estimated before it starts
# (`_Shape.copies`): it copies every intermediate string and list whole, so `a + a + ... + a`
# costs the square of its length and chained `map(x, x + x)` doubles its input at each link.
# About half a second of copying at the rates measured on cel 0.10.
MAX_COPY_WORK: Final = 2_000_000_000
# Below this element size the comprehension bound above is the one that matters.
_MIN_ELEMENT_CHARS: Final = 1000
# Larger than any single value a call can hold (request bodies, expression results and
# httpRequest answers are capped at about 1 MB): expressions whose copies stay within budget even
# for such a value skip the walk over their variables.
_MAX_VALUE_CHARS: Final = 2**21
_GROWING_FUNCTIONS: Final = frozenset({"replace", "join"})
_KEYWORDS: Final = frozenset({"true", "false", "null", "in"})
MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
# Names a caller may not bind as a variable (forEach's `as`): CEL's keywords and reserved words,
# which never read a variable (`null` is the literal, `in` a syntax error), and the engine's own
# type names, global functions, macros and namespaces, which a variable would shadow or muddle
# (`type(x) == int` compared with the item).
_RESERVED_WORDS: Final = frozenset(
    {"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let"}
    | {"loop", "namespace", "package", "return", "var", "void", "while"}
)
_BUILTINS: Final = frozenset(
    {"bool", "bytes", "double", "dyn", "int", "list", "map", "null_type", "string", "type"}
    | {"uint", "duration", "has", "matches", "size", "timestamp", "optional"}
)
UNBINDABLE_NAMES: Final = _KEYWORDS | _RESERVED_WORDS | _BUILTINS | MACROS

# Never turned into ExpressionError: they stop the process or cancel the task, not the expression.
_PASS_THROUGH: Final = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)
_MESSAGE_CHARS: Final = 500


class ExpressionError(ValueError):
    """An expression is refused, fails to compile, fails to evaluate or yields too much."""


# --- lexical scan -----------------------------------------------------------------------------

# CEL's lexical grammar, as far as the guards need it. String literals follow the spec: escapes
# only in cooked strings, line breaks only inside triple quotes; a quote that opens no complete
# literal can only be an error.
_TOKEN = re.compile(
    r"""
    (?P<skip>\s+|//[^\n]*)
    | (?P<raw>(?:[rR][bB]?|[bB][rR])(?:'''.*?'''|\"\"\".*?\"\"\"|'[^'\n]*'|"[^"\n]*"))
    | (?P<cooked>[bB]?(?:'''(?:[^\\]|\\.)*?'''|\"\"\"(?:[^\\]|\\.)*?\"\"\"
                        |'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"))
    | (?P<open>[rRbB]{0,2}['"])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>[0-9][0-9A-Za-z_.]*)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class _Token(NamedTuple):  # a tuple: a 4 KB source can make thousands
    kind: str  # ident | string | number | punct
    text: str  # for strings: the content between the quotes
    plain: bool = True  # for strings: `text` is exactly the value (raw, or without escapes)


@dataclass(frozen=True, slots=True)
class _Shape:
    """What in a source can make values grow, counted on its tokens."""

    references: int = 0  # variables read (macro-bound ones included), each a copy of an input
    plus: int = 0  # `+` operators: each concatenation copies both sides whole
    maps: int = 0  # `map` macros: each may multiply its input by its body's growth
    literal_items: int = 0  # items of the longest list or map literal (a range to iterate)
    literal_chars: int = 0  # the longest string literal
    growing_calls: int = 0  # `replace` and `join`: output up to MAX_RESULT_CHARS
    splits: bool = False  # `split` turns a string into a list as long as the string

    @property
    def copies(self) -> int:
        """How many times over one input the values built in one evaluation can be: at most
        `references` inputs are combined, concatenated `plus` times, and each `map` link may
        repeat that (`[s].map(x, x + x).map(x, x + x)...` doubles at every link). Capped, as
        only the comparison with the budget matters."""
        copies = self.plus + 1
        for _ in range(self.maps + 1):
            copies *= self.references + 1
            if copies > MAX_COPY_WORK:
                return MAX_COPY_WORK + 1
        return copies


@dataclass(frozen=True, slots=True)
class _Scan:
    steps: frozenset[str]
    reads_all_steps: bool
    bound: frozenset[str]
    comprehension_depth: int = 0
    shape: _Shape = _Shape()
    clashing_keys: bool = False  # see `_clashing_keys`


def _tokens(source: str) -> Iterator[_Token]:
    """Tokenise just enough of CEL to see brackets, identifiers and macros outside strings."""
    for match in _TOKEN.finditer(source):
        kind = match.lastgroup
        text = match.group()
        if kind == "skip":
            continue
        if kind == "open":
            raise ExpressionError("a string literal is not closed")
        if kind in ("raw", "cooked"):
            literal = text.lstrip("rRbB")
            quote = 3 if literal[:3] in ("'''", '"""') else 1
            content = literal[quote:-quote]
            yield _Token("string", content, kind == "raw" or "\\" not in content)
        else:
            yield _Token(kind or "punct", text)


def _checked(tokens: Iterable[_Token]) -> tuple[list[_Token], int]:
    """The tokens and the deepest comprehension nesting, refused as soon as brackets or
    comprehensions nest too deep."""
    checked: list[_Token] = []
    open_brackets: list[bool] = []  # True where the bracket opens a comprehension macro
    macros = deepest = 0
    previous: _Token | None = None
    for token in tokens:
        if token.kind == "punct" and token.text in "([{":
            is_macro = (
                token.text == "("
                and previous is not None
                and previous.kind == "ident"
                and previous.text in MACROS
            )
            open_brackets.append(is_macro)
            if len(open_brackets) > MAX_NESTING:
                raise ExpressionError(f"brackets nest deeper than {MAX_NESTING} levels")
            if is_macro:
                macros += 1
                deepest = max(deepest, macros)
                if macros > MAX_COMPREHENSION_NESTING:
                    raise ExpressionError(
                        f"comprehensions ({', '.join(sorted(MACROS))}) nest deeper than "
                        f"{MAX_COMPREHENSION_NESTING} levels"
                    )
        elif token.kind == "punct" and token.text in ")]}" and open_brackets:
            macros -= open_brackets.pop()
        previous = token
        checked.append(token)
    return checked, deepest


def _references(tokens: list[_Token]) -> _Scan:
    """Step ids read as `steps.<id>` or `steps["<id>"]`, and names macros bind."""
    steps: set[str] = set()
    bound: set[str] = set()
    reads_all = False

    def at(index: int, kind: str, text: str | None = None) -> bool:
        if index >= len(tokens) or tokens[index].kind != kind:
            return False
        return text is None or tokens[index].text == text

    for i, token in enumerate(tokens):
        if token.kind != "ident":
            continue
        if (
            token.text in MACROS
            and at(i + 1, "punct", "(")
            and at(i + 2, "ident")
            and at(i + 3, "punct", ",")
        ):
            bound.add(tokens[i + 2].text)
        if token.text != "steps" or (i > 0 and tokens[i - 1].text == "."):
            continue  # not the root variable: a field named steps, or not steps at all
        selected = at(i + 1, "punct", ".") and at(i + 2, "ident") and not at(i + 3, "punct", "(")
        indexed = (
            at(i + 1, "punct", "[")
            and at(i + 2, "string")
            and tokens[i + 2].plain
            and at(i + 3, "punct", "]")
        )
        if selected or indexed:
            steps.add(tokens[i + 2].text)
        else:  # steps[x], steps.size(), a macro over steps, or a name some macro binds
            reads_all = True
    return _Scan(frozenset(steps), reads_all, frozenset(bound))


def _shape(tokens: list[_Token]) -> _Shape:
    """Count what can make an evaluation's values grow (see `_Shape`)."""
    references = plus = maps = literal_items = literal_chars = growing = 0
    splits = False
    items: list[int] = []  # per open bracket: items so far in a list/map literal, -1 for `(`
    for i, token in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        calls = after is not None and after.kind == "punct" and after.text == "("
        if token.kind == "string":
            literal_chars = max(literal_chars, len(token.text))
        elif token.kind == "ident":
            selected = i > 0 and tokens[i - 1].kind == "punct" and tokens[i - 1].text == "."
            if calls:
                maps += token.text == "map"
                growing += token.text in _GROWING_FUNCTIONS
                splits = splits or token.text == "split"
            elif not selected and token.text not in _KEYWORDS:
                references += 1
        elif token.kind == "punct":
            if token.text == "+":
                plus += 1
            elif token.text in "([{":
                empty = after is not None and after.kind == "punct" and after.text in ")]}"
                items.append(-1 if token.text == "(" or empty else 1)
            elif token.text in ")]}" and items:
                literal_items = max(literal_items, items.pop())
            elif token.text == "," and items and items[-1] > 0:
                items[-1] += 1
    return _Shape(references, plus, maps, literal_items, literal_chars, growing, splits)


def _scan(source: Any) -> _Scan:
    if not isinstance(source, str):
        raise ExpressionError("an expression must be a string")
    if len(source) > MAX_SOURCE_CHARS:
        raise ExpressionError(f"expressions are limited to {MAX_SOURCE_CHARS} characters")
    tokens, depth = _checked(_tokens(source))
    if not tokens:
        raise ExpressionError("the expression is empty")
    scan = replace(_references(tokens), comprehension_depth=depth, shape=_shape(tokens))
    return replace(scan, clashing_keys=_clashing_keys(tokens)) if "{" in source else scan


# --- extension functions --------------------------------------------------------------------


def _bounded_replace(s: Any, old: Any, new: Any, limit: int = -1) -> str:
    if not (isinstance(s, str) and isinstance(old, str) and isinstance(new, str)):
        raise TypeError("replace expects strings")
    count = len(s) + 1 if old == "" else s.count(old)
    if limit >= 0:
        count = min(count, limit)
    if len(s) + count * (len(new) - len(old)) > MAX_RESULT_CHARS:
        raise ValueError(f"replace would make a string over {MAX_RESULT_CHARS} characters")
    return cel.stdlib.replace(s, old, new, limit)


def _bounded_join(items: Any, sep: Any = "") -> str:
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise TypeError("join expects a list of strings")
    if not isinstance(sep, str):
        raise TypeError("join expects a string separator")
    size = sum(len(item) for item in items) + len(sep) * max(len(items) - 1, 0)
    if size > MAX_RESULT_CHARS:
        raise ValueError(f"join would make a string over {MAX_RESULT_CHARS} characters")
    return cel.stdlib.join(items, sep)


# The string helpers of cel-go that the Rust engine lacks. Only ones whose output cannot outgrow
# their input are taken as they are; `replace` and `join` can, so they check the size first.
_AS_IS = (
    "charAt",
    "indexOf",
    "lastIndexOf",
    "lowerAscii",
    "upperAscii",
    "split",
    "substring",
    "trim",
)


def _code_point_size(value: Any) -> int:
    """CEL's `size`: a string's length in code points (the engine's own counts UTF-8 bytes,
    unlike CEL's spec and the `charAt`/`indexOf`/`substring` above); bytes, lists and maps as
    the engine counts them."""
    if isinstance(value, str | bytes | list | dict):
        return len(value)
    raise TypeError(f"size expects a string, bytes, a list or a map, not {_kind(value)}")


def _kind(value: Any) -> str:
    """The CEL type name of a value handed to one of our functions, for its error message."""
    return {"NoneType": "null", "float": "double"}.get(type(value).__name__, type(value).__name__)


_ENGINE_STRING: Final = cel.compile("string(value)")


def _string(value: Any) -> str:
    """CEL's `string`: a timestamp in the platform's format (`iso`: whole-second UTC with `Z`,
    as the API writes every time and as an expression's timestamp result reads; the engine's own
    gave `2026-01-02T03:04:05.123456+00:00`); anything else as the engine converts it."""
    if isinstance(value, datetime):
        return iso(value)
    try:
        text: str = _ENGINE_STRING.execute({"value": value})
    except Exception as exc:  # the engine's message would name `value`, not the argument
        raise TypeError(f"string cannot convert {_kind(value)}") from exc
    return text


# `size(...)` and `string(...)` (and `x.size()`) are compiled as calls of these functions
# (`_with_own_functions`): the engine answers its built-ins itself, so a function registered
# under their names is never called.
_SIZE_FUNCTION: Final = "apiforgeSize"
_STRING_FUNCTION: Final = "apiforgeString"
_OWN_FUNCTIONS: Final[Mapping[str, str]] = {"size": _SIZE_FUNCTION, "string": _STRING_FUNCTION}

FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = {
    **{name: cel.stdlib.EXTENSIONS["strings"][name] for name in _AS_IS},
    "replace": _bounded_replace,
    "join": _bounded_join,
    _SIZE_FUNCTION: _code_point_size,
    _STRING_FUNCTION: _string,
}


def _with_own_functions(source: str) -> str:
    """`source` with every call of `size` and `string` (`size(x)`, `x.size()`) calling
    `_OWN_FUNCTIONS`'s replacement; a field or map key of that name and text inside string
    literals are left as they are."""
    if not any(name in source for name in _OWN_FUNCTIONS):
        return source
    parts: list[str] = []
    pending: re.Match[str] | None = None  # a replaced identifier, until the next token shows a call
    last = 0
    for match in _TOKEN.finditer(source):
        kind = match.lastgroup
        if kind == "skip":
            continue
        if pending is not None and kind == "punct" and match.group() == "(":
            parts += [source[last : pending.start()], _OWN_FUNCTIONS[pending.group()]]
            last = pending.end()
        pending = match if kind == "ident" and match.group() in _OWN_FUNCTIONS else None
    return "".join(parts) + source[last:]


# --- compile and evaluate -------------------------------------------------------------------


class CompiledExpression:
    """A compiled expression: built once per version, then shared by every call (never mutated)."""

    __slots__ = (
        "_depth",
        "_functions",
        "_names",
        "_program",
        "_shape",
        "_string_keys",
        "_walks",
        "reads_all_steps",
        "roots",
        "source",
        "steps",
    )

    def __init__(self, source: str, program: cel.Program, scan: _Scan) -> None:
        self.source = source
        self._program = program
        references = program.references()
        self._names = frozenset(references["variables"])
        #: Variables read from outside (macro-bound names removed): a best-effort set for checks.
        self.roots = self._names - scan.bound
        #: Step ids read statically (`steps.<id>`, `steps["<id>"]`).
        self.steps = scan.steps
        #: True when `steps` is also read in a way whose ids cannot be known before a call.
        self.reads_all_steps = scan.reads_all_steps
        self._functions = {
            name: FUNCTIONS[name] for name in references["functions"] if name in FUNCTIONS
        }
        self._depth = scan.comprehension_depth
        self._shape = scan.shape
        self._string_keys = scan.clashing_keys
        # Whether an evaluation must first look at its inputs' sizes (decided once: most
        # expressions are within budget whatever they are given, and skip it).
        self._walks = bool(self._depth) or scan.shape.copies * _MAX_VALUE_CHARS > MAX_COPY_WORK

    def __repr__(self) -> str:
        return f"CompiledExpression({self.source!r})"

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """Evaluate over `variables` and return plain JSON-like data (dict, list, str, int, float,
        bool, None): timestamps become `YYYY-MM-DDTHH:MM:SSZ` (the platform's whole-second UTC
        format), durations `"<seconds>s"` (protobuf's JSON form), bytes
        base64 text, non-string map keys strings. Every failure is an ExpressionError."""
        return self.evaluate_sized(variables)[0]

    def evaluate_sized(self, variables: Mapping[str, Any]) -> tuple[Any, int]:
        """`evaluate`, and the result's size in characters as the result cap counts them: for
        callers that cap what many evaluations produce together."""
        # Only what the expression reads is handed over: the engine converts every variable it
        # is given on every call, and a large `steps` output would otherwise be paid for by
        # expressions that never look at it.
        payload = {name: variables[name] for name in self._names if name in variables}
        now = payload.get("now")
        if isinstance(now, datetime) and now.tzinfo is None:
            # The engine reads a naive datetime in the process's local zone (a server on
            # Asia/Shanghai moved `now` 8 hours back): it is UTC, as every platform time is.
            payload["now"] = now.replace(tzinfo=UTC)
        steps = payload.get("steps")
        if isinstance(steps, Mapping) and not self.reads_all_steps:
            payload["steps"] = {key: steps[key] for key in self.steps if key in steps}
        if self._walks:
            _check_work(payload, self._depth, self._shape)
        context: dict[str, Any] | cel.Context = payload
        if self._functions:
            context = cel.Context(variables=payload, functions=self._functions)
        try:
            result = self._program.execute(context)
        except _PASS_THROUGH:
            raise
        except BaseException as exc:  # the engine can raise anything, a Rust panic included
            raise ExpressionError(_describe(exc)) from exc
        plain = _Plain(non_string_keys=not self._string_keys)
        return plain.convert(result, 0), MAX_RESULT_CHARS - plain.remaining


def _check_work(payload: Mapping[str, Any], depth: int, shape: _Shape) -> None:
    """Refuse before the engine starts when the evaluation could run for too long: the engine
    holds the GIL and cannot be interrupted, so the whole process would wait for it."""
    largest = longest = total = visited = 0
    pending: list[Any] = list(payload.values())
    while pending:
        value = pending.pop()
        if isinstance(value, str | bytes):
            longest = max(longest, len(value))
            total += len(value)
            continue
        if isinstance(value, Mapping):
            items: Any = list(value.values())
            longest = max(longest, *(len(key) for key in value if isinstance(key, str)), 0)
        elif isinstance(value, list | tuple):
            items = value
        else:
            continue
        largest = max(largest, len(items))
        total += len(items)
        visited += len(items) + 1
        if visited > _WALK_BUDGET:
            largest = max(largest, visited)
            break
        pending.extend(items)
    # A literal list is a range like any other, and `split` makes one as long as a string.
    n = max(largest, shape.literal_items, longest if shape.splits else 0)
    element = max(longest, shape.literal_chars)
    if shape.growing_calls:  # `replace` and `join` may build up to MAX_RESULT_CHARS each
        element = max(element, min(MAX_RESULT_CHARS, max(total, element * shape.literal_chars)))
    if depth and n ** (depth + 1) > MAX_COMPREHENSION_WORK:
        raise ExpressionError(
            f"too much work: comprehensions nested {depth} deep over {n} items "
            f"(at most {_max_items(depth)} items at this depth)"
        )
    copied = n ** (depth + 1) * max(element, _MIN_ELEMENT_CHARS) if depth else 0
    grown = shape.copies * max(element, n, 1)
    if max(copied, grown) > MAX_COPY_WORK:
        raise ExpressionError(
            f"too much work: the expression could copy about {max(copied, grown):.1e} "
            f"characters over inputs of up to {max(element, n)} (at most {MAX_COPY_WORK:.0e}); "
            "cap the inputs or split the expression into steps"
        )


def _max_items(depth: int) -> int:
    return int(MAX_COMPREHENSION_WORK ** (1 / (depth + 1)))


def compile_expression(source: str) -> CompiledExpression:
    """Check and compile `source`; raise ExpressionError when it is refused or invalid."""
    scan = _scan(source)
    try:
        program = cel.compile(source)
        rewritten = _with_own_functions(source)
        if rewritten != source:  # compiled as written first: diagnoses quote the builder's text
            program = cel.compile(rewritten)
    except _PASS_THROUGH:
        raise
    except BaseException as exc:
        selected = _selected_keyword(source)
        if selected is not None:
            owner, keyword = selected
            raise ExpressionError(
                f"{keyword!r} is a CEL keyword, so .{keyword} cannot read a field: write "
                f"{owner}[{keyword!r}] (and {keyword!r} in {owner} to test that it is there)"
            ) from exc
        message = str(exc)
        # The engine repeats the whole source before its diagnosis; keep the diagnosis.
        start = message.find("ERROR: ")
        raise ExpressionError(_clip(message[start:] if start >= 0 else message)) from exc
    return CompiledExpression(source, program, scan)


def _selected_keyword(source: str) -> tuple[str, str] | None:
    """(what is read, the keyword) when a source that failed to compile reads a keyword as a
    field (`args.in`, `steps.user.null`): a param or claim may be named `in`, `true`, `false` or
    `null`, which CEL's grammar never takes after a dot, and the engine's diagnosis says no more
    than "Syntax error"."""
    tokens = list(_tokens(source))
    for i in range(2, len(tokens)):
        token = tokens[i]
        if token.kind != "ident" or token.text not in _KEYWORDS or tokens[i - 1].text != ".":
            continue
        path: list[str] = []
        j = i - 2
        while j >= 0 and tokens[j].kind == "ident" and tokens[j].text not in _KEYWORDS:
            path.insert(0, tokens[j].text)
            if j < 2 or tokens[j - 1].kind != "punct" or tokens[j - 1].text != ".":
                break
            j -= 2
        return ".".join(path) or "x", token.text
    return None


def referenced_steps(expression: CompiledExpression | str) -> frozenset[str]:
    """Step ids an expression reads as `steps.<id>` or `steps["<id>"]` (strings ignored).

    A source string is scanned, not compiled, so it need not be valid CEL; the size and nesting
    guards still apply. Dynamic reads (`steps[args.name]`) cannot be listed:
    `CompiledExpression.reads_all_steps` tells when there are any."""
    if isinstance(expression, CompiledExpression):
        return expression.steps
    return _scan(expression).steps


# How the engine wraps a failure of one of `FUNCTIONS`: the Python exception's type is ours, not
# the builder's business ("Python function call failed: IndexError: substring: ...").
_PYTHON_FAILURE = re.compile(r"Python function call failed: (?:[A-Za-z_][\w.]*: )?")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return _clip(f"no such key: {exc.args[0]!r}")
    message = _PYTHON_FAILURE.sub("", str(exc))
    for name, own in _OWN_FUNCTIONS.items():
        message = message.replace(f"'{own}'", f"'{name}'")
    return _clip(message or type(exc).__name__)


def _clip(message: str) -> str:
    return message if len(message) <= _MESSAGE_CHARS else message[: _MESSAGE_CHARS - 3] + "..."


class _Plain:
    """Converts an engine result to JSON-like data while charging its size against the cap.

    What JSON cannot carry is refused rather than changed: NaN and the infinities (`1.0 / 0.0`),
    which JSON writers turn into `null`, and a map whose distinct CEL keys (`1`, `"1"`; `true`,
    `"true"`) would become one object key, keeping one value and dropping the others. With
    `non_string_keys` False, any key that is not a string is refused: the engine itself merges
    `1`, `1u` and `true` (equal in Python) before the result gets here (`_clashing_keys`)."""

    def __init__(self, non_string_keys: bool = True) -> None:
        self.remaining = MAX_RESULT_CHARS
        self.non_string_keys = non_string_keys

    def charge(self, chars: int) -> None:
        self.remaining -= chars
        if self.remaining < 0:
            raise ExpressionError(f"the result is larger than {MAX_RESULT_CHARS} characters")

    def convert(self, value: Any, depth: int) -> Any:
        if depth > MAX_RESULT_DEPTH:
            raise ExpressionError(f"the result nests deeper than {MAX_RESULT_DEPTH} levels")
        if value is None or isinstance(value, bool):
            self.charge(5)
            return value
        if isinstance(value, int | float):
            self.charge(20)
            if value.__class__ is float and not math.isfinite(value):
                name = "NaN" if value != value else ("-" if value < 0 else "") + "Infinity"
                raise ExpressionError(
                    f"the result holds {name} (as 1.0 / 0.0 gives), which is no JSON number: "
                    "results hold finite numbers only"
                )
            return value
        if isinstance(value, str):
            self.charge(len(value) + 2)
            return value
        if isinstance(value, list | tuple):
            self.charge(2 + len(value))
            return [self.convert(item, depth + 1) for item in value]
        if isinstance(value, dict):
            self.charge(2 + len(value))
            plain = {self.key(key): self.convert(item, depth + 1) for key, item in value.items()}
            if len(plain) < len(value):
                raise ExpressionError(_merged_keys_message(value))
            return plain
        if isinstance(value, datetime):
            self.charge(22)
            return iso(value)
        if isinstance(value, timedelta):
            self.charge(24)
            return _duration(value)
        if isinstance(value, bytes):
            self.charge(4 * (len(value) + 2) // 3 + 2)
            return base64.b64encode(value).decode("ascii")
        if isinstance(value, cel.OptionalValue):
            return self.convert(value.value() if value.has_value() else None, depth)
        raise ExpressionError(f"unsupported result type {type(value).__name__}")

    def key(self, key: Any) -> str:
        if isinstance(key, str):
            text = key
        elif not self.non_string_keys:
            raise ExpressionError(
                "a map in the result has keys such as 1, 1u and true, which are distinct in CEL "
                "but one key once the result is JSON: give its keys as strings"
            )
        elif isinstance(key, bool):
            text = "true" if key else "false"
        else:
            text = str(key)
        self.charge(len(text) + 3)
        return text


def _cel_key(key: Any) -> str:
    return f'"{key}"' if isinstance(key, str) else str(key).lower()


def _merged_keys_message(value: Mapping[Any, Any]) -> str:
    seen: dict[str, Any] = {}
    for key in value:
        text = _Plain().key(key)
        if text in seen:
            return _clip(
                f"a map in the result has the keys {_cel_key(seen[text])} and {_cel_key(key)}, "
                f"distinct in CEL but both {text!r} once the result is JSON: give its keys as "
                "strings"
            )
        seen[text] = key
    return "a map in the result has keys that are one key once the result is JSON"


def _clashing_keys(tokens: list[_Token]) -> bool:
    """True when a map literal has two literal keys that are distinct in CEL but equal in Python
    (`{1: a, true: b}`, `{0: a, 0u: b}`): the engine hands such a map over with one of them."""
    keys: list[list[tuple[str, Any]]] = []  # per open bracket: a map literal's literal keys
    for i, token in enumerate(tokens):
        if token.kind == "punct" and token.text in "([{":
            keys.append([])
        elif token.kind == "punct" and token.text in ")]}":
            found = keys.pop() if keys else []
            if any(a[1] == b[1] and a != b for n, a in enumerate(found) for b in found[:n]):
                return True
        elif (
            keys
            and i > 0
            and tokens[i - 1].text in ("{", ",")
            and i + 1 < len(tokens)
            and tokens[i + 1].text == ":"
        ):
            key = _literal_key(token)
            if key is not None:
                keys[-1].append(key)
    return False


def _literal_key(token: _Token) -> tuple[str, Any] | None:
    """(CEL type, Python value) of a literal map key; None for others (strings are kept apart)."""
    if token.kind == "ident" and token.text in ("true", "false"):
        return "bool", token.text == "true"
    if token.kind == "number":
        text = token.text.lower()
        try:
            return ("uint" if text.endswith("u") else "int"), int(text.rstrip("u"), 0)
        except ValueError:  # a double, which the engine refuses as a key
            return None
    return None


def _duration(value: timedelta) -> str:
    """A duration as protobuf's JSON spells it: `"3600s"`, `"-1.5s"`."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    seconds, fraction = divmod(abs(micros), 1_000_000)
    text = f"{seconds}.{fraction:06d}".rstrip("0") if fraction else str(seconds)
    return f"{sign}{text}s"
