"""Management lists sorted by a text field order the same on SQLite and on PostgreSQL, whatever
the PostgreSQL database's collation: here (on PostgreSQL) a database whose default collation is
ICU English, which sorts "apple" before "Zed", where SQLite answers in code point order."""

import asyncio
from collections.abc import Iterator

import pytest
from httpx import AsyncClient

from apiforge.core.settings import Settings
from apiforge.migrate import upgrade
from apiforge.tools.ids import new_id
from tests.conftest import DATABASE_URL, _pg_execute
from tests.e2e._apps import new_app
from tests.e2e._workspaces import data_of
from tests.factories import register

NAMES = ["Zed", "apple", "Éclair", "_x", "Bob"]


@pytest.fixture(scope="module")
def template_database(template_database: str) -> Iterator[str]:
    """On PostgreSQL, a migrated template whose default collation is ICU `en-US` (the tests'
    databases are cloned from it); SQLite keeps the session's."""
    if not DATABASE_URL:
        yield template_database
        return
    name = f"apiforge_tpl_{new_id()}"
    asyncio.run(
        _pg_execute(
            DATABASE_URL,
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'",
        )
    )
    try:
        upgrade(Settings(database_url=DATABASE_URL.rsplit("/", 1)[0] + "/" + name))
        yield name
    finally:
        asyncio.run(_pg_execute(DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_lists_sort_text_fields_in_code_point_order(client: AsyncClient) -> None:
    user = await register(client)
    for name in NAMES:
        await new_app(client, user.headers, name)
    for order in ("asc", "desc"):
        page = data_of(
            await client.get(f"/api/v1/apps?sort=name&order={order}", headers=user.headers)
        )
        assert [a["name"] for a in page["list"]] == sorted(NAMES, reverse=order == "desc")
