"""`/api/v1/apps/{appId}/user-rights`: the calling workspace's grants of an app's user system.

Routes parse and delegate; tenancy (the app must be the workspace's own or enabled by it) and
roles (viewers list, editors grant and revoke) live in the service.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import Field, StringConstraints

from apiforge.http.deps import SessionDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.http.schemas import Text
from apiforge.rights.schemas import (
    MAX_ID_LENGTH,
    MAX_RIGHTS,
    UserRightGrant,
    UserRightHeld,
    UserRightRead,
)
from apiforge.rights.service import UserRightService
from apiforge.workspaces.deps import CurrentWorkspaceDep

router = APIRouter(prefix="/api/v1/apps/{app_id}/user-rights", tags=["user rights"])


def _service(session: SessionDep) -> UserRightService:
    return UserRightService(session)


UserRightServiceDep = Annotated[UserRightService, Depends(_service)]
# Ids in the query are trimmed as the grant's body trims them, so one spelling finds its grant.
Trimmed = Annotated[Text, StringConstraints(strip_whitespace=True)]
UserIdQuery = Annotated[Trimmed, Query(alias="userId", min_length=1, max_length=MAX_ID_LENGTH)]
TargetQuery = Annotated[Trimmed, Query(max_length=MAX_ID_LENGTH)]


@router.get("", summary="Grants in the workspace's partition; filter by userId and target")
async def list_user_rights(
    app_id: str,
    current: CurrentWorkspaceDep,
    service: UserRightServiceDep,
    page: PageDep,
    user_id: Annotated[
        Trimmed | None, Query(alias="userId", min_length=1, max_length=MAX_ID_LENGTH)
    ] = None,
    target: Annotated[Trimmed | None, Query(max_length=MAX_ID_LENGTH)] = None,
) -> Envelope[Page[UserRightRead]]:
    return ok(await service.list_rights(current, app_id, page, user_id, target))


@router.post("", summary="Grant rights to a user on a target, merged with what it holds (editor+)")
async def grant_user_rights(
    app_id: str, body: UserRightGrant, current: CurrentWorkspaceDep, service: UserRightServiceDep
) -> Envelope[UserRightHeld]:
    return ok(await service.grant(current, app_id, body))


@router.delete("", summary="Revoke some rights (repeat `rights`), or all of them (editor+)")
async def revoke_user_rights(
    app_id: str,
    user_id: UserIdQuery,
    current: CurrentWorkspaceDep,
    service: UserRightServiceDep,
    target: TargetQuery = "",
    rights: Annotated[
        list[Annotated[Trimmed, Field(min_length=1, max_length=MAX_ID_LENGTH)]] | None,
        Query(max_length=MAX_RIGHTS),
    ] = None,
) -> Envelope[UserRightHeld]:
    return ok(await service.revoke(current, app_id, user_id, target, rights))
