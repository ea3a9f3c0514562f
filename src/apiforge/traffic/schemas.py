"""The traffic limits of an app, as the management API reads and writes them."""

from typing import Annotated, Any

from pydantic import Field, StrictInt, StringConstraints

from apiforge.builder.schemas import API_NAME_PATTERN
from apiforge.http.schemas import ApiModel, InputModel, Timestamp

MAX_API_OVERRIDES = 500
PerMinute = Annotated[StrictInt, Field(ge=1, le=1_000_000)]
InFlight = Annotated[StrictInt, Field(ge=1, le=100_000)]
# An API name exactly as sent: the input models' whitespace trimming also reached the keys of
# `apis`, so `"echo "` was taken as `echo` (and beside `"echo"`, one of them silently dropped).
ExactApiName = Annotated[str, StringConstraints(strip_whitespace=False, pattern=API_NAME_PATTERN)]


class LimitValues(InputModel):
    """Each value null (or absent) means no such limit. Frequency limits count per API; per-key
    ones count each caller credential (key, or console account) separately."""

    ip_per_minute: PerMinute | None = Field(
        default=None, description="Calls per minute from one client IP to one API"
    )
    key_per_minute: PerMinute | None = Field(
        default=None, description="Calls per minute from one caller key to one API"
    )
    concurrent_per_key: InFlight | None = Field(
        default=None, description="Calls of one caller key in flight at once"
    )
    concurrent: InFlight | None = Field(
        default=None, description="Calls in flight at once, all callers together"
    )

    def document(self) -> dict[str, int]:
        """The stored form: camelCase keys, only the limits that are set."""
        return {
            name: value
            for name, value in self.model_dump(by_alias=True).items()
            if value is not None
        }


class TrafficLimitsUpdate(LimitValues):
    """App-wide values (concurrency counted over the whole app) and per-API overrides (a value
    set on an API replaces the app's for that API, and its concurrency counts that API alone)."""

    apis: Annotated[dict[ExactApiName, LimitValues], Field(max_length=MAX_API_OVERRIDES)] = Field(
        default_factory=dict
    )

    def document(self) -> dict[str, Any]:
        limits: dict[str, Any] = super().document()
        apis = {name: values.document() for name, values in sorted(self.apis.items())}
        limits["apis"] = {name: values for name, values in apis.items() if values}
        return limits


class LimitValuesRead(ApiModel):
    ip_per_minute: int | None = None
    key_per_minute: int | None = None
    concurrent_per_key: int | None = None
    concurrent: int | None = None


class TrafficLimitsRead(LimitValuesRead):
    app_id: str
    apis: dict[str, LimitValuesRead]
    updated_time: Timestamp | None
    # Optimistic lock (idempotency/locking.py); 0 while the app has never had limits set.
    version: int
