"""When a refused quota has room again by itself, without a database: monthly quotas at the next
UTC month (in `data.resetTime` and `Retry-After`), stock quotas and a limit of 0 never."""

from datetime import UTC, datetime

import pytest

from apiforge.plans.models import Plan
from apiforge.plans.quotas import QuotaExceededError, ensure_within_quota
from apiforge.usage.counters import next_month_start


def _refusal(quota: str, limit: int, used: int, adding: int, now: datetime) -> QuotaExceededError:
    plan = Plan(code="p", name="P", quotas={quota: limit})
    with pytest.raises(QuotaExceededError) as caught:
        ensure_within_quota(plan, quota, used, adding, now)
    return caught.value


@pytest.mark.parametrize(
    ("now", "start"),
    [
        (datetime(2026, 1, 31, 23, 59, 30, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2028, 2, 29, 12, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC)),
        (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
    ],
)
def test_next_month_start(now: datetime, start: datetime) -> None:
    assert next_month_start(now) == start


@pytest.mark.parametrize("quota", ["callsPerMonth", "uploadsPerMonth"])
def test_a_monthly_refusal_says_the_seconds_until_the_next_utc_month(quota: str) -> None:
    refused = _refusal(quota, 5, 5, 1, datetime(2026, 1, 31, 23, 59, 30, tzinfo=UTC))
    assert refused.payload() == {
        "error": "quota_exceeded",
        "quota": quota,
        "limit": 5,
        "used": 5,
        "resetTime": "2026-02-01T00:00:00Z",
    }
    assert refused.headers == {"Retry-After": "30"}


def test_a_part_second_rounds_up() -> None:
    now = datetime(2026, 12, 31, 23, 59, 58, 1, tzinfo=UTC)
    refused = _refusal("callsPerMonth", 1, 1, 1, now)
    assert (refused.details["resetTime"], refused.headers) == (
        "2027-01-01T00:00:00Z",
        {"Retry-After": "2"},
    )


@pytest.mark.parametrize(
    ("quota", "limit", "used", "adding"),
    [
        ("records", 5, 5, 1),  # stock: freed by deleting, not by waiting
        ("members", 1, 1, 1),
        ("callsPerMonth", 0, 0, 1),  # no month lets one through
        ("uploadsPerMonth", 2, 0, 3),  # more at once than any month allows
    ],
)
def test_refusals_a_wait_would_not_end_say_no_time(
    quota: str, limit: int, used: int, adding: int
) -> None:
    refused = _refusal(quota, limit, used, adding, datetime(2026, 1, 31, tzinfo=UTC))
    assert "resetTime" not in refused.details
    assert refused.headers == {}
