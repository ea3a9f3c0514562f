"""Request and response models of accounts: sign-up, sign-in, tokens, profile."""

from typing import Annotated

from pydantic import AfterValidator, EmailStr, Field, field_validator
from pydantic_core import PydanticCustomError

from apiforge.accounts.passwords import normalise_password
from apiforge.http.schemas import ApiModel, Flag, InputModel, Text, Timestamp, not_null

PASSWORD_MIN, PASSWORD_MAX = 8, 128
# What may be typed for a password of at most `PASSWORD_MAX` characters: a character decomposes
# into at most 4 code points (U+1FA2: omega, two accents, iota subscript), and another keyboard
# may send that form. It also bounds normalising and hashing of input that can match nothing.
PASSWORD_INPUT_MAX = 4 * PASSWORD_MAX


def _normalised_length(password: str) -> str:
    """The length rules hold for the password that is hashed (NFKC), not for the form typed:
    `e` + a combining accent four times is 8 code points but the 4-character `éééé`, and a
    128-character password typed decomposed is still 128 characters."""
    length = len(normalise_password(password))
    if length < PASSWORD_MIN:
        raise PydanticCustomError(
            "string_too_short",
            "String should have at least {min_length} characters",
            {"min_length": PASSWORD_MIN},
        )
    if length > PASSWORD_MAX:
        raise PydanticCustomError(
            "string_too_long",
            "String should have at most {max_length} characters",
            {"max_length": PASSWORD_MAX},
        )
    return password


# A new password: checked after the trimming every input gets (`InputModel`), and counted in its
# NFKC form, the one that is hashed.
Password = Annotated[str, Field(max_length=PASSWORD_INPUT_MAX), AfterValidator(_normalised_length)]
# A password to check: bounded only; a length no password has simply does not match.
PasswordGiven = Annotated[str, Field(max_length=PASSWORD_INPUT_MAX)]


class RegisterInput(InputModel):
    email: EmailStr = Field(max_length=254)
    password: Password
    name: Text = Field(default="", max_length=100)


class LoginInput(InputModel):
    email: Text = Field(max_length=254)
    password: PasswordGiven


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
    """Only these fields are the user's to change; email and status are not. None of them may
    be null (`not_null`): `avatarUrl: ""` removes the avatar."""

    name: Text | None = Field(default=None, max_length=100)
    avatar_url: Text | None = Field(default=None, max_length=500, pattern=r"^(https?://\S+)?$")
    locale: str | None = Field(
        default=None, max_length=20, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"
    )

    _no_null = field_validator("*", mode="before")(not_null)


class PasswordChange(InputModel):
    current_password: PasswordGiven
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
