"""The current-workspace dependencies as later tenant-scoped routers will use them."""

from collections.abc import AsyncIterator

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from httpx import ASGITransport, AsyncClient

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.http.envelope import Envelope, ok
from apiforge.workspaces.deps import (
    WorkspaceEditor,
    WorkspaceOwner,
    WorkspaceViewer,
    require_role,
)
from apiforge.workspaces.models import Role
from apiforge.workspaces.service import CurrentWorkspace
from tests.e2e._workspaces import add_member, assert_error, data_of, new_workspace
from tests.factories import register


def _probe_router() -> APIRouter:
    router = APIRouter(prefix="/probe")

    def _seen(current: CurrentWorkspace, request: Request) -> dict[str, str]:
        return {"id": current.id, "role": current.role.value, "state": request.state.workspace_id}

    @router.get("/view")
    async def view(current: WorkspaceViewer, request: Request) -> Envelope[dict[str, str]]:
        return ok(_seen(current, request))

    @router.post("/edit")
    async def edit(current: WorkspaceEditor, request: Request) -> Envelope[dict[str, str]]:
        return ok(_seen(current, request))

    @router.post("/admin")
    async def admin(
        request: Request, current: CurrentWorkspace = Depends(require_role(Role.ADMIN))
    ) -> Envelope[dict[str, str]]:
        return ok(_seen(current, request))

    @router.delete("/own")
    async def own(current: WorkspaceOwner, request: Request) -> Envelope[dict[str, str]]:
        return ok(_seen(current, request))

    return router


@pytest.fixture
async def probe(settings: Settings) -> AsyncIterator[AsyncClient]:
    app: FastAPI = create_app(settings)
    app.include_router(_probe_router())
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    await shutdown(app)


async def test_without_header_the_personal_workspace_is_current(probe: AsyncClient) -> None:
    user = await register(probe)
    seen = data_of(await probe.delete("/probe/own", headers=user.headers))
    assert seen == {"id": user.workspace_id, "role": "owner", "state": user.workspace_id}


async def test_header_selects_a_workspace_and_roles_gate_routes(probe: AsyncClient) -> None:
    owner = await register(probe)
    viewer = await register(probe)
    workspace_id = await new_workspace(probe, owner)
    await add_member(probe, owner, workspace_id, viewer, "viewer")
    headers = {**viewer.headers, "X-Workspace-Id": workspace_id}
    seen = data_of(await probe.get("/probe/view", headers=headers))
    assert seen == {"id": workspace_id, "role": "viewer", "state": workspace_id}
    for path, required in [("/probe/edit", "editor"), ("/probe/admin", "admin")]:
        data = assert_error(await probe.post(path, headers=headers), 403, "insufficient_role")
        assert (data["requiredRole"], data["role"]) == (required, "viewer")
    assert_error(await probe.delete("/probe/own", headers=headers), 403, "insufficient_role")
    # The same caller is owner of their personal workspace: the header decides, not the account.
    assert data_of(await probe.post("/probe/admin", headers=viewer.headers))["role"] == "owner"


@pytest.mark.parametrize("value", ["01h00000000000000000000000", "x", "'; DROP TABLE x; --"])
async def test_unknown_or_malformed_header_is_404(probe: AsyncClient, value: str) -> None:
    user = await register(probe)
    response = await probe.get("/probe/view", headers={**user.headers, "X-Workspace-Id": value})
    assert_error(response, 404, "workspace_not_found")


async def test_missing_credentials_come_before_workspace_lookup(probe: AsyncClient) -> None:
    response = await probe.get("/probe/view", headers={"X-Workspace-Id": "whatever"})
    assert_error(response, 401, "unauthenticated")
