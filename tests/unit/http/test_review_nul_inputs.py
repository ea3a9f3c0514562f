"""Every text a client sends to the management API refuses NUL (U+0000) before it reaches the
database: PostgreSQL cannot store or compare it (a 500 there), so it is a 400 on every backend
(docs/decisions.md, "NUL characters").

The structural test walks the app's routes: every request-body model (nested models included) and
every query and path parameter. A `str` must carry `Text` (or a parser that refuses NUL), sit
in a `BuilderInput` body (one check over the whole value), or have an anchored `pattern` that
cannot match NUL. A short length (`max_length=26`) is no such check: a
26-character filter once reached PostgreSQL and answered 500. Anything else must be in the
allow-list below, with its reason. Path parameters are ids or names the services check before any
query (`is_id`: a NUL is 404); the last test sends a NUL in each of them to the running app.
Headers are left out: HTTP allows no control characters in them."""

import enum
import re
import types
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from httpx import AsyncClient
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from apiforge.api import build_api
from apiforge.builder.schemas import BuilderInput
from apiforge.engine.schemas import InvocationCreate
from apiforge.http.schemas import RequestIdText, Text
from apiforge.keys.schemas import normalise_origin
from apiforge.tools.netpolicy import normalise_cidr
from tests.e2e._apps import new_app
from tests.e2e._workspaces import data_of
from tests.factories import make_admin

# Validators that refuse any text holding NUL (the test below makes sure), by name.
NO_NUL: dict[str, Callable[[str], Any]] = {
    "Text": get_args(Text)[1].func,
    # A request id's format: letters, digits and `._:-` only.
    "RequestIdText": get_args(RequestIdText)[1].func,
    # Parsers whose grammar leaves no room for NUL.
    "normalise_cidr": normalise_cidr,
    "normalise_origin": normalise_origin,
}

# Bodies the FastAPI routes don't declare but that parse client input all the same.
EXTRA_BODIES: tuple[type[BaseModel], ...] = (InvocationCreate,)

# Deliberate exceptions: what each one is, and why a NUL never reaches the database as given.
# Body fields are `Model.field` (`[key]`/`[item]` for a dict's keys or a list's items); query and
# body parameters are `query:`/`body:` + the declaring function + the parameter.
ALLOWED: dict[str, str] = {
    # The gateway's body is on the hot path: no validators there. Its app id is checked with
    # `is_id` (404) and its args reach the request log only through the buffer, which drops NUL.
    "InvocationCreate.app_id": "gateway hot path; is_id before any lookup",
    "InvocationCreate.args[key]": "gateway hot path; args are never stored as given",
    # Secrets only hashed, never stored or compared as given.
    "RegisterInput.password": "only hashed (argon2)",
    "LoginInput.password": "only verified against a hash",
    "PasswordChange.current_password": "only verified against a hash",
    "PasswordChange.new_password": "only hashed (argon2)",
    "RefreshInput.refresh_token": "only its SHA-256 is looked up",
    "LogoutInput.refresh_token": "ignored: logout ends the caller's session",
    # Ids checked with `is_id` before any query: a NUL is the same 404 as any unknown id.
    "ApiKeyCreate.app_id": "is_id (keys service)",
    "SubscriptionCreate.app_id": "is_id (keys service)",
    "DatasetCreate.app_id": "is_id (datasets service)",
    "RedemptionCreate.target_workspace_id": "is_id (billing service)",
    "OwnershipTransfer.account_id": "is_id (workspaces service)",
    "WorkspacePlanUpdate.plan_id": "is_id (plans service)",
    "query:apiforge.keys.router.list_api_keys.app_id": "not an id: no key matches (keys review)",
    # Checked by their own code, with their own message.
    "WorkflowCreate.args[key]": "the run's args are never stored; the request log drops NUL",
    "body:apiforge.datasets.router.create_record.body[key]": "record data: validate_record",
    "body:apiforge.datasets.router.replace_record.body[key]": "record data: validate_record",
    "body:apiforge.datasets.router.patch_record.body[key]": "record data: validate_record",
    "query:apiforge.datasets.router.list_records.fields": "names matched to the collection's",
    "query:apiforge.datasets.router.list_records.filter": (
        "a JSON tree: field names matched to the collection's, values refuse NUL (tools.filters)"
    ),
    "body:apiforge.accounts.settings_router.replace_settings.body[key]": (
        "the settings document is checked whole (settings_service: 400 invalid_setting_value)"
    ),
    "query:apiforge.usage.router._filters.app_id": "checked in _filters, with the time range",
    "query:apiforge.usage.router._filters.api": "checked in _filters, with the time range",
    "query:apiforge.plans.router._hit_filter.quota": "must be one of the quota names",
    "query:apiforge.builder.transfer_router.app_docs.version": "parse_version before any query",
    "query:apiforge.builder.transfer_router.app_openapi.version": "parse_version before any query",
    # Never queried: parsed, or compared with a fixed list.
    "query:apiforge.http.pagination._page_params.page_no": "parsed as an integer",
    "query:apiforge.http.pagination._page_params.page_size": "parsed as an integer",
    "query:apiforge.http.pagination._page_params.sort": "looked up in the route's sort list",
    "query:apiforge.http.pagination._page_params.order": "must be asc or desc",
    **{
        f"query:{where}.{name}": "parsed as a time (http.timerange)"
        for where in (
            "apiforge.billing.router.list_earnings",
            "apiforge.billing.router.list_ledger_entries",
            "apiforge.plans.router._hit_filter",
            "apiforge.usage.router._filters",
            "apiforge.usage.charts._chart_query",
        )
        for name in ("since", "until")
    },
}


def _excludes_nul(pattern: str) -> bool:
    """Whether no string holding NUL can match `pattern` (as pydantic applies it: a search).
    Conservative: anchored at both ends, no top-level alternation, and no part that can match NUL
    (`.`, a negated class, `\\S`/`\\W`/`\\D`, escapes naming a character by number)."""
    if not (pattern.startswith("^") and pattern.endswith("$")) or "\x00" in pattern:
        return False
    body, depth, in_class, i = pattern[1:-1], 0, False, 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            if i + 1 >= len(body) or body[i + 1] in "SWDPXxuUNc0123456789":
                return False
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            if body[i + 1 : i + 2] == "^":
                return False
            in_class = True
            if body[i + 1 : i + 2] == "]":  # `[]...]`: a literal `]` first
                i += 1
        elif char == ".":
            return False
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return False
        i += 1
    return not in_class and depth == 0


def _guards(metadata: Any) -> bool:
    """Whether one piece of `Annotated`/`Field` metadata refuses NUL."""
    if isinstance(metadata, FieldInfo):
        return any(_guards(item) for item in metadata.metadata)
    if getattr(metadata, "func", None) in NO_NUL.values():
        return True
    pattern = getattr(metadata, "pattern", None)
    return isinstance(pattern, str) and _excludes_nul(pattern)


def _unguarded(annotation: Any, where: str, guarded: bool = False) -> Iterator[str]:
    """Where a `str` in `annotation` is not guarded. `guarded` (a field's own check) covers the
    text itself and the alternatives of an optional, not the items of a list or dict."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        yield from _unguarded(base, where, guarded or any(_guards(m) for m in metadata))
    elif annotation is str:
        if not guarded:
            yield where
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _model(annotation)
    elif origin in (Union, types.UnionType):
        for option in get_args(annotation):
            yield from _unguarded(option, where, guarded)
    elif origin is dict or (isinstance(origin, type) and issubclass(origin, dict)):
        key, value = get_args(annotation)
        yield from _unguarded(key, f"{where}[key]")
        yield from _unguarded(value, where)
    elif origin in (list, set, frozenset, tuple):
        for item in get_args(annotation):
            if item is not Ellipsis:
                yield from _unguarded(item, f"{where}[item]")
    elif origin is not None and origin is not Literal:
        raise AssertionError(f"{where}: don't know how to walk {annotation!r}")
    # Anything else (numbers, Literal, enums, Any, JSON values) is not a `str` field.
    elif isinstance(annotation, type) and issubclass(annotation, str):
        assert issubclass(annotation, enum.Enum), f"{where}: a str subclass {annotation!r}"


def _model(model: type[BaseModel]) -> Iterator[str]:
    # BuilderInput checks the whole value of each field, nested keys and items included.
    checked = (
        set(model.model_fields) - model.informative_fields
        if issubclass(model, BuilderInput)
        else set()
    )
    for name, field in model.model_fields.items():
        if name in checked:
            continue
        guarded = any(_guards(m) for m in field.metadata)
        yield from _unguarded(field.annotation, f"{model.__name__}.{name}", guarded)


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def _routes(app: FastAPI) -> Iterator[tuple[str, set[str], Dependant]]:
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute):
            yield str(route.path), set(route.methods or ()), route.dependant


def _caller(dependant: Dependant) -> str:
    call = dependant.call
    return f"{call.__module__}.{call.__qualname__}" if call is not None else "?"


def _unguarded_inputs(app: FastAPI) -> dict[str, set[str]]:
    """Unguarded text → the routes that take it (path parameters aside)."""
    found: dict[str, set[str]] = {}
    for path, methods, root in _routes(app):
        for dependant in _dependants(root):
            params = [("query", p) for p in dependant.query_params]
            params += [("body", p) for p in dependant.body_params]
            for kind, param in params:
                info = param.field_info
                guarded = any(_guards(m) for m in info.metadata)
                where = f"{kind}:{_caller(dependant)}.{param.name}"
                # A body model's fields are named `Model.field`, the rest `where` + item.
                for name in _unguarded(info.annotation, where, guarded):
                    found.setdefault(name, set()).update(f"{m} {path}" for m in methods)
    for model in EXTRA_BODIES:
        for name in _model(model):
            found.setdefault(name, set()).add("(gateway)")
    return found


def test_every_text_input_refuses_nul_or_is_a_listed_exception() -> None:
    found = _unguarded_inputs(build_api())
    missing = {name: sorted(routes) for name, routes in found.items() if name not in ALLOWED}
    assert not missing, "text that can carry NUL to the database (use `Text`):\n" + "\n".join(
        f"  {name}  ({', '.join(routes)})" for name, routes in sorted(missing.items())
    )
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"allow-list entries that match nothing any more: {stale}"


@pytest.mark.parametrize("name", sorted(NO_NUL))
@pytest.mark.parametrize(
    "text",
    ["\x00", "a\x00", "\x00a", "10.0.0.0/8\x00", "https://a\x00b.example", "https://a.example\x00"],
)
def test_each_recognised_validator_refuses_nul(name: str, text: str) -> None:
    try:
        NO_NUL[name](text)
    except ValueError:  # PydanticCustomError is one too
        return
    pytest.fail(f"{name} accepted {text!r}")


@pytest.mark.parametrize(
    ("pattern", "safe"),
    [
        (r"^[A-Za-z][A-Za-z0-9]{0,63}$", True),
        (r"^(dev|latest|(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5}))$", True),
        (r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", True),
        (r"[a-z]+", False),  # unanchored: "a\x00" matches
        (r"^[a-z]+", False),
        (r"^a|b$", False),  # "\x00b" matches the second branch
        (r"^(https?://\S+)?$", False),
        (r"^.{1,10}$", False),
        (r"^[^/]+$", False),
        (r"^[\x00-\x7f]+$", False),
        (r"^\w+$", True),
    ],
)
def test_the_pattern_check_is_conservative(pattern: str, safe: bool) -> None:
    assert _excludes_nul(pattern) is safe
    if safe:
        for probe in ("\x00", "a\x00", "\x00a", "dev\x00", "1.0\x00.0"):
            assert re.search(pattern, probe) is None


async def test_a_nul_in_any_path_parameter_is_never_a_500(
    app: FastAPI, client: AsyncClient
) -> None:
    """Path parameters are ids and names their services check before any query; the running app
    (PostgreSQL in a services run) must answer each with a NUL as a 4xx. The other parameters
    name real things, so the NUL one is the one looked up."""
    admin = await make_admin(app, client)
    app_id = await new_app(client, admin.headers)
    body = {"appId": app_id, "name": "items", "fields": [{"name": "n", "type": "integer"}]}
    dataset = data_of(await client.post("/api/v1/datasets", json=body, headers=admin.headers))
    path = f"/api/v1/datasets/{dataset['id']}/records"
    record = data_of(await client.post(path, json={"n": 1}, headers=admin.headers))
    known = {
        "app_id": app_id,
        "dataset_id": dataset["id"],
        "record_id": record["id"],
        "workspace_id": admin.workspace_id,
        "user_id": admin.account_id,
        "account_id": admin.account_id,
    }
    failures = []
    for path, methods, _ in _routes(app):
        names = re.findall(r"{(\w+)}", path)
        for target in names:
            url = path
            for name in names:
                value = "a%00b" if name == target else known.get(name, "0" * 26)
                url = url.replace(f"{{{name}}}", value)
            for method in sorted(methods - {"HEAD"}):
                sent: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
                response = await client.request(method, url, json=sent, headers=admin.headers)
                if response.status_code >= 500:
                    failures.append(f"{method} {path} ({target}): {response.status_code}")
    assert not failures
