"""Request and response models of `/api/v1/user/settings` and its per-app keys."""

from typing import Annotated, Any

from fastapi import Path
from pydantic import Field

from apiforge.http.schemas import ApiModel, InputModel, Timestamp

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""`appId` and `key`: a letter or digit, then up to 63 of letters, digits, `_`, `.`, `-`."""

AppIdPath = Annotated[str, Path(alias="appId", pattern=NAME_PATTERN)]
KeyPath = Annotated[str, Path(pattern=NAME_PATTERN)]


class AppSettingItem(ApiModel):
    """One key of one app's settings, as the per-app list shows it."""

    key: str
    value: Any
    updated_time: Timestamp = Field(validation_alias="updated_at")


class AppSettingRead(AppSettingItem):
    app_id: str


class AppSettingUpdate(InputModel):
    """`{"value": <any JSON>}`; the value is opaque to the platform and stored as given."""

    value: Any = Field(description="Any JSON value, size and nesting capped")


class AppSettingKey(ApiModel):
    """Names the setting a DELETE removed."""

    app_id: str
    key: str
