"""Quota arithmetic shared by the plan service and the in-process meter: limits, checks, 403."""

import math
from datetime import datetime
from typing import Any

from apiforge.core.errors import ForbiddenError
from apiforge.plans.models import FREE_PLAN_QUOTAS, QUOTA_NAMES, Plan
from apiforge.tools.clock import iso, utcnow
from apiforge.usage.counters import next_month_start

UNLIMITED = -1

# Quotas on what a workspace did in the current UTC calendar month: they start afresh with the
# next one, so their refusals say when. The other counted quotas are stock (members, apps,
# records, bytes), which only deleting frees.
MONTHLY_QUOTAS = frozenset({"callsPerMonth", "uploadsPerMonth"})


class QuotaExceededError(ForbiddenError):
    """403 `quota_exceeded`, naming the quota, its limit and the current use; with `resets` (a
    monthly quota), also `resetTime` and `Retry-After`, the whole seconds from `now` until then."""

    reason = "quota_exceeded"

    def __init__(
        self,
        quota: str,
        limit: int,
        used: int,
        *,
        resets: datetime | None = None,
        now: datetime | None = None,
    ) -> None:
        details: dict[str, Any] = {"quota": quota, "limit": limit, "used": used}
        headers: dict[str, str] = {}
        if resets is not None:
            details["resetTime"] = iso(resets)
            headers["Retry-After"] = str(seconds_until(resets, now or utcnow()))
        super().__init__(
            f"The plan's {quota} quota of {limit} is reached", details=details, headers=headers
        )


def seconds_until(moment: datetime, now: datetime) -> int:
    """Whole seconds from `now` until `moment`, rounded up and at least 1 (as the traffic limits'
    `Retry-After`): a client that waits them finds the moment passed."""
    return max(1, math.ceil((moment - now).total_seconds()))


def resets_at(quota: str, limit: int, adding: int, counted: datetime) -> datetime | None:
    """When a refused `quota`, counted at `counted`, has room again by itself: the next UTC month
    for a monthly quota whose limit fits the request (`adding`); None for stock, and for a
    request no month would let through (a limit of 0), whose wait would lead nowhere."""
    if quota in MONTHLY_QUOTAS and adding <= limit:
        return next_month_start(counted)
    return None


def quota_limit(plan: Plan, name: str) -> int:
    """The plan's limit for `name`; a name the stored plan lacks (a quota added after the plan was
    written) takes the free plan's value rather than silently meaning unlimited."""
    value = plan.quotas.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return FREE_PLAN_QUOTAS[name]


def full_quotas(plan: Plan) -> dict[str, int]:
    return {name: quota_limit(plan, name) for name in QUOTA_NAMES}


def ensure_within_quota(
    plan: Plan, name: str, used: int, adding: int = 1, counted: datetime | None = None
) -> None:
    """Raise `QuotaExceededError` unless `used + adding` fits the plan's limit for `name`.
    `counted` is when `used` was counted (default now): a monthly quota resets after its month."""
    limit = quota_limit(plan, name)
    if limit != UNLIMITED and used + adding > limit:
        now = counted or utcnow()
        raise QuotaExceededError(
            name, limit, used, resets=resets_at(name, limit, adding, now), now=now
        )


def near_limit(used: int, limit: int) -> bool:
    """At or above 80% of a finite limit (integer arithmetic: exact for huge byte counts)."""
    return limit != UNLIMITED and used * 5 >= limit * 4
