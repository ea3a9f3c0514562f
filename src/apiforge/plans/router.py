"""`/api/v1/user/plans` (the current workspace's plan and usage) and `/api/v1/admin/plans`.

The admin routes live here rather than in `admin/` so the plan domain keeps one router; every one
of them requires `AdminAccount` (403 `admin_required` otherwise).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from apiforge.accounts.deps import AdminAccount
from apiforge.core.errors import ValidationError
from apiforge.http.deps import SessionDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.http.schemas import Created, Text
from apiforge.http.timerange import From, To, time_range
from apiforge.idempotency.locking import IfMatch, set_etag
from apiforge.plans.models import QUOTA_NAMES
from apiforge.plans.schemas import (
    PlanCreate,
    PlanRead,
    PlanUpdate,
    QuotaHitRead,
    UserPlans,
    WorkspacePlanRead,
    WorkspacePlanUpdate,
)
from apiforge.plans.service import HitFilter, PlanService
from apiforge.traffic.router import traffic_of
from apiforge.workspaces.deps import CurrentWorkspaceDep

router = APIRouter(prefix="/api/v1", tags=["plans"])


def _plan_service(session: SessionDep, request: Request) -> PlanService:
    return PlanService(session, traffic_of(request).rules.forget_plans)


PlanServiceDep = Annotated[PlanService, Depends(_plan_service)]


def _hit_filter(
    workspace_id: Annotated[Text | None, Query(alias="workspaceId", max_length=26)] = None,
    quota: Annotated[str | None, Query(max_length=32, description="A quota name")] = None,
    since: From = None,
    until: To = None,
) -> HitFilter:
    errors: list[dict[str, str]] = []
    if quota and quota not in QUOTA_NAMES:
        errors.append({"field": "quota", "message": f"must be one of: {', '.join(QUOTA_NAMES)}"})
    start, end = time_range(since, until, errors)
    if errors:
        raise ValidationError(errors=errors)
    return HitFilter(workspace_id=workspace_id or None, quota=quota or None, since=start, until=end)


@router.get("/user/plans", summary="The current workspace's plan, its quota usage, public plans")
async def user_plans(current: CurrentWorkspaceDep, service: PlanServiceDep) -> Envelope[UserPlans]:
    return ok(await service.user_plans(current.workspace, current.account_id))


@router.get("/admin/plans", summary="All plans, public or not (admin)")
async def list_plans(
    admin: AdminAccount, service: PlanServiceDep, page: PageDep
) -> Envelope[Page[PlanRead]]:
    return ok(await service.list_plans(page))


@router.post("/admin/plans", summary="Create a plan; unnamed quotas start at the free plan's")
async def create_plan(
    body: PlanCreate, admin: AdminAccount, service: PlanServiceDep
) -> Envelope[Created]:
    return ok(await service.create_plan(body))


@router.get("/admin/plans/{plan_id}", summary="One plan (admin)")
async def get_plan(
    plan_id: str, admin: AdminAccount, service: PlanServiceDep, response: Response
) -> Envelope[PlanRead]:
    return ok(set_etag(response, await service.get_plan(plan_id)))


@router.patch("/admin/plans/{plan_id}", summary="Change a plan; `quotas` merges into its limits")
async def update_plan(
    plan_id: str,
    body: PlanUpdate,
    admin: AdminAccount,
    service: PlanServiceDep,
    if_match: IfMatch,
    response: Response,
) -> Envelope[PlanRead]:
    return ok(set_etag(response, await service.update_plan(plan_id, body, if_match)))


@router.delete(
    "/admin/plans/{plan_id}", summary="Delete a plan no workspace uses (not the default)"
)
async def delete_plan(
    plan_id: str, admin: AdminAccount, service: PlanServiceDep, if_match: IfMatch
) -> Envelope[Created]:
    await service.delete_plan(plan_id, if_match)
    return ok(Created(id=plan_id))


@router.put("/admin/workspaces/{workspace_id}/plan", summary="Move a workspace to another plan")
async def move_workspace(
    workspace_id: str, body: WorkspacePlanUpdate, admin: AdminAccount, service: PlanServiceDep
) -> Envelope[WorkspacePlanRead]:
    return ok(await service.move_workspace(workspace_id, body))


@router.get(
    "/admin/quota-hits",
    summary="Refusals for reached quotas (one row per workspace, quota and minute), newest first",
)
async def list_quota_hits(
    admin: AdminAccount,
    service: PlanServiceDep,
    filters: Annotated[HitFilter, Depends(_hit_filter)],
    page: PageDep,
) -> Envelope[Page[QuotaHitRead]]:
    return ok(await service.list_quota_hits(filters, page))
