"""Apps of a workspace and the `dev` definitions of their APIs.

Every method takes the caller's `CurrentWorkspace` (proof of membership) and looks the app up
*inside* that workspace, so another tenant's app id is a plain 404 `app_not_found`; roles are
checked here, not in routers: viewer reads, editor changes, admin deletes an app.
"""

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError as PydanticError
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder import env as app_env
from apiforge.builder.definitions import DefinitionChecker, api_document
from apiforge.builder.models import ApiDefinition, App
from apiforge.builder.schemas import (
    MAX_SECRETS,
    ApiAuthRead,
    ApiCreate,
    ApiGroupList,
    ApiGroupRead,
    ApiRead,
    ApiSummary,
    ApiUpdate,
    AppCreate,
    AppRead,
    AppUpdate,
    SigningSecretRotate,
    SigningSecretRotated,
)
from apiforge.builder.signing import new_signing_secret, rotate_signing_secret
from apiforge.core.db import after_commit, lock_rows
from apiforge.core.errors import ConflictError, NotFoundError, ValidationError
from apiforge.core.settings import Settings
from apiforge.datasets.holding import hold_records_table
from apiforge.datasets.models import Collection
from apiforge.datasets.sql import drop_indexes
from apiforge.http.handlers import field_errors
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by
from apiforge.http.schemas import Created
from apiforge.idempotency.locking import NO_PRECONDITION, Precondition, advance, delete_row
from apiforge.keys.subscribers import ensure_unused
from apiforge.plans.service import check_quota, lock_workspace, plan_of
from apiforge.tools.clock import utcnow
from apiforge.tools.filters import icontains
from apiforge.tools.ids import is_id
from apiforge.workspaces.models import Role, Workspace
from apiforge.workspaces.service import CurrentWorkspace

APP_SORTS: dict[str, ColumnElement[Any]] = {
    "name": App.name.expression,
    "createdTime": App.created_at.expression,
    "updatedTime": App.updated_at.expression,
}
API_SORTS: dict[str, ColumnElement[Any]] = {
    "api": func.lower(ApiDefinition.api),
    "name": ApiDefinition.name.expression,
    "group": ApiDefinition.group.expression,
    "createdTime": ApiDefinition.created_at.expression,
    "updatedTime": ApiDefinition.updated_at.expression,
}


class AppNotFoundError(NotFoundError):
    """Unknown, malformed, or in another workspace: one answer, so ids never leak."""

    reason = "app_not_found"
    message = "App not found"


class ApiNotFoundError(NotFoundError):
    reason = "api_not_found"
    message = "API not found"


async def find_app(
    session: AsyncSession,
    workspace_id: str,
    app_id: str,
    *,
    lock: bool = False,
    referable: bool = False,
) -> App:
    """The app `app_id` of `workspace_id`, else 404. `lock` serialises publishing and API
    changes per app until commit, and reads the app as the lock found it. `referable` (a schema
    change) locks it `FOR NO KEY UPDATE` on PostgreSQL: as exclusive for the app's other locks,
    but a row inserted referring to the app (a call's `userRight` grant) goes on. The change
    holds the app while it waits for record writers (their table, their collection's row); a
    call holding those and then granting a right would wait for the change: a deadlock."""
    if not is_id(app_id):
        raise AppNotFoundError()
    stmt = select(App).where(App.id == app_id, App.workspace_id == workspace_id)
    if lock:
        await _lock_app(session, app_id, workspace_id)
        stmt = stmt.with_for_update(key_share=referable).execution_options(populate_existing=True)
    app = await session.scalar(stmt)
    if app is None:
        raise AppNotFoundError()
    return app


async def find_readable_app(
    session: AsyncSession, workspace_id: str, app_id: str
) -> tuple[App, bool]:
    """The app `app_id` as a reader in `workspace_id` may see it, and whether that workspace
    owns it: its own apps, and any public app (which every workspace may enable and call).
    Another workspace's private app is 404 like an unknown one, so ids never leak."""
    if not is_id(app_id):
        raise AppNotFoundError()
    app = await session.scalar(
        select(App).where(
            App.id == app_id, or_(App.workspace_id == workspace_id, App.visibility == "public")
        )
    )
    if app is None:
        raise AppNotFoundError()
    return app, app.workspace_id == workspace_id


async def _lock_app(session: AsyncSession, app_id: str, workspace_id: str) -> None:
    """SQLite ignores `FOR UPDATE` and reads outside any transaction: two publishes both read
    the same `latest` and both wrote (`latest` could even move back). A no-op UPDATE first takes
    the database's write lock, so the read after it sees every earlier writer's commit."""
    connection = await session.connection()
    if connection.dialect.name != "sqlite":
        return
    await lock_rows(session, App, App.id == app_id, App.workspace_id == workspace_id)


async def create_app_row(
    session: AsyncSession,
    settings: Settings,
    workspace: Workspace,
    data: AppCreate,
) -> App:
    """A new app in `workspace` within its plan's `apps` quota, with a fresh signing secret."""
    await lock_workspace(session, workspace.id)  # concurrent creations can't pass one count
    used = await session.scalar(
        select(func.count()).select_from(App).where(App.workspace_id == workspace.id)
    )
    plan = await plan_of(session, workspace)
    await check_quota(session, workspace.id, plan, "apps", int(used or 0), operation="apps.create")
    env = app_env.merge_secrets(settings, app_env.new_env(data.config), dict(data.secrets))
    app = App(
        workspace_id=workspace.id,
        name=data.name,
        description=data.description,
        visibility=data.visibility,
        signing_secret=new_signing_secret(settings),
        env=env,
        latest_version=None,
    )
    session.add(app)
    await session.flush()
    return app


def app_read(app: App, api_count: int) -> AppRead:
    return AppRead(
        id=app.id,
        workspace_id=app.workspace_id,
        name=app.name,
        description=app.description,
        visibility=app.visibility,
        latest_version=app.latest_version,
        config=dict((app.env or {}).get("config") or {}),
        secret_names=app_env.secret_names(app.env or {}),
        api_count=api_count,
        version=app.version,
        created_time=app.created_at,
        updated_time=app.updated_at,
    )


class AppService:
    """CRUD of the apps of the current workspace. Never commits."""

    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        app_changed: Callable[[str], None] = lambda app_id: None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.app_changed = app_changed  # the gateway's resolve cache forgets the app

    async def list_apps(
        self, current: CurrentWorkspace, params: PageParams, q: str
    ) -> Page[AppRead]:
        stmt = select(App).where(App.workspace_id == current.id)
        if q:
            stmt = stmt.where(or_(icontains(App.name, q), icontains(App.description, q)))
        stmt = order_by(stmt, params, APP_SORTS, default="createdTime", tiebreak=App.id.expression)
        rows, total = await fetch_page(self.session, stmt, params)
        counts = await self._api_counts([app.id for app in rows])
        return params.page([app_read(app, counts.get(app.id, 0)) for app in rows], total)

    async def create(self, current: CurrentWorkspace, data: AppCreate) -> Created:
        current.require(Role.EDITOR)
        app = await create_app_row(self.session, self.settings, current.workspace, data)
        return Created(id=app.id)

    async def read(self, current: CurrentWorkspace, app_id: str) -> AppRead:
        app = await find_app(self.session, current.id, app_id)
        counts = await self._api_counts([app.id])
        return app_read(app, counts.get(app.id, 0))

    async def update(
        self,
        current: CurrentWorkspace,
        app_id: str,
        data: AppUpdate,
        precondition: Precondition = NO_PRECONDITION,
    ) -> AppRead:
        app = await find_app(self.session, current.id, app_id)
        current.require(Role.EDITOR)
        advance(app, precondition)
        if data.name is not None:
            app.name = data.name
        if data.description is not None:
            app.description = data.description
        if data.visibility is not None:
            app.visibility = data.visibility
        env = dict(app.env or app_env.new_env())
        if data.config is not None:
            env["config"] = dict(data.config)
        if data.secrets is not None:
            env = app_env.merge_secrets(self.settings, env, dict(data.secrets))
            if len(env["secrets"]) > MAX_SECRETS:  # each PATCH is capped; so is their sum
                raise ValidationError(
                    f"An app holds at most {MAX_SECRETS} secrets",
                    reason="too_many_secrets",
                    errors=[{"field": "secrets", "message": f"at most {MAX_SECRETS} per app"}],
                )
        app.env = env
        await self.session.flush()
        after_commit(self.session, lambda: self.app_changed(app_id))
        return await self.read(current, app_id)

    async def rotate_signing_secret(
        self, current: CurrentWorkspace, app_id: str, data: SigningSecretRotate
    ) -> SigningSecretRotated:
        """Admin or owner, as for the app's keys: a new signing secret for its end-user tokens.
        Those signed with the one replaced stay accepted for `graceSeconds` (the previous one
        kept until then, `builder/signing.py`). The app's `version` and `updatedTime` stay:
        nothing it shows changes, so editors' `If-Match` still holds. This node's gateway sees
        the new secret after the commit, other nodes within `SECRET_TTL` (`engine/secrets.py`)."""
        app = await find_app(self.session, current.id, app_id, lock=True)
        current.require(Role.ADMIN)
        now = utcnow()
        connection = await self.session.connection()
        until = await rotate_signing_secret(
            self.settings, connection, app.id, now, data.grace_seconds
        )
        after_commit(self.session, lambda: self.app_changed(app_id))
        return SigningSecretRotated(rotated_time=now, previous_valid_until=until)

    async def delete(
        self,
        current: CurrentWorkspace,
        app_id: str,
        precondition: Precondition = NO_PRECONDITION,
        *,
        force: bool = False,
    ) -> None:
        """Admin or owner: the app goes with its APIs, versions, collections and records, if
        `If-Match` allows (412) and the app still has the version checked (409). While other
        workspaces have it enabled, only with `force`: their keys and the records they keep in
        its collections go with it (409 `app_in_use` otherwise).

        Lock order (docs/decisions.md): the app `FOR NO KEY UPDATE`, as a schema change takes
        it (a call's grant, whose row refers to the app, goes on); the records table (its
        collections' indexes dropped, else `hold_records_table`), which every call's record or
        right write holds first: the deletion waits for those in flight, later ones
        wait for it and find the app or dataset gone (404); only then the app `FOR UPDATE` (the
        DELETE, and `ensure_unused` before it) and its cascade. Holding the app `FOR UPDATE`
        first, it waited for the table (or a collection's row) a call held while the call's
        grant waited for the app: a deadlock. A deletion of the app's workspace (or its owner's
        account) holds its apps the same way before the table (`leftovers_of`): one of the two
        waits for the other at the app, then 404."""
        app = await find_app(self.session, current.id, app_id, lock=True, referable=True)
        current.require(Role.ADMIN)
        precondition.check(app.version)
        # Records and collections go by ON DELETE CASCADE; their expression indexes do not.
        connection = await self.session.connection()
        collection_ids = await self.session.scalars(
            select(Collection.id).where(Collection.app_id == app.id)
        )
        dropped = 0
        for collection_id in collection_ids.all():
            dropped += await drop_indexes(connection, collection_id)
        if not dropped:  # a dropped index holds the table already, and more than this would
            await hold_records_table(connection)
        if not force:  # holds the app FOR UPDATE: after the table, as the DELETE would
            await ensure_unused(self.session, [current.id], app.id)
        await delete_row(self.session, app, precondition)
        after_commit(self.session, lambda: self.app_changed(app_id))

    async def _api_counts(self, app_ids: list[str]) -> dict[str, int]:
        if not app_ids:
            return {}
        rows = await self.session.execute(
            select(ApiDefinition.app_id, func.count())
            .where(ApiDefinition.app_id.in_(app_ids))
            .group_by(ApiDefinition.app_id)
        )
        return {app_id: int(n) for app_id, n in rows}


def api_read(row: ApiDefinition) -> ApiRead:
    return ApiRead(
        id=row.id,
        api=row.api,
        name=row.name,
        description=row.description,
        group=row.group,
        enabled=row.enabled,
        price=row.price,
        cost=row.cost,
        version=row.version,
        created_time=row.created_at,
        updated_time=row.updated_at,
        doc_extra=row.doc_extra,
        params=list(row.params or []),
        steps=list(row.steps or []),
        return_steps=None if row.return_steps is None else list(row.return_steps),
        auth=ApiAuthRead.model_validate(_auth_of(row)),
    )


def _auth_of(row: ApiDefinition) -> dict[str, Any]:
    stored = row.auth or {}
    return {
        "require_token": bool(stored.get("requireToken", False)),
        "public": bool(stored.get("public", False)),
        "require_idempotency_key": bool(stored.get("requireIdempotencyKey", False)),
        "mode": stored.get("mode", "none"),
        "rights": list(stored.get("rights") or []),
        "target": stored.get("target"),
    }


def api_summary(row: ApiDefinition) -> ApiSummary:
    return ApiSummary(
        id=row.id,
        api=row.api,
        name=row.name,
        description=row.description,
        group=row.group,
        enabled=row.enabled,
        price=row.price,
        cost=row.cost,
        version=row.version,
        created_time=row.created_at,
        updated_time=row.updated_at,
    )


def apply_definition(row: ApiDefinition, data: ApiCreate, cost: int) -> None:
    row.api = data.api
    row.name = data.name
    row.description = data.description
    row.doc_extra = data.doc_extra
    row.group = data.group
    row.enabled = data.enabled
    row.price = data.price
    row.cost = cost
    row.params = list(data.params)
    row.steps = list(data.steps)
    row.return_steps = None if data.return_steps is None else list(data.return_steps)
    row.auth = data.auth.document()


class ApiService:
    """The `dev` APIs of one app: every save is compiled by the step engine first. Never commits."""

    def __init__(self, session: AsyncSession, checker: DefinitionChecker) -> None:
        self.session = session
        self.checker = checker

    async def list_apis(
        self,
        current: CurrentWorkspace,
        app_id: str,
        params: PageParams,
        q: str,
        group: str | None,
    ) -> Page[ApiSummary]:
        """Alphabetical by `api` (case-insensitive) unless another sort is asked for."""
        app = await find_app(self.session, current.id, app_id)
        stmt = select(ApiDefinition).where(ApiDefinition.app_id == app.id)
        if q:
            stmt = stmt.where(
                or_(
                    icontains(ApiDefinition.api, q),
                    icontains(ApiDefinition.name, q),
                    icontains(ApiDefinition.description, q),
                )
            )
        if group is not None:
            stmt = stmt.where(ApiDefinition.group == group)
        stmt = order_by(
            stmt,
            params,
            API_SORTS,
            default="api",
            tiebreak=ApiDefinition.api.expression,
            default_order="asc",
        )
        rows, total = await fetch_page(self.session, stmt, params)
        return params.page([api_summary(row) for row in rows], total)

    async def groups(self, current: CurrentWorkspace, app_id: str) -> ApiGroupList:
        """Named groups with their API counts, alphabetical; ungrouped APIs are not a group."""
        app = await find_app(self.session, current.id, app_id)
        rows = await self.session.execute(
            select(ApiDefinition.group, func.count())
            .where(ApiDefinition.app_id == app.id, ApiDefinition.group != "")
            .group_by(ApiDefinition.group)
            .order_by(ApiDefinition.group)
        )
        return ApiGroupList(list=[ApiGroupRead(name=name, api_count=int(n)) for name, n in rows])

    async def create(self, current: CurrentWorkspace, app_id: str, data: ApiCreate) -> Created:
        app = await find_app(self.session, current.id, app_id, lock=True)
        current.require(Role.EDITOR)
        await self._ensure_name_free(app.id, data.api, None)
        cost = await self.checker.check_api(app.id, data)
        row = ApiDefinition(app_id=app.id)
        apply_definition(row, data, cost)
        await self._save(row)
        await self.checker.reprice_callers(app.id, {data.api})
        return Created(id=row.id)

    async def read(self, current: CurrentWorkspace, app_id: str, api_id: str) -> ApiRead:
        app = await find_app(self.session, current.id, app_id)
        return api_read(await self._api(app.id, api_id))

    async def update(
        self,
        current: CurrentWorkspace,
        app_id: str,
        api_id: str,
        data: ApiUpdate,
        precondition: Precondition = NO_PRECONDITION,
    ) -> ApiRead:
        """Merge the given fields into the saved API, then validate the result as a new one."""
        app = await find_app(self.session, current.id, app_id, lock=True)
        row = await self._api(app.id, api_id)
        current.require(Role.EDITOR)
        advance(row, precondition)
        merged = {**api_document(row), **data.model_dump(by_alias=True, exclude_unset=True)}
        merged.pop("cost", None)
        try:
            definition = ApiCreate.model_validate(merged)
        except PydanticError as exc:  # e.g. `{"name": null}`: the update parses, the API not
            reason, message, errors = field_errors([dict(e) for e in exc.errors()])
            raise ValidationError(message, errors=errors, reason=reason) from None
        if definition.api != row.api:
            await self._ensure_name_free(app.id, definition.api, row.id)
        cost = await self.checker.check_api(app.id, definition, replacing=row.api)
        changed = {row.api, definition.api}
        apply_definition(row, definition, cost)
        await self._save(row)
        await self.checker.reprice_callers(app.id, changed)
        return api_read(row)

    async def delete(
        self,
        current: CurrentWorkspace,
        app_id: str,
        api_id: str,
        precondition: Precondition = NO_PRECONDITION,
    ) -> None:
        """Removes the API from `dev` only: published snapshots keep it. `If-Match` is checked
        (412) and the ORM's DELETE is conditional on the version checked."""
        app = await find_app(self.session, current.id, app_id, lock=True)
        row = await self._api(app.id, api_id)
        current.require(Role.EDITOR)
        precondition.check(row.version)
        await self.session.delete(row)
        await self.session.flush()
        # Its callers now call nothing priced: never refused, whatever prices did since.
        await self.checker.reprice_callers(app.id, {row.api}, refuse_over_limit=False)

    async def _api(self, app_id: str, api_id: str) -> ApiDefinition:
        if not is_id(api_id):
            raise ApiNotFoundError()
        row = await self.session.scalar(
            select(ApiDefinition).where(ApiDefinition.id == api_id, ApiDefinition.app_id == app_id)
        )
        if row is None:
            raise ApiNotFoundError()
        return row

    async def _ensure_name_free(self, app_id: str, api: str, own_id: str | None) -> None:
        """409 when another API of the app has this name up to letter case: generated clients
        fold `getPost` and `GetPost` into one method name (`get_post`). Names are ASCII
        (`API_NAME_PATTERN`), so `lower` folds them alike on both databases. Apps that already
        hold such a pair keep it; their documents tell the two apart (`builder/openapi.py`)."""
        stmt = select(ApiDefinition.api).where(
            ApiDefinition.app_id == app_id, func.lower(ApiDefinition.api) == api.lower()
        )
        if own_id is not None:
            stmt = stmt.where(ApiDefinition.id != own_id)
        existing = await self.session.scalar(stmt.limit(1))
        if existing is not None:
            raise api_exists(existing)

    async def _save(self, row: ApiDefinition) -> None:
        self.session.add(row)
        try:
            await self.session.flush()
        except IntegrityError:  # a concurrent save took the name between check and insert
            raise api_exists(row.api) from None


def api_exists(api: str) -> ConflictError:
    return ConflictError(
        f"The app already has an API named {api}",
        reason="api_exists",
        details={"errors": [{"field": "api", "message": "already used in this app"}]},
    )
