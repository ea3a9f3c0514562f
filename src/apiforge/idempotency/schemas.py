"""Response of `GET /api/v1/idempotency-tokens`."""

from apiforge.http.schemas import ApiModel, Timestamp


class IdempotencyTokenRead(ApiModel):
    token: str
    header: str = "X-Idempotency-Token"
    expires_time: Timestamp
