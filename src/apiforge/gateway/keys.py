"""Credential resolver for `X-Api-Key` (app-/pk-/ws- keys) and the subscription check.

Placeholder wiring: the keys work replaces these bodies (see `keys/`)."""

from apiforge.gateway.context import Caller, GatewayContext
from apiforge.gateway.stage import GatewayState


class ApiKeyResolver:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def resolve(self, ctx: GatewayContext) -> Caller | None:
        return None


class SubscriptionCache:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def is_enabled(self, ctx: GatewayContext, workspace_id: str, app_id: str) -> bool:
        return False
