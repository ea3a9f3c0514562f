"""Quota arithmetic shared by the plan service and the in-process meter: limits, checks, 403."""

from apiforge.core.errors import ForbiddenError
from apiforge.plans.models import FREE_PLAN_QUOTAS, QUOTA_NAMES, Plan

UNLIMITED = -1


class QuotaExceededError(ForbiddenError):
    """403 `quota_exceeded`, naming the quota, its limit and the current use."""

    reason = "quota_exceeded"

    def __init__(self, quota: str, limit: int, used: int) -> None:
        super().__init__(
            f"The plan's {quota} quota of {limit} is reached",
            details={"quota": quota, "limit": limit, "used": used},
        )


def quota_limit(plan: Plan, name: str) -> int:
    """The plan's limit for `name`; a name the stored plan lacks (a quota added after the plan was
    written) takes the free plan's value rather than silently meaning unlimited."""
    value = plan.quotas.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return FREE_PLAN_QUOTAS[name]


def full_quotas(plan: Plan) -> dict[str, int]:
    return {name: quota_limit(plan, name) for name in QUOTA_NAMES}


def ensure_within_quota(plan: Plan, name: str, used: int, adding: int = 1) -> None:
    """Raise `QuotaExceededError` unless `used + adding` fits the plan's limit for `name`."""
    limit = quota_limit(plan, name)
    if limit != UNLIMITED and used + adding > limit:
        raise QuotaExceededError(name, limit, used)


def near_limit(used: int, limit: int) -> bool:
    """At or above 80% of a finite limit (integer arithmetic: exact for huge byte counts)."""
    return limit != UNLIMITED and used * 5 >= limit * 4
