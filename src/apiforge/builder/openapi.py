"""Generated docs of one app: an OpenAPI 3.1 document of its APIs at `dev` or a version.

Every API is called the same way (`POST /api/v1/invocations` with `appId`, `api`, `version`,
`args`), so each one is written as its own path `/api/v1/invocations#<api>`: the fragment keeps
the paths distinct for OpenAPI tools and is never sent by an HTTP client (the convention JSON-RPC
services use in OpenAPI). Groups become tags; `x-price` and `x-cost` carry the RU amounts.
The document must describe the call the gateway really takes: an omitted `version` is `latest`,
the example passes its own schema, a required `Idempotency-Key` is marked required, a `pk-` key
is offered only where the gateway lets one call, `dev` takes `debug`, and every status the
gateway may answer has an entry (a `throw` step's own 4xx, an `httpRequest` step's 502).
"""

import math
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder.definitions import api_document
from apiforge.builder.models import ApiDefinition, App
from apiforge.builder.service import find_readable_app
from apiforge.builder.versions import VersionNotFoundError, find_version
from apiforge.engine.errors import ArgumentsError
from apiforge.engine.params import CompiledParams, compile_params
from apiforge.engine.schemas import SERVER_ERRORS
from apiforge.http.envelope import error_schema
from apiforge.idempotency.openapi import HEADERS as IDEMPOTENCY_HEADERS
from apiforge.tools.clock import iso
from apiforge.workspaces.service import CurrentWorkspace

INVOCATIONS = "/api/v1/invocations"
# Longest placeholder string, array or object an example holds: a `min` of a billion must not
# make the docs build a gigabyte (a longer minimum gets no example).
_EXAMPLE_SIZE = 256

# HMAC-signed calls (gateway/signing.py): a secret key's id and four headers, all required.
_SIGNATURE = {
    "signAppId": ("X-App-Id", "The id of the `app-` or `ws-` key whose secret signs the call"),
    "signTimestamp": ("X-Timestamp", "Unix seconds, within 300 s of the server's clock"),
    "signNonce": ("X-Nonce", "16-64 characters of A-Z a-z 0-9 _ -, accepted once"),
    "signature": (
        "X-Sign",
        "Hex HMAC-SHA256 of method, path, sorted query, body SHA-256, timestamp and nonce, "
        "keyed with the key's secret (docs/signing.md)",
    ),
}

_ERRORS = {
    "400": "Invalid arguments (`Missing required parameters` names the missing ones)",
    "401": "Missing or invalid credentials or end-user token",
    "402": "Insufficient RU balance",
    "403": "Forbidden: API disabled, key not allowed, permission denied or quota reached",
    "404": "Unknown app, API or version",
    "409": "The same Idempotency-Key is still running, or a spent anti-duplicate token",
    "413": "Body too large",
    "422": "Idempotency-Key reused with another payload, or a per-call limit exceeded",
    "429": "Rate limited",
    # Statuses the API's own steps choose (`throw`, `assert`: any 4xx), and server-side failures.
    "4XX": "The API's own error: a `throw` or `assert` step's status, `data.error` its reason",
    "5XX": SERVER_ERRORS,
}
# `"debug": 1` on `dev` (the gateway refuses it on published versions: 400 `debug_dev_only`).
_DEBUG = {
    "enum": [0, 1, False, True],
    "default": 0,
    "description": "`1`: `data` is `{result, trace}`, a trace of every step run",
}

_SUNSET_RESPONSE = {
    "description": "`version_sunset`: the version's sunset date (`info.x-sunset`) has passed",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _description(api: dict[str, Any]) -> str:
    parts = [str(api.get("description") or ""), str(api.get("docExtra") or "")]
    return "\n\n".join(part for part in parts if part)


def _data_description(api: dict[str, Any]) -> str:
    selected = api.get("returnSteps")
    if selected:
        return (
            "The outputs of steps " + ", ".join(map(str, selected)) + " keyed by step id, "
            "or the value of a `return` step when one ran"
        )
    return "The output of every step keyed by step id, or the value of a `return` step"


def _example_value(schema: dict[str, Any]) -> Any:
    """A placeholder for one param, within its enum and bounds (a `pattern` may still refuse it:
    `_example_args` checks)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        value = 0 if low is None else (math.ceil(low) if kind == "integer" else low)
        if high is not None and value > high:
            value = math.floor(high) if kind == "integer" else high
        return value
    if kind == "boolean":
        return True
    if kind == "array":
        return ["item"] * min(int(schema.get("minItems", 0)), _EXAMPLE_SIZE)
    if kind == "object":
        size = min(int(schema.get("minProperties", 0)), _EXAMPLE_SIZE)
        return {f"key{i}": "value" for i in range(size)}
    text = "string".ljust(min(int(schema.get("minLength", 0)), _EXAMPLE_SIZE), "x")
    return text[: int(schema["maxLength"])] if "maxLength" in schema else text


def _example_args(params: CompiledParams) -> dict[str, Any] | None:
    """The required args with placeholder values the gateway accepts, or None when none is found
    (a pattern the placeholder does not match): an example that fails its own schema misleads
    every tool that sends or checks it."""
    properties = params.schema["properties"]
    try:
        args = {name: _example_value(properties[name]) for name in params.required}
        params.validate(args)
    except (ArgumentsError, OverflowError, ValueError):
        return None
    return args


def _parameters(auth: dict[str, Any]) -> list[dict[str, Any]]:
    """The gateway's idempotency headers; `Idempotency-Key` is required when the API says so
    (the gateway answers 400 `idempotency_key_required` without it or `X-Request-Seq`)."""
    parameters = [dict(header) for header in IDEMPOTENCY_HEADERS]
    if auth.get("requireIdempotencyKey"):
        key = parameters[0]
        key["required"] = True
        key["description"] = (
            "Required by this API (or `X-Request-Seq` instead). " + key["description"]
        )
    return parameters


def _args_schema(params: CompiledParams) -> dict[str, Any]:
    """The params' schema without a sensitive param's `default`: write-only in the docs means
    no value of it is shown, and a public app's docs are read by every workspace."""
    properties = {
        name: {k: v for k, v in schema.items() if k != "default"}
        if schema.get("writeOnly")
        else schema
        for name, schema in params.schema["properties"].items()
    }
    return {**params.schema, "properties": properties}


def _request_body(app_id: str, name: str, label: str, params: CompiledParams) -> dict[str, Any]:
    media: dict[str, Any] = {
        "schema": {
            "type": "object",
            "required": ["appId", "api", "args"],
            "properties": {
                "appId": {"type": "string", "const": app_id},
                "api": {"type": "string", "const": name},
                "version": {
                    "type": "string",
                    # What the gateway calls when it is omitted, whatever this document shows.
                    "default": "latest",
                    "description": f"`dev`, `latest` or `X.Y.Z`; this document is `{label}`",
                },
                "args": _args_schema(params),
                **({"debug": _DEBUG} if label == "dev" else {}),
            },
            "additionalProperties": False,
        }
    }
    args = _example_args(params)
    if args is not None:
        media["example"] = {"appId": app_id, "api": name, "version": label, "args": args}
    return {"required": True, "content": {"application/json": media}}


def _operation(
    app_id: str, label: str, api: dict[str, Any], deprecated: bool, operation_id: str
) -> dict[str, Any]:
    name = str(api["api"])
    auth = api.get("auth") or {}
    params = compile_params(api.get("params") or [])
    # A key, or the four signature headers together (docs/signing.md); plus the end-user token.
    # A `pk-` key only where the gateway takes one (gateway/keys.py `PublishableKeyStage`).
    security: list[dict[str, list[str]]] = [{"apiKey": []}]
    if auth.get("requireToken") or auth.get("public"):
        security.append({"publishableKey": []})
    security.append({name: [] for name in _SIGNATURE})
    if auth.get("requireToken"):
        security = [{**requirement, "endUserToken": []} for requirement in security]
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": str(api.get("name") or name),
        "description": _description(api),
        "security": security,
        "parameters": _parameters(auth),
        "requestBody": _request_body(app_id, name, label, params),
        "responses": {
            "200": {
                "description": "Success",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["code", "message", "data"],
                            "properties": {
                                "code": {"type": "integer", "const": 200},
                                "message": {"type": "string", "const": "success"},
                                "data": {"description": _data_description(api)},
                            },
                        }
                    }
                },
            },
            **{
                status: {
                    "description": text,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
                for status, text in _ERRORS.items()
            },
        },
        "x-price": int(api.get("price") or 0),
        "x-cost": int(api.get("cost") or 0),
        "x-enabled": bool(api.get("enabled", True)),
        "x-permission": {
            "requireToken": bool(auth.get("requireToken")),
            "mode": auth.get("mode", "none"),
            "rights": list(auth.get("rights") or []),
        },
    }
    # Flags shown only when set, like the stored definition (builder/schemas.py `ApiAuth`).
    for flag in ("public", "requireIdempotencyKey"):
        if auth.get(flag):
            operation["x-permission"][flag] = True
    if api.get("group"):
        operation["tags"] = [api["group"]]
    if deprecated:
        operation["deprecated"] = True
    return operation


def operation_ids(names: list[str]) -> dict[str, str]:
    """Each API name's operation id: the name itself, except where names differ only by letter
    case (`getPost`, `GetPost`, which generated clients fold into one method, `get_post`): the
    one that sorts last in code-point order keeps its name (a camelCase name beside its
    PascalCase twin), the others get `_2`, `_3`, ... in descending order. API names hold no `_`,
    so a suffixed id never equals a name. Creating or renaming an API into a pair is refused
    (409 `api_exists`), so an app's ids do not move; apps saved before, and imports of their
    exports, keep their pairs and still get distinct ids."""
    folded: dict[str, list[str]] = {}
    for name in names:
        folded.setdefault(name.lower(), []).append(name)
    ids: dict[str, str] = {}
    for twins in folded.values():
        for rank, name in enumerate(sorted(twins, reverse=True), start=1):
            ids[name] = name if rank == 1 else f"{name}_{rank}"
    return ids


def build_openapi(
    app: App,
    label: str,
    apis: list[dict[str, Any]],
    *,
    deprecated: bool = False,
    sunset: datetime | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `apis` (api documents, any order) at version `label`; a
    deprecated version's sunset date is `info.x-sunset`."""
    ordered = sorted(apis, key=lambda api: (str(api["api"]).lower(), str(api["api"])))
    groups = sorted({str(api["group"]) for api in ordered if api.get("group")})
    info: dict[str, Any] = {
        "title": app.name,
        "version": label,
        "description": app.description,
    }
    ids = operation_ids([str(api["api"]) for api in ordered])
    paths = {
        f"{INVOCATIONS}#{api['api']}": {
            "post": _operation(app.id, label, api, deprecated, ids[str(api["api"])])
        }
        for api in ordered
    }
    if deprecated:
        info["x-deprecated"] = True
        if sunset is not None:
            info["x-sunset"] = iso(sunset)
            for path in paths.values():
                path["post"]["responses"]["410"] = _SUNSET_RESPONSE
    return {
        "openapi": "3.1.0",
        "info": info,
        "servers": [{"url": "/"}],
        "tags": [{"name": group} for group in groups],
        "paths": paths,
        "components": {
            "schemas": {"Error": error_schema()},
            "securitySchemes": {
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Api-Key",
                    "description": "An `app-` or `ws-` secret key",
                },
                "publishableKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Api-Key",
                    "description": (
                        "A `pk-` publishable key, from one of its allowed origins: only for APIs "
                        "that need an end-user token or are `public`"
                    ),
                },
                **{
                    name: {"type": "apiKey", "in": "header", "name": header, "description": text}
                    for name, (header, text) in _SIGNATURE.items()
                },
                "endUserToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The end-user token the app issued with a jwtSign step",
                },
            },
        },
        "x-app-id": app.id,
        "x-latest-version": app.latest_version,
    }


class DocsService:
    """The generated docs of an app: all of it for the owning workspace; the published versions
    of a public app for any other workspace (its consumers need them to call it). Never writes."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def openapi(
        self, current: CurrentWorkspace, app_id: str, version: str | None
    ) -> dict[str, Any]:
        """`version`: `dev`, `latest`, `X.Y.Z`; by default `latest`, or `dev` before any publish.
        Other workspaces read only published versions (the gateway serves them no `dev`), without
        `x-cost`: what the builder pays the platform is the builder's business."""
        app, own = await find_readable_app(self.session, current.id, app_id)
        if version is None:
            version = "latest" if app.latest_version or not own else "dev"
        if version == "dev":
            if not own:
                raise VersionNotFoundError("The app has no version dev for subscribers")
            rows = await self.session.scalars(
                select(ApiDefinition).where(ApiDefinition.app_id == app.id)
            )
            return build_openapi(app, "dev", [api_document(row) for row in rows])
        row = await find_version(self.session, app, version)
        apis = list((row.snapshot.get("apis") or {}).values())
        document = build_openapi(
            app, row.version, apis, deprecated=row.deprecated, sunset=row.sunset_at
        )
        if not own:
            for path in document["paths"].values():
                del path["post"]["x-cost"]
        return document
