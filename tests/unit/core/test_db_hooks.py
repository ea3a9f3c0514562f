"""`after_rollback` undoes outside effects only when a transaction rolls back; `end_reads` ends a
read-only transaction without losing what was read."""

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from apiforge.core.db import after_rollback, end_reads
from apiforge.plans.models import Plan


async def test_after_rollback_runs_on_rollback_only(app: FastAPI) -> None:
    undone: list[str] = []
    async with app.state.sessionmaker() as session:
        await session.scalar(select(Plan.id).limit(1))
        after_rollback(session, lambda: undone.append("rolled back"))
        await session.commit()
        assert undone == []
        await session.scalar(select(Plan.id).limit(1))
        after_rollback(session, lambda: undone.append("rolled back"))
        await session.rollback()
    assert undone == ["rolled back"]


async def test_end_reads_keeps_loaded_objects_and_refuses_pending_changes(app: FastAPI) -> None:
    async with app.state.sessionmaker() as session:
        plan = await session.scalar(select(Plan).limit(1))
        assert plan is not None
        await end_reads(session)
        assert not session.in_transaction()
        assert plan.code == "free"  # detached, still readable
        session.add(Plan(code="new", name="New"))
        with pytest.raises(RuntimeError):
            await end_reads(session)
