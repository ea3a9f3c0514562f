"""`/api/v1/subscriptions` (apps the current workspace has enabled) and `/api/v1/api-keys`.

Both act in the current workspace (`X-Workspace-Id`); roles are enforced by the services. Creating,
changing and revoking keys additionally needs a console sign-in (`CurrentAccount`): a workspace
key can list keys but never mint or revoke one, so a leaked key cannot make itself successors.
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from apiforge.accounts.deps import CurrentAccount
from apiforge.http.deps import SessionDep, SettingsDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.http.schemas import Created
from apiforge.idempotency.locking import IfMatch, set_etag
from apiforge.keys.lookup import KeyLookup
from apiforge.keys.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    ApiKeyUpdate,
    KeyStatus,
    KeyType,
    SubscriptionCreate,
    SubscriptionRead,
    SubscriptionUpdate,
)
from apiforge.keys.service import ApiKeyService, SubscriptionService
from apiforge.traffic.deps import KeyCreationLimit
from apiforge.workspaces.deps import CurrentWorkspaceDep

router = APIRouter(prefix="/api/v1", tags=["keys"])


def _lookup(request: Request) -> KeyLookup:
    lookup: KeyLookup = request.app.state.keys
    return lookup


LookupDep = Annotated[KeyLookup, Depends(_lookup)]


def _subscriptions(session: SessionDep, lookup: LookupDep) -> SubscriptionService:
    return SubscriptionService(session, lookup)


def _keys(session: SessionDep, settings: SettingsDep, lookup: LookupDep) -> ApiKeyService:
    return ApiKeyService(session, settings, lookup)


SubscriptionServiceDep = Annotated[SubscriptionService, Depends(_subscriptions)]
ApiKeyServiceDep = Annotated[ApiKeyService, Depends(_keys)]
EnabledFilter = Annotated[Literal["true", "false", "1", "0"] | None, Query()]


# --- subscriptions ----------------------------------------------------------------------------


@router.get("/subscriptions", summary="Apps the current workspace has enabled")
async def list_subscriptions(
    current: CurrentWorkspaceDep,
    service: SubscriptionServiceDep,
    page: PageDep,
    enabled: EnabledFilter = None,
) -> Envelope[Page[SubscriptionRead]]:
    wanted = None if enabled is None else enabled in ("true", "1")
    return ok(await service.list_subscriptions(current, page, wanted))


@router.post("/subscriptions", summary="Enable an app: public, or this workspace's own (editor+)")
async def enable_app(
    body: SubscriptionCreate, current: CurrentWorkspaceDep, service: SubscriptionServiceDep
) -> Envelope[Created]:
    return ok(await service.enable(current, body))


@router.get("/subscriptions/{subscription_id}", summary="One subscription")
async def get_subscription(
    subscription_id: str,
    current: CurrentWorkspaceDep,
    service: SubscriptionServiceDep,
    response: Response,
) -> Envelope[SubscriptionRead]:
    return ok(set_etag(response, await service.read(current, subscription_id)))


@router.patch(
    "/subscriptions/{subscription_id}", summary="Disable or enable again; calls stop at once"
)
async def update_subscription(
    subscription_id: str,
    body: SubscriptionUpdate,
    current: CurrentWorkspaceDep,
    service: SubscriptionServiceDep,
    if_match: IfMatch,
    response: Response,
) -> Envelope[SubscriptionRead]:
    return ok(set_etag(response, await service.update(current, subscription_id, body, if_match)))


@router.delete(
    "/subscriptions/{subscription_id}", summary="Remove a subscription and its keys (admin+)"
)
async def delete_subscription(
    subscription_id: str,
    current: CurrentWorkspaceDep,
    service: SubscriptionServiceDep,
    if_match: IfMatch,
) -> Envelope[Created]:
    await service.delete(current, subscription_id, if_match)
    return ok(Created(id=subscription_id))


# --- API keys ---------------------------------------------------------------------------------


@router.get("/api-keys", summary="Keys of the current workspace (editor+); never their secrets")
async def list_api_keys(
    current: CurrentWorkspaceDep,
    service: ApiKeyServiceDep,
    page: PageDep,
    app_id: Annotated[str | None, Query(alias="appId", max_length=64)] = None,
    kind: Annotated[KeyType | None, Query(alias="type")] = None,
    status: Annotated[KeyStatus | None, Query()] = None,
) -> Envelope[Page[ApiKeyRead]]:
    return ok(await service.list_keys(current, page, app_id=app_id, kind=kind, status=status))


@router.post("/api-keys", summary="Create a key (editor+); the secret is shown only here")
async def create_api_key(
    body: ApiKeyCreate,
    account: CurrentAccount,
    current: CurrentWorkspaceDep,
    service: ApiKeyServiceDep,
    limit: KeyCreationLimit,
) -> Envelope[ApiKeyCreated]:
    await limit()
    return ok(await service.create(current, body))


@router.get("/api-keys/{key_id}", summary="One key (editor+)")
async def get_api_key(
    key_id: str, current: CurrentWorkspaceDep, service: ApiKeyServiceDep, response: Response
) -> Envelope[ApiKeyRead]:
    return ok(set_etag(response, await service.read(current, key_id)))


@router.patch("/api-keys/{key_id}", summary="Rename, change expiry or allow-lists (admin+)")
async def update_api_key(
    key_id: str,
    body: ApiKeyUpdate,
    account: CurrentAccount,
    current: CurrentWorkspaceDep,
    service: ApiKeyServiceDep,
    if_match: IfMatch,
    response: Response,
) -> Envelope[ApiKeyRead]:
    return ok(set_etag(response, await service.update(current, key_id, body, if_match)))


@router.delete("/api-keys/{key_id}", summary="Revoke a key (admin+): it stops within a second")
async def revoke_api_key(
    key_id: str,
    account: CurrentAccount,
    current: CurrentWorkspaceDep,
    service: ApiKeyServiceDep,
    if_match: IfMatch,
) -> Envelope[Created]:
    await service.revoke(current, key_id, if_match)
    return ok(Created(id=key_id))
