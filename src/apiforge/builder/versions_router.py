"""`/api/v1/apps/{appId}/versions`: publish `dev`, list, read and deprecate versions.

Published versions are immutable: PUT and DELETE exist only to answer 409 `version_immutable`.
A version's deprecation (`deprecated`, `sunset`) is locked by its `revision`, the `ETag` (read
through `latest`, the ETag names the version too).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from apiforge.builder.definitions import DefinitionChecker
from apiforge.builder.hooks import app_changed_hook
from apiforge.builder.schemas import (
    PublishResult,
    VersionCreate,
    VersionRead,
    VersionSummary,
    VersionUpdate,
)
from apiforge.builder.versions import VersionService, version_tag
from apiforge.http.deps import SessionDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.idempotency.locking import IfMatch
from apiforge.workspaces.deps import CurrentWorkspaceDep

router = APIRouter()  # tagged `builder` by the router that includes it (builder/router.py)


def _versions(session: SessionDep, request: Request) -> VersionService:
    return VersionService(session, DefinitionChecker(session), app_changed_hook(request))


VersionServiceDep = Annotated[VersionService, Depends(_versions)]


@router.post("/apps/{app_id}/versions", summary="Publish dev as the next version (editor+)")
async def publish_version(
    app_id: str, body: VersionCreate, current: CurrentWorkspaceDep, service: VersionServiceDep
) -> Envelope[PublishResult]:
    return ok(await service.publish(current, app_id, body))


@router.get(
    "/apps/{app_id}/versions",
    summary="Published versions, newest first",
    description=(
        "Any workspace lists a public app's versions (to pin one, and to see deprecations and "
        "sunsets coming), without `publishedBy`; a private app's only its own workspace."
    ),
)
async def list_versions(
    app_id: str, current: CurrentWorkspaceDep, service: VersionServiceDep, page: PageDep
) -> Envelope[Page[VersionSummary]]:
    return ok(await service.list_versions(current, app_id, page))


def _with_etag(response: Response, read: VersionRead, asked: str) -> VersionRead:
    """The `ETag` is the `revision` (`version` is the semver label, not a lock), with the label
    when `asked` is `latest`, which a publish moves to another version."""
    response.headers["ETag"] = f'"{version_tag(read.version, read.revision, asked)}"'
    return read


@router.get("/apps/{app_id}/versions/{version}", summary="One version (X.Y.Z or latest)")
async def get_version(
    app_id: str,
    version: str,
    response: Response,
    current: CurrentWorkspaceDep,
    service: VersionServiceDep,
) -> Envelope[VersionRead]:
    return ok(_with_etag(response, await service.read(current, app_id, version), version))


@router.patch(
    "/apps/{app_id}/versions/{version}",
    summary="Deprecate (or undeprecate) a version, set or clear its sunset date (editor+)",
)
async def update_version(
    app_id: str,
    version: str,
    body: VersionUpdate,
    response: Response,
    current: CurrentWorkspaceDep,
    service: VersionServiceDep,
    if_match: IfMatch,
) -> Envelope[VersionRead]:
    read = await service.update(current, app_id, version, body, if_match)
    return ok(_with_etag(response, read, version))


@router.put(
    "/apps/{app_id}/versions/{version}", summary="Refused: published versions are immutable"
)
async def replace_version(
    app_id: str, version: str, current: CurrentWorkspaceDep, service: VersionServiceDep
) -> Envelope[VersionRead]:
    await service.refuse_change(current, app_id, version)
    raise AssertionError("unreachable: refuse_change always raises")


@router.delete(
    "/apps/{app_id}/versions/{version}", summary="Refused: published versions are immutable"
)
async def delete_version(
    app_id: str, version: str, current: CurrentWorkspaceDep, service: VersionServiceDep
) -> Envelope[VersionRead]:
    await service.refuse_change(current, app_id, version)
    raise AssertionError("unreachable: refuse_change always raises")
