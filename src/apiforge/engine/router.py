"""HTTP routes of the engine: run a stored API (`/invocations`) or an ad-hoc step list
(`/workflows`) as a console member. The API-key gateway reuses the same loader and runtime."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from apiforge.accounts.deps import CurrentAccount
from apiforge.engine.schemas import InvocationCreate, WorkflowCreate
from apiforge.engine.service import EngineService, EngineState, Invocation, build_engine_state
from apiforge.http.envelope import Envelope
from apiforge.workspaces.deps import WorkspaceEditor

router = APIRouter(prefix="/api/v1", tags=["engine"])


def _engine_service(request: Request) -> EngineService:
    # Built on first use: the loader's cache of compiled versions lives as long as the process.
    state: EngineState | None = getattr(request.app.state, "engine_state", None)
    if state is None:
        state = build_engine_state(request.app.state.engine, request.app.state.settings)
        request.app.state.engine_state = state
    return EngineService(state)


EngineServiceDep = Annotated[EngineService, Depends(_engine_service)]


def _response(invocation: Invocation) -> Response:
    return Response(invocation.body, media_type="application/json", headers=invocation.headers)


@router.post(
    "/invocations",
    response_model=Envelope[Any],
    summary="Call an API of an app you are a member of (dev, latest or X.Y.Z)",
)
async def invoke(
    body: InvocationCreate, account: CurrentAccount, service: EngineServiceDep
) -> Response:
    return _response(await service.invoke(account.id, body))


@router.post(
    "/workflows",
    response_model=Envelope[Any],
    summary="Run an ad-hoc step list in the current workspace (editor or above)",
)
async def run_workflow(
    body: WorkflowCreate, current: WorkspaceEditor, service: EngineServiceDep
) -> Response:
    return _response(await service.run_workflow(current, body))
