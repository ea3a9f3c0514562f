"""HTTP routes of `/api/v1/user/settings`: the signed-in account's own settings, nobody else's.

`appId` is any well-formed id, not checked against existing apps: app settings are the account's
own notes about any app (docs/decisions.md, "User settings"), visible to nobody else.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from apiforge.accounts.deps import CurrentAccount
from apiforge.accounts.settings_schemas import (
    AppIdPath,
    AppSettingItem,
    AppSettingKey,
    AppSettingRead,
    AppSettingUpdate,
    KeyPath,
)
from apiforge.accounts.settings_service import UserSettingsService
from apiforge.http.deps import SessionDep, SettingsDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep

router = APIRouter(prefix="/api/v1", tags=["user settings"])


def _service(session: SessionDep, settings: SettingsDep) -> UserSettingsService:
    return UserSettingsService(session, settings)


UserSettingsServiceDep = Annotated[UserSettingsService, Depends(_service)]
SettingsDocument = Annotated[dict[str, Any], Body(description="Any JSON object")]


@router.get("/user/settings", summary="The account's settings document ({} when none)")
async def get_settings(
    account: CurrentAccount, service: UserSettingsServiceDep
) -> Envelope[dict[str, Any]]:
    return ok(await service.get_document(account.id))


@router.put("/user/settings", summary="Replace the whole settings document")
async def replace_settings(
    body: SettingsDocument, account: CurrentAccount, service: UserSettingsServiceDep
) -> Envelope[dict[str, Any]]:
    return ok(await service.replace_document(account.id, body))


@router.get("/user/settings/apps/{appId}", summary="Every key the account set for one app")
async def list_app_settings(
    app_id: AppIdPath, account: CurrentAccount, service: UserSettingsServiceDep, page: PageDep
) -> Envelope[Page[AppSettingItem]]:
    return ok(await service.list_app_settings(account.id, app_id, page))


@router.get("/user/settings/apps/{appId}/{key}", summary="One app setting")
async def get_app_setting(
    app_id: AppIdPath, key: KeyPath, account: CurrentAccount, service: UserSettingsServiceDep
) -> Envelope[AppSettingRead]:
    row = await service.get_app_setting(account.id, app_id, key)
    return ok(AppSettingRead.model_validate(row))


@router.put("/user/settings/apps/{appId}/{key}", summary="Create or replace one app setting")
async def put_app_setting(
    app_id: AppIdPath,
    key: KeyPath,
    body: AppSettingUpdate,
    account: CurrentAccount,
    service: UserSettingsServiceDep,
) -> Envelope[AppSettingRead]:
    row = await service.put_app_setting(account.id, app_id, key, body.value)
    return ok(AppSettingRead.model_validate(row))


@router.delete("/user/settings/apps/{appId}/{key}", summary="Remove one app setting")
async def delete_app_setting(
    app_id: AppIdPath, key: KeyPath, account: CurrentAccount, service: UserSettingsServiceDep
) -> Envelope[AppSettingKey]:
    await service.delete_app_setting(account.id, app_id, key)
    return ok(AppSettingKey(app_id=app_id, key=key))
