"""`/api/v1/apps/{appId}/traffic-limits`: an app's frequency and concurrency limits."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from apiforge.http.deps import SessionDep
from apiforge.http.envelope import Envelope, ok
from apiforge.idempotency.locking import IfMatch, set_etag
from apiforge.traffic.control import TrafficControl
from apiforge.traffic.schemas import TrafficLimitsRead, TrafficLimitsUpdate
from apiforge.traffic.service import TrafficLimitsService
from apiforge.workspaces.deps import CurrentWorkspaceDep

router = APIRouter(prefix="/api/v1", tags=["traffic"])


def traffic_of(request: Request) -> TrafficControl:
    control: TrafficControl = request.app.state.traffic
    return control


def _service(session: SessionDep, request: Request) -> TrafficLimitsService:
    return TrafficLimitsService(session, traffic_of(request).rules)


TrafficServiceDep = Annotated[TrafficLimitsService, Depends(_service)]


@router.get("/apps/{app_id}/traffic-limits", summary="An app's traffic limits")
async def get_traffic_limits(
    app_id: str, current: CurrentWorkspaceDep, service: TrafficServiceDep, response: Response
) -> Envelope[TrafficLimitsRead]:
    return ok(set_etag(response, await service.read(current, app_id)))


@router.put(
    "/apps/{app_id}/traffic-limits",
    summary="Replace an app's traffic limits (editor+)",
    description=(
        "Frequency limits per client IP and per caller key on each API, concurrency limits per "
        "caller key and for all callers; app-wide values with per-API overrides. Applies to "
        "every version at once, within 2 seconds on every server. The calling workspace's plan "
        "adds `requestsPerMinute` and `concurrentRequests` on top. `If-Match` with the ETag "
        'read (`"0"` while none were ever set) applies the change only while it is current.'
    ),
)
async def put_traffic_limits(
    app_id: str,
    body: TrafficLimitsUpdate,
    current: CurrentWorkspaceDep,
    service: TrafficServiceDep,
    response: Response,
    if_match: IfMatch,
) -> Envelope[TrafficLimitsRead]:
    return ok(set_etag(response, await service.replace(current, app_id, body, if_match)))
