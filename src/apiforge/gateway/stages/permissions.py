"""Stage: end-user token and permission mode (`none`, `simple`, `admin`, `userSystem`).

Placeholder wiring: the permissions work replaces this body."""

from apiforge.gateway.context import GatewayContext
from apiforge.gateway.stage import GatewayState


class PermissionStage:
    name = "permissions"

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def on_request(self, ctx: GatewayContext) -> None:
        return None
