"""Rows a call's JSON body can make that no JSON column takes: kept, with the offending values
stored as `null`, so neither the row's batch nor the charge written with it fails."""

import math

from fastapi import FastAPI
from sqlalchemy import select

from apiforge.usage.buffer import RequestLogBuffer, _storable
from apiforge.usage.models import RequestLog
from tests.unit.usage._rows import log_row


def test_non_finite_numbers_in_args_are_stored_as_null() -> None:
    args = {"n": math.nan, "deep": [{"x": math.inf}, -math.inf, 1.5], "s": "null", "t": None}
    stored = _storable(log_row(args=args))
    assert stored["args"] == {"n": None, "deep": [{"x": None}, None, 1.5], "s": "null", "t": None}
    clean = {"pageNo": 2, "q": "x"}
    assert _storable(log_row(args=clean))["args"] is clean  # nothing to change: no copy


async def test_a_row_with_nan_args_neither_fails_nor_drops_its_batch(app: FastAPI) -> None:
    engine = app.state.engine
    buffer = RequestLogBuffer(engine, interval=3600)
    rows = [log_row(), log_row(args={"n": math.nan, "k\x00": "a\x00b"}), log_row()]
    for row in rows:
        buffer.append(row)
    assert await buffer.flush() == 3
    assert len(buffer) == 0
    async with engine.connect() as connection:
        stored = {
            r.request_id: r.args
            for r in await connection.execute(select(RequestLog.request_id, RequestLog.args))
        }
    assert stored == {
        rows[0]["request_id"]: rows[0]["args"],
        rows[1]["request_id"]: {"n": None, "k": "ab"},
        rows[2]["request_id"]: rows[2]["args"],
    }
