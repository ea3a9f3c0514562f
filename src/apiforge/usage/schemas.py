"""Response models of `/api/v1/request-logs`: a caller's own calls, calls to a builder's apps."""

from typing import Annotated, Any

from pydantic import Field

from apiforge.http.schemas import ApiModel, Timestamp

Amount = Annotated[
    int | None,
    Field(
        description="RU debited from the calling workspace for this call (its `call` ledger "
        "entry, `requestId`, has the negated amount); 0 when the call moved nothing (refused, "
        "failed, replayed or free); null for calls logged before this was recorded"
    ),
]


class AppCallRead(ApiModel):
    """One call to one of the current workspace's apps, as its builder sees it: who called and
    how it went and what the caller paid (`amount`: the price, or the cost when the builder called
    its own app), never what the caller sent (args), from where (client IP) or with which key."""

    id: str
    created_time: Timestamp
    request_id: str
    caller_workspace_id: str | None
    app_id: str
    api: str
    version: str
    status: int
    reason: str
    latency_ms: float
    amount: Amount


class RequestLogRead(ApiModel):
    """One call made by the current workspace, with everything the caller may see of it:
    the key or member that called, the client IP and the args (`sensitive` params as `***`;
    `null` when the call was refused before the API's params were known)."""

    id: str
    created_time: Timestamp
    request_id: str
    app_id: str
    api: str
    version: str
    status: int
    reason: str
    latency_ms: float
    amount: Amount
    caller_kind: str | None
    key_id: str | None
    account_id: str | None
    client_ip: str
    args: dict[str, Any] | None
