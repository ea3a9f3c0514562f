"""docs/errors.md lists every reason code (`data.error`) the platform emits, once, with its status.

The reasons are collected from the source with `ast`, through every route one reaches an answer:
1. a string passed as `reason="..."` to any call (`ForbiddenError(..., reason="x")`, `step_error`);
2. a class attribute `reason = "..."` (error classes, `NetGuardError`);
3. a string default of a parameter named `reason`, and a string passed positionally in that
   parameter's place to the function of the same module (`_denied(msg, "admin_required")`);
4. `error_response(status, "reason", ...)`, and in `http/handlers.py` the `(reason, message)`
   tuples of its exception handlers (`_STATUS_REASONS`, `field_errors`);
5. the `error` field's default of a step that fails with a reason its builder may choose
   (`assert`, `throw`): the platform's word when the builder leaves it out.
A new reason raised through any of these fails the first test until it is documented.
"""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from httpx import AsyncClient

from apiforge.builder import openapi as app_openapi

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "apiforge"
REFERENCE = ROOT / "docs" / "errors.md"
# A table row: | `reason` | 401, 403 | when | what to do |  (`http_error`'s status: "any other")
_ROW = re.compile(r"^\| `([a-z][a-z0-9_]*)` \| ([^|]+) \|", re.MULTILINE)
_STATUS_OF_REASON = re.compile(r"\b([45]\d\d) `([a-z][a-z0-9_]*\*?)`")
_CODE = re.compile(r"`([a-z][a-z0-9_]*\*?)`")


def _string(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _reason_params(tree: ast.Module) -> dict[str, tuple[int, str | None]]:
    """Functions of a module that make an error (their return annotation says so) and take
    `reason`: its position (without `self`) and default. `revoke_session(id, "logout")` is not
    one: it records why a session ended."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and re.search(
            r"(Error|Exception)$", ast.unparse(node.returns) if node.returns else ""
        ):
            names = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
            if "reason" in names:
                # Defaults belong to the last parameters.
                from_end = len(names) - names.index("reason")
                default = (
                    node.args.defaults[-from_end] if from_end <= len(node.args.defaults) else None
                )
                found[node.name] = (names.index("reason"), _string(default))
    return found


def _reasons_in(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    helpers = _reason_params(tree)
    yield from (default for _, default in helpers.values() if default)
    handlers = path == SOURCE / "http" / "handlers.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "reason" and _string(keyword.value):
                    yield str(_string(keyword.value))
            name = _callee(node)
            position = 1 if name == "error_response" else helpers.get(name, (-1, None))[0]
            if 0 <= position < len(node.args) and _string(node.args[position]):
                yield str(_string(node.args[position]))
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if (
                    isinstance(item, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "reason" for t in item.targets)
                    and _string(item.value)
                ):
                    yield str(_string(item.value))
                if (
                    isinstance(item, ast.AnnAssign)
                    and isinstance(item.target, ast.Name)
                    and item.target.id == "error"
                    and isinstance(item.value, ast.Call)
                    and _callee(item.value) == "Field"
                ):
                    for keyword in item.value.keywords:
                        if keyword.arg == "default" and _string(keyword.value):
                            yield str(_string(keyword.value))
        elif handlers and isinstance(node, ast.Tuple) and len(node.elts) in (2, 3):
            # (reason, message[, errors]); not a tuple of words such as ("too_long", "too_short")
            first, second = _string(node.elts[0]), _string(node.elts[1])
            if first and re.fullmatch(r"[a-z][a-z0-9_]*", first) and not (second or "A").islower():
                yield first


def platform_reasons() -> set[str]:
    return {reason for path in SOURCE.rglob("*.py") for reason in _reasons_in(path)}


def documented() -> dict[str, list[set[int]]]:
    """Each row's reason and the statuses it names (a list: one entry per row)."""
    rows: dict[str, list[set[int]]] = {}
    for reason, statuses in _ROW.findall(REFERENCE.read_text(encoding="utf-8")):
        rows.setdefault(reason, []).append({int(s) for s in re.findall(r"\d{3}", statuses)})
    return rows


def test_the_collector_finds_each_route() -> None:
    """One reason per route, so a change to the collector cannot quietly find nothing."""
    reasons = platform_reasons()
    for reason in (
        "quota_exceeded",  # class attribute
        "api_exists",  # reason= keyword
        "permission_mode_unknown",  # positional, in `reason`'s place (`_denied`)
        "insufficient_rights",  # default of a `reason` parameter
        "upstream_timeout",  # positional to a method (`self._fail`)
        "duplicate_header",  # error_response
        "method_not_allowed",  # handlers' tuples
        "assertion_failed",  # a step's `error` default
        "ssrf_blocked",  # class attribute outside core/errors.py
    ):
        assert reason in reasons, reason
    assert all(re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", r) for r in reasons), reasons


def test_every_reason_the_platform_emits_is_documented_once() -> None:
    rows = documented()
    missing = sorted(platform_reasons() - rows.keys())
    assert not missing, f"add these reasons to docs/errors.md: {missing}"
    repeated = sorted(reason for reason, found in rows.items() if len(found) > 1)
    assert not repeated, f"list each reason once in docs/errors.md: {repeated}"


def test_every_documented_reason_is_still_emitted() -> None:
    stale = sorted(documented().keys() - platform_reasons())
    assert not stale, f"docs/errors.md lists reasons nothing emits any more: {stale}"


def _mentions(description: str, status: str) -> Iterator[tuple[str, str]]:
    """(status, reason) pairs a description names: `409 \\`app_in_use\\`` explicitly, any other
    code under the response's own status (a class such as `4XX` when that is the key)."""
    explicit = _STATUS_OF_REASON.findall(description)
    yield from explicit
    named = {reason for _, reason in explicit}
    for reason in _CODE.findall(description):
        if reason not in named:
            yield status, reason


def _check_mentions(mentions: list[tuple[str, str]]) -> list[str]:
    """The mentions whose reason is not documented at that status. A code counts as a reason
    when the platform emits it or it has an underscore (not a step type such as `throw`);
    `upstream_*` stands for every reason so spelt."""
    rows, emitted = documented(), platform_reasons()
    wrong = []
    for status, code in mentions:
        if code not in emitted and "_" not in code:
            continue
        prefix = code.removesuffix("*")
        named = [r for r in rows if r == code or (code.endswith("*") and r.startswith(prefix))]
        statuses = {str(s) for r in named for found in rows[r] for s in found}
        if not any(s == status or (status.endswith("XX") and s[0] == status[0]) for s in statuses):
            wrong.append(f"{status} {code}")
    return wrong


async def test_openapi_error_descriptions_agree_with_the_reference(client: AsyncClient) -> None:
    """Reasons the platform's OpenAPI names beside an error status are documented at it."""
    document = (await client.get("/openapi.json")).json()
    mentions: list[tuple[str, str]] = []
    for item in document["paths"].values():
        for operation in item.values():
            mentions += _STATUS_OF_REASON.findall(operation.get("description") or "")
            for status, response in operation.get("responses", {}).items():
                if status[0] in "45":
                    mentions += _mentions(response.get("description") or "", status)
    assert ("410", "version_sunset") in mentions  # the check reads what it should
    assert not _check_mentions(mentions)


def test_app_openapi_error_descriptions_agree_with_the_reference() -> None:
    """The same for each app's generated OpenAPI document (builder/openapi.py)."""
    mentions: list[tuple[str, str]] = []
    for status, text in app_openapi._ERRORS.items():
        mentions += _mentions(text, status)
    mentions += _mentions(str(app_openapi._SUNSET_RESPONSE["description"]), "410")
    assert not _check_mentions(mentions)
