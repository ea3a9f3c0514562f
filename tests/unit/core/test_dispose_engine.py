"""`dispose_engine` closes the connections a call still held when the process began to stop,
once they come back: `AsyncEngine.dispose` alone leaves them open in the pool it dropped (an
aiosqlite thread, a PostgreSQL socket), warned about in whatever code next runs the collector."""

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import text

from apiforge.core.db import dispose_engine, make_engine


async def test_a_connection_returned_while_stopping_is_closed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    held = await engine.connect()
    await held.execute(text("SELECT 1"))
    raw = await held.get_raw_connection()
    driver: Any = raw.driver_connection  # aiosqlite's connection

    async def finish_the_call() -> None:
        await asyncio.sleep(0.1)
        await held.close()

    returning = asyncio.create_task(finish_the_call())
    await dispose_engine(engine)
    await returning
    thread = driver._thread
    await asyncio.to_thread(thread.join, 5)
    closed = not thread.is_alive() and driver._connection is None
    if not closed:
        driver.stop()  # a live thread would keep the test process from exiting
    assert closed


async def test_a_connection_never_returned_does_not_hold_the_stop(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    held = await engine.connect()
    await held.execute(text("SELECT 1"))
    started = asyncio.get_running_loop().time()
    await dispose_engine(engine, grace=0.2)
    assert asyncio.get_running_loop().time() - started < 2
    await held.invalidate()  # closed here: returned now, it would be left open in the old pool
    await held.close()


async def test_an_engine_without_a_pool_disposes(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", pool=False)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    await dispose_engine(engine)


async def test_a_connection_taken_while_stopping_is_closed_when_returned(tmp_path: Path) -> None:
    """A background task that checks a connection out while `dispose` runs (it awaits each close)
    gets one of the dropped pool; one that does after it, of the pool put in place, which nothing
    disposes. Given back, either is closed, not kept open in a pool nobody closes."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    async with engine.connect() as conn:  # pooled: `dispose` awaits its close
        await conn.execute(text("SELECT 1"))
    drivers: list[Any] = []

    async def read() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            drivers.append((await conn.get_raw_connection()).driver_connection)

    async def read_soon() -> None:
        await asyncio.sleep(0)  # runs while `dispose` closes the pooled connection
        await read()

    during = asyncio.create_task(read_soon())
    await dispose_engine(engine)
    await during
    await read()  # after the stop
    assert len(drivers) == 2
    alive = []
    for driver in drivers:
        thread = driver._thread
        await asyncio.to_thread(thread.join, 5)
        if thread.is_alive() or driver._connection is not None:
            alive.append(driver)
            driver.stop()  # a live thread would keep the test process from exiting
    assert alive == []
