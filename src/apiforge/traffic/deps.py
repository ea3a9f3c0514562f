"""Frequency limits on management routes that mint credentials: API keys and anti-duplicate
tokens."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from apiforge.accounts.deps import CurrentAccount
from apiforge.traffic.control import TrafficControl
from apiforge.traffic.frequency import Rate

WINDOW = 60


@dataclass(frozen=True, slots=True)
class MintLimiter:
    """At most `rate.limit` credentials a minute for one caller, so a stolen session or key
    can't mint them in bulk; 429 with the rate-limit headers beyond it (`kind` names the limit).
    The route awaits it once the request is valid: malformed requests, already refused, are not
    counted."""

    control: TrafficControl
    rate: Rate
    kind: str

    async def __call__(self) -> None:
        await self.control.admit((self.rate,), (), "", kind=self.kind)


def key_creation_limiter(request: Request, account: CurrentAccount) -> MintLimiter:
    limit = request.app.state.settings.key_creations_per_minute
    rate = Rate("account", f"keys:{account.id}", limit, WINDOW)
    return MintLimiter(request.app.state.traffic, rate, "key_creation")


def token_issue_limiter(request: Request, principal: str) -> MintLimiter:
    """Anti-duplicate tokens of one caller (`key:<id>` or `acct:<id>`): each is a row (or a
    Redis key) until it is spent or expires."""
    limit = request.app.state.settings.idempotency_tokens_per_minute
    rate = Rate("caller", f"tokens:{principal}", limit, WINDOW)
    return MintLimiter(request.app.state.traffic, rate, "idempotency_token")


KeyCreationLimit = Annotated[MintLimiter, Depends(key_creation_limiter)]
