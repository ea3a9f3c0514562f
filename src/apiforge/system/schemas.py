"""Response models of the system endpoints: version and release notes, health, readiness."""

from apiforge.http.schemas import ApiModel, Flag


class ReleaseRead(ApiModel):
    version: str
    date: str | None  # the release day as written in CHANGELOG.md (YYYY-MM-DD), not a timestamp
    yanked: Flag  # marked `[YANKED]`: pulled, so never `latestVersion`
    changes: dict[str, list[str]]  # category ("added", "fixed", ...) -> entries


class PlatformVersionRead(ApiModel):
    """`GET /api/v1/version`. Named apart from the builder's `VersionRead` (an app version):
    two models of one name get module-qualified names in the OpenAPI document, which SDK
    generators fold back into a clash."""

    version: str
    latest_version: str | None
    release_date: str | None
    update_available: Flag
    release_list: list[ReleaseRead]


class HealthRead(ApiModel):
    status: str


class ReadinessRead(ApiModel):
    status: str
    checks: dict[str, str]
