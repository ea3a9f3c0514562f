"""Who is calling, as idempotency scopes it on the management API.

The management middleware runs before FastAPI authenticates the request, so it authenticates
the caller with the very check the routes' dependency makes (`accounts.deps.authenticate`:
session live, account active, key usable; and a member of the workspace it names or its key
belongs to) — a stored answer is never replayed to a caller the route would refuse, such as a
member removed since — and decides nothing else: a request whose credentials don't check out is
passed on untouched and refused (401) by the route, and never reaches the store.
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


@dataclass(frozen=True, slots=True)
class CallerScope:
    principal: str  # key:<id> | acct:<id>
    workspace: str  # the workspace acted in, as the route resolves it


async def management_caller(scope: Scope, state: Any) -> CallerScope | None:
    """The caller of a management request, or None when the route would refuse its
    credentials. The workspace is the one the route acts in: a `ws-` key's own, else the
    `X-Workspace-Id` header's, else the account's personal workspace (the header's default),
    so one request names one scope whether the header is sent or left to its default."""
    request = Request(scope)
    async with state.sessionmaker() as session:
        try:
            caller = await authenticate(request, session, state.settings)
        except ApiforgeError:
            return None
        if caller.key is not None:
            # The key acts for its creator, as long as they belong to its workspace.
            if not await is_member(session, caller.account.id, caller.key.workspace_id):
                return None
            return CallerScope(f"key:{caller.key.id}", caller.key.workspace_id)
        who = principal(None, caller.account.id)
        assert who is not None
        workspace = request.headers.get(WORKSPACE_HEADER, "").strip()
        if not workspace:
            workspace = await personal_workspace_id(session, caller.account.id) or ""
        elif not await is_member(session, caller.account.id, workspace):
            return None
        return CallerScope(who, workspace)
