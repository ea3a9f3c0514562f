"""Writes the database refuses, answered for what they are. Every refused record write used to be
409 `duplicate_value`: also an insert into a collection deleted meanwhile (with its app, seen by
another node's one-second cache; or by itself, under a published version that still writes it),
and a NOT NULL violation (a bug). A unique index's refusal now names the field, as the check
before it does; a collection or app gone is a 404; anything else stays a 500."""

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from apiforge.core.integrity import violation
from apiforge.datasets import service as dataset_service
from apiforge.datasets import store as record_store
from apiforge.keys.service import SubscriptionService
from apiforge.plans.meter import reserve_stock
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

FIELDS: list[dict[str, Any]] = [
    {"name": "text", "type": "string", "required": True},
    {"name": "slug", "type": "string", "unique": True},
    {"name": "code", "type": "string"},
]
NOTE = {"text": {"expr": "args.text"}, "slug": {"expr": "args.slug"}, "code": {"expr": "args.code"}}
PARAMS = [
    {"name": name, "type": "string", "required": name == "text", "max": 64}
    for name in ("text", "slug", "code")
]
APIS: dict[str, dict[str, Any]] = {
    "addNote": {"id": "note", "type": "insert", "collection": "notes", "data": NOTE},
    "putNote": {"id": "put", "type": "upsert", "collection": "notes", "on": "slug", "data": NOTE},
}
DUPLICATE_SLUG = [{"field": "slug", "message": "already exists"}]
DUPLICATE_CODE = [{"field": "code", "message": "already exists"}]


async def _notes_app(client: AsyncClient, owner: User) -> tuple[str, str, str]:
    """(app id, dataset id, app key secret): `notes` with `addNote` and `putNote`, published."""
    app_id = await new_app(client, owner.headers, "Notes")
    body = {"appId": app_id, "name": "notes", "fields": FIELDS}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))[
        "id"
    ]
    for api, step in APIS.items():
        await new_api(client, owner.headers, app_id, api, params=PARAMS, steps=[step], price=100)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
    )
    data_of(published)
    _, secret = await app_key(client, owner, app_id)
    return app_id, dataset_id, secret


async def _note(client: AsyncClient, secret: str, app_id: str, api: str, **args: str) -> Response:
    return await call(client, secret, app_id, api, {"text": "hello", "code": "-", **args})


def _gone(response: Response, step_id: str) -> None:
    """The collection-gone answer: a 404 naming the step, never a duplicate."""
    data = assert_error(response, 404, "dataset_not_found")
    assert data == {"error": "dataset_not_found", "stepId": step_id}, data
    assert response.json()["message"] == "Dataset 'notes' no longer exists"


# --- the collection is gone -----------------------------------------------------------------


async def test_writing_a_dataset_deleted_under_a_published_version_is_404(
    client: AsyncClient,
) -> None:
    """The published version keeps the collection it was compiled with: deleting the dataset
    left its inserts and upserts answering 409 `duplicate_value` for a value nobody holds."""
    owner = await register(client)
    app_id, dataset_id, secret = await _notes_app(client, owner)
    data_of(await _note(client, secret, app_id, "addNote", slug="a"))
    deleted = await client.delete(f"/api/v1/datasets/{dataset_id}", headers=owner.headers)
    data_of(deleted)
    _gone(await _note(client, secret, app_id, "addNote", slug="b"), "note")
    _gone(await _note(client, secret, app_id, "putNote", slug="b"), "put")


@pytest.fixture
def frozen_caches(app: FastAPI) -> None:
    """This node never re-reads a key, subscription or resolved app: what another node deletes
    stays cached here, as it does for up to a second in production."""
    keys = app.state.keys
    caches = (keys._by_hash, keys._subscriptions, app.state.engine_state.loader._targets)
    for cache in caches:
        cache.clock = lambda: 0.0


async def test_a_call_on_an_app_another_node_just_deleted_is_404_not_duplicate(
    app: FastAPI, client: AsyncClient, frozen_caches: None
) -> None:
    """The report: the app is deleted on another node (cascading to its collections) while this
    node still resolves it; the insert's foreign-key refusal read as a unique violation."""
    owner = await register(client)
    app_id, _, secret = await _notes_app(client, owner)
    data_of(await _note(client, secret, app_id, "addNote", slug="a"))  # caches warm
    async with app.state.engine.begin() as conn:  # "another node": no cache of ours forgets it
        await conn.execute(text("DELETE FROM apps WHERE id = :id"), {"id": app_id})
    _gone(await _note(client, secret, app_id, "addNote", slug="b"), "note")
    _gone(await _note(client, secret, app_id, "putNote", slug="b"), "put")


async def test_a_record_posted_to_a_dataset_deleted_meanwhile_is_404(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records API checks the dataset, then inserts: a delete committed in between (a real
    race on PostgreSQL) was 409 `duplicate_value`; it is the 404 the check would have given."""
    owner = await register(client)
    _, dataset_id, _ = await _notes_app(client, owner)

    async def deleted_first(connection: Any, partition: str, **sizes: Any) -> None:
        await connection.execute(text("DELETE FROM collections WHERE id = :id"), {"id": dataset_id})
        await reserve_stock(connection, partition, **sizes)

    monkeypatch.setattr(record_store, "reserve_stock", deleted_first)
    response = await client.post(
        f"/api/v1/datasets/{dataset_id}/records", json={"text": "x"}, headers=owner.headers
    )
    assert_error(response, 404, "dataset_not_found")
    monkeypatch.undo()
    data_of(await client.get(f"/api/v1/datasets/{dataset_id}", headers=owner.headers))


async def test_a_dataset_created_for_an_app_deleted_meanwhile_is_404_not_name_taken(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a dataset checks the app, then inserts: an app deleted in between answered 409
    `dataset_name_taken` for a name no dataset has."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Gone")
    free = dataset_service.CollectionService._ensure_name_free

    async def app_deleted_meanwhile(self: Any, app: str, name: str, own: str | None) -> None:
        await free(self, app, name, own)
        await self.session.execute(text("DELETE FROM apps WHERE id = :id"), {"id": app})

    monkeypatch.setattr(
        dataset_service.CollectionService, "_ensure_name_free", app_deleted_meanwhile
    )
    body = {"appId": app_id, "name": "notes", "fields": FIELDS}
    response = await client.post("/api/v1/datasets", json=body, headers=owner.headers)
    assert_error(response, 404, "app_not_found")


async def test_enabling_an_app_deleted_meanwhile_is_404_not_already_enabled(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enabling reads the app, then inserts the subscription: an app deleted in between (a race
    on PostgreSQL, where the read takes no lock) answered 409 `already_subscribed`."""
    owner, consumer = await register(client), await register(client)
    app_id = await new_app(client, owner.headers, "Public", visibility="public")
    found = SubscriptionService._subscribable_app

    async def deleted_meanwhile(self: Any, workspace_id: str, app: str) -> Any:
        row = await found(self, workspace_id, app)
        await self.session.execute(text("DELETE FROM apps WHERE id = :id"), {"id": app})
        return row

    monkeypatch.setattr(SubscriptionService, "_subscribable_app", deleted_meanwhile)
    response = await client.post(
        "/api/v1/subscriptions", json={"appId": app_id}, headers=consumer.headers
    )
    assert_error(response, 404, "app_not_found")


# --- unique values ----------------------------------------------------------------------------


async def test_a_field_made_unique_after_publishing_names_the_field_when_taken(
    client: AsyncClient,
) -> None:
    """The published version does not know `code` is unique now, so only the index refuses its
    duplicate: that 409 named no field, unlike the same refusal from the check."""
    owner = await register(client)
    app_id, dataset_id, secret = await _notes_app(client, owner)
    data_of(await _note(client, secret, app_id, "addNote", slug="a", code="c1"))
    url = f"/api/v1/datasets/{dataset_id}"
    current = data_of(await client.get(url, headers=owner.headers))
    fields = [{**f, "unique": True} if f["name"] == "code" else f for f in FIELDS]
    body = {"name": "notes", "fields": fields}
    headers = {**owner.headers, "If-Match": f'"{current["version"]}"'}
    data_of(await client.put(url, json=body, headers=headers))
    refused = await _note(client, secret, app_id, "addNote", slug="b", code="c1")
    data = assert_error(refused, 409, "duplicate_value")
    assert data == {"error": "duplicate_value", "errors": DUPLICATE_CODE, "stepId": "note"}
    refused = await _note(client, secret, app_id, "putNote", slug="b", code="c1")
    assert assert_error(refused, 409, "duplicate_value")["errors"] == DUPLICATE_CODE


@pytest.fixture
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write skips the store's uniqueness check, as one racing a concurrent commit of the
    same value does in effect: only the unique index refuses it."""

    async def skipped(*_args: Any, **_kwargs: Any) -> None:
        return None

    monkeypatch.setattr(record_store.RecordStore, "_ensure_unique", skipped)


async def test_a_unique_value_taken_after_the_check_names_the_field(
    client: AsyncClient, unchecked: None
) -> None:
    owner = await register(client)
    app_id, dataset_id, secret = await _notes_app(client, owner)
    data_of(await _note(client, secret, app_id, "addNote", slug="a"))
    refused = await _note(client, secret, app_id, "addNote", slug="a")
    data = assert_error(refused, 409, "duplicate_value")
    assert data == {"error": "duplicate_value", "errors": DUPLICATE_SLUG, "stepId": "note"}
    url = f"/api/v1/datasets/{dataset_id}/records"
    posted = await client.post(url, json={"text": "x", "slug": "a"}, headers=owner.headers)
    assert assert_error(posted, 409, "duplicate_value")["errors"] == DUPLICATE_SLUG
    record_id = data_of(await client.post(url, json={"text": "y"}, headers=owner.headers))["id"]
    patched = await client.patch(f"{url}/{record_id}", json={"slug": "a"}, headers=owner.headers)
    assert assert_error(patched, 409, "duplicate_value")["errors"] == DUPLICATE_SLUG
    # the upsert of a taken key still updates the record that holds it
    updated = data_of(await _note(client, secret, app_id, "putNote", slug="a", code="z"))
    assert updated["put"]["code"] == "z"


# --- bugs stay bugs ---------------------------------------------------------------------------


async def test_a_not_null_violation_is_a_500_never_a_duplicate(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row the code built wrong is the server's fault: told apart from a taken value."""
    owner = await register(client)
    app_id, dataset_id, secret = await _notes_app(client, owner)
    monkeypatch.setattr(record_store, "new_id", lambda: None)
    assert_error(await _note(client, secret, app_id, "addNote", slug="a"), 500, "internal_error")
    url = f"/api/v1/datasets/{dataset_id}/records"
    posted = await client.post(url, json={"text": "x"}, headers=owner.headers)
    assert_error(posted, 500, "internal_error")


# --- reading the driver's codes ---------------------------------------------------------------

SETUP = (
    "CREATE TEMPORARY TABLE t_parent (id VARCHAR(8) PRIMARY KEY)",
    "CREATE TEMPORARY TABLE t_child (id VARCHAR(8) PRIMARY KEY, "
    "parent VARCHAR(8) REFERENCES t_parent (id), n INTEGER NOT NULL CONSTRAINT ck_n CHECK (n > 0))",
    "CREATE UNIQUE INDEX ux_t_child_n ON t_child ((n + 0))",  # an expression, as records' are
    "INSERT INTO t_parent (id) VALUES ('p')",
    "INSERT INTO t_child (id, parent, n) VALUES ('a', 'p', 1)",
)
VIOLATIONS: list[tuple[str, str, Callable[[str | None], bool]]] = [
    (
        "INSERT INTO t_child (id, parent, n) VALUES ('b', 'p', 1)",
        "unique",
        lambda c: c == "ux_t_child_n",
    ),
    ("INSERT INTO t_child (id, parent, n) VALUES ('a', 'p', 2)", "unique", lambda _: True),
    ("INSERT INTO t_child (id, parent, n) VALUES ('b', 'gone', 2)", "foreign_key", lambda _: True),
    ("INSERT INTO t_child (id, parent, n) VALUES ('b', 'p', NULL)", "not_null", lambda _: True),
    ("INSERT INTO t_child (id, parent, n) VALUES ('b', 'p', 0)", "check", lambda _: True),
]


@pytest.mark.parametrize(("statement", "kind", "named"), VIOLATIONS)
async def test_violations_are_told_apart_on_this_backend(
    app: FastAPI, statement: str, kind: str, named: Callable[[str | None], bool]
) -> None:
    async with app.state.engine.connect() as conn:
        for setup in SETUP:
            await conn.execute(text(setup))
        with pytest.raises(IntegrityError) as refused:
            await conn.execute(text(statement))
        await conn.rollback()
    found = violation(refused.value)
    assert found.kind == kind, refused.value
    assert named(found.constraint), found
