"""Request and response models of `/api/v1/admin/users`: what an admin sees and may change."""

from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from apiforge.core.errors import ValidationError
from apiforge.http.schemas import ApiModel, Flag, InputModel, Timestamp


class AccountStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class AdminUserRead(ApiModel):
    """One account as the user list shows it; never the password hash, never settings."""

    id: str
    email: str
    name: str
    status: str
    is_admin: Flag
    version: int
    created_time: Timestamp = Field(validation_alias="created_at")
    last_login_time: Timestamp | None = Field(validation_alias="last_login_at")


class AdminUserUpdate(InputModel):
    """The one change an administrator may make: spec 002 forbids editing a user's data."""

    status: AccountStatus

    @model_validator(mode="before")
    @classmethod
    def _only_status(cls, data: Any) -> Any:
        # Raised as our own error (pydantic lets non-ValueError exceptions through) so the
        # refusal carries its specific reason instead of the generic `invalid_input`.
        if isinstance(data, dict):
            others = sorted(str(key) for key in data if key != "status")
            if others:
                raise ValidationError(
                    "Administrators cannot edit a user's data; only status can be changed",
                    reason="admin_cannot_edit_user_data",
                    errors=[
                        {"field": key, "message": "cannot be changed by an administrator"}
                        for key in others
                    ],
                )
        return data


class Deleted(ApiModel):
    """The id of what a DELETE removed."""

    id: str
