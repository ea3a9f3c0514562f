"""HTTP route of the engine on the management API: run an ad-hoc step list (`/workflows`).

Stored APIs are called through the gateway edge (`gateway/`), which shares the engine state."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from apiforge.engine.schemas import WorkflowCreate
from apiforge.engine.service import EngineService, EngineState, Invocation
from apiforge.http.envelope import Envelope
from apiforge.workspaces.deps import WorkspaceEditor

router = APIRouter(prefix="/api/v1", tags=["engine"])


def _engine_service(request: Request) -> EngineService:
    # Built once in app.py and shared with the gateway: one cache of compiled versions.
    state: EngineState = request.app.state.engine_state
    return EngineService(state)


EngineServiceDep = Annotated[EngineService, Depends(_engine_service)]


def _response(invocation: Invocation) -> Response:
    return Response(invocation.body, media_type="application/json", headers=invocation.headers)


@router.post(
    "/workflows",
    response_model=Envelope[Any],
    summary="Run an ad-hoc step list in the current workspace (editor or above)",
)
async def run_workflow(
    body: WorkflowCreate, current: WorkspaceEditor, service: EngineServiceDep
) -> Response:
    return _response(await service.run_workflow(current, body))
