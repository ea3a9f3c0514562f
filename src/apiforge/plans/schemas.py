"""Request and response models of plans: admin CRUD, quota values, and `/user/plans`."""

from typing import Annotated, Any

from pydantic import Field, StrictInt, field_validator

from apiforge.http.schemas import ApiModel, Flag, InputModel, Text, Timestamp, not_null

# The largest integer every JSON client (JavaScript included) reads exactly.
MAX_QUOTA = 2**53 - 1
PLAN_CODE_PATTERN = r"^[a-z0-9][a-z0-9-]{1,39}$"

QuotaValue = Annotated[StrictInt, Field(ge=-1, le=MAX_QUOTA)]
"""A quota limit: a count or byte size, `-1` for unlimited; strict so `true` or `"5"` is refused."""


class QuotasInput(InputModel):
    """Quota limits by name; one field per `plans.models.QUOTA_NAMES` entry (a unit test keeps them
    in step), so an unknown name is refused with its own field path, e.g. `quotas.foo`."""

    members: QuotaValue | None = None
    workspaces: QuotaValue | None = None
    apps: QuotaValue | None = None
    storage_bytes: QuotaValue | None = None
    records: QuotaValue | None = None
    uploads_per_month: QuotaValue | None = None
    calls_per_month: QuotaValue | None = None
    requests_per_minute: QuotaValue | None = None
    concurrent_requests: QuotaValue | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        # Omit a quota to leave it alone; `null` could be misread as "unlimited", which is -1.
        if value is None:
            raise ValueError("must be an integer (-1 for unlimited)")
        return value

    def given(self) -> dict[str, int]:
        """The limits the request named, keyed by their JSON (camelCase) names."""
        return self.model_dump(by_alias=True, exclude_none=True)


class PlanCreate(InputModel):
    code: str = Field(pattern=PLAN_CODE_PATTERN, max_length=40)
    name: Text = Field(min_length=1, max_length=100)
    description: Text = Field(default="", max_length=500)
    quotas: QuotasInput = Field(default_factory=QuotasInput)
    is_default: Flag = False
    is_public: Flag = True


class PlanUpdate(InputModel):
    """Every field optional, none null (`not_null`); `quotas` is merged into the plan's current
    limits."""

    code: str | None = Field(default=None, pattern=PLAN_CODE_PATTERN, max_length=40)
    name: Text | None = Field(default=None, min_length=1, max_length=100)
    description: Text | None = Field(default=None, max_length=500)
    quotas: QuotasInput | None = None
    is_default: Flag | None = None
    is_public: Flag | None = None

    _no_null = field_validator("*", mode="before")(not_null)


class PlanRead(ApiModel):
    id: str
    code: str
    name: str
    description: str
    quotas: dict[str, int]
    is_default: Flag
    is_public: Flag
    version: int
    created_time: Timestamp
    updated_time: Timestamp


class QuotaUsage(ApiModel):
    quota: str
    limit: int
    used: int
    warning: Flag
    reset_time: Timestamp | None = None  # when a monthly count starts afresh; null for stock


class UserPlans(ApiModel):
    current_plan: PlanRead
    usage: list[QuotaUsage]
    plan_list: list[PlanRead]


class WorkspacePlanUpdate(InputModel):
    plan_id: str = Field(min_length=1, max_length=64)


class WorkspacePlanRead(ApiModel):
    id: str
    plan_id: str


class QuotaHitRead(ApiModel):
    """Refusals of one quota for one workspace and operation within one UTC minute: `hits` of
    them, the first at `createdTime`, the last at `lastTime`; `limit` and `used` as last refused."""

    id: str
    created_time: Timestamp
    last_time: Timestamp
    workspace_id: str
    plan_id: str
    quota: str
    operation: str
    limit: int
    used: int
    hits: int
