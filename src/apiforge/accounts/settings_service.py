"""Per-account settings: one free-form document plus key/value settings grouped by app id.

Values are opaque JSON chosen by the client, so they are checked only for what would hurt the
platform: size, nesting depth, and values the databases or JSON encoders cannot hold.
"""

import math
from typing import Any

import orjson
from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.accounts.models import Account, AppSetting, UserSetting
from apiforge.accounts.settings_schemas import AppSettingItem
from apiforge.core.errors import (
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationError,
)
from apiforge.core.settings import Settings
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by
from apiforge.tools.clock import utcnow

MAX_DEPTH = 10
"""Containers nested inside each other; `{"a": [1]}` has depth 2."""

MAX_APP_SETTINGS = 1000
"""App settings one account may hold across all apps; with `max_setting_bytes` this bounds the
storage one account can take. A plan quota may replace it once apps exist."""

_INT64 = (-(2**63), 2**63 - 1)

SORTABLE: dict[str, ColumnElement[Any]] = {
    "key": AppSetting.key.expression,
    "updatedTime": AppSetting.updated_at.expression,
}


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(
        "Invalid setting value",
        reason="invalid_setting_value",
        errors=[{"field": field, "message": message}],
    )


def _check_text(text: str, field: str) -> None:
    # PostgreSQL's jsonb refuses U+0000, and a lone surrogate cannot be encoded as UTF-8.
    if "\x00" in text:
        raise _invalid(field, "strings must not contain the NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _invalid(field, "strings must be valid Unicode (no lone surrogates)") from exc


def check_json_value(value: Any, *, field: str, max_bytes: int) -> None:
    """Refuse a value nested deeper than `MAX_DEPTH`, holding NaN/Infinity, integers outside
    64 bits, NUL or lone surrogates (400 `invalid_setting_value`), or larger than `max_bytes`
    once serialised compactly (413 `payload_too_large`)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth + 1 > MAX_DEPTH:
                raise _invalid(field, f"must not nest more than {MAX_DEPTH} levels deep")
            if isinstance(node, dict):
                for key, item in node.items():
                    _check_text(key, field)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            _check_text(node, field)
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not _INT64[0] <= node <= _INT64[1]:
                raise _invalid(field, "integers must fit in 64 bits")
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise _invalid(field, "numbers must be finite")
        else:  # only reachable from Python callers; JSON has no other types
            raise _invalid(field, f"unsupported type {type(node).__name__}")
    size = len(orjson.dumps(value))
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"Setting is {size} bytes; the limit is {max_bytes}",
            details={"maxBytes": max_bytes},
        )


class UserSettingsService:
    """Every method is scoped to one account id: no query here reads another account's rows."""

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.max_bytes = settings.max_setting_bytes

    async def get_document(self, account_id: str) -> dict[str, Any]:
        """The whole settings document; `{}` when none was ever saved."""
        data = await self.session.scalar(
            select(UserSetting.data).where(UserSetting.account_id == account_id)
        )
        return data if isinstance(data, dict) else {}

    async def replace_document(self, account_id: str, data: dict[str, Any]) -> dict[str, Any]:
        check_json_value(data, field="body", max_bytes=self.max_bytes)
        await self._upsert(
            UserSetting, {"account_id": account_id, "data": data}, ["account_id"], ["data"]
        )
        return await self.get_document(account_id)

    async def list_app_settings(
        self, account_id: str, app_id: str, params: PageParams
    ) -> Page[AppSettingItem]:
        stmt = select(AppSetting).where(
            AppSetting.account_id == account_id, AppSetting.app_id == app_id
        )
        # Keys are unique per app: rows of one `updatedTime` keep one order from page to page.
        tiebreak = AppSetting.key.expression
        stmt = order_by(stmt, params, SORTABLE, "key", tiebreak=tiebreak, default_order="asc")
        rows, total = await fetch_page(self.session, stmt, params)
        return params.page([AppSettingItem.model_validate(row) for row in rows], total)

    async def get_app_setting(self, account_id: str, app_id: str, key: str) -> AppSetting:
        row = await self.session.get(AppSetting, (account_id, app_id, key))
        if row is None:
            raise NotFoundError("Setting not found", reason="setting_not_found")
        return row

    async def put_app_setting(
        self, account_id: str, app_id: str, key: str, value: Any
    ) -> AppSetting:
        """Create or replace one key. A new key beyond `MAX_APP_SETTINGS` is 403
        `settings_limit_reached`; replacing an existing key is always allowed."""
        check_json_value(value, field="value", max_bytes=self.max_bytes)
        await self._lock_account(account_id)
        exists = await self.session.get(AppSetting, (account_id, app_id, key))
        if exists is None:
            held = await self.session.scalar(
                select(func.count())
                .select_from(AppSetting)
                .where(AppSetting.account_id == account_id)
            )
            if (held or 0) >= MAX_APP_SETTINGS:
                raise ForbiddenError(
                    f"An account may hold at most {MAX_APP_SETTINGS} app settings",
                    reason="settings_limit_reached",
                )
        await self._upsert(
            AppSetting,
            {"account_id": account_id, "app_id": app_id, "key": key, "value": value},
            ["account_id", "app_id", "key"],
            ["value"],
        )
        row = await self.session.get(AppSetting, (account_id, app_id, key), populate_existing=True)
        assert row is not None  # just written in this transaction
        return row

    async def delete_app_setting(self, account_id: str, app_id: str, key: str) -> None:
        result = await self.session.execute(
            delete(AppSetting)
            .where(
                AppSetting.account_id == account_id,
                AppSetting.app_id == app_id,
                AppSetting.key == key,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise NotFoundError("Setting not found", reason="setting_not_found")

    async def _lock_account(self, account_id: str) -> None:
        """Serialise the account's app-setting writes until commit, so concurrent new keys cannot
        all pass the same count: a no-op UPDATE of the account row, which locks the row on
        PostgreSQL and takes the database's write lock on SQLite (as `WorkspaceService` does)."""
        await self.session.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(updated_at=Account.updated_at)  # explicit: keeps `onupdate` from firing
            .execution_options(synchronize_session=False)
        )

    async def _upsert(
        self,
        model: type[UserSetting] | type[AppSetting],
        values: dict[str, Any],
        keys: list[str],
        replace: list[str],
    ) -> None:
        """INSERT … ON CONFLICT DO UPDATE: two concurrent first writes of one key both succeed
        (last wins) instead of one failing on the primary key."""
        now = utcnow()
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(model).values(**values, updated_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=keys,
            set_={**{name: stmt.excluded[name] for name in replace}, "updated_at": now},
        )
        await self.session.execute(stmt)
