"""Request and response models of apps, their APIs, versions, step prices and import/export."""

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from apiforge.datasets.schema import MAX_FIELDS, NAME_PATTERN
from apiforge.datasets.schemas import FieldDef
from apiforge.engine.base import MAX_RU
from apiforge.http.schemas import ApiModel, Flag, InputModel, Timestamp, not_null

API_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9]{0,63}$"
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"  # noqa: S105 - a name pattern, not a secret
MAX_STEPS = 200
MAX_SECRETS = 50
MAX_RIGHTS = 50
MAX_GRACE_SECONDS = 86400  # of a signing secret's rotation (`SigningSecretRotate`)

AppName = Annotated[str, Field(min_length=1, max_length=100)]
Description = Annotated[str, Field(max_length=2000)]
ApiName = Annotated[str, Field(pattern=API_NAME_PATTERN)]
GroupName = Annotated[str, Field(max_length=64)]
Price = Annotated[StrictInt, Field(ge=0, le=MAX_RU)]
Visibility = Literal["private", "public"]
SecretName = Annotated[str, Field(pattern=SECRET_NAME_PATTERN)]
SecretValue = Annotated[str, Field(min_length=1, max_length=4096)]
Right = Annotated[str, Field(min_length=1, max_length=64)]
Config = Annotated[dict[str, Any], Field(max_length=100)]
# Free-form JSON (config, params, steps) nests at most this deep: far more than any definition
# needs (steps nest 6 levels), and far less than what exhausts the stack when it is encoded.
MAX_JSON_DEPTH = 64
_INT64 = (-(2**63), 2**63 - 1)  # what orjson (every response, exports) can write


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "cannot contain NUL characters"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:  # a lone surrogate (`"\ud800"` is valid JSON, not UTF-8)
            return "is not valid Unicode text"
    return None


def json_problem(value: Any, limit: int | None = MAX_JSON_DEPTH) -> str | None:
    """Why `value` (a builder's input) cannot be stored and served back as JSON on every backend:
    NUL or a lone surrogate in a string or key (PostgreSQL text and jsonb refuse them), NaN or an
    infinity (which Python's JSON parser accepts and jsonb refuses), an integer beyond 64 bits, a
    key that is not a string, a value JSON has no type for (YAML dates, binaries, sets), or
    nesting deeper than `limit` (None: any depth). Nested pydantic models check themselves.
    Iterative: no recursion to exhaust."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        at = f" (at {path[:200]})" if path else ""
        if item is None or isinstance(item, bool | BaseModel):
            continue
        if isinstance(item, str):
            text = _text_problem(item)
            if text is not None:
                return f"{text}{at}"
        elif isinstance(item, int):
            if not _INT64[0] <= item <= _INT64[1]:
                return f"holds an integer beyond 64 bits{at}"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"holds NaN or an infinite number{at}"
        elif isinstance(item, dict | list):
            if limit is not None and depth >= limit:
                return f"nests deeper than {limit} levels{at}"
            children: list[tuple[Any, Any]]
            children = list(item.items()) if isinstance(item, dict) else list(enumerate(item))
            for key, child in children:
                if isinstance(item, dict) and not isinstance(key, str):
                    return f"has a key that is not a string{at}"
                text = _text_problem(key) if isinstance(key, str) else None
                if text is not None:
                    return f"{text}{at}"
                stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
        else:
            return f"holds a {type(item).__name__}, which is not a JSON value{at}"
    return None


class BuilderInput(InputModel):
    """A request body (or import document part) of the builder: every field must be storable and
    servable as JSON on every backend (`json_problem`), a 400 naming the field otherwise."""

    informative_fields: ClassVar[frozenset[str]] = frozenset()  # never stored: not checked
    # Their nesting is checked with the whole definition (`DefinitionChecker`: 400
    # `invalid_definition`, as the step engine's own refusals).
    definition_fields: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name in cls.informative_fields or not isinstance(value, str | list | dict):
            return value
        limit = None if info.field_name in cls.definition_fields else MAX_JSON_DEPTH
        problem = json_problem(value, limit)
        if problem is not None:
            raise PydanticCustomError("invalid_value", problem)
        return value


# --- apps -------------------------------------------------------------------------------------


class AppCreate(BuilderInput):
    name: AppName
    description: Description = ""
    visibility: Visibility = "private"
    # `env.config` of expressions: plain settings, shown back to members.
    config: Config = Field(default_factory=dict)
    # `env.secrets` of expressions: write-only, stored encrypted, only their names are shown.
    secrets: Annotated[dict[SecretName, SecretValue], Field(max_length=MAX_SECRETS)] = Field(
        default_factory=dict
    )


class AppUpdate(BuilderInput):
    """Every field optional, none null (`not_null`). `config` replaces the whole config;
    `secrets` is merged: a name set to `null` is deleted, the others are set."""

    name: AppName | None = None
    description: Description | None = None
    visibility: Visibility | None = None
    config: Config | None = None
    secrets: (
        Annotated[dict[SecretName, SecretValue | None], Field(max_length=MAX_SECRETS)] | None
    ) = None

    _no_null = field_validator(
        "name", "description", "visibility", "config", "secrets", mode="before"
    )(not_null)


class SigningSecretRotate(InputModel):
    """How long tokens signed with the secret being replaced stay accepted: 0 (the default)
    refuses them at once; at most a day, long enough to roll out, short for a leaked secret."""

    grace_seconds: Annotated[StrictInt, Field(ge=0, le=MAX_GRACE_SECONDS)] = 0


class SigningSecretRotated(ApiModel):
    """When the secret changed, and until when the previous one is accepted (null: no grace).
    Never the secret: it only signs and checks tokens inside apiforge."""

    rotated_time: Timestamp
    previous_valid_until: Timestamp | None


class AppRead(ApiModel):
    id: str
    workspace_id: str
    name: str
    description: str
    visibility: Visibility
    latest_version: str | None
    config: dict[str, Any]
    secret_names: list[str]
    api_count: int
    version: int
    created_time: Timestamp
    updated_time: Timestamp


# --- APIs -------------------------------------------------------------------------------------


class PermissionTarget(BuilderInput):
    """Where the `userSystem` target comes from: an arg's name, a token claim, or a constant."""

    source: Literal["arg", "token", "constant"]
    value: str = Field(min_length=1, max_length=128)


class ApiAuth(BuilderInput):
    """Token requirement and permission mode (spec 001); enforced by the gateway.

    `simple` and `userSystem` need `rights` (any one of them grants access); `userSystem` also
    needs `target`. Every mode but `none` needs `requireToken`, since it reads the token.
    `public` marks an API that publishable (browser) keys may call without an end-user token.
    `requireIdempotencyKey` refuses calls without an `Idempotency-Key` (or `X-Request-Seq`).
    """

    require_token: Flag = False
    public: Flag = False
    require_idempotency_key: Flag = False
    mode: Literal["none", "simple", "admin", "userSystem"] = "none"
    rights: Annotated[list[Right], Field(max_length=MAX_RIGHTS)] = Field(default_factory=list)
    target: PermissionTarget | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "ApiAuth":
        if self.mode != "none" and not self.require_token:
            raise ValueError(f"mode {self.mode} reads the end-user token: set requireToken")
        if self.mode in ("simple", "userSystem") and not self.rights:
            raise ValueError(f"mode {self.mode} needs at least one right")
        if self.mode == "userSystem" and self.target is None:
            raise ValueError("mode userSystem needs a target")
        if self.mode != "userSystem" and self.target is not None:
            raise ValueError("target is only used by mode userSystem")
        return self

    def document(self) -> dict[str, Any]:
        """The stored (and snapshotted) form: camelCase keys, JSON booleans. The idempotency
        flag is stored only when set, so documents of APIs without it stay as they were."""
        document: dict[str, Any] = {
            "requireToken": self.require_token,
            "public": self.public,
            "mode": self.mode,
            "rights": list(dict.fromkeys(self.rights)),
            "target": self.target.model_dump() if self.target else None,
        }
        if self.require_idempotency_key:
            document["requireIdempotencyKey"] = True
        return document


class ApiAuthRead(ApiModel):
    require_token: Flag
    public: Flag = False
    require_idempotency_key: Flag = False
    mode: str
    rights: list[str]
    target: dict[str, str] | None


Steps = Annotated[list[dict[str, Any]], Field(max_length=MAX_STEPS)]
ReturnSteps = Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=MAX_STEPS)]


class ApiCreate(BuilderInput):
    """One API on `dev`. `params` and `steps` are checked by the step engine on save;
    `returnSteps` null (or absent) returns every step's output."""

    api: ApiName
    name: Annotated[str, Field(max_length=100)] = ""
    description: Description = ""
    doc_extra: Annotated[str, Field(max_length=20_000)] = ""
    group: GroupName = ""
    enabled: Flag = True
    price: Price = 0
    params: Annotated[list[dict[str, Any]], Field(max_length=100)] = Field(default_factory=list)
    steps: Steps = Field(default_factory=list)
    return_steps: ReturnSteps | None = None
    auth: ApiAuth = Field(default_factory=ApiAuth)

    definition_fields: ClassVar[frozenset[str]] = frozenset({"steps"})


class ApiUpdate(BuilderInput):
    """Every field optional, and only `returnSteps` may be null (`not_null`); the result is
    validated as a whole, exactly like a new API."""

    api: ApiName | None = None
    name: Annotated[str, Field(max_length=100)] | None = None
    description: Description | None = None
    doc_extra: Annotated[str, Field(max_length=20_000)] | None = None
    group: GroupName | None = None
    enabled: Flag | None = None
    price: Price | None = None
    params: Annotated[list[dict[str, Any]], Field(max_length=100)] | None = None
    steps: Steps | None = None
    return_steps: ReturnSteps | None = None
    auth: ApiAuth | None = None

    definition_fields: ClassVar[frozenset[str]] = frozenset({"steps"})

    _no_null = field_validator(
        "api",
        "name",
        "description",
        "doc_extra",
        "group",
        "enabled",
        "price",
        "params",
        "steps",
        "auth",
        mode="before",
    )(not_null)


class ApiSummary(ApiModel):
    """An API in the list: enough for the console's left column."""

    id: str
    api: str
    name: str
    description: str
    group: str
    enabled: Flag
    price: int
    cost: int
    version: int
    created_time: Timestamp
    updated_time: Timestamp


class ApiRead(ApiSummary):
    doc_extra: str
    params: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    return_steps: list[str] | None
    auth: ApiAuthRead


class ApiGroupRead(ApiModel):
    name: str
    api_count: int


class ApiGroupList(ApiModel):
    list: list[ApiGroupRead]


# --- versions ---------------------------------------------------------------------------------


class VersionCreate(BuilderInput):
    """Publish `dev`: `bump` picks the next semver from `latest` (the first version is 1.0.0)."""

    bump: Literal["major", "minor", "patch"]
    notes: Annotated[str, Field(max_length=20_000)] = ""
    force: Flag = False


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # `\d` would take other scripts' digits
)


def _rfc3339(value: Any) -> Any:
    """An RFC 3339 time with its zone (`2027-01-31T00:00:00Z`), as UTC in whole seconds (what
    the read model and the `Sunset` HTTP-date can say). Not pydantic's lax datetime: a number
    (seconds since 1970) or a time without a zone would be a guess at what the builder meant."""
    if value is None:
        return None
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 time with a zone, like 2027-01-31T00:00:00Z")
    # fromisoformat takes at most 6 fractional digits; whole seconds are kept anyway.
    text = re.sub(r"\.\d+", "", value.upper().replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):  # 2027-02-30, 25:00, or past year 9999 in UTC
        raise ValueError("must be a valid time between years 1 and 9999 in UTC") from None


SunsetTime = Annotated[datetime, BeforeValidator(_rfc3339)]


class VersionUpdate(InputModel):
    """Only `deprecated` and `sunset` may change; the service answers 409 for any other field.
    `sunset: null` clears the date; fields left out stay."""

    model_config = {"extra": "allow"}

    deprecated: Flag | None = None
    sunset: SunsetTime | None = None


class ChangeRead(ApiModel):
    """One difference between `latest` and `dev`; `param` is empty when the change is API-wide.
    `before` and `after` are the RU amounts of a `price_changed` or `cost_changed` (else null)."""

    api: str
    kind: str
    param: str
    breaking: Flag
    message: str
    before: int | None = None
    after: int | None = None


class PublishResult(ApiModel):
    id: str
    version: str
    previous_version: str | None
    breaking: Flag
    changes: list[ChangeRead]


class VersionSummary(ApiModel):
    """`revision` is the optimistic lock (`ETag`), since `version` is the semver label."""

    id: str
    version: str
    notes: str
    deprecated: Flag
    sunset: Timestamp | None
    latest: Flag
    published_by: str | None
    created_time: Timestamp
    revision: int


class VersionRead(VersionSummary):
    """A published version with its immutable snapshot (every API and collection schema)."""

    api_count: int
    snapshot: dict[str, Any]


# --- step prices ------------------------------------------------------------------------------


class StepPriceRead(ApiModel):
    step_type: str
    cost: int
    updated_time: Timestamp


# The most a step type may cost: one run of any step (a `getMany` of 1,000 records is 50 runs'
# worth) stays far inside what one call may be charged (`MAX_RU`); APIs that add up past it are
# refused when saved or published.
MAX_STEP_PRICE = 1_000_000_000


class StepPriceUpdate(BuilderInput):
    cost: Annotated[StrictInt, Field(ge=0, le=MAX_STEP_PRICE)]


# --- import / export --------------------------------------------------------------------------


class CollectionExport(BuilderInput):
    # The rule of `POST /api/v1/datasets`: an import makes no collection that route would refuse.
    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    description: Description = ""
    fields: Annotated[list[FieldDef], Field(max_length=MAX_FIELDS)] = Field(default_factory=list)


class VersionNotes(BuilderInput):
    version: Annotated[str, Field(max_length=32)]
    notes: Annotated[str, Field(max_length=20_000)] = ""
    deprecated: Flag = False
    sunset: Any = None  # informative only (an import publishes nothing), like `created_time`
    created_time: Any = None  # informative only; YAML may have turned it into a datetime

    informative_fields: ClassVar[frozenset[str]] = frozenset({"sunset", "created_time"})


class AppExportInfo(BuilderInput):
    name: AppName
    description: Description = ""
    visibility: Visibility = "private"
    config: Config = Field(default_factory=dict)
    secret_names: Annotated[list[SecretName], Field(max_length=MAX_SECRETS)] = Field(
        default_factory=list
    )


class AppDocument(BuilderInput):
    """The export/import document (JSON or YAML). Ids, secrets and snapshots are not part of it:
    an import creates a new app with new ids and a new signing secret, its APIs on `dev`."""

    format: Literal["apiforge-app"] = "apiforge-app"
    format_version: Literal[1] = 1
    exported_time: Any = None  # informative only, like `VersionNotes.created_time`
    app: AppExportInfo
    collections: Annotated[list[CollectionExport], Field(max_length=100)] = Field(
        default_factory=list
    )
    apis: Annotated[list[ApiCreate], Field(max_length=1000)] = Field(default_factory=list)
    versions: Annotated[list[VersionNotes], Field(max_length=10_000)] = Field(default_factory=list)

    informative_fields: ClassVar[frozenset[str]] = frozenset({"exported_time"})
