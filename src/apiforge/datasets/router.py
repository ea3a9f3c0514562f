"""`/api/v1/datasets`: an app's collections and their records in the caller's workspace partition.

Routes parse and delegate; the workspace comes from `X-Workspace-Id` (default: personal), the
role rules and tenant scoping live in the services.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from apiforge.builder.hooks import collections_changed_hook
from apiforge.datasets.crypto import cipher_for
from apiforge.datasets.schemas import DatasetCreate, DatasetRead, DatasetUpdate, RecordRead
from apiforge.datasets.service import CollectionService, RecordService
from apiforge.http.deps import SessionDep, SettingsDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.http.schemas import Created, Flag, Text
from apiforge.idempotency.locking import IfMatch, etag, set_etag
from apiforge.workspaces.deps import CurrentWorkspaceDep

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])


def _collections(session: SessionDep, request: Request) -> CollectionService:
    return CollectionService(session, collections_changed_hook(request))


def _records(session: SessionDep, settings: SettingsDep) -> RecordService:
    return RecordService(session, cipher_for(settings.signing_key))


CollectionServiceDep = Annotated[CollectionService, Depends(_collections)]
RecordServiceDep = Annotated[RecordService, Depends(_records)]
RecordBody = Annotated[dict[str, Any], Body(description="Field values of the record")]
ForceDeleteRecords = Annotated[
    Flag,
    Query(
        alias="force",
        description="Also when other workspaces keep records in it (409 `collection_in_use` "
        "otherwise): their records are deleted too",
    ),
]
ForceFieldRemoval = Annotated[
    Flag,
    Query(
        alias="force",
        description="Remove fields also when other workspaces (the app's subscribers) keep "
        "values of them (409 `field_in_use` otherwise): their values are erased too",
    ),
]


@router.get("", summary="Datasets of the workspace's apps; filter by appId, search by name")
async def list_datasets(
    current: CurrentWorkspaceDep,
    service: CollectionServiceDep,
    page: PageDep,
    app_id: Annotated[Text | None, Query(alias="appId", max_length=64)] = None,
    q: Annotated[Text | None, Query(max_length=64)] = None,
) -> Envelope[Page[DatasetRead]]:
    return ok(await service.list(current, page, app_id, q))


@router.post("", summary="Define a dataset of an app (editor+)")
async def create_dataset(
    body: DatasetCreate, current: CurrentWorkspaceDep, service: CollectionServiceDep
) -> Envelope[Created]:
    return ok(await service.create(current, body))


@router.get("/{dataset_id}", summary="One dataset's definition")
async def get_dataset(
    dataset_id: str, current: CurrentWorkspaceDep, service: CollectionServiceDep, response: Response
) -> Envelope[DatasetRead]:
    return ok(set_etag(response, await service.get(current, dataset_id)))


@router.put(
    "/{dataset_id}",
    summary="Replace a dataset's name, description and fields (editor+; If-Match required)",
)
async def update_dataset(
    dataset_id: str,
    body: DatasetUpdate,
    current: CurrentWorkspaceDep,
    service: CollectionServiceDep,
    if_match: IfMatch,
    response: Response,
    force: ForceFieldRemoval = False,
) -> Envelope[DatasetRead]:
    updated = await service.update(current, dataset_id, body, if_match, force=force)
    return ok(set_etag(response, updated))


@router.delete("/{dataset_id}", summary="Delete a dataset and all its records (editor+)")
async def delete_dataset(
    dataset_id: str,
    current: CurrentWorkspaceDep,
    service: CollectionServiceDep,
    if_match: IfMatch,
    force: ForceDeleteRecords = False,
) -> Envelope[Created]:
    await service.delete(current, dataset_id, if_match, force=force)
    return ok(Created(id=dataset_id))


@router.get("/{dataset_id}/records", summary="Records in the workspace's partition, paginated")
async def list_records(
    dataset_id: str,
    current: CurrentWorkspaceDep,
    service: RecordServiceDep,
    page: PageDep,
    filter: Annotated[str | None, Query(description="JSON filter tree (DESIGN.md §5)")] = None,
    fields: Annotated[str | None, Query(max_length=2000, description="a,b,c")] = None,
) -> Envelope[Page[RecordRead]]:
    return ok(await service.list(current, dataset_id, page, filter, fields))


@router.post("/{dataset_id}/records", summary="Add a record (editor+)")
async def create_record(
    dataset_id: str, body: RecordBody, current: CurrentWorkspaceDep, service: RecordServiceDep
) -> Envelope[Created]:
    return ok(await service.create(current, dataset_id, body))


@router.get("/{dataset_id}/records/{record_id}", summary="One record")
async def get_record(
    dataset_id: str,
    record_id: str,
    current: CurrentWorkspaceDep,
    service: RecordServiceDep,
    response: Response,
) -> Envelope[RecordRead]:
    record = await service.get(current, dataset_id, record_id)
    response.headers["ETag"] = etag(int(record["version"]))
    return ok(record)


@router.put(
    "/{dataset_id}/records/{record_id}",
    summary="Replace a record; needs If-Match or a `version` in the body (editor+)",
)
async def replace_record(
    dataset_id: str,
    record_id: str,
    body: RecordBody,
    current: CurrentWorkspaceDep,
    service: RecordServiceDep,
    if_match: IfMatch,
    response: Response,
) -> Envelope[RecordRead]:
    record = await service.update(
        current, dataset_id, record_id, body, replace=True, precondition=if_match
    )
    response.headers["ETag"] = etag(int(record["version"]))
    return ok(record)


@router.patch(
    "/{dataset_id}/records/{record_id}",
    summary="Change some fields (null clears one); optional `version` lock (editor+)",
)
async def patch_record(
    dataset_id: str,
    record_id: str,
    body: RecordBody,
    current: CurrentWorkspaceDep,
    service: RecordServiceDep,
    if_match: IfMatch,
    response: Response,
) -> Envelope[RecordRead]:
    record = await service.update(
        current, dataset_id, record_id, body, replace=False, precondition=if_match
    )
    response.headers["ETag"] = etag(int(record["version"]))
    return ok(record)


@router.delete("/{dataset_id}/records/{record_id}", summary="Delete a record (editor+)")
async def delete_record(
    dataset_id: str,
    record_id: str,
    current: CurrentWorkspaceDep,
    service: RecordServiceDep,
    if_match: IfMatch,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Envelope[Created]:
    await service.delete(current, dataset_id, record_id, version, if_match)
    return ok(Created(id=record_id))
