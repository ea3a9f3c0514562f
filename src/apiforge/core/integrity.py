"""What a refused write violated, read from the driver's codes rather than its message text.

A unique violation (a value is taken: 409), a foreign-key violation (what the row points at was
deleted meanwhile: usually a 404) and a NOT NULL or CHECK violation (a bug: a 500) need different
answers. asyncpg gives the SQLSTATE (23505, 23503, 23502, 23514) and the constraint's name;
sqlite3 gives its extended result code (`SQLITE_CONSTRAINT_UNIQUE`, ...) and names a violated
index only in its message (`UNIQUE constraint failed: index 'ux_...'`). Called on error paths
only: a write that succeeds pays nothing.
"""

import re
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy.exc import IntegrityError

Kind = Literal["unique", "foreign_key", "not_null", "check", "other"]

_SQLSTATES: Final[dict[str, Kind]] = {
    "23505": "unique",
    "23503": "foreign_key",
    "23502": "not_null",
    "23514": "check",
}
_SQLITE_CODES: Final[dict[str, Kind]] = {
    "SQLITE_CONSTRAINT_UNIQUE": "unique",
    "SQLITE_CONSTRAINT_PRIMARYKEY": "unique",
    "SQLITE_CONSTRAINT_FOREIGNKEY": "foreign_key",
    "SQLITE_CONSTRAINT_NOTNULL": "not_null",
    "SQLITE_CONSTRAINT_CHECK": "check",
}
_SQLITE_INDEX: Final = re.compile(r"index '([^']+)'")


@dataclass(frozen=True, slots=True)
class Violation:
    kind: Kind
    constraint: str | None  # the violated constraint or index, when the driver names it


def violation(exc: IntegrityError) -> Violation:
    """The kind of constraint `exc` reports, and its name when known."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str):  # asyncpg (through SQLAlchemy's adaptor) or psycopg
        driver = getattr(orig, "orig", None) or orig
        constraint = getattr(driver, "constraint_name", None)
        if constraint is None:  # psycopg keeps it in `diag`
            constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
        return Violation(_SQLSTATES.get(sqlstate, "other"), constraint)
    code = getattr(orig, "sqlite_errorname", None)
    if isinstance(code, str):
        found = _SQLITE_INDEX.search(str(orig))
        return Violation(_SQLITE_CODES.get(code, "other"), found.group(1) if found else None)
    return Violation("other", None)
