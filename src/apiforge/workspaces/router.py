"""`/api/v1/workspaces`: the caller's workspaces, their members and ownership transfer.

Routes only parse and delegate: the role rules are enforced by `WorkspaceService`. Changing who
belongs to a workspace (add, role change, removal, ownership) takes a console sign-in, never a
`ws-` key (`PathWorkspaceInPerson`).
"""

from fastapi import APIRouter, Request, Response

from apiforge.accounts.deps import CurrentAccount
from apiforge.builder.hooks import app_changed_hook, member_changed_hook, workspaces_gone_hook
from apiforge.files.storage import FileStorage
from apiforge.http.deps import SettingsDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.http.schemas import Created
from apiforge.idempotency.locking import IfMatch, set_etag
from apiforge.keys.subscribers import ForceDelete
from apiforge.workspaces.deps import PathWorkspace, PathWorkspaceInPerson, WorkspaceServiceDep
from apiforge.workspaces.schemas import (
    MemberCreate,
    MemberRead,
    MemberUpdate,
    OwnershipTransfer,
    WorkspaceCreate,
    WorkspaceRead,
    WorkspaceUpdate,
)

router = APIRouter(prefix="/api/v1/workspaces", tags=["workspaces"])


@router.get("", summary="Workspaces the caller belongs to, with the caller's role in each")
async def list_workspaces(
    account: CurrentAccount, service: WorkspaceServiceDep, page: PageDep
) -> Envelope[Page[WorkspaceRead]]:
    return ok(await service.list_workspaces(account.id, page))


@router.post("", summary="Create a workspace owned by the caller (plan quota: workspaces)")
async def create_workspace(
    body: WorkspaceCreate, account: CurrentAccount, service: WorkspaceServiceDep
) -> Envelope[Created]:
    return ok(await service.create(account.id, body))


@router.get("/{workspace_id}", summary="One workspace the caller belongs to")
async def get_workspace(
    current: PathWorkspace, service: WorkspaceServiceDep, response: Response
) -> Envelope[WorkspaceRead]:
    return ok(set_etag(response, await service.read(current)))


@router.patch("/{workspace_id}", summary="Rename a workspace (admin or owner)")
async def update_workspace(
    body: WorkspaceUpdate,
    current: PathWorkspace,
    service: WorkspaceServiceDep,
    if_match: IfMatch,
    response: Response,
) -> Envelope[WorkspaceRead]:
    return ok(set_etag(response, await service.rename(current, body, if_match)))


@router.delete("/{workspace_id}", summary="Delete a workspace (owner; never the personal one)")
async def delete_workspace(
    request: Request,
    current: PathWorkspace,
    service: WorkspaceServiceDep,
    settings: SettingsDep,
    if_match: IfMatch,
    force: ForceDelete = False,
) -> Envelope[Created]:
    await service.delete(
        current,
        if_match,
        force=force,
        app_changed=app_changed_hook(request),
        workspaces_gone=workspaces_gone_hook(request),
        files_gone=FileStorage(settings.resolved_files_dir).remove_workspaces,
    )
    return ok(Created(id=current.id))


@router.get("/{workspace_id}/members", summary="Members of a workspace with their roles")
async def list_members(
    current: PathWorkspace, service: WorkspaceServiceDep, page: PageDep
) -> Envelope[Page[MemberRead]]:
    return ok(await service.list_members(current, page))


@router.post("/{workspace_id}/members", summary="Add an existing account by email (admin+)")
async def add_member(
    body: MemberCreate, current: PathWorkspaceInPerson, service: WorkspaceServiceDep
) -> Envelope[Created]:
    return ok(await service.add_member(current, body))


@router.patch("/{workspace_id}/members/{account_id}", summary="Change a member's role (admin+)")
async def update_member(
    request: Request,
    account_id: str,
    body: MemberUpdate,
    current: PathWorkspaceInPerson,
    service: WorkspaceServiceDep,
    if_match: IfMatch,
    response: Response,
) -> Envelope[MemberRead]:
    member = await service.update_member(
        current, account_id, body, if_match, member_changed=member_changed_hook(request)
    )
    return ok(set_etag(response, member))


@router.delete(
    "/{workspace_id}/members/{account_id}",
    summary="Remove a member (admin+), or leave (your own account id)",
)
async def remove_member(
    request: Request,
    account_id: str,
    current: PathWorkspaceInPerson,
    service: WorkspaceServiceDep,
    if_match: IfMatch,
) -> Envelope[Created]:
    await service.remove_member(
        current, account_id, if_match, member_changed=member_changed_hook(request)
    )
    return ok(Created(id=account_id))


@router.post("/{workspace_id}/transfer", summary="Hand ownership to a member (owner only)")
async def transfer_ownership(
    request: Request,
    body: OwnershipTransfer,
    current: PathWorkspaceInPerson,
    service: WorkspaceServiceDep,
) -> Envelope[WorkspaceRead]:
    return ok(await service.transfer(current, body, member_changed=member_changed_hook(request)))
