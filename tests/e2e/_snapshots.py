"""Every durable row of a test's database, to show that a refused request changed nothing."""

from fastapi import FastAPI
from sqlalchemy import select

from apiforge.models import metadata

# Written by requests that change nothing of the tenant's data: sign-ins, idempotency claims,
# the call logs.
VOLATILE_TABLES = {
    "idempotency_answer_marks",
    "idempotency_records",
    "idempotency_tokens",
    "login_sessions",
    "quota_hits",
    "refresh_tokens",
    "request_logs",
}
VOLATILE_COLUMNS = {"last_used_at"}  # keys' last use, written in batches


async def snapshot(app: FastAPI) -> dict[str, list[str]]:
    """Every durable row of the database, table by table."""
    result = {}
    async with app.state.engine.connect() as conn:
        for name, table in sorted(metadata.tables.items()):
            if name in VOLATILE_TABLES:
                continue
            columns = [c for c in table.columns if c.name not in VOLATILE_COLUMNS]
            rows = await conn.execute(select(*columns))
            result[name] = sorted(repr(tuple(row)) for row in rows)
    return result
