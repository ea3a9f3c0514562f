"""Management lists sorted by a text field order the same on SQLite and on PostgreSQL, whatever
the PostgreSQL database's collation: here (on PostgreSQL) a database whose default collation is
ICU English, which sorts "apple" before "Zed", where SQLite answers in code point order."""

from collections.abc import Iterator

import pytest
from httpx import AsyncClient

from tests._icu import icu_template
from tests.e2e._apps import new_app
from tests.e2e._workspaces import data_of
from tests.factories import register

NAMES = ["Zed", "apple", "Éclair", "_x", "Bob"]


@pytest.fixture(scope="module")
def template_database(template_database: str) -> Iterator[str]:
    """On PostgreSQL, a migrated template in ICU `en-US` (`tests/_icu.py`)."""
    yield from icu_template(template_database)


async def test_lists_sort_text_fields_in_code_point_order(client: AsyncClient) -> None:
    user = await register(client)
    for name in NAMES:
        await new_app(client, user.headers, name)
    for order in ("asc", "desc"):
        page = data_of(
            await client.get(f"/api/v1/apps?sort=name&order={order}", headers=user.headers)
        )
        assert [a["name"] for a in page["list"]] == sorted(NAMES, reverse=order == "desc")
