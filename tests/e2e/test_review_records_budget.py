"""The records API's reads run within a gateway call's time budget: a filter that outlives it
answers 422 `limit_exceeded` (`time`), and its query stops with it — interrupted on SQLite,
cancelled at the server on PostgreSQL — so the pooled connection it held serves the next
requests (another tenant's reads and writes) at once."""

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.datasets.service import RecordService
from tests.e2e._keys import notes_app
from tests.e2e._records import (
    RECORDS,
    SLOW_LITERAL,
    count_folds,
    fill_notes,
    no_query_left,
    own_database,
)
from tests.e2e._workspaces import data_of
from tests.factories import User, register

BUDGET = 0.25  # far less than the filter takes over `RECORDS` notes on any machine
SLOW = orjson.dumps(SLOW_LITERAL).decode()


async def _notes(client: AsyncClient, user: User) -> str:
    """The id of `user`'s `notes` collection, holding one note."""
    app_id = await notes_app(client, user, publish=False)
    listed = await client.get("/api/v1/datasets", params={"appId": app_id}, headers=user.headers)
    dataset_id: str = data_of(listed)["list"][0]["id"]
    await _add(client, user, dataset_id)
    return dataset_id


async def _add(client: AsyncClient, user: User, dataset_id: str) -> None:
    body = {"text": "a note"}
    url = f"/api/v1/datasets/{dataset_id}/records"
    assert data_of(await client.post(url, json=body, headers=user.headers))["id"]


async def _list(client: AsyncClient, user: User, dataset_id: str, **params: str) -> Response:
    url = f"/api/v1/datasets/{dataset_id}/records"
    return await client.get(url, params=params, headers=user.headers)


async def _others_served(client: AsyncClient, other: User, dataset_id: str) -> None:
    """Another tenant reads (a filtered count included) and writes: the pool's connections serve."""
    await _add(client, other, dataset_id)
    page = data_of(await _list(client, other, dataset_id, filter='{"text": {"_icontains": "n"}}'))
    assert page["totalCount"] == 2


async def _out_of_time(client: AsyncClient, owner: User, dataset_id: str) -> None:
    response = await _list(client, owner, dataset_id, filter=SLOW)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["data"] == {"error": "limit_exceeded", "limit": "time", "max": BUDGET}
    assert body["message"] == f"The read ran longer than {BUDGET:g} s"


async def test_a_records_read_stops_when_it_runs_out_of_time_on_sqlite(
    client: AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not app.state.settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL: see the next test")
    owner, other = await register(client), await register(client)
    dataset_id = await _notes(client, owner)
    await fill_notes(app)
    theirs = await _notes(client, other)
    folds = await count_folds(monkeypatch, app.state.engine)
    monkeypatch.setattr(RecordService, "time_budget", BUDGET, raising=False)
    await _out_of_time(client, owner, dataset_id)
    scanned = folds.count
    assert 0 < scanned < 64 * RECORDS  # the scan stopped part way
    await _others_served(client, other, theirs)
    assert folds.count - scanned < 100  # and never resumed: only the other tenant's few notes
    page = data_of(await _list(client, owner, dataset_id, pageSize="5"))  # the owner's too
    assert page["totalCount"] == RECORDS + 1


async def test_postgresql_cancels_a_records_read_that_ran_out_of_time(
    client: AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    if app.state.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's server-side cancel")
    database = own_database(app)
    owner, other = await register(client), await register(client)
    dataset_id = await _notes(client, owner)
    await fill_notes(app)
    theirs = await _notes(client, other)
    monkeypatch.setattr(RecordService, "time_budget", BUDGET, raising=False)
    await _out_of_time(client, owner, dataset_id)
    await no_query_left(database)
    await _others_served(client, other, theirs)
