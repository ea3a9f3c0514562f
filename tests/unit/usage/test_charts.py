"""Chart payloads: bucket alignment, range bounds, zero fill, ordering, folding, SQL labels."""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import literal, select

from apiforge.core.db import UTCDateTime
from apiforge.core.errors import ValidationError
from apiforge.usage.charts import (
    MAX_BUCKETS,
    OTHER_ID,
    ChartRange,
    Granularity,
    _chart_query,
    bucket_label_sql,
    ceil,
    floor,
    label,
    make_range,
    pie,
    time_series,
)

T = datetime(2026, 3, 14, 15, 9, 26, 535000, tzinfo=UTC)


def test_floor_and_ceil_align_to_utc_buckets() -> None:
    assert floor(T, "hour") == datetime(2026, 3, 14, 15, tzinfo=UTC)
    assert floor(T, "day") == datetime(2026, 3, 14, tzinfo=UTC)
    assert ceil(T, "hour") == datetime(2026, 3, 14, 16, tzinfo=UTC)
    assert ceil(T, "day") == datetime(2026, 3, 15, tzinfo=UTC)
    boundary = datetime(2026, 3, 14, tzinfo=UTC)
    assert ceil(boundary, "day") == boundary
    # Another offset is converted, not read as UTC: 01:00+02:00 is 23:00 the day before.
    shifted = datetime(2026, 3, 14, 1, tzinfo=timezone(timedelta(hours=2)))
    assert floor(shifted, "day") == datetime(2026, 3, 13, tzinfo=UTC)
    assert label(shifted, "hour") == "2026-03-13T23:00:00Z"
    assert label(datetime(2026, 3, 14, 15, 59), "day") == "2026-03-14"
    assert label(datetime(1, 1, 1, 5, 30), "day") == "0001-01-01"  # padded, as the SQL's
    assert label(datetime(999, 6, 1, 5, 30), "hour") == "0999-06-01T05:00:00Z"


def test_range_is_floored_and_rounded_up_to_whole_buckets() -> None:
    chart_range = make_range(T, T + timedelta(hours=2), "hour")
    assert chart_range.start == datetime(2026, 3, 14, 15, tzinfo=UTC)
    assert chart_range.end == datetime(2026, 3, 14, 18, tzinfo=UTC)
    assert chart_range.labels() == [
        "2026-03-14T15:00:00Z",
        "2026-03-14T16:00:00Z",
        "2026-03-14T17:00:00Z",
    ]


def test_range_defaults_to_a_day_of_hours_or_a_month_of_days_ending_now() -> None:
    hours = make_range(None, None, "hour", now=T)
    assert hours.end == datetime(2026, 3, 14, 16, tzinfo=UTC)
    assert len(hours.buckets()) == 24
    days = make_range(None, None, "day", now=T)
    assert days.end == datetime(2026, 3, 15, tzinfo=UTC)
    assert len(days.labels()) == 30
    assert days.labels()[-1] == "2026-03-14"


@pytest.mark.parametrize(
    ("granularity", "buckets", "allowed"),
    [
        ("hour", MAX_BUCKETS["hour"], True),
        ("hour", MAX_BUCKETS["hour"] + 1, False),
        ("day", 366, True),
        ("day", 367, False),
    ],
)
def test_range_holds_at_most_max_buckets(granularity: Any, buckets: int, allowed: bool) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
    if allowed:
        assert len(make_range(start, start + step * buckets, granularity).buckets()) == buckets
        return
    with pytest.raises(ValidationError) as caught:
        make_range(start, start + step * buckets, granularity)
    assert caught.value.reason == "range_too_large"
    assert caught.value.details["errors"][0]["field"] == "from"


def test_empty_reversed_and_overflowing_ranges_are_refused() -> None:
    cases: list[tuple[datetime, datetime, Granularity]] = [
        (T, T - timedelta(days=2), "day"),
        (floor(T, "day"), floor(T, "day"), "day"),
        # Within one bucket, as written: aligned, they would still show that bucket.
        (T, T - timedelta(hours=6), "day"),
        (T, T - timedelta(minutes=5), "hour"),
        (T, T, "hour"),
    ]
    for start, end, granularity in cases:
        with pytest.raises(ValidationError) as caught:
            make_range(start, end, granularity)
        assert caught.value.details["errors"] == [{"field": "to", "message": "must be after from"}]
    with pytest.raises(ValidationError) as caught:
        make_range(None, datetime(9999, 12, 31, 23, 30, tzinfo=UTC), "hour")
    assert caught.value.details["errors"] == [
        {"field": "to", "message": "must be before year 9999"}
    ]
    # The default `from` would fall before year 1: not a `to` past year 9999.
    with pytest.raises(ValidationError) as caught:
        make_range(None, datetime(1, 1, 1, 5, tzinfo=UTC), "day")
    assert caught.value.details["errors"] == [
        {"field": "from", "message": "must be given when to is near year 1"}
    ]


def test_time_series_zero_fills_every_bucket_and_adds_up_duplicates() -> None:
    chart_range = make_range(
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC), "day"
    )
    chart = time_series(
        [
            ("2026-03-01", "a", 2),
            (datetime(2026, 3, 3, 23, 59, tzinfo=UTC), "a", 1),
            ("2026-03-03", "a", 4),
            ("2026-03-02", "b", 7),
        ],
        chart_range,
        names={"a": "Blog", "b": "Shop"},
    )
    assert chart.model_dump(by_alias=True) == {
        "xAxis": ["2026-03-01", "2026-03-02", "2026-03-03"],
        "series": [
            {"id": "a", "name": "Blog", "data": [2, 0, 5]},
            {"id": "b", "name": "Shop", "data": [0, 7, 0]},
        ],
    }


def test_time_series_without_rows_keeps_the_axis_and_has_no_series() -> None:
    chart_range = make_range(None, None, "hour", now=T)
    chart = time_series([], chart_range)
    assert len(chart.x_axis) == 24
    assert chart.series == []


def test_time_series_orders_by_total_and_folds_the_rest_into_other() -> None:
    chart_range = ChartRange(
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC), "day"
    )
    rows = [("2026-03-01", f"s{n}", n) for n in range(1, 6)] + [("2026-03-02", "s1", 10)]
    chart = time_series(rows, chart_range, top=2)
    assert [(s.id, s.data) for s in chart.series] == [
        ("s1", [1, 10]),
        ("s5", [5, 0]),
        (OTHER_ID, [4 + 3 + 2, 0]),
    ]


def test_time_series_refuses_rows_outside_its_range() -> None:
    chart_range = make_range(
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC), "day"
    )
    with pytest.raises(ValueError, match="outside"):
        time_series([("2026-03-02", "a", 1)], chart_range)


def test_pie_adds_up_drops_zero_slices_and_folds_the_rest() -> None:
    chart = pie(
        [("a", 3), ("b", 0), ("c", 5), ("a", 4), ("d", 1), ("e", 1)], names={"a": "Blog"}, top=2
    )
    assert chart.model_dump(by_alias=True) == {
        "series": [
            {"id": "a", "name": "Blog", "value": 7},
            {"id": "c", "name": "c", "value": 5},
            {"id": OTHER_ID, "name": "Other", "value": 2},
        ]
    }
    assert pie([]).series == []


@pytest.mark.parametrize("granularity", ["hour", "day"])
async def test_sql_labels_match_python_labels(app: FastAPI, granularity: Any) -> None:
    """The database groups by the same label `time_series` puts on the axis, on both backends,
    whatever the session's time zone."""
    engine = app.state.engine
    moments = [T, datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)]
    async with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            await connection.exec_driver_sql("SET TIME ZONE 'Asia/Shanghai'")
        for moment in moments:
            column = literal(moment, UTCDateTime())
            stmt = select(bucket_label_sql(column, granularity, engine.dialect.name))
            assert (await connection.scalar(stmt)) == label(moment, granularity)


def test_query_parses_times_and_refuses_bad_ones() -> None:
    query = _chart_query("2026-03-01", "2026-03-03T00:00:00+00:00", "day", "api", "pie", 5)
    assert query.range.labels() == ["2026-03-01", "2026-03-02"]
    assert (query.group_by, query.chart, query.top) == ("api", "pie", 5)
    with pytest.raises(ValidationError) as caught:
        _chart_query("yesterday", "soon", "day", "app", "line", 10)
    assert [error["field"] for error in caught.value.details["errors"]] == ["from", "to"]
