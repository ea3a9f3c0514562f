"""Generated docs of one app: an OpenAPI 3.1 document of its APIs at `dev` or a version.

Every API is called the same way (`POST /api/v1/invocations` with `appId`, `api`, `version`,
`args`), so each one is written as its own path `/api/v1/invocations#<api>`: the fragment keeps
the paths distinct for OpenAPI tools and is never sent by an HTTP client (the convention JSON-RPC
services use in OpenAPI). Groups become tags; `x-price` and `x-cost` carry the RU amounts.
"""

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder.definitions import api_document
from apiforge.builder.models import ApiDefinition, App
from apiforge.builder.service import find_app
from apiforge.builder.versions import find_version
from apiforge.engine.params import compile_params
from apiforge.workspaces.service import CurrentWorkspace

INVOCATIONS = "/api/v1/invocations"

_ERRORS = {
    "400": "Invalid arguments (`Missing required parameters` names the missing ones)",
    "401": "Missing or invalid credentials or end-user token",
    "402": "Insufficient RU balance",
    "403": "Forbidden: API disabled, permission denied or quota reached",
    "404": "Unknown app, API or version",
    "429": "Rate limited",
}


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "message", "data"],
        "properties": {
            "code": {"type": "integer"},
            "message": {"type": "string"},
            "data": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string", "description": "stable snake_case reason"},
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "field": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
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


def _operation(app_id: str, label: str, api: dict[str, Any], deprecated: bool) -> dict[str, Any]:
    name = str(api["api"])
    auth = api.get("auth") or {}
    args_schema = compile_params(api.get("params") or []).schema
    security: list[dict[str, list[str]]] = [{"apiKey": []}]
    if auth.get("requireToken"):
        security = [{"apiKey": [], "endUserToken": []}]
    operation: dict[str, Any] = {
        "operationId": name,
        "summary": str(api.get("name") or name),
        "description": _description(api),
        "security": security,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["appId", "api", "args"],
                        "properties": {
                            "appId": {"type": "string", "const": app_id},
                            "api": {"type": "string", "const": name},
                            "version": {"type": "string", "default": label},
                            "args": args_schema,
                        },
                        "additionalProperties": False,
                    },
                    "example": {"appId": app_id, "api": name, "version": label, "args": {}},
                }
            },
        },
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
    if api.get("group"):
        operation["tags"] = [api["group"]]
    if deprecated:
        operation["deprecated"] = True
    return operation


def build_openapi(
    app: App, label: str, apis: list[dict[str, Any]], *, deprecated: bool = False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `apis` (api documents, any order) at version `label`."""
    ordered = sorted(apis, key=lambda api: (str(api["api"]).lower(), str(api["api"])))
    groups = sorted({str(api["group"]) for api in ordered if api.get("group")})
    info: dict[str, Any] = {
        "title": app.name,
        "version": label,
        "description": app.description,
    }
    if deprecated:
        info["x-deprecated"] = True
    return {
        "openapi": "3.1.0",
        "info": info,
        "servers": [{"url": "/"}],
        "tags": [{"name": group} for group in groups],
        "paths": {
            f"{INVOCATIONS}#{api['api']}": {"post": _operation(app.id, label, api, deprecated)}
            for api in ordered
        },
        "components": {
            "schemas": {"Error": _error_schema()},
            "securitySchemes": {
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Api-Key",
                    "description": "An `app-` secret key, or a `pk-` publishable key",
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
    """The generated docs of an app the caller's workspace owns. Never writes."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def openapi(
        self, current: CurrentWorkspace, app_id: str, version: str | None
    ) -> dict[str, Any]:
        """`version`: `dev`, `latest`, `X.Y.Z`; by default `latest`, or `dev` before any publish."""
        app = await find_app(self.session, current.id, app_id)
        if version is None:
            version = "latest" if app.latest_version else "dev"
        if version == "dev":
            rows = await self.session.scalars(
                select(ApiDefinition).where(ApiDefinition.app_id == app.id)
            )
            return build_openapi(app, "dev", [api_document(row) for row in rows])
        row = await find_version(self.session, app, version)
        apis = list((row.snapshot.get("apis") or {}).values())
        return build_openapi(app, row.version, apis, deprecated=row.deprecated)
