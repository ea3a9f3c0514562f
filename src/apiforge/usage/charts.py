"""Chart payloads of spec 003 §2.9 shared by every usage view: zero-filled time series and pies.

A time-series chart is `{"xAxis": [labels], "series": [{"id", "name", "data": [...]}]}` with one
`data` value per label, 0 where nothing happened (the spec requires the zero fill, so a client
never has to align sparse points). A pie is `{"series": [{"id", "name", "value"}]}`. `color` is
optional in the spec and omitted here: the platform has no colour of its own to give.

Buckets are UTC hours or UTC days. Labels are `YYYY-MM-DD` for days and `YYYY-MM-DDTHH:00:00Z`
for hours; `bucket_label_sql` renders the same label inside SQL so rows can be grouped by the
database (never fetched one per call) and matched to the axis by string.

A range is `[from, to)`: `from` is floored and `to` rounded up to whole buckets, and it may hold
at most `MAX_BUCKETS` buckets (31 days of hours, 366 days of days), so one request can't ask the
database for years of hourly groups.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Depends, Query
from pydantic import Field
from sqlalchemy import func
from sqlalchemy.sql.elements import ColumnElement

from apiforge.core.errors import ValidationError
from apiforge.http.schemas import ApiModel
from apiforge.http.timerange import TIME_HINT, parse_time
from apiforge.tools.clock import utcnow

Granularity = Literal["hour", "day"]
GroupBy = Literal["app", "api"]
ChartKind = Literal["line", "pie"]

STEP: dict[Granularity, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_BUCKETS: dict[Granularity, int] = {"hour": 31 * 24, "day": 366}
# The range shown when the request names no `from`: a day of hours, a month of days.
DEFAULT_SPAN: dict[Granularity, timedelta] = {"hour": timedelta(hours=24), "day": timedelta(30)}
MAX_SERIES = 50
DEFAULT_SERIES = 10
OTHER_ID = "_other"
OTHER_NAME = "Other"

_LABEL_FORMAT: dict[Granularity, str] = {"hour": "%Y-%m-%dT%H:00:00Z", "day": "%Y-%m-%d"}
_PG_LABEL_FORMAT: dict[Granularity, str] = {
    "hour": 'YYYY-MM-DD"T"HH24":00:00Z"',
    "day": "YYYY-MM-DD",
}


def _no_color(value: Any) -> bool:
    return value is None


class ChartSeries(ApiModel):
    """One line (or bar group): `data[i]` belongs to `xAxis[i]`."""

    id: str
    name: str
    data: list[int]
    color: str | None = Field(default=None, exclude_if=_no_color)


class TimeSeriesChart(ApiModel):
    x_axis: list[str]
    series: list[ChartSeries]


class PieSlice(ApiModel):
    id: str
    name: str
    value: int
    color: str | None = Field(default=None, exclude_if=_no_color)


class PieChart(ApiModel):
    series: list[PieSlice]


@dataclass(frozen=True, slots=True)
class ChartRange:
    """`[start, end)` aligned to whole buckets of `granularity` (both UTC)."""

    start: datetime
    end: datetime
    granularity: Granularity

    def buckets(self) -> list[datetime]:
        step = STEP[self.granularity]
        count = (self.end - self.start) // step
        return [self.start + step * index for index in range(count)]

    def labels(self) -> list[str]:
        return [label(bucket, self.granularity) for bucket in self.buckets()]


@dataclass(frozen=True, slots=True)
class ChartQuery:
    """What a usage chart request asks for; built by `ChartQueryDep` from the query string."""

    range: ChartRange
    group_by: GroupBy = "app"
    chart: ChartKind = "line"
    top: int = DEFAULT_SERIES


def floor(moment: datetime, granularity: Granularity) -> datetime:
    """The start of the UTC bucket holding `moment` (naive times are taken as UTC)."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "day" else moment


def ceil(moment: datetime, granularity: Granularity) -> datetime:
    """The first bucket boundary at or after `moment`; OverflowError past year 9999."""
    start = floor(moment, granularity)
    return start if start == moment else start + STEP[granularity]


def label(moment: datetime, granularity: Granularity) -> str:
    """The axis label of the bucket holding `moment`."""
    start = floor(moment, granularity)
    # strftime's %Y leaves years before 1000 unpadded; the database's labels are padded.
    return start.strftime(_LABEL_FORMAT[granularity].replace("%Y", f"{start.year:04d}"))


def bucket_label_sql(
    column: ColumnElement[Any], granularity: Granularity, dialect: str
) -> ColumnElement[str]:
    """SQL rendering `label()` of a UTC datetime column, for `GROUP BY` in the database.

    SQLite stores UTC as naive text that `strftime` reads; PostgreSQL holds `timestamptz`, shifted
    to UTC first so the session's time zone can't move a call into another day."""
    if dialect == "postgresql":
        utc = func.timezone("UTC", column)
        return func.to_char(utc, _PG_LABEL_FORMAT[granularity])
    return func.strftime(_LABEL_FORMAT[granularity], column)


def make_range(
    start: datetime | None,
    end: datetime | None,
    granularity: Granularity,
    now: datetime | None = None,
) -> ChartRange:
    """Align `[start, end)` to buckets, defaulting `end` to the end of the current bucket and
    `start` to `DEFAULT_SPAN` before `end`. 400 when the range is empty or reversed (as written:
    aligned, `from` 10:30 and `to` 10:10 would still show the 10:00 bucket), or holds more than
    `MAX_BUCKETS[granularity]` buckets."""
    if start is not None and end is not None and start >= end:
        raise ValidationError(errors=[{"field": "to", "message": "must be after from"}])
    try:
        last = ceil(end if end is not None else (now or utcnow()), granularity)
    except OverflowError:
        raise ValidationError(
            errors=[{"field": "to", "message": "must be before year 9999"}]
        ) from None
    try:
        first = floor(start, granularity) if start is not None else last - DEFAULT_SPAN[granularity]
    except OverflowError:  # only the default can fall before year 1
        raise ValidationError(
            errors=[{"field": "from", "message": "must be given when to is near year 1"}]
        ) from None
    if first >= last:
        raise ValidationError(errors=[{"field": "to", "message": "must be after from"}])
    limit = MAX_BUCKETS[granularity]
    if (last - first) // STEP[granularity] > limit:
        hint = "; use granularity=day for longer ranges" if granularity == "hour" else ""
        raise ValidationError(
            errors=[
                {
                    "field": "from",
                    "message": f"the range may hold at most {limit} {granularity}s{hint}",
                }
            ],
            reason="range_too_large",
        )
    return ChartRange(first, last, granularity)


def time_series(
    rows: Iterable[tuple[str | datetime, str, int]],
    chart_range: ChartRange,
    names: Mapping[str, str] | None = None,
    top: int = DEFAULT_SERIES,
) -> TimeSeriesChart:
    """A zero-filled chart from `(bucket, series id, value)` rows.

    `bucket` is an axis label (from `bucket_label_sql`) or any time inside the bucket; rows of one
    bucket and series add up. `names` gives display names (the id otherwise). Series are ordered
    by their total, largest first (then by name); beyond `top`, the rest add up into one
    `_other` series so a workspace with hundreds of APIs still gets a readable chart. A row
    outside the range is a programming error (the query must filter by the same range)."""
    axis = chart_range.labels()
    position = {text: index for index, text in enumerate(axis)}
    values: dict[str, list[int]] = {}
    for bucket, series_id, value in rows:
        key = bucket if isinstance(bucket, str) else label(bucket, chart_range.granularity)
        index = position.get(key)
        if index is None:
            raise ValueError(f"bucket {key!r} is outside the chart's range")
        data = values.get(series_id)
        if data is None:
            data = values[series_id] = [0] * len(axis)
        data[index] += value
    names = names or {}
    ranked = sorted(values.items(), key=lambda item: (-sum(item[1]), names.get(item[0], item[0])))
    series = [
        ChartSeries(id=series_id, name=names.get(series_id, series_id), data=data)
        for series_id, data in ranked[:top]
    ]
    if len(ranked) > top:
        other = [sum(column) for column in zip(*(data for _, data in ranked[top:]), strict=True)]
        series.append(ChartSeries(id=OTHER_ID, name=OTHER_NAME, data=other))
    return TimeSeriesChart(x_axis=axis, series=series)


def pie(
    rows: Iterable[tuple[str, int]],
    names: Mapping[str, str] | None = None,
    top: int = DEFAULT_SERIES,
) -> PieChart:
    """Shares from `(id, value)` rows: duplicates add up, zero slices are left out, largest first;
    beyond `top` the rest become one `_other` slice."""
    totals: dict[str, int] = {}
    for slice_id, value in rows:
        totals[slice_id] = totals.get(slice_id, 0) + value
    names = names or {}
    ranked = sorted(
        ((slice_id, value) for slice_id, value in totals.items() if value),
        key=lambda item: (-item[1], names.get(item[0], item[0])),
    )
    series = [
        PieSlice(id=slice_id, name=names.get(slice_id, slice_id), value=value)
        for slice_id, value in ranked[:top]
    ]
    if len(ranked) > top:
        rest = sum(value for _, value in ranked[top:])
        series.append(PieSlice(id=OTHER_ID, name=OTHER_NAME, value=rest))
    return PieChart(series=series)


def _chart_query(
    since: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=40,
            description=f"Inclusive, floored to the bucket: "
            f"{TIME_HINT}; default: 24 hours or 30 days before `to`",
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(
            alias="to",
            max_length=40,
            description=f"Exclusive, rounded up to the bucket: {TIME_HINT}; default: now",
        ),
    ] = None,
    granularity: Annotated[
        Granularity, Query(description="Bucket size (UTC): at most 744 hours or 366 days")
    ] = "day",
    group_by: Annotated[
        GroupBy, Query(alias="groupBy", description="One series per app or per API")
    ] = "app",
    chart: Annotated[
        ChartKind, Query(description="line: xAxis and zero-filled series; pie: shares")
    ] = "line",
    top: Annotated[
        int,
        Query(ge=1, le=MAX_SERIES, description="Series kept; the rest add up into `_other`"),
    ] = DEFAULT_SERIES,
) -> ChartQuery:
    errors: list[dict[str, str]] = []
    start, end = parse_time("from", since, errors), parse_time("to", until, errors)
    if errors:
        raise ValidationError(errors=errors)
    return ChartQuery(make_range(start, end, granularity), group_by, chart, top)


ChartQueryDep = Annotated[ChartQuery, Depends(_chart_query)]
"""`from`, `to`, `granularity`, `groupBy`, `chart`, `top` from the query string, checked."""
