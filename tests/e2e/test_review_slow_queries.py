"""A call whose query outlives its time budget answers 422 `limit_exceeded` (`time`) on time,
and the query stops with it: on SQLite neither the shared reader's thread nor a pooled
connection's keeps running it (the next call is served), on PostgreSQL the server's backend is
not left working on it."""

import dataclasses
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.lazydb import SqliteReader
from tests.conftest import DATABASE_URL
from tests.e2e._apps import new_api
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._records import (
    RECORDS,
    SLOW_LITERAL,
    count_folds,
    fill_notes,
    no_query_left,
    own_database,
)
from tests.e2e._workspaces import data_of
from tests.factories import register

BUDGET = 0.25
# SLOW_LITERAL through expressions (the call's own connection runs it, not the shared reader).
SLOW_EXPRESSION = {
    "_or": [{"text": {"_icontains": {"expr": f"args.q + '{i}'"}}} for i in range(64)]
}
APIS: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "slowLiteral": ([], {"filter": SLOW_LITERAL}),
    "slowExpression": ([{"name": "q", "type": "string"}], {"filter": SLOW_EXPRESSION}),
}


async def _big_notes(client: AsyncClient, app: FastAPI) -> tuple[str, str]:
    """(app id, key) of a published notes app whose one partition holds `RECORDS` notes."""
    owner = await register(client)
    app_id = await notes_app(client, owner, publish=False)
    for api, (params, step) in APIS.items():
        steps = [{"id": "notes", "type": "getMany", "collection": "notes", **step}]
        await new_api(client, owner.headers, app_id, api, price=100, params=params, steps=steps)
    body = {"bump": "minor", "notes": "slow"}
    data_of(await client.post(f"/api/v1/apps/{app_id}/versions", json=body, headers=owner.headers))
    _, secret = await app_key(client, owner, app_id)
    data_of(await call(client, secret, app_id, "addNote", {"text": "first"}))
    await fill_notes(app)
    return app_id, secret


@contextmanager
def _small_budget(app: FastAPI) -> Iterator[None]:
    """Calls made meanwhile get `BUDGET` seconds (the runtime's own budget); the calls around
    them keep the full one, however slow the machine."""
    engine = app.state.gateway_state.engine
    saved = engine.limits
    engine.limits = dataclasses.replace(saved, time_budget_seconds=BUDGET)
    try:
        yield
    finally:
        engine.limits = saved


def _out_of_time(response: Any) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["data"] == {"error": "limit_exceeded", "limit": "time", "max": BUDGET}


async def _served(client: AsyncClient, secret: str, app_id: str) -> None:
    """A cheap call answers, with the records (the connection that was interrupted serves)."""
    response = await call(client, secret, app_id, "listNotes")
    assert response.status_code == 200, response.text
    assert len(data_of(response)["notes"]["list"]) == 50


async def test_shared_reader_stops_a_query_whose_call_ran_out_of_time(
    client: AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader: SqliteReader | None = app.state.gateway_state.reader
    if reader is None:
        pytest.skip("the shared reader is SQLite's")
    app_id, secret = await _big_notes(client, app)
    outcomes: list[str] = []
    run = reader._call

    def recorded(*args: Any) -> Any:
        try:
            result = run(*args)
        except sqlite3.OperationalError as exc:
            outcomes.append(str(exc))
            raise
        outcomes.append("finished")
        return result

    monkeypatch.setattr(reader, "_call", recorded)
    with _small_budget(app):
        _out_of_time(await call(client, secret, app_id, "slowLiteral"))
    # The reader's thread runs its work in order: this call's read comes after the slow one.
    await _served(client, secret, app_id)
    assert outcomes[:2] == ["interrupted", "finished"]


async def test_a_pooled_connections_query_stops_when_its_call_runs_out_of_time(
    client: AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not app.state.settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL: see the next test")
    app_id, secret = await _big_notes(client, app)
    folds = await count_folds(monkeypatch, app.state.gateway_state.db)
    with _small_budget(app):
        _out_of_time(await call(client, secret, app_id, "slowExpression", {"q": "zzz"}))
    await _served(client, secret, app_id)
    assert 0 < folds.count < 64 * RECORDS  # the scan stopped part way
    # The pool's connections serve: a write checks one out.
    assert data_of(await call(client, secret, app_id, "addNote", {"text": "after"}))["note"]


@pytest.mark.parametrize(("api", "args"), [("slowLiteral", {}), ("slowExpression", {"q": "zzz"})])
async def test_postgresql_cancels_the_query_of_a_call_that_ran_out_of_time(
    client: AsyncClient, app: FastAPI, api: str, args: dict[str, str]
) -> None:
    if not DATABASE_URL:
        pytest.skip("PostgreSQL's server-side cancel")
    database = own_database(app)
    app_id, secret = await _big_notes(client, app)
    with _small_budget(app):
        _out_of_time(await call(client, secret, app_id, api, args))
    await no_query_left(database)
    await _served(client, secret, app_id)
