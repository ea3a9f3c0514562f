"""Credential resolver for HMAC-signed requests (`X-App-Id`, `X-Timestamp`, `X-Nonce`, `X-Sign`).

Placeholder wiring: the signing work replaces this body."""

from apiforge.gateway.context import Caller, GatewayContext
from apiforge.gateway.stage import GatewayState


class SignatureResolver:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def resolve(self, ctx: GatewayContext) -> Caller | None:
        return None
