"""A template database whose default collation is ICU `en-US`, for tests that show an answer does
not depend on PostgreSQL's locale (the suite's own databases are `C.UTF-8`)."""

import asyncio
from collections.abc import Iterator

from apiforge.core.settings import Settings
from apiforge.migrate import upgrade
from apiforge.tools.ids import new_id
from tests.conftest import DATABASE_URL, _pg_execute


def icu_template(template_database: str) -> Iterator[str]:
    """For a module's `template_database` fixture: on PostgreSQL a migrated template in ICU
    `en-US` (the tests' databases are cloned from it), dropped afterwards; SQLite keeps the
    session's."""
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
