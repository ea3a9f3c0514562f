"""records: text field indexes in code point order (COLLATE "C"), as record queries now compare

Each rebuild reads the whole `records` table, which on a big one takes longer than the upgrade's
statement timeout (60 s, `migrations/env.py`): the rebuilds run without one, which is restored
after them; the lock timeout stays, so a busy table still fails the upgrade fast, not waits.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The per-collection field indexes (`datasets/sql.py`, built at run time) whose field column (the
# second) is text: its collation, each column's definition and the partial index's predicate.
FIELD_INDEXES = r"""
SELECT c.relname, i.indisunique, co.collname,
       array(SELECT pg_get_indexdef(i.indexrelid, k, false)
             FROM generate_series(1, i.indnatts) AS k ORDER BY k),
       pg_get_expr(i.indpred, i.indrelid)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_collation co ON co.oid = i.indcollation[1]
WHERE t.relname = 'records'
  AND t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
  AND (c.relname LIKE 'ix\_rec\_%' OR c.relname LIKE 'ux\_rec\_%')
"""


def _rebuild(collation: str | None) -> None:
    """Rebuild, under the same name, every field index over text whose field column is not in
    `collation` (None: the database's default). The names stay, so the run-time sync finds each
    index where it expects it; SQLite compares text by code point already (nothing to do)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    wanted = collation or "default"
    stale = [row for row in bind.execute(sa.text(FIELD_INDEXES)).all() if row[2] != wanted]
    if not stale:
        return
    previous = bind.execute(sa.text("SELECT current_setting('statement_timeout')")).scalar_one()
    bind.execute(sa.text("SET LOCAL statement_timeout = 0"))
    for name, unique, _current, columns, predicate in stale:
        field = f"({columns[1]})" + (f' COLLATE "{collation}"' if collation else "")
        listed = ", ".join([columns[0], field, *columns[2:]])
        kind = "UNIQUE INDEX" if unique else "INDEX"
        op.execute(f'DROP INDEX "{name}"')
        op.execute(f'CREATE {kind} "{name}" ON records ({listed}) WHERE {predicate}')
    # For the migrations after this one in the same upgrade (one transaction).
    bind.execute(
        sa.text("SELECT set_config('statement_timeout', :value, true)"), {"value": previous}
    )


def upgrade() -> None:
    # Queries now compare text fields in code point order (`COLLATE "C"`), which an index in
    # the database's collation cannot serve. The previous release keeps working meanwhile
    # (its queries, in the default collation, scan instead of reading these indexes).
    _rebuild("C")


def downgrade() -> None:
    _rebuild(None)
