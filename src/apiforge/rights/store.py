"""Rows of the built-in user system, on a Core connection (the gateway's and the service's).

A row is `(workspace, app, userId, target) -> rights`. The workspace is always the *calling*
workspace (the data partition), so one consumer of an app never reads or changes another's
grants. Grants merge under a row lock, so two concurrent grants never lose each other's rights,
and a grant racing a revoke that deletes the row is still stored (not answered, then lost).
"""

from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from apiforge.core.errors import ValidationError
from apiforge.datasets.holding import hold_partition_and_app
from apiforge.datasets.models import UserRight
from apiforge.http.schemas import NUL_MESSAGE
from apiforge.rights.schemas import MAX_ID_LENGTH, MAX_RIGHTS
from apiforge.tools.clock import utcnow

TABLE = cast(Table, UserRight.__table__)


@dataclass(frozen=True, slots=True)
class RightsKey:
    workspace_id: str
    app_id: str
    user_id: str
    target: str

    @property
    def fits(self) -> bool:
        """Whether a row can exist for this key at all: longer ids, and ids holding NUL (which
        PostgreSQL refuses as a query parameter), are never stored."""
        return all(
            len(text) <= MAX_ID_LENGTH and "\x00" not in text
            for text in (self.user_id, self.target)
        )

    def where(self) -> ColumnElement[bool]:
        c = TABLE.c
        return and_(
            c.workspace_id == self.workspace_id,
            c.app_id == self.app_id,
            c.user_id == self.user_id,
            c.target == self.target,
        )


async def held_rights(
    connection: AsyncConnection, key: RightsKey, *, lock: bool = False
) -> list[str] | None:
    """The rights of the row, or None when there is no row."""
    if not key.fits:
        return None
    query = select(TABLE.c.rights).where(key.where())
    if lock:
        query = query.with_for_update()  # PostgreSQL; on SQLite the caller begins as the writer
    rights = (await connection.execute(query)).scalar_one_or_none()
    return None if rights is None else [str(r) for r in rights]


async def grant_rights(connection: AsyncConnection, key: RightsKey, rights: list[str]) -> list[str]:
    """Add `rights` (creating the row when needed, never an empty one); answers what the user
    holds afterwards."""
    _refuse_nul(key, rights)
    if not key.fits:  # callers bound the ids; a longer one could never be read back
        raise ValidationError(f"userId and target are at most {MAX_ID_LENGTH} characters")
    if not rights:  # nothing to add: no empty row (a revoke that empties one deletes it)
        return await held_rights(connection, key) or []
    await hold_partition_and_app(connection, key.workspace_id, key.app_id)
    module = postgresql if connection.dialect.name == "postgresql" else sqlite
    values = {
        "workspace_id": key.workspace_id,
        "app_id": key.app_id,
        "user_id": key.user_id,
        "target": key.target,
    }
    ensure = module.insert(TABLE).values(**values, rights=[], updated_at=utcnow())
    held = None
    while held is None:
        # A revoke that deletes the row between this insert and the lock leaves nothing to
        # lock (PostgreSQL, READ COMMITTED): insert it again rather than update no row.
        await connection.execute(ensure.on_conflict_do_nothing())
        held = await held_rights(connection, key, lock=True)
    merged = held + [r for r in dict.fromkeys(rights) if r not in held]
    if len(merged) > MAX_RIGHTS:
        raise ValidationError(
            f"A user holds at most {MAX_RIGHTS} rights per target",
            reason="too_many_rights",
            errors=[{"field": "rights", "message": f"at most {MAX_RIGHTS} per user and target"}],
        )
    if merged != held:
        await connection.execute(
            update(TABLE).where(key.where()).values(rights=merged, updated_at=utcnow())
        )
    return merged


def _refuse_nul(key: RightsKey, rights: list[str]) -> None:
    """400 for text PostgreSQL cannot store (a 500 there, kept silently by SQLite)."""
    named = [("userId", key.user_id), ("target", key.target)] + [("rights", r) for r in rights]
    for field, text in named:
        if "\x00" in text:
            raise ValidationError(
                f"{field} cannot contain the NUL character",
                errors=[{"field": field, "message": NUL_MESSAGE}],
            )


async def revoke_rights(
    connection: AsyncConnection, key: RightsKey, rights: list[str] | None
) -> list[str] | None:
    """Remove `rights` (all of them when None); a row left empty is deleted. None when the user
    held nothing on the target."""
    await hold_partition_and_app(connection, key.workspace_id, key.app_id)
    held = await held_rights(connection, key, lock=True)
    if held is None:
        return None
    remaining = [] if rights is None else [r for r in held if r not in set(rights)]
    if not remaining:
        await connection.execute(delete(TABLE).where(key.where()))
    elif remaining != held:
        await connection.execute(
            update(TABLE).where(key.where()).values(rights=remaining, updated_at=utcnow())
        )
    return remaining
