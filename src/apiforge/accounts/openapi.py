"""The credentials each management operation declares in the OpenAPI document: `ws-` keys only
where the route takes them."""

from collections.abc import Iterable
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from apiforge.accounts.deps import WORKSPACE_KEY, refuses_workspace_keys


def _refuses_keys(dependant: Dependant) -> bool:
    """Whether a dependency of the route refuses `ws-` keys (`CurrentAccount` and what builds on
    it): found in the dependency tree, so the document follows the behaviour by construction."""
    return any(
        refuses_workspace_keys(dependency.call) or _refuses_keys(dependency)
        for dependency in dependant.dependencies
    )


def document_console_only(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> None:
    """Drop `workspaceKey` from the `security` of every operation that answers a `ws-` key 403
    `workspace_key_not_allowed` (in place). FastAPI lists every scheme of the dependency tree,
    and `CurrentAccount` reads the caller through the same dependency as the routes that take
    keys; generated clients would otherwise offer a credential the route always refuses."""
    name = WORKSPACE_KEY.scheme_name
    # Route contexts, as FastAPI's own document reads them: included routers are kept lazily.
    for context in iter_route_contexts(list(routes)):
        route = context.original_route
        if not isinstance(route, APIRoute) or not _refuses_keys(route.dependant):
            continue
        item = schema.get("paths", {}).get(context.path_format, {})
        for method in route.methods or ():
            operation = item.get(method.lower())
            if operation is not None and "security" in operation:
                operation["security"] = [
                    requirement for requirement in operation["security"] if name not in requirement
                ]
