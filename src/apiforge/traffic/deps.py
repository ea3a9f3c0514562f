"""Frequency limits on management routes that mint credentials (API key creation)."""

from typing import Annotated

from fastapi import Depends, Request

from apiforge.accounts.deps import CurrentAccount
from apiforge.traffic.control import TrafficControl
from apiforge.traffic.frequency import Rate

WINDOW = 60


async def _limit_key_creation(request: Request, account: CurrentAccount) -> None:
    """At most `key_creations_per_minute` new keys per account (a stolen session can't mint
    keys in bulk); 429 with the rate-limit headers beyond it."""
    control: TrafficControl = request.app.state.traffic
    limit = request.app.state.settings.key_creations_per_minute
    rate = Rate("account", f"keys:{account.id}", limit, WINDOW)
    await control.hit((rate,), kind="key_creation")


KeyCreationLimit = Annotated[None, Depends(_limit_key_creation)]
