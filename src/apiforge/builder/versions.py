"""Publishing: semver bumps, immutable snapshots of `dev`, breaking-change reports, deprecation
and sunset dates.

A snapshot (`app_versions.snapshot`) is the whole contract of a version, so calls to it never read
`dev` again::

    {"format": 1, "version": "1.2.0",
     "apis": {"<api>": <api_document: api, name, description, docExtra, group, enabled, price,
                        cost, params, steps, returnSteps, auth>},
     "collections": {"<name>": CollectionSchema.to_dict(): id, app_id, name, fields}}

The first version of an app is always 1.0.0, whatever the bump: there is nothing to bump from,
and a 0.x line would promise nothing to callers.
"""

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError as PydanticError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from apiforge.builder.definitions import DefinitionChecker, api_document, callee_refs
from apiforge.builder.models import ApiDefinition, App, AppVersion
from apiforge.builder.schemas import (
    ChangeRead,
    PublishResult,
    VersionCreate,
    VersionRead,
    VersionSummary,
    VersionUpdate,
)
from apiforge.builder.service import find_app, find_readable_app
from apiforge.core.db import after_commit
from apiforge.core.errors import ConflictError, NotFoundError, ValidationError
from apiforge.datasets.published import undeprecation_conflicts
from apiforge.engine.params import ParamSpec
from apiforge.engine.schemas import MAX_VERSION_PART, SEMVER
from apiforge.http.pagination import Page, PageParams, SortKey, fetch_page, order_by
from apiforge.idempotency.locking import NO_PRECONDITION, Precondition
from apiforge.tools.clock import utcnow
from apiforge.workspaces.models import Role
from apiforge.workspaces.service import CurrentWorkspace

SNAPSHOT_FORMAT = 1
VERSION_SORTS: dict[str, SortKey] = {
    "version": (
        AppVersion.major.expression,
        AppVersion.minor.expression,
        AppVersion.patch.expression,
    ),
    "createdTime": AppVersion.created_at.expression,
}


class VersionNotFoundError(NotFoundError):
    reason = "version_not_found"
    message = "Version not found"


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = SEMVER.match(text)
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3])


def next_version(latest: str | None, bump: str) -> tuple[int, int, int]:
    """The version a publish creates: 1.0.0 first, then `bump` applied to `latest`; 409
    `version_limit_reached` past `MAX_VERSION_PART`."""
    current = parse_version(latest) if latest else None
    if current is None:
        return 1, 0, 0
    major, minor, patch = current
    if bump == "major":
        bumped = major + 1, 0, 0
    elif bump == "minor":
        bumped = major, minor + 1, 0
    else:
        bumped = major, minor, patch + 1
    if max(bumped) > MAX_VERSION_PART:
        # Refused before anything is written: a version past the bound could never be called.
        raise ConflictError(
            f"{latest} has no next {bump} version: version parts stop at {MAX_VERSION_PART}",
            reason="version_limit_reached",
        )
    return bumped


@dataclass(frozen=True, slots=True)
class Change:
    api: str
    kind: str
    breaking: bool
    message: str
    param: str = ""
    before: int | None = None  # the old and new RU amount of a price or cost change
    after: int | None = None

    def read(self) -> ChangeRead:
        return ChangeRead(
            api=self.api,
            kind=self.kind,
            param=self.param,
            breaking=self.breaking,
            message=self.message,
            before=self.before,
            after=self.after,
        )


def _params(api: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> param as the engine reads it: a param is stored as the builder sent it, and the
    engine accepts lax values (`"min": "5"`, `"required": "false"`), which compared raw were a
    500 (`"5" > 1`) or a false break (the string `"false"` is truthy)."""
    params: dict[str, dict[str, Any]] = {}
    for raw in api.get("params") or []:
        if not isinstance(raw, dict) or "name" not in raw:
            continue
        try:
            params[str(raw["name"])] = ParamSpec.model_validate(raw).model_dump()
        except PydanticError:  # never so in a compiled snapshot; compared as stored
            params[str(raw["name"])] = raw
    return params


def _param_changes(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    changes: list[Change] = []
    before, after = _params(old), _params(new)
    for param, spec in after.items():
        if param not in before:
            required = bool(spec.get("required"))
            kind = "required_param_added" if required else "param_added"
            word = "required" if required else "optional"
            changes.append(Change(name, kind, required, f"{word} param {param} added", param))
            continue
        was = before[param]
        old_type, new_type = was.get("type", "string"), spec.get("type", "string")
        if old_type != new_type:
            message = f"param {param} changed type from {old_type} to {new_type}"
            changes.append(Change(name, "param_type_changed", True, message, param))
        if spec.get("required") and not was.get("required"):
            message = f"param {param} became required"
            changes.append(Change(name, "param_now_required", True, message, param))
        if old_type == new_type:
            changes.extend(_narrowed(name, param, was, spec))
    for param in before.keys() - after.keys():
        # Params are a closed set: calls that still pass it are refused as unknown.
        message = f"param {param} removed; calls passing it are refused"
        changes.append(Change(name, "param_removed", True, message, param))
    return changes


def _narrowed(name: str, param: str, was: dict[str, Any], spec: dict[str, Any]) -> list[Change]:
    """A param of the same type that now refuses values it accepted: fewer `enum` values, a
    higher `min`, a lower `max` (lengths, for strings), a new or different `pattern`."""
    changes: list[Change] = []
    old_enum, new_enum = was.get("enum"), spec.get("enum")
    if new_enum is not None and (
        old_enum is None or any(value not in new_enum for value in old_enum)
    ):
        message = f"param {param} accepts fewer values (enum)"
        changes.append(Change(name, "param_enum_narrowed", True, message, param))
    old_min, new_min = was.get("min"), spec.get("min")
    old_max, new_max = was.get("max"), spec.get("max")
    if (new_min is not None and (old_min is None or new_min > old_min)) or (
        new_max is not None and (old_max is None or new_max < old_max)
    ):
        message = f"param {param} accepts a narrower range (min/max)"
        changes.append(Change(name, "param_range_narrowed", True, message, param))
    if spec.get("pattern") is not None and spec.get("pattern") != was.get("pattern"):
        # Whether one regular expression accepts less than another can't be decided in
        # general: a new or different pattern is taken as refusing what the old one let in.
        message = f"param {param} has a new pattern"
        changes.append(Change(name, "param_pattern_changed", True, message, param))
    return changes


def _browser_callable(auth: dict[str, Any]) -> bool:
    return bool(auth.get("requireToken") or auth.get("public"))


def _auth_changes(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Callers refused where they were let in: a token newly required, browser (`public`)
    access withdrawn, an idempotency key newly required, another permission mode or target,
    fewer rights granting access (any one of them does), the API disabled."""
    before, after = old.get("auth") or {}, new.get("auth") or {}
    changes: list[Change] = []

    def breaking(kind: str, message: str) -> None:
        changes.append(Change(name, kind, True, message))

    if after.get("requireToken") and not before.get("requireToken"):
        breaking("token_now_required", "an end-user token is now required")
    # Publishable keys reach an API that requires a token or is public (gateway/keys.py): a
    # token no longer required withdraws them as surely as `public` withdrawn, and `public`
    # withdrawn from an API that still requires a token leaves them in.
    if _browser_callable(before) and not _browser_callable(after):
        breaking("public_removed", "publishable (browser) keys may no longer call it")
    if after.get("requireIdempotencyKey") and not before.get("requireIdempotencyKey"):
        breaking("idempotency_key_now_required", "an Idempotency-Key is now required")
    old_mode, new_mode = before.get("mode") or "none", after.get("mode") or "none"
    if old_mode != new_mode and new_mode != "none":
        breaking("permission_mode_changed", f"permission mode changed to {new_mode}")
    elif new_mode != "none":
        if set(before.get("rights") or []) - set(after.get("rights") or []):
            breaking("rights_narrowed", "fewer rights grant access")
        if new_mode == "userSystem" and before.get("target") != after.get("target"):
            breaking("permission_target_changed", "the permission target changed")
    if old.get("enabled", True) and not new.get("enabled", True):
        breaking("api_disabled", f"API {name} disabled")
    return changes


_COMPARED = ("params", "steps", "returnSteps", "auth", "enabled")
_DESCRIBED = ("name", "description", "docExtra", "group")
# What callers pay per call, and what the builder pays the platform (RU): callers of `latest`
# pay the new price from the publish on, so each change is named with both amounts.
_AMOUNTS = {"price": "price_changed", "cost": "cost_changed"}


def _amount_changes(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    changes: list[Change] = []
    for key, kind in _AMOUNTS.items():
        before, after = int(old.get(key) or 0), int(new.get(key) or 0)
        if before != after:
            message = f"{key} of API {name} changed from {before} to {after} RU"
            changes.append(Change(name, kind, False, message, before=before, after=after))
    return changes


def compare(latest: dict[str, Any], dev: dict[str, Any]) -> list[Change]:
    """What publishing `dev` changes for callers of `latest` (both: api name -> document).

    Breaking: an API removed or disabled, a required param added, an optional param becoming
    required, a param removed, retyped or narrowed (`_narrowed`), callers newly refused by its
    `auth` (`_auth_changes`). Everything else is reported as a change; a new price or cost with
    its old and new amount (`_amount_changes`).
    """
    changes: list[Change] = []
    for name in sorted(latest.keys() - dev.keys()):
        changes.append(Change(name, "api_removed", True, f"API {name} removed"))
    for name in sorted(dev.keys() - latest.keys()):
        changes.append(Change(name, "api_added", False, f"API {name} added"))
    for name in sorted(latest.keys() & dev.keys()):
        old, new = latest[name], dev[name]
        specific = _param_changes(name, old, new) + _auth_changes(name, old, new)
        changes.extend(specific)
        changes.extend(_amount_changes(name, old, new))
        if not specific and any(old.get(k) != new.get(k) for k in _COMPARED):
            changes.append(Change(name, "api_changed", False, f"API {name} changed"))
        elif not specific and any(old.get(k) != new.get(k) for k in _DESCRIBED):
            changes.append(Change(name, "docs_changed", False, f"API {name} documentation changed"))
    return changes


def _ensure_callees_exist(
    api: str, document: dict[str, Any], label: str, pinned: Collection[tuple[str, str]]
) -> None:
    """What a snapshot's `callApi` steps run must exist for good, since the snapshot never
    changes: a pin to `dev` (which a published version cannot call) or to an API the version
    (`label`, or the one pinned) does not have fails every call that reaches the step, and an
    unpublished pin costs nothing when the snapshot is priced, yet runs whatever is published
    under that number later — its steps unpaid for. `pinned`: (version, api) of the published
    versions pinned, and of this one."""
    published = {version for version, _ in pinned}
    for callee, version in callee_refs(document.get("steps")):
        at = version or label
        if version == "dev":
            problem = "pins version dev, which a published version cannot call"
        elif at not in published:
            problem = f"pins version {at}, which is not published"
        elif (at, callee) not in pinned:
            problem = f"calls API {callee}, which version {at} does not have"
        else:
            continue
        raise ValidationError(
            f"API {api}: a callApi step {problem}",
            reason="invalid_definition",
            errors=[{"field": f"apis.{api}.steps", "message": f"callApi {problem}"}],
        )


def summary(row: AppVersion, app: App, *, own: bool = True) -> VersionSummary:
    """`own`: read by the app's workspace (else `publishedBy` is withheld)."""
    return VersionSummary(
        id=row.id,
        version=row.version,
        notes=row.notes,
        deprecated=row.deprecated,
        sunset=row.sunset_at,
        latest=row.version == app.latest_version,
        published_by=row.published_by if own else None,
        created_time=row.created_at,
        revision=row.revision,
    )


def version_read(row: AppVersion, app: App) -> VersionRead:
    return VersionRead(
        id=row.id,
        version=row.version,
        notes=row.notes,
        deprecated=row.deprecated,
        sunset=row.sunset_at,
        latest=row.version == app.latest_version,
        published_by=row.published_by,
        created_time=row.created_at,
        revision=row.revision,
        api_count=len(row.snapshot.get("apis") or {}),
        snapshot=row.snapshot,
    )


async def find_version(session: AsyncSession, app: App, version: str) -> AppVersion:
    """`X.Y.Z` or `latest` of `app`, else 404 `version_not_found`."""
    label = app.latest_version if version == "latest" else version
    if label is None or parse_version(label) is None:
        raise VersionNotFoundError()
    row = await session.scalar(
        select(AppVersion).where(AppVersion.app_id == app.id, AppVersion.version == label)
    )
    if row is None:
        raise VersionNotFoundError()
    return row


def version_tag(label: str, revision: int, asked: str) -> str:
    """The text of a version's `ETag` (between its quotes): its `revision`, and read through
    `latest` its label too (`1.2.0;3`). A publish moves `latest` to a new version at revision 1,
    so a bare revision read from the one before would pass for a version never read."""
    return f"{label};{revision}" if asked == "latest" else str(revision)


def immutable(version: str, fields: list[str] | None = None) -> ConflictError:
    details: dict[str, Any] = {"version": version}
    if fields:
        details["fields"] = fields
    return ConflictError(
        f"Version {version} is published and cannot be changed; only deprecated and sunset can"
        " be set",
        reason="version_immutable",
        details=details,
    )


class VersionService:
    """Publish, list, read and deprecate versions of one app. Never commits."""

    def __init__(
        self,
        session: AsyncSession,
        checker: DefinitionChecker,
        app_changed: Callable[[str], None] = lambda app_id: None,
    ) -> None:
        self.session = session
        self.checker = checker
        self.app_changed = app_changed  # the gateway's resolve cache forgets the app

    async def publish(
        self, current: CurrentWorkspace, app_id: str, data: VersionCreate
    ) -> PublishResult:
        """Freeze `dev` into the next version and move `latest` to it.

        Every API is compiled again (collections or prices may have changed since it was saved);
        a non-major bump over a breaking change is refused with 409 unless `force`.
        """
        app = await find_app(self.session, current.id, app_id, lock=True)
        current.require(Role.EDITOR)
        rows = list(
            await self.session.scalars(
                select(ApiDefinition)
                .where(ApiDefinition.app_id == app.id)
                .order_by(ApiDefinition.api)
            )
        )
        if not rows:
            raise ConflictError("The app has no API to publish", reason="no_apis")
        major, minor, patch = next_version(app.latest_version, data.bump)
        label = f"{major}.{minor}.{patch}"
        snapshot = await self._snapshot(app, rows, label)
        previous = await self._latest(app)
        before = (previous.snapshot.get("apis") or {}) if previous else {}
        changes = compare(before, snapshot["apis"])
        breaking = any(change.breaking for change in changes)
        if breaking and previous is not None and data.bump != "major" and not data.force:
            raise ConflictError(
                "dev breaks latest: publish a major version, or set force",
                reason="breaking_change_requires_major",
                details={"changes": [c.read().model_dump(by_alias=True) for c in changes]},
            )
        snapshot["version"] = label
        row = AppVersion(
            app_id=app.id,
            version=label,
            major=major,
            minor=minor,
            patch=patch,
            notes=data.notes,
            deprecated=False,
            snapshot=snapshot,
            published_by=current.account_id,
        )
        self.session.add(row)
        try:
            await self.session.flush()
        except IntegrityError:  # a concurrent publish took the number (SQLite has no row lock)
            raise ConflictError(
                f"Version {label} was just published; try again", reason="version_exists"
            ) from None
        app.latest_version = label
        await self.session.flush()
        after_commit(self.session, lambda: self.app_changed(app_id))
        return PublishResult(
            id=row.id,
            version=label,
            previous_version=previous.version if previous else None,
            breaking=breaking,
            changes=[c.read() for c in changes],
        )

    async def list_versions(
        self, current: CurrentWorkspace, app_id: str, params: PageParams
    ) -> Page[VersionSummary]:
        """Newest first; snapshots are left out (read one version to see it, as the app's
        workspace). Any workspace lists a public app's versions, as it reads their docs: a
        subscriber pins a version and must see its deprecation and sunset before calls to it
        fail. Who published a version is the app's workspace's business (`publishedBy` null)."""
        app, own = await find_readable_app(self.session, current.id, app_id)
        stmt = (
            select(AppVersion)
            .options(defer(AppVersion.snapshot))
            .where(AppVersion.app_id == app.id)
        )
        stmt = order_by(
            stmt, params, VERSION_SORTS, default="version", tiebreak=AppVersion.id.expression
        )
        rows, total = await fetch_page(self.session, stmt, params)
        return params.page([summary(row, app, own=own) for row in rows], total)

    async def read(self, current: CurrentWorkspace, app_id: str, version: str) -> VersionRead:
        app = await find_app(self.session, current.id, app_id)
        return version_read(await find_version(self.session, app, version), app)

    async def update(
        self,
        current: CurrentWorkspace,
        app_id: str,
        version: str,
        data: VersionUpdate,
        precondition: Precondition = NO_PRECONDITION,
    ) -> VersionRead:
        """Only `deprecated` and `sunset` change; any other field is a 409 `version_immutable`.

        A sunset needs the version deprecated (in the same PATCH or before: 400 otherwise), lies
        in the future, and is refused on `latest` (409 `latest_version_sunset`): its callers have
        nothing newer to move to, and `latest` must never answer 410. Undeprecating clears it,
        and is refused while the version names a collection field removed since (409
        `version_uses_removed_field`): the removal went through because it was deprecated.
        `If-Match` names the `revision` (412), through `latest` with the label (`version_tag`);
        a change takes the next revision. The app is locked like a publish, so a field removal
        and an undeprecation never both pass their checks.
        """
        app = await find_app(self.session, current.id, app_id, lock=True)
        row = await find_version(self.session, app, version)
        current.require(Role.EDITOR)
        extra = sorted((data.model_extra or {}).keys())
        if extra:
            raise immutable(row.version, extra)
        if version == "latest":
            precondition.check_tag(version_tag(row.version, row.revision, version))
        else:
            precondition.check(row.revision, lock="revision")  # `version` is the label
        given = data.model_fields_set
        if not given & {"deprecated", "sunset"}:
            raise ValidationError(
                errors=[{"field": "deprecated", "message": "deprecated or sunset is required"}]
            )
        if "deprecated" in given and data.deprecated is None:
            raise ValidationError(errors=[{"field": "deprecated", "message": "must be 1 or 0"}])
        deprecated = row.deprecated if data.deprecated is None else data.deprecated
        if deprecated:
            sunset = self._sunset(row, app, data)
        elif data.sunset is not None:
            raise ValidationError(
                "A sunset date needs the version deprecated",
                reason="sunset_requires_deprecation",
                errors=[{"field": "sunset", "message": "needs deprecated: 1"}],
            )
        else:
            sunset = None
        if row.deprecated and not deprecated:
            conflicts = await undeprecation_conflicts(self.session, app.id, row.snapshot)
            if conflicts:
                raise ConflictError(
                    f"Version {row.version} uses collection fields removed since it was deprecated",
                    reason="version_uses_removed_field",
                    details={"errors": conflicts},
                )
        if (deprecated, sunset) != (row.deprecated, row.sunset_at):
            if deprecated != row.deprecated:  # `Deprecation: @<seconds>` (RFC 9745) dates it
                row.deprecated_at = utcnow() if deprecated else None
            row.deprecated, row.sunset_at = deprecated, sunset
            row.revision += 1  # the UPDATE is conditional on the revision read (409 if raced)
            await self.session.flush()
            after_commit(self.session, lambda: self.app_changed(app_id))
        return version_read(row, app)

    @staticmethod
    def _sunset(row: AppVersion, app: App, data: VersionUpdate) -> datetime | None:
        """The sunset a deprecated version keeps or takes; checks a new one."""
        if "sunset" not in data.model_fields_set:
            return row.sunset_at
        sunset = data.sunset
        if sunset is None or sunset == row.sunset_at:  # cleared, or the same date sent again
            return sunset
        if sunset <= utcnow():
            raise ValidationError(errors=[{"field": "sunset", "message": "must be in the future"}])
        if row.version == app.latest_version:
            raise ConflictError(
                "The latest version cannot have a sunset date: publish a newer version first",
                reason="latest_version_sunset",
                details={"version": row.version},
            )
        return sunset

    async def refuse_change(self, current: CurrentWorkspace, app_id: str, version: str) -> None:
        """PUT or DELETE of a published version: 404 when unknown, else always 409."""
        app = await find_app(self.session, current.id, app_id)
        row = await find_version(self.session, app, version)
        current.require(Role.EDITOR)
        raise immutable(row.version)

    async def _latest(self, app: App) -> AppVersion | None:
        if app.latest_version is None:
            return None
        return await self.session.scalar(
            select(AppVersion).where(
                AppVersion.app_id == app.id, AppVersion.version == app.latest_version
            )
        )

    async def _snapshot(self, app: App, rows: list[ApiDefinition], label: str) -> dict[str, Any]:
        """Every API compiled again with today's collections and prices (and the APIs its
        `callApi` steps run, as this version has them), and those collections."""
        collections = await self.checker.collections(app.id)
        prices = await self.checker.prices()
        documents = {row.api: api_document(row) for row in rows}
        for document in documents.values():
            del document["cost"]
        checker = self.checker
        callees = await checker.callee_costs(app.id, documents, collections, prices, label)
        pinned = {*callees.pinned, *((label, name) for name in documents)}
        apis: dict[str, Any] = {}
        for row in rows:
            document = documents[row.api]
            _ensure_callees_exist(row.api, document, label, pinned)
            cost = checker.check(
                document, collections, prices, prefix=f"apis.{row.api}.", callee_cost=callees.at(0)
            )
            row.cost = cost  # dev shows the cost the version was priced at
            apis[row.api] = {**document, "cost": cost}
        return {
            "format": SNAPSHOT_FORMAT,
            "apis": apis,
            "collections": {name: schema.to_dict() for name, schema in collections.items()},
        }
