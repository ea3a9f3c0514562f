"""Frequency limits on management routes that mint credentials (API key creation)."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from apiforge.accounts.deps import CurrentAccount
from apiforge.traffic.control import TrafficControl
from apiforge.traffic.frequency import Rate

WINDOW = 60


@dataclass(frozen=True, slots=True)
class KeyCreationLimiter:
    """At most `key_creations_per_minute` new keys per account, so a stolen session can't mint
    keys in bulk; 429 with the rate-limit headers beyond it. The route awaits it once the
    request is valid: malformed requests, already refused, are not counted."""

    control: TrafficControl
    rate: Rate

    async def __call__(self) -> None:
        await self.control.admit((self.rate,), (), "", kind="key_creation")


def _key_creation_limiter(request: Request, account: CurrentAccount) -> KeyCreationLimiter:
    limit = request.app.state.settings.key_creations_per_minute
    return KeyCreationLimiter(
        request.app.state.traffic, Rate("account", f"keys:{account.id}", limit, WINDOW)
    )


KeyCreationLimit = Annotated[KeyCreationLimiter, Depends(_key_creation_limiter)]
