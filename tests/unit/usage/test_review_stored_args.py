"""A call's args are kept up to `MAX_ARGS_BYTES` as orjson writes them: the row holds no more.
SQLite's JSON column wrote them with `json.dumps` (`\\u00e9` for `é`, a space after every `,` and
`:`), up to three times what the cap measured."""

import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import LargeBinary, cast, func, select

from apiforge.usage.buffer import MAX_ARGS_BYTES, RequestLogBuffer
from apiforge.usage.models import RequestLog
from tests.unit.usage._rows import log_row

_SIZE = MAX_ARGS_BYTES - 64  # room for the object around the value


@pytest.mark.parametrize(
    "args",
    [
        {"s": "é" * (_SIZE // 2)},  # 2 bytes in UTF-8, 6 escaped
        {"s": "😀" * (_SIZE // 4)},  # 4 bytes in UTF-8, 12 escaped (a surrogate pair)
        {"n": [0] * (_SIZE // 2)},  # `0,`: 2 bytes, 3 with `json.dumps`'s spaces
    ],
    ids=["latin", "astral", "separators"],
)
async def test_args_under_the_cap_take_no_more_than_the_cap(app: FastAPI, args: object) -> None:
    assert len(orjson.dumps(args)) <= MAX_ARGS_BYTES  # kept
    engine = app.state.engine
    buffer = RequestLogBuffer(engine, interval=3600)
    await buffer.close()
    row = log_row(args=args)
    buffer.append(row)
    assert await buffer.flush() == 1
    sqlite = engine.dialect.name == "sqlite"
    # What the row holds: the text on SQLite, the JSONB value on PostgreSQL.
    if sqlite:
        size = func.length(cast(RequestLog.args, LargeBinary))
    else:
        size = func.pg_column_size(RequestLog.args)
    async with engine.connect() as connection:
        stored = (await connection.execute(select(RequestLog.args, size))).one()
    assert stored[0] == args
    assert stored[1] <= MAX_ARGS_BYTES
