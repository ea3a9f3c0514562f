"""Who is calling, as idempotency scopes it on the management API.

The management middleware runs before FastAPI authenticates the request, so it authenticates
the caller with the very check the routes' dependency makes (`accounts.deps.authenticate`:
session live, account active, key usable) and decides nothing else: a request whose credentials
don't check out is passed on untouched and refused (401) by the route, and never reaches the
store.

A stored answer is never replayed to a caller the route would refuse, such as a member removed
since: a caller who is no member of the workspace the request acts in gets a scope of its own
(`NOT_MEMBER` + the workspace), which no answer stored while a member shares. That request is
still claimed rather than passed through: routes that act in no workspace (creating one, the
profile) ignore a stale `X-Workspace-Id`, and must not then run twice for one key or token.
"""

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from apiforge.accounts.deps import authenticate
from apiforge.core.errors import ApiforgeError
from apiforge.idempotency.keys import principal
from apiforge.workspaces.deps import WORKSPACE_HEADER
from apiforge.workspaces.service import is_member, personal_workspace_id

# Marks the scope of a caller who is no member of the workspace named (never a workspace id).
NOT_MEMBER = "!"
# Routes whose path names the workspace they act in (`workspaces.deps.PathWorkspace`).
_PATH_WORKSPACE_ROUTES = "/api/v1/workspaces/"


@dataclass(frozen=True, slots=True)
class CallerScope:
    principal: str  # key:<id> | acct:<id>
    workspace: str  # the workspace acted in, as the route resolves it (NOT_MEMBER-prefixed)


async def management_caller(scope: Scope, state: Any) -> CallerScope | None:
    """The caller of a management request, or None when the route would refuse its
    credentials. The workspace is the one the route acts in: the path's for
    `/workspaces/{workspace_id}/...`, else a `ws-` key's own, else the `X-Workspace-Id`
    header's, else the account's personal workspace (the header's default), so one request
    names one scope whether the header is sent or left to its default."""
    request = Request(scope)
    async with state.sessionmaker() as session:
        try:
            caller = await authenticate(request, session, state.settings)
        except ApiforgeError:
            return None
        named = _path_workspace(scope)
        if caller.key is not None:
            # The key acts for its creator, as long as they belong to its workspace.
            who = f"key:{caller.key.id}"
            workspace = named or caller.key.workspace_id
        else:
            account = principal(None, caller.account.id)
            assert account is not None
            who = account
            workspace = named or request.headers.get(WORKSPACE_HEADER, "").strip()
            if not workspace:
                workspace = await personal_workspace_id(session, caller.account.id) or ""
                return CallerScope(who, workspace)
        if not await is_member(session, caller.account.id, workspace):
            workspace = NOT_MEMBER + workspace
        return CallerScope(who, workspace)


def _path_workspace(scope: Scope) -> str | None:
    """The `{workspace_id}` of a route that acts in the workspace its path names (whatever the
    header says); `scope["route"]` is the route the middleware matched."""
    route = scope.get("route")
    if route is None or not scope["path"].startswith(_PATH_WORKSPACE_ROUTES):
        return None
    _, child = route.matches(scope)
    value = child.get("path_params", {}).get("workspace_id")
    return str(value) if value else None
