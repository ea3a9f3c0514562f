"""HTTP route of the engine on the management API: run an ad-hoc step list (`/workflows`).

Stored APIs are called through the gateway edge (`gateway/`), which shares the engine state."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from apiforge.billing.charging import CHARGER_KEY, Charger
from apiforge.engine.schemas import WorkflowCreate
from apiforge.engine.service import EngineService, EngineState, Invocation, WorkflowRun
from apiforge.http.deps import SessionDep, client_ip
from apiforge.http.envelope import Envelope
from apiforge.http.middleware import request_id_of
from apiforge.workspaces.deps import WorkspaceEditor

router = APIRouter(prefix="/api/v1", tags=["engine"])


def _engine_service(request: Request) -> EngineService:
    # Built once in app.py and shared with the gateway: one cache of compiled versions.
    state: EngineState = request.app.state.engine_state
    return EngineService(state)


EngineServiceDep = Annotated[EngineService, Depends(_engine_service)]


def _charger(request: Request) -> Charger:
    # The gateway's: on SQLite its wallet cache must see every charge of the process.
    charger: Charger = request.app.state.gateway_state.extra[CHARGER_KEY]
    return charger


ChargerDep = Annotated[Charger, Depends(_charger)]


def _response(invocation: Invocation) -> Response:
    return Response(invocation.body, media_type="application/json", headers=invocation.headers)


@router.post(
    "/workflows",
    response_model=Envelope[Any],
    summary="Run an ad-hoc step list in the current workspace (editor or above), charged the "
    "steps' cost",
)
async def run_workflow(
    request: Request,
    body: WorkflowCreate,
    current: WorkspaceEditor,
    service: EngineServiceDep,
    charger: ChargerDep,
    session: SessionDep,
) -> Response:
    # The request's connection goes back to the pool before the run takes one of its own:
    # holding both, nine concurrent runs exhausted SQLite's pool (4 + 4) and waited for 30 s.
    await session.commit()
    key = getattr(request.state, "workspace_key", None)
    run = WorkflowRun(request_id_of(request.scope), client_ip(request), key.id if key else None)
    return _response(await service.run_workflow(current, body, charger, run))
