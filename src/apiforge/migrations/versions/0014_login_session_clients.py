"""login sessions: last refresh, client IP and user agent (for `/user/sessions`)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Server defaults fill the rows of sessions started before this release, and those the
    # previous release, still serving, inserts without these columns.
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("client_ip", sa.String(length=45), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("user_agent", sa.String(length=255), nullable=False, server_default="")
        )
    # A session refreshed before this release: its newest refresh token is when it last was.
    op.execute(
        "UPDATE login_sessions SET refreshed_at = (SELECT max(r.created_at) FROM refresh_tokens r"
        " WHERE r.session_id = login_sessions.id) WHERE (SELECT count(*) FROM refresh_tokens r"
        " WHERE r.session_id = login_sessions.id) > 1"
    )


def downgrade() -> None:
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.drop_column("user_agent")
        batch_op.drop_column("client_ip")
        batch_op.drop_column("refreshed_at")
