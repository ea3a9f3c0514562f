"""`pageNo`/`pageSize` paging and `sort`/`order` against a whitelist (spec 003 §2.3.3, §2.6.1)."""

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request
from sqlalchemy import Select, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from apiforge.core.db import TEXT_COLLATION
from apiforge.core.errors import ValidationError
from apiforge.http.schemas import ApiModel

T = TypeVar("T")
MAX_PAGE_NO = 1_000_000

SortKey = ColumnElement[Any] | tuple[ColumnElement[Any], ...]
"""What a `sort` field orders by: one expression, or several in turn (a version's X, Y, Z)."""


class Page(ApiModel, Generic[T]):
    total_count: int
    total_page: int
    page_no: int
    page_size: int
    list: Sequence[T]


@dataclass(frozen=True, slots=True)
class PageParams:
    page_no: int
    page_size: int
    sort: str | None
    order: str | None

    @property
    def offset(self) -> int:
        return (self.page_no - 1) * self.page_size

    def page(self, items: Sequence[T], total: int) -> Page[T]:
        return Page[T](
            total_count=total,
            total_page=math.ceil(total / self.page_size) if total else 0,
            page_no=self.page_no,
            page_size=self.page_size,
            list=items,
        )


def _page_params(
    request: Request,
    page_no: Annotated[str | None, Query(alias="pageNo")] = None,
    page_size: Annotated[str | None, Query(alias="pageSize")] = None,
    sort: Annotated[str | None, Query(max_length=64)] = None,
    order: Annotated[str | None, Query(max_length=4)] = None,
) -> PageParams:
    settings = request.app.state.settings
    errors: list[dict[str, str]] = []
    number = _int_param("pageNo", page_no, 1, 1, MAX_PAGE_NO, errors)
    size = _int_param(
        "pageSize", page_size, settings.page_size_default, 1, settings.page_size_max, errors
    )
    direction = order.lower() if order else None
    if direction not in (None, "asc", "desc"):
        errors.append({"field": "order", "message": "must be asc or desc"})
    if errors:
        raise ValidationError(errors=errors)
    # An empty value is an absent one, as for `pageNo=`, `pageSize=` and `order=` (a form that
    # submits an unset select): every list then sorts by its default, in its default order.
    return PageParams(page_no=number, page_size=size, sort=sort or None, order=direction)


def _int_param(
    name: str, raw: str | None, default: int, low: int, high: int, errors: list[dict[str, str]]
) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:  # `²` is a digit, no int
        errors.append({"field": name, "message": "must be a positive integer"})
        return default
    value = int(raw)
    if not low <= value <= high:
        errors.append({"field": name, "message": f"must be between {low} and {high}"})
    return value


PageDep = Annotated[PageParams, Depends(_page_params)]


class _CodePointOrder(ColumnElement[Any]):
    """A text sort key in code point order on every backend ("Z" before "a", as SQLite's BINARY
    sorts): PostgreSQL would otherwise sort by the database's collation (`en_US` puts "a" first),
    so there it renders `key COLLATE "C"`, as record text fields do (datasets/sql.py)."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, key: ColumnElement[Any]) -> None:
        self.column = key
        self.type = key.type


@compiles(_CodePointOrder)
def _code_point_order(element: _CodePointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(_CodePointOrder, "postgresql")
def _code_point_order_postgresql(element: _CodePointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.collate(TEXT_COLLATION), **kw)


def _sortable(column: ColumnElement[Any]) -> ColumnElement[Any]:
    return _CodePointOrder(column) if isinstance(column.type, String) else column


def sort_field(params: PageParams, allowed: Collection[str], default: str) -> str:
    """The `sort` field asked for (or `default`); one outside `allowed` is a 400 naming the
    accepted ones. A list that can answer without a query (nothing to list yet) checks it
    first, so the same request never gets a 200 today and a 400 tomorrow."""
    field = params.sort or default
    if field not in allowed:
        raise ValidationError(
            errors=[{"field": "sort", "message": f"must be one of: {', '.join(sorted(allowed))}"}],
            reason="invalid_sort_field",
        )
    return field


def order_by(
    stmt: Select[Any],
    params: PageParams,
    allowed: Mapping[str, SortKey],
    default: str,
    tiebreak: ColumnElement[Any] | None = None,
    default_order: str = "desc",
) -> Select[Any]:
    """Apply `sort`/`order`; a field outside `allowed` is a 400 naming the accepted ones. Text
    keys sort in code point order on every backend (`_CodePointOrder`)."""
    field = sort_field(params, allowed, default)
    ascending = (params.order or default_order) == "asc"
    key = allowed[field]
    for column in map(_sortable, key if isinstance(key, tuple) else (key,)):
        stmt = stmt.order_by(column.asc() if ascending else column.desc())
    if tiebreak is not None:
        stmt = stmt.order_by(tiebreak.asc() if ascending else tiebreak.desc())
    return stmt


async def fetch_page(
    session: AsyncSession, stmt: Select[Any], params: PageParams
) -> tuple[list[Any], int]:
    """Run the page query and its count; the count ignores ordering."""
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await session.scalars(stmt.limit(params.page_size).offset(params.offset))).all()
    return list(rows), int(total or 0)
