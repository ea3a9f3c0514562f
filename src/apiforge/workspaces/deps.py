"""The current workspace of a management request, and the role a route requires there.

Every tenant-scoped route (apps, datasets, keys, ...) acts in one workspace, chosen by the
`X-Workspace-Id` header and defaulting to the caller's personal workspace. The dependency resolves
the caller's Membership; an unknown id, a malformed one, or a workspace the caller does not
belong to all give the same 404 `workspace_not_found`, so ids of other tenants never leak.

Use in a router::

    @router.get("/apps")
    async def list_apps(current: WorkspaceViewer, ...) -> Envelope[Page[AppRead]]: ...

    @router.post("/apps")
    async def create_app(body: AppCreate, current: WorkspaceEditor, ...) -> Envelope[Created]: ...

`WorkspaceEditor`, `WorkspaceAdmin` and `WorkspaceOwner` answer 403 `insufficient_role` (with
`data.requiredRole`) below that rank; `require_role(Role.X)` builds the same check for any role.
Rules finer than a rank (whose role may be changed, by whom) stay in the services, which call
`CurrentWorkspace.require` themselves. Routes whose path names the workspace
(`/workspaces/{workspace_id}/...`) use `PathWorkspace` instead of the header.

Both also accept a `ws-` workspace key (`CallerAccount`): it acts for its creator, only in the
key's own workspace (another `X-Workspace-Id` is 404 `workspace_not_found`), and with the lesser of
the key's role and the creator's current role. `PathWorkspaceInPerson` refuses keys: who belongs
to a workspace is changed by people signed in, so a leaked key cannot enrol an account that keeps
its access after the key is revoked.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Path, Request

from apiforge.accounts.deps import CallerAccount, CurrentAccount, workspace_key
from apiforge.http.deps import SessionDep
from apiforge.workspaces.models import Role
from apiforge.workspaces.service import (
    CurrentWorkspace,
    WorkspaceNotFoundError,
    WorkspaceService,
)

__all__ = [
    "WORKSPACE_HEADER",
    "CurrentWorkspace",
    "CurrentWorkspaceDep",
    "PathWorkspace",
    "WorkspaceAdmin",
    "WorkspaceEditor",
    "WorkspaceOwner",
    "WorkspaceServiceDep",
    "WorkspaceViewer",
    "require_role",
]

WORKSPACE_HEADER = "X-Workspace-Id"


def _workspace_service(session: SessionDep) -> WorkspaceService:
    return WorkspaceService(session)


WorkspaceServiceDep = Annotated[WorkspaceService, Depends(_workspace_service)]


def _key_scope(request: Request, wanted: str | None) -> str | None:
    """A `ws-` key acts only in its own workspace: another id is the same 404 as for anyone."""
    key = workspace_key(request)
    if key is None:
        return wanted
    if wanted is not None and wanted != key.workspace_id:
        raise WorkspaceNotFoundError()
    return key.workspace_id


def _key_role(request: Request, current: CurrentWorkspace) -> CurrentWorkspace:
    """With a `ws-` key, the lesser of the key's role and its creator's current role."""
    key = workspace_key(request)
    if key is None or key.role is None:
        return current
    role = min(current.role, Role(key.role), key=lambda r: r.rank)
    return CurrentWorkspace(workspace=current.workspace, account_id=current.account_id, role=role)


async def _header_workspace(
    request: Request,
    account: CallerAccount,
    service: WorkspaceServiceDep,
    workspace_id: Annotated[
        str | None,
        Header(
            alias=WORKSPACE_HEADER,
            description="Workspace to act in; defaults to the caller's personal workspace.",
        ),
    ] = None,
) -> CurrentWorkspace:
    # An empty header means "not chosen", like an absent one.
    current = await service.resolve(account.id, _key_scope(request, workspace_id or None))
    request.state.workspace_id = current.id
    return _key_role(request, current)


async def _path_workspace(
    request: Request,
    account: CallerAccount,
    service: WorkspaceServiceDep,
    workspace_id: Annotated[str, Path()],
) -> CurrentWorkspace:
    current = await service.resolve(account.id, _key_scope(request, workspace_id))
    request.state.workspace_id = current.id
    return _key_role(request, current)


CurrentWorkspaceDep = Annotated[CurrentWorkspace, Depends(_header_workspace)]
"""The caller's membership of the header's workspace, any role."""

PathWorkspace = Annotated[CurrentWorkspace, Depends(_path_workspace)]
"""The caller's membership of the `{workspace_id}` path parameter's workspace, any role."""


async def _path_workspace_in_person(
    current: PathWorkspace, _person: CurrentAccount
) -> CurrentWorkspace:
    """The path's workspace first (404 for one the caller is not in), then `CurrentAccount`'s
    refusal of keys, which the OpenAPI document follows (`accounts/openapi.py`)."""
    return current


PathWorkspaceInPerson = Annotated[CurrentWorkspace, Depends(_path_workspace_in_person)]
"""`PathWorkspace` for a signed-in person only: 403 `workspace_key_not_allowed` for a `ws-` key."""


def require_role(minimum: Role) -> Callable[[CurrentWorkspace], Awaitable[CurrentWorkspace]]:
    """A dependency: the header's workspace, refused with 403 `insufficient_role` below
    `minimum`."""

    async def dependency(current: CurrentWorkspaceDep) -> CurrentWorkspace:
        current.require(minimum)
        return current

    return dependency


WorkspaceViewer = CurrentWorkspaceDep
WorkspaceEditor = Annotated[CurrentWorkspace, Depends(require_role(Role.EDITOR))]
WorkspaceAdmin = Annotated[CurrentWorkspace, Depends(require_role(Role.ADMIN))]
WorkspaceOwner = Annotated[CurrentWorkspace, Depends(require_role(Role.OWNER))]
