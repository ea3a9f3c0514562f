"""Request and response models of accounts: sign-up, sign-in, tokens, profile."""

from typing import Annotated

from pydantic import EmailStr, Field

from apiforge.http.schemas import ApiModel, Flag, InputModel, Text, Timestamp

# Checked as typed (after the trimming every input gets, `InputModel`); hashed NFKC-normalised.
Password = Annotated[str, Field(min_length=8, max_length=128)]


class RegisterInput(InputModel):
    email: EmailStr = Field(max_length=254)
    password: Password
    name: Text = Field(default="", max_length=100)


class LoginInput(InputModel):
    email: Text = Field(max_length=254)
    password: str = Field(max_length=128)


class RefreshInput(InputModel):
    refresh_token: str = Field(min_length=1, max_length=200)


class LogoutInput(InputModel):
    refresh_token: str | None = Field(default=None, max_length=200)


class TokenPair(ApiModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type name, not a secret
    expires_in: int
    account_id: str
    workspace_id: str


class ProfileRead(ApiModel):
    id: str
    email: str
    name: str
    avatar_url: str
    locale: str
    is_admin: Flag
    status: str
    version: int
    # Named `...Time` as every other resource's times are (spec 003: `sort=createdTime`).
    created_time: Timestamp = Field(validation_alias="created_at")
    updated_time: Timestamp = Field(validation_alias="updated_at")
    last_login_time: Timestamp | None = Field(validation_alias="last_login_at")


class ProfileUpdate(InputModel):
    """Only these fields are the user's to change; email and status are not."""

    name: Text | None = Field(default=None, max_length=100)
    avatar_url: Text | None = Field(default=None, max_length=500, pattern=r"^(https?://\S+)?$")
    locale: str | None = Field(
        default=None, max_length=20, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"
    )


class PasswordChange(InputModel):
    current_password: str = Field(max_length=128)
    new_password: Password


class PasswordChanged(ApiModel):
    id: str
    ended_sessions: int  # the account's other sessions, ended by the change


class SessionRead(ApiModel):
    """One active sign-in of the account: the device as seen at sign-in or its latest refresh."""

    id: str
    current: Flag
    created_time: Timestamp
    last_refreshed_time: Timestamp | None  # null: not refreshed since sign-in
    expires_time: Timestamp  # when its refresh token runs out, unless refreshed before
    client_ip: str
    user_agent: str
