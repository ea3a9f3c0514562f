"""`/api/v1/apps`: apps of the current workspace (`X-Workspace-Id`) and their `dev` APIs.

The builder's other routes (versions, generated docs, import/export) live in sibling modules and
are included here, so `api.py` lists one builder router (step pricing is an admin route, listed
there on its own). Routes only parse and
delegate: tenancy and roles are enforced by the services.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from apiforge.builder.definitions import DefinitionChecker
from apiforge.builder.hooks import app_changed_hook
from apiforge.builder.schemas import (
    ApiCreate,
    ApiGroupList,
    ApiRead,
    ApiSummary,
    ApiUpdate,
    AppCreate,
    AppRead,
    AppUpdate,
    SigningSecretRotate,
    SigningSecretRotated,
)
from apiforge.builder.service import ApiService, AppService
from apiforge.builder.transfer_router import router as transfer_router
from apiforge.builder.versions_router import router as versions_router
from apiforge.http.deps import SessionDep, SettingsDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.http.schemas import Created, Text
from apiforge.idempotency.locking import IfMatch, set_etag
from apiforge.keys.subscribers import ForceDelete
from apiforge.workspaces.deps import CurrentWorkspaceDep

router = APIRouter(prefix="/api/v1", tags=["builder"])

# A NUL can match nothing stored, and PostgreSQL refuses it in a query: a 400, not a 500.
Search = Annotated[Text, Query(max_length=100, description="Part of the name or description")]
Group = Annotated[Text | None, Query(max_length=64)]


def _apps(session: SessionDep, settings: SettingsDep, request: Request) -> AppService:
    return AppService(session, settings, app_changed_hook(request))


def _apis(session: SessionDep) -> ApiService:
    return ApiService(session, DefinitionChecker(session))


AppServiceDep = Annotated[AppService, Depends(_apps)]
ApiServiceDep = Annotated[ApiService, Depends(_apis)]


# --- apps -------------------------------------------------------------------------------------


@router.get("/apps", summary="Apps of the current workspace")
async def list_apps(
    current: CurrentWorkspaceDep, service: AppServiceDep, page: PageDep, q: Search = ""
) -> Envelope[Page[AppRead]]:
    return ok(await service.list_apps(current, page, q.strip()))


@router.post("/apps", summary="Create an app (editor+; plan quota: apps)")
async def create_app(
    body: AppCreate, current: CurrentWorkspaceDep, service: AppServiceDep
) -> Envelope[Created]:
    return ok(await service.create(current, body))


@router.get("/apps/{app_id}", summary="One app")
async def get_app(
    app_id: str, current: CurrentWorkspaceDep, service: AppServiceDep, response: Response
) -> Envelope[AppRead]:
    return ok(set_etag(response, await service.read(current, app_id)))


@router.patch("/apps/{app_id}", summary="Change an app's name, description, config or secrets")
async def update_app(
    app_id: str,
    body: AppUpdate,
    current: CurrentWorkspaceDep,
    service: AppServiceDep,
    if_match: IfMatch,
    response: Response,
) -> Envelope[AppRead]:
    return ok(set_etag(response, await service.update(current, app_id, body, if_match)))


@router.delete("/apps/{app_id}", summary="Delete an app and all its data (admin+)")
async def delete_app(
    app_id: str,
    current: CurrentWorkspaceDep,
    service: AppServiceDep,
    if_match: IfMatch,
    force: ForceDelete = False,
) -> Envelope[Created]:
    await service.delete(current, app_id, if_match, force=force)
    return ok(Created(id=app_id))


@router.post(
    "/apps/{app_id}/signing-secret/rotate",
    summary="Rotate the app's end-user token signing secret (admin+)",
    description=(
        "Gives the app a new secret for the end-user tokens its `jwtSign` steps issue and the "
        "gateway checks, on `dev` and every published version alike. Tokens signed with the "
        "secret replaced are refused at once (401 `invalid_token`), or with `graceSeconds` "
        "(at most 86400) accepted until `previousValidUntil`, checked but never used to sign. "
        "One previous secret at most: rotating again during a grace ends it. The secret itself "
        "is never shown. This node applies it at once; other nodes within a second."
    ),
)
async def rotate_signing_secret(
    app_id: str,
    current: CurrentWorkspaceDep,
    service: AppServiceDep,
    body: SigningSecretRotate | None = None,
) -> Envelope[SigningSecretRotated]:
    data = body or SigningSecretRotate()
    return ok(await service.rotate_signing_secret(current, app_id, data))


# --- APIs -------------------------------------------------------------------------------------


@router.get("/apps/{app_id}/apis", summary="APIs on dev, alphabetical by api")
async def list_apis(
    app_id: str,
    current: CurrentWorkspaceDep,
    service: ApiServiceDep,
    page: PageDep,
    q: Search = "",
    group: Group = None,
) -> Envelope[Page[ApiSummary]]:
    return ok(await service.list_apis(current, app_id, page, q.strip(), group))


@router.get("/apps/{app_id}/api-groups", summary="Groups of the app's APIs")
async def list_api_groups(
    app_id: str, current: CurrentWorkspaceDep, service: ApiServiceDep
) -> Envelope[ApiGroupList]:
    return ok(await service.groups(current, app_id))


@router.post("/apps/{app_id}/apis", summary="Create an API on dev (editor+; validated)")
async def create_api(
    app_id: str, body: ApiCreate, current: CurrentWorkspaceDep, service: ApiServiceDep
) -> Envelope[Created]:
    return ok(await service.create(current, app_id, body))


@router.get("/apps/{app_id}/apis/{api_id}", summary="One API on dev, with its computed cost")
async def get_api(
    app_id: str,
    api_id: str,
    current: CurrentWorkspaceDep,
    service: ApiServiceDep,
    response: Response,
) -> Envelope[ApiRead]:
    return ok(set_etag(response, await service.read(current, app_id, api_id)))


@router.patch("/apps/{app_id}/apis/{api_id}", summary="Change an API on dev (editor+; validated)")
async def update_api(
    app_id: str,
    api_id: str,
    body: ApiUpdate,
    current: CurrentWorkspaceDep,
    service: ApiServiceDep,
    if_match: IfMatch,
    response: Response,
) -> Envelope[ApiRead]:
    return ok(set_etag(response, await service.update(current, app_id, api_id, body, if_match)))


@router.delete(
    "/apps/{app_id}/apis/{api_id}", summary="Delete an API from dev (published versions keep it)"
)
async def delete_api(
    app_id: str,
    api_id: str,
    current: CurrentWorkspaceDep,
    service: ApiServiceDep,
    if_match: IfMatch,
) -> Envelope[Created]:
    await service.delete(current, app_id, api_id, if_match)
    return ok(Created(id=api_id))


router.include_router(versions_router)
router.include_router(transfer_router)
