"""Which limits apply to a call: the app's limits (per API) and the calling workspace's plan
rates, cached per process for a couple of seconds so a call under its limits reads no database
(a change reaches every process within `CACHE_SECONDS`; the process that made it at once)."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.cache import RefreshingCache
from apiforge.plans.models import FREE_PLAN_QUOTAS, Plan
from apiforge.traffic.models import TrafficLimits
from apiforge.workspaces.models import Workspace

CACHE_SECONDS = 2.0
MAX_ENTRIES = 10_000
UNLIMITED = -1


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """The limits of one API after app/API resolution; a concurrency counter is named by the
    level that set it (the app, or the API), so app-wide values count the whole app."""

    ip_per_minute: int | None = None
    key_per_minute: int | None = None
    concurrent_per_key: tuple[int, str] | None = None  # (limit, counter of app or app/api)
    concurrent: tuple[int, str] | None = None


NO_LIMITS = ApiLimits()


@dataclass(frozen=True, slots=True)
class AppLimits:
    default: ApiLimits = NO_LIMITS
    apis: Mapping[str, ApiLimits] = field(default_factory=dict)

    def of(self, api: str) -> ApiLimits:
        return self.apis.get(api, self.default)


NO_APP_LIMITS = AppLimits()


def resolve(app_id: str, document: Mapping[str, Any]) -> AppLimits:
    """Precompute every API's limits from the stored document (done once per cache load)."""

    def level(values: Mapping[str, Any], fallback: Mapping[str, Any], api: str) -> ApiLimits:
        def concurrency(name: str) -> tuple[int, str] | None:
            if values.get(name) is not None:
                return int(values[name]), f"{app_id}/{api}"
            if fallback.get(name) is not None:
                return int(fallback[name]), app_id
            return None

        def frequency(name: str) -> int | None:
            value = values.get(name, fallback.get(name))
            return None if value is None else int(value)

        return ApiLimits(
            ip_per_minute=frequency("ipPerMinute"),
            key_per_minute=frequency("keyPerMinute"),
            concurrent_per_key=concurrency("concurrentPerKey"),
            concurrent=concurrency("concurrent"),
        )

    app_values = {k: v for k, v in document.items() if k != "apis"}
    apis = document.get("apis") or {}
    default = level({}, app_values, "")
    return AppLimits(
        default=default,
        apis={api: level(values, app_values, api) for api, values in apis.items()},
    )


@dataclass(frozen=True, slots=True)
class PlanRates:
    requests_per_minute: int = UNLIMITED
    concurrent: int = UNLIMITED


def _quota(quotas: Mapping[str, Any], name: str) -> int:
    """The same reading as `plans.service.quota_limit`: a missing quota is the free plan's."""
    value = quotas.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return FREE_PLAN_QUOTAS[name]


async def _read_app(conn: AsyncConnection, app_id: str) -> AppLimits:
    document = await conn.scalar(select(TrafficLimits.limits).where(TrafficLimits.app_id == app_id))
    return resolve(app_id, document) if document else NO_APP_LIMITS


async def _read_plan(conn: AsyncConnection, workspace_id: str) -> PlanRates:
    quotas = await conn.scalar(
        select(Plan.quotas)
        .join(Workspace, Workspace.plan_id == Plan.id)
        .where(Workspace.id == workspace_id)
    )
    return PlanRates(
        requests_per_minute=_quota(quotas or {}, "requestsPerMinute"),
        concurrent=_quota(quotas or {}, "concurrentRequests"),
    )


class LimitRules:
    """Per-process cache of app limits and plan rates: one small query per app or workspace
    every `CACHE_SECONDS`, read again ahead of expiry off the calls' path (`core/cache.py`)."""

    def __init__(self) -> None:
        self.apps = RefreshingCache[str, AppLimits](CACHE_SECONDS, MAX_ENTRIES, _read_app)
        self.plans = RefreshingCache[str, PlanRates](CACHE_SECONDS, MAX_ENTRIES, _read_plan)

    async def app(self, conn: AsyncConnection, app_id: str) -> AppLimits:
        return await self.apps.get(conn, app_id)

    async def plan(self, conn: AsyncConnection, workspace_id: str) -> PlanRates:
        return await self.plans.get(conn, workspace_id)

    def forget_app(self, app_id: str) -> None:
        self.apps.forget(app_id)

    def forget_plans(self, workspace_id: str | None = None) -> None:
        """Drop cached plan rates (all of them without a workspace): a plan was changed or a
        workspace moved on this node, whose next call then runs on the new rates; called once
        the change commits, as `QuotaMeter.forget` is."""
        if workspace_id is None:
            self.plans.clear()
        else:
            self.plans.forget(workspace_id)

    async def close(self) -> None:
        await self.apps.close()
        await self.plans.close()
