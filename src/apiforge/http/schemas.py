"""Pydantic bases and field types that carry the conventions: camelCase, 1/0 booleans, ISO times."""

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer
from pydantic_core import PydanticCustomError

from apiforge.tools.case import to_camel
from apiforge.tools.clock import iso

_TRUE = {True, "1", "true", "True"}
_FALSE = {False, "0", "false", "False"}


def _parse_flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str) and not isinstance(value, float):
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
    raise ValueError("must be true, false, 1 or 0")


Flag = Annotated[bool, BeforeValidator(_parse_flag), PlainSerializer(int, return_type=int)]
"""A boolean: accepts true/false/1/0, answers 1/0 (spec 003 §2.4.1)."""


NUL_MESSAGE = "cannot contain NUL characters"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("invalid_value", NUL_MESSAGE)
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string every backend can store: PostgreSQL's `text` and `jsonb` refuse U+0000 (a 500 there,
kept silently by SQLite), so it is a 400 on every backend."""

# A request id as `X-Request-ID` accepts it from a client (whole value: `fullmatch`); the ids
# apiforge mints fit it too, so every request id a row holds does.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{8,128}")
REQUEST_ID_MESSAGE = "must be a request id: 8 to 128 letters, digits, '.', '_', ':' or '-'"


def _request_id(value: str) -> str:
    if value and not REQUEST_ID.fullmatch(value):
        raise PydanticCustomError("invalid_value", REQUEST_ID_MESSAGE)
    return value


RequestIdText = Annotated[str, AfterValidator(_request_id)]
"""A request id to look up (`X-Request-ID`'s format), or "" for none: anything else could never
match a row, so it is a 400 rather than an empty page that hides a typo."""

NULL_MESSAGE = "must not be null; leave it out to keep it"


def not_null(value: Any) -> Any:
    """A `mode="before"` field validator of PATCH bodies, for the fields whose `null` would mean
    nothing: left out, a field stays; `null` reads as "clear it", so it is a 400 naming the field
    rather than a silent no-op. Used as `_no_null = field_validator("a", "b", mode="before")(
    not_null)`; fields where `null` has a meaning (`expiresTime`, `sunset`) are not listed."""
    if value is None:
        raise PydanticCustomError("invalid_value", NULL_MESSAGE)
    return value


Timestamp = Annotated[datetime, PlainSerializer(iso, return_type=str)]
"""A UTC time rendered `YYYY-MM-DDTHH:MM:SSZ`."""


class ApiModel(BaseModel):
    """Base for every response model: camelCase names, built from ORM objects."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        from_attributes=True,
    )


class InputModel(ApiModel):
    """Base for request bodies: unknown fields are an error, strings are trimmed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Created(ApiModel):
    id: str
