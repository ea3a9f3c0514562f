"""After-stage: the request log of every call, buffered (no database round trip per call).

Placeholder wiring: the request-log work replaces this body."""

from apiforge.gateway.context import GatewayContext
from apiforge.gateway.stage import GatewayState


class RequestLogStage:
    name = "log"

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def after(self, ctx: GatewayContext) -> None:
        return None
