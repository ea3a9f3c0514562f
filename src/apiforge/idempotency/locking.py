"""Optimistic locking of management resources (spec 003 §4.6.2): `version`, `ETag`, `If-Match`.

Every updatable row carries an integer `version`, shown in its responses and as a strong `ETag`
(`"3"`). A write bumps it, and the ORM's UPDATE is conditional on the version it read
(`version_id_col`), so of two concurrent writers exactly one wins and the other gets 409
`concurrent_update` — never a silently lost update. `If-Match` makes the precondition explicit:
the write applies only if the current version is one of the listed tags (412
`precondition_failed` otherwise); where a route requires it, a write without one is 428
`precondition_required`. A `DELETE` honours `If-Match` the same way (never requires it), and is
conditional on the version it checked, like an UPDATE.
"""

import re
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Header, Request, Response
from sqlalchemy import Integer, delete, event, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.exc import StaleDataError

from apiforge.core.errors import ApiforgeError

_TAG = re.compile(r'\s*(?:W/)?"([^"]*)"\s*')


class PreconditionFailedError(ApiforgeError):
    status = 412
    reason = "precondition_failed"
    message = "The resource changed since that version (If-Match); reload it and try again"


class PreconditionRequiredError(ApiforgeError):
    status = 428
    reason = "precondition_required"
    message = "This change needs an If-Match header with the version you edited"


class Versioned(Protocol):
    version: int


def version_column() -> Mapped[int]:
    """The lock column; pair it with `__mapper_args__ = versioned(version)`."""
    return mapped_column(Integer, nullable=False, default=1, server_default="1")


def versioned(column: Any) -> dict[str, Any]:
    """Mapper arguments: UPDATEs carry `WHERE version = <read>`; the version is bumped by
    `advance` (at flush, before services build their responses), never by other writes such
    as a sign-in's `last_login_at`."""
    return {"version_id_col": column, "version_id_generator": False}


def etag(version: int) -> str:
    return f'"{version}"'


@dataclass(frozen=True, slots=True)
class Precondition:
    """What `If-Match` asked for: nothing (None), anything (`*`) or some strong entity tags,
    kept as the text between their quotes (`"3"` -> `3`)."""

    tags: frozenset[str] | None = None
    wildcard: bool = False
    # Some list member was no strong entity tag (`3` unquoted, `W/"3"`): it can never match,
    # and the 412 says so rather than "the resource changed", which would mislead the caller.
    unusable: bool = False

    def check(self, current: int, *, required: bool = False, lock: str = "version") -> None:
        """412 unless `If-Match` is `*` or lists version `current`'s ETag; without `If-Match`,
        428 if `required`, else nothing to check. The 412 names `current` as the resource
        names its lock field (`lock`: a published version's is `revision`)."""
        if not self.given:
            if required:
                raise PreconditionRequiredError()
            return
        if not self.matches(str(current)):
            raise PreconditionFailedError(self._refusal(), details={lock: current})

    def check_tag(self, opaque: str) -> None:
        """`check` for a resource whose ETag is not a version (a file's `"<md5>"`)."""
        if self.given and not self.matches(opaque):
            raise PreconditionFailedError(self._refusal(), details={"etag": f'"{opaque}"'})

    def _refusal(self) -> str | None:
        return _UNUSABLE if self.unusable else None

    def matches(self, opaque: str) -> bool:
        """RFC 9110 strong comparison: the tag's characters exactly, so `"01"` is not the ETag
        `"1"` (a version's tag is its canonical decimal, as `etag` writes it)."""
        return self.wildcard or opaque in (self.tags or ())

    @property
    def given(self) -> bool:
        return self.wildcard or self.tags is not None


def parse_if_match(raw: str | None) -> Precondition:
    """RFC 9110 `If-Match`: `*` or a list of entity tags. Weak tags and tags that are not ours
    never match (strong comparison), so a malformed header fails safe with 412, not a write."""
    if raw is None:
        return Precondition()
    if raw.strip() == "*":
        return Precondition(wildcard=True)
    tags: set[str] = set()
    unusable = False
    for part in raw.split(","):
        found = _TAG.fullmatch(part)
        if found and not part.strip().startswith("W/"):
            tags.add(found.group(1))
        elif part.strip():  # empty list members are allowed (RFC 9110 §5.6.1)
            unusable = True
    return Precondition(tags=frozenset(tags), unusable=unusable)


NO_PRECONDITION = Precondition()
_UNUSABLE = (
    "If-Match holds a value that is no strong ETag and never matches: send the ETag as "
    'answered, quotes included (`"3"`), never weak (`W/"3"`)'
)


def advance(row: Versioned, precondition: Precondition, *, required: bool = False) -> None:
    """Check `If-Match` against `row` (once the caller may see it) and have the change take the
    next version: bumped at flush, only if the row really changed (an empty PATCH keeps it)."""
    precondition.check(row.version, required=required)
    inspect(row).info[_BUMP] = True


_BUMP = "apiforge.bump_version"


async def delete_row(session: AsyncSession, row: Versioned, precondition: Precondition) -> None:
    """Delete `row` with one SQL DELETE (the database cascades to what it owns), if `If-Match`
    allows it (412), and only while it still has the version checked: a write that came between
    the read and the DELETE makes it 409 `concurrent_update`, as it does an ORM write (an ORM
    `session.delete` of a versioned row is conditional on its version by itself)."""
    precondition.check(row.version)
    state = inspect(row)
    mapper = state.mapper
    key = [
        column == value for column, value in zip(mapper.primary_key, state.identity, strict=True)
    ]
    stmt = delete(mapper).where(*key, mapper.version_id_col == row.version)
    result = await session.execute(stmt.execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleDataError(f"{mapper.class_.__name__} changed or went before its DELETE")
    session.expunge(row)


@event.listens_for(Session, "before_flush")
def _bump_versions(session: Session, _context: Any, _instances: Any) -> None:
    for row in session.dirty:
        state = inspect(row)
        if state.info.get(_BUMP) and session.is_modified(row):
            del state.info[_BUMP]
            row.version += 1


def _if_match(
    request: Request,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description='Optimistic lock: the ETag you read (`"<version>"`); the change or '
            "delete applies only while it is current (412 otherwise).",
        ),
    ] = None,
) -> Precondition:
    """The header as one list: a list field sent as several lines (`If-Match: "1"` and
    `If-Match: "2"`) means their comma-joined values (RFC 9110 §5.3), not the first line alone."""
    lines = request.headers.getlist("If-Match")
    return parse_if_match(", ".join(lines) if len(lines) > 1 else if_match)


IfMatch = Annotated[Precondition, Depends(_if_match)]


V = TypeVar("V", bound=Versioned)


def set_etag(response: Response, row: V) -> V:
    """Answer with the version's `ETag`; returns `row` so a route stays one expression."""
    response.headers["ETag"] = etag(row.version)
    return row
