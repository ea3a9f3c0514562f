"""collection writes

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only. A batch migration that copies `records` drops its triggers: such a migration must
# create them again (`tests/unit/test_migrations.py` checks they exist at head).
_COUNT = "ON CONFLICT (collection_id) DO UPDATE SET writes = writes + 1"
TRIGGERS = {
    "records_counted_insert": (
        "AFTER INSERT ON records BEGIN INSERT INTO collection_writes (collection_id, writes) "
        "VALUES (NEW.collection_id, 1) " + _COUNT + "; END"
    ),
    "records_counted_delete": (
        "AFTER DELETE ON records BEGIN INSERT INTO collection_writes (collection_id, writes) "
        "VALUES (OLD.collection_id, 1) " + _COUNT + "; END"
    ),
    "records_counted_update": (
        "AFTER UPDATE ON records BEGIN INSERT INTO collection_writes (collection_id, writes) "
        "VALUES (NEW.collection_id, 1) " + _COUNT + "; "
        "INSERT INTO collection_writes (collection_id, writes) "
        "SELECT OLD.collection_id, 1 WHERE OLD.collection_id <> NEW.collection_id "
        + _COUNT
        + "; END"
    ),
}


def upgrade() -> None:
    op.create_table(
        "collection_writes",
        sa.Column("collection_id", sa.String(length=26), nullable=False),
        sa.Column("writes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("collection_id", name=op.f("pk_collection_writes")),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name == "sqlite":
        for name, body in TRIGGERS.items():
            op.execute("CREATE TRIGGER " + name + " " + body)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in TRIGGERS:
            op.execute("DROP TRIGGER IF EXISTS " + name)
    op.drop_table("collection_writes")
