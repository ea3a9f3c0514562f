"""Fixtures shared by the datasets and data-step tests: two workspaces (A builds an app, B is
another tenant), collections of A's app, a connection in a transaction and a record store.

Test modules import the fixtures they use (`from tests.unit.datasets._support import ...`)."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.builder.models import App
from apiforge.core.db import unit_of_work
from apiforge.datasets.crypto import FieldCipher
from apiforge.datasets.models import Collection
from apiforge.datasets.schema import CollectionSchema
from apiforge.datasets.sql import sync_indexes
from apiforge.datasets.store import RecordStore
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id
from tests.factories import register

POSTS_FIELDS: list[dict[str, Any]] = [
    {"name": "title", "type": "string", "required": True},
    {"name": "body", "type": "string"},
    {"name": "published", "type": "boolean", "indexed": True, "default": False},
    {"name": "slug", "type": "string", "unique": True},
    {"name": "views", "type": "integer", "indexed": True},
    {"name": "rating", "type": "number"},
    {"name": "tags", "type": "array"},
    {"name": "meta", "type": "object"},
    {"name": "publishedAt", "type": "datetime"},
    {"name": "secret", "type": "string", "encrypted": True},
]


@dataclass
class Tenants:
    """Workspace A builds the app; B is another tenant. `new_collection` defines collections."""

    app: FastAPI
    a: str
    b: str
    app_id: str
    cipher: FieldCipher

    async def new_collection(
        self,
        connection: AsyncConnection,
        name: str = "posts",
        fields: list[dict[str, Any]] | None = None,
    ) -> CollectionSchema:
        """Define a collection of the app on `connection` (in the test's transaction)."""
        collection_id = new_id()
        fields = POSTS_FIELDS if fields is None else fields
        now = utcnow()
        await connection.execute(
            insert(Collection).values(
                id=collection_id,
                app_id=self.app_id,
                name=name,
                description="",
                fields=fields,
                created_at=now,
                updated_at=now,
            )
        )
        schema = CollectionSchema.build(
            id=collection_id, app_id=self.app_id, name=name, fields=fields, version=1
        )
        await sync_indexes(connection, schema)
        return schema


@pytest.fixture
async def tenants(app: FastAPI, client: AsyncClient) -> Tenants:
    alice = await register(client)
    bob = await register(client)
    app_id = await app_row(app, alice.workspace_id, "Blog")
    cipher = FieldCipher(app.state.settings.signing_key)
    return Tenants(app, alice.workspace_id, bob.workspace_id, app_id, cipher)


async def app_row(app: FastAPI, workspace_id: str, name: str) -> str:
    """An app of `workspace_id`, written straight to its table; its id."""
    async with unit_of_work(app.state.sessionmaker) as session:
        row = App(workspace_id=workspace_id, name=name, signing_secret="s" * 40)
        session.add(row)
        await session.flush()
        return row.id


@pytest.fixture
async def connection(app: FastAPI) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that commits at the end of the test (like a request)."""
    async with app.state.engine.begin() as conn:
        yield conn


@pytest.fixture
def store(connection: AsyncConnection, tenants: Tenants) -> RecordStore:
    return RecordStore(connection, tenants.cipher)
