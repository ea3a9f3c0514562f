"""`/api/v1/admin/users`: administrators list, disable, enable and delete accounts."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from apiforge.accounts.deps import AdminAccount
from apiforge.admin.schemas import AccountStatus, AdminUserRead, AdminUserUpdate, Deleted
from apiforge.admin.service import AdminUserService
from apiforge.builder.hooks import app_changed_hook, workspaces_gone_hook
from apiforge.files.storage import FileStorage
from apiforge.http.deps import SessionDep, SettingsDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.http.schemas import Text
from apiforge.idempotency.locking import IfMatch, set_etag
from apiforge.keys.subscribers import ForceDelete

router = APIRouter(prefix="/api/v1", tags=["admin"])


def _service(session: SessionDep) -> AdminUserService:
    return AdminUserService(session)


AdminUserServiceDep = Annotated[AdminUserService, Depends(_service)]


@router.get("/admin/users", summary="List and search accounts")
async def list_users(
    admin: AdminAccount,
    service: AdminUserServiceDep,
    page: PageDep,
    q: Annotated[Text, Query(max_length=100, description="Part of the email or name")] = "",
    status: AccountStatus | None = None,
) -> Envelope[Page[AdminUserRead]]:
    return ok(await service.list_users(page, q.strip(), status))


@router.get("/admin/users/{user_id}", summary="One account")
async def get_user(
    user_id: str, admin: AdminAccount, service: AdminUserServiceDep, response: Response
) -> Envelope[AdminUserRead]:
    account = await service.get_user(user_id)
    return ok(set_etag(response, AdminUserRead.model_validate(account)))


@router.patch(
    "/admin/users/{user_id}",
    summary="Disable or enable an account (its data cannot be edited)",
    description="Only `status` is accepted. Disabling ends all of the account's sessions.",
)
async def update_user(
    user_id: str,
    body: AdminUserUpdate,
    admin: AdminAccount,
    service: AdminUserServiceDep,
    if_match: IfMatch,
    response: Response,
) -> Envelope[AdminUserRead]:
    account = await service.set_status(admin, user_id, body.status, if_match)
    return ok(set_etag(response, AdminUserRead.model_validate(account)))


@router.delete(
    "/admin/users/{user_id}",
    summary="Delete an account and everything it owns",
    description="Its workspaces go with it, team workspaces included. While workspaces of "
    "other accounts have enabled one of their apps, 409 `app_in_use` (with `subscribers`) "
    "unless `force=true`.",
)
async def delete_user(
    request: Request,
    user_id: str,
    admin: AdminAccount,
    service: AdminUserServiceDep,
    settings: SettingsDep,
    if_match: IfMatch,
    force: ForceDelete = False,
) -> Envelope[Deleted]:
    await service.delete_user(
        admin,
        user_id,
        if_match,
        force=force,
        app_changed=app_changed_hook(request),
        workspaces_gone=workspaces_gone_hook(request),
        files_gone=FileStorage(settings.resolved_files_dir).remove_workspaces,
    )
    return ok(Deleted(id=user_id))
