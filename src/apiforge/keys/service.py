"""Subscriptions and API keys of the current workspace: rules, limits and one-time secrets.

Roles (checked here, not in routers): viewers list subscriptions; editors enable and disable
apps, create and list keys; admins revoke keys, change their policy and remove subscriptions.
Every change forgets the affected entries of this process's `KeyLookup` as it commits; other
nodes follow within its one-second TTL.
"""

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, false, func, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder.models import App
from apiforge.core.db import UTCDateTime, after_commit, begin_as_writer, lock_rows
from apiforge.core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from apiforge.core.integrity import violation
from apiforge.core.settings import Settings
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by
from apiforge.http.schemas import Created
from apiforge.idempotency.locking import NO_PRECONDITION, Precondition, advance
from apiforge.keys.crypto import new_secret, secret_hash, visible_prefix
from apiforge.keys.holding import hold_referenced
from apiforge.keys.lookup import KeyLookup
from apiforge.keys.models import ApiKey, Subscription
from apiforge.keys.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    ApiKeyUpdate,
    KeyStatus,
    KeyType,
    SubscriptionCreate,
    SubscriptionRead,
    SubscriptionUpdate,
)
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import is_id
from apiforge.workspaces.models import Role, Workspace
from apiforge.workspaces.service import (
    CurrentWorkspace,
    InsufficientRoleError,
    WorkspaceNotFoundError,
)

MAX_ACTIVE_KEYS = 10  # per resource: one subscription (app + pk keys) or one workspace (ws keys)

SUBSCRIPTION_SORTS: dict[str, ColumnElement[Any]] = {
    "createdTime": Subscription.created_at.expression,
    "updatedTime": Subscription.updated_at.expression,
    "appName": App.name.expression,
}
# A key never used sorts as the oldest use and one that never expires as the latest expiry, on
# every backend (SQLite puts NULL first and PostgreSQL last, so NULL itself can't be the key).
_NEVER_USED = literal(datetime(1970, 1, 1, tzinfo=UTC), UTCDateTime())
_NEVER_EXPIRES = literal(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), UTCDateTime())
KEY_SORTS: dict[str, ColumnElement[Any]] = {
    "createdTime": ApiKey.created_at.expression,
    "name": ApiKey.name.expression,
    "expiresTime": func.coalesce(ApiKey.expires_at, _NEVER_EXPIRES),
    "lastUsedTime": func.coalesce(ApiKey.last_used_at, _NEVER_USED),
}


class SubscriptionNotFoundError(NotFoundError):
    reason = "subscription_not_found"
    message = "Subscription not found"


class ApiKeyNotFoundError(NotFoundError):
    reason = "api_key_not_found"
    message = "API key not found"


class AppNotFoundError(NotFoundError):
    """Unknown, or private to another workspace: the same answer, so private apps never leak."""

    reason = "app_not_found"
    message = "App not found"


def _field_error(field: str, message: str, reason: str = "invalid_input") -> ValidationError:
    return ValidationError(message, reason=reason, errors=[{"field": field, "message": message}])


def _active(now: datetime) -> ColumnElement[bool]:
    return ApiKey.revoked_at.is_(None) & or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now)


def _status(key: ApiKey, now: datetime) -> KeyStatus:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


class SubscriptionService:
    """The apps the current workspace has enabled. Never commits."""

    def __init__(self, session: AsyncSession, lookup: KeyLookup) -> None:
        self.session = session
        self.lookup = lookup

    async def enable(self, current: CurrentWorkspace, data: SubscriptionCreate) -> Created:
        """Enable an app: any public app, or a private app of this workspace. The workspace,
        the app and the caller's account are held first (`keys/holding.py`): a deletion of
        any of them waits for the subscription, or it for the deletion (then 404)."""
        current.require(Role.EDITOR)
        # SQLite: a savepoint outside the driver's transaction (opened only at a write) is a
        # transaction itself, and its RELEASE committed the subscription before the request did;
        # as the writer (`hold_referenced` begins as it), a deletion of the app (or its
        # workspace) also waits for us, or we for it.
        await hold_referenced(
            self.session,
            workspace_id=current.id,
            app_id=data.app_id if is_id(data.app_id) else None,
            account_id=current.account_id,
            app_gone=AppNotFoundError,
        )
        app = await self._subscribable_app(current.id, data.app_id)
        existing = await self.session.scalar(
            select(Subscription.id).where(
                Subscription.workspace_id == current.id, Subscription.app_id == app.id
            )
        )
        if existing is not None:
            raise self._already(existing)
        subscription = Subscription(
            workspace_id=current.id, app_id=app.id, enabled=True, created_by=current.account_id
        )
        try:
            # A savepoint, so the transaction can still read the winner's id after a refusal.
            async with self.session.begin_nested():
                self.session.add(subscription)
        except IntegrityError as exc:
            kind = violation(exc).kind
            if kind == "foreign_key":  # the app was deleted since it was read
                raise AppNotFoundError() from None
            if kind != "unique":
                raise
            # A concurrent request enabled it meanwhile (and committed: its row is visible now).
            winner = await self.session.scalar(
                select(Subscription.id).where(
                    Subscription.workspace_id == current.id, Subscription.app_id == app.id
                )
            )
            raise self._already(winner) from None
        self._forget_subscription(current.id, app.id)
        return Created(id=subscription.id)

    async def list_subscriptions(
        self, current: CurrentWorkspace, params: PageParams, enabled: bool | None
    ) -> Page[SubscriptionRead]:
        stmt = (
            select(Subscription)
            .join(App, App.id == Subscription.app_id)
            .where(Subscription.workspace_id == current.id)
        )
        if enabled is not None:
            stmt = stmt.where(Subscription.enabled.is_(enabled))
        stmt = order_by(
            stmt,
            params,
            SUBSCRIPTION_SORTS,
            default="createdTime",
            tiebreak=Subscription.id.expression,
        )
        rows, total = await fetch_page(self.session, stmt, params)
        names = await self._app_names([s.app_id for s in rows])
        return params.page([self._read(s, names.get(s.app_id, "")) for s in rows], total)

    async def read(self, current: CurrentWorkspace, subscription_id: str) -> SubscriptionRead:
        subscription = await self._find(current, subscription_id)
        return self._read(subscription, await self._app_name(subscription.app_id))

    async def update(
        self,
        current: CurrentWorkspace,
        subscription_id: str,
        data: SubscriptionUpdate,
        precondition: Precondition = NO_PRECONDITION,
    ) -> SubscriptionRead:
        """Disable (calls stop at once: 403 `app_not_enabled`) or enable again — only while the
        app is still public or this workspace's own."""
        subscription = await self._find(current, subscription_id)
        current.require(Role.EDITOR)
        advance(subscription, precondition)
        if data.enabled and not subscription.enabled:
            app = await self.session.get(App, subscription.app_id)
            if app is None or (app.visibility != "public" and app.workspace_id != current.id):
                raise ForbiddenError("The app is no longer public", reason="app_not_public")
        subscription.enabled = data.enabled
        await self.session.flush()
        self._forget_subscription(current.id, subscription.app_id)
        return self._read(subscription, await self._app_name(subscription.app_id))

    async def delete(
        self,
        current: CurrentWorkspace,
        subscription_id: str,
        precondition: Precondition = NO_PRECONDITION,
    ) -> None:
        """Admins remove a subscription; its keys go with it. `If-Match` is checked (412) and
        the ORM's DELETE is conditional on the version checked. The workspace and the app are
        held first (`keys/holding.py`), as their deletions take them before the subscription
        and its keys: 404 once either went meanwhile."""
        subscription = await self._find(current, subscription_id)
        current.require(Role.ADMIN)
        precondition.check(subscription.version)
        await hold_referenced(
            self.session,
            workspace_id=current.id,
            app_id=subscription.app_id,
            app_gone=SubscriptionNotFoundError,
        )
        keys = await self.session.execute(
            select(ApiKey.id, ApiKey.secret_hash).where(ApiKey.subscription_id == subscription.id)
        )
        for key_id, digest in keys.all():
            forget_key_after_commit(self.session, self.lookup, key_id, digest)
        await self.session.delete(subscription)
        await self.session.flush()
        self._forget_subscription(current.id, subscription.app_id)

    def _forget_subscription(self, workspace_id: str, app_id: str) -> None:
        """Once the change is committed: forgotten earlier, a call reading the old row in
        between would cache it again, and calls would pass (or not) for up to a second."""
        lookup = self.lookup
        after_commit(self.session, lambda: lookup.forget_subscription(workspace_id, app_id))

    async def _subscribable_app(self, workspace_id: str, app_id: str) -> App:
        """Read once `hold_referenced` holds it `FOR KEY SHARE` (PostgreSQL; the lock the
        subscription's foreign key takes anyway) until commit: a deletion of the app or its
        workspace locks the app `FOR UPDATE` before its `app_in_use` check (`ensure_unused`),
        so it counts this subscription, or the hold waits for it and finds no app."""
        stmt = select(App).where(App.id == app_id)
        app = await self.session.scalar(stmt) if is_id(app_id) else None
        if app is None or (app.visibility != "public" and app.workspace_id != workspace_id):
            raise AppNotFoundError()
        return app

    async def _find(self, current: CurrentWorkspace, subscription_id: str) -> Subscription:
        subscription = (
            await self.session.get(Subscription, subscription_id)
            if is_id(subscription_id)
            else None
        )
        if subscription is None or subscription.workspace_id != current.id:
            raise SubscriptionNotFoundError()
        return subscription

    async def _app_name(self, app_id: str) -> str:
        return (await self._app_names([app_id])).get(app_id, "")

    async def _app_names(self, app_ids: list[str]) -> dict[str, str]:
        if not app_ids:
            return {}
        rows = await self.session.execute(select(App.id, App.name).where(App.id.in_(app_ids)))
        return {str(app_id): str(name) for app_id, name in rows}

    @staticmethod
    def _already(subscription_id: str | None) -> ConflictError:
        details = {} if subscription_id is None else {"subscriptionId": subscription_id}
        return ConflictError(
            "This app is already enabled", reason="already_subscribed", details=details
        )

    @staticmethod
    def _read(subscription: Subscription, app_name: str) -> SubscriptionRead:
        return SubscriptionRead(
            id=subscription.id,
            app_id=subscription.app_id,
            app_name=app_name,
            enabled=subscription.enabled,
            version=subscription.version,
            created_time=subscription.created_at,
            updated_time=subscription.updated_at,
        )


class ApiKeyService:
    """Keys of the current workspace. Never commits."""

    def __init__(self, session: AsyncSession, settings: Settings, lookup: KeyLookup) -> None:
        self.session = session
        self.settings = settings
        self.lookup = lookup

    async def create(self, current: CurrentWorkspace, data: ApiKeyCreate) -> ApiKeyCreated:
        """A new key; its secret is in this response and nowhere else, ever.

        Lock order (`keys/holding.py`): what the key refers to before the row its count locks.
        An `app`/`pk` key holds its workspace and its app `FOR KEY SHARE`, then the caller's
        account, then its subscription; a `ws-` key locks its workspace (the count), then the
        account. Locking the subscription first, a deletion of the workspace, of the app or of
        the owner's account held the row the key's foreign key waited for while its cascade
        waited for the subscription: a deadlock (PostgreSQL: a 500 on one side)."""
        current.require(Role.EDITOR)
        now = utcnow()
        if data.expires_time is not None and _aware(data.expires_time) <= now:
            raise _field_error("expiresTime", "must be in the future")
        subscription_id: str | None = None
        app_id: str | None = None
        if data.type == "ws":
            role = self._ws_role(current, data)
            await self._ensure_room(data.type, current.id, None, now)
            await hold_referenced(self.session, account_id=current.account_id)
        else:
            role = None
            subscription = await self._subscription(current, data)
            subscription_id, app_id = subscription.id, subscription.app_id
            await hold_referenced(
                self.session,
                workspace_id=current.id,
                app_id=app_id,
                account_id=current.account_id,
                app_gone=SubscriptionNotFoundError,
            )
            await self._ensure_room(data.type, current.id, subscription_id, now)
        secret = new_secret(data.type)
        key = ApiKey(
            kind=data.type,
            workspace_id=current.id,
            subscription_id=subscription_id,
            app_id=app_id,
            role=role,
            name=data.name,
            prefix=visible_prefix(secret),
            secret_hash=secret_hash(secret),
            sealed_secret=self.lookup.sealer.seal(secret),
            allowed_ips=list(dict.fromkeys(data.allowed_ips)),
            allowed_origins=list(dict.fromkeys(data.allowed_origins)),
            expires_at=None if data.expires_time is None else _aware(data.expires_time),
            created_by=current.account_id,
        )
        self.session.add(key)
        await self.session.flush()
        return ApiKeyCreated(id=key.id, key=secret, prefix=key.prefix)

    async def list_keys(
        self,
        current: CurrentWorkspace,
        params: PageParams,
        *,
        app_id: str | None,
        kind: str | None,
        status: str | None,
    ) -> Page[ApiKeyRead]:
        current.require(Role.EDITOR)
        now = utcnow()
        stmt = select(ApiKey).where(ApiKey.workspace_id == current.id)
        if app_id is not None:  # not an id: no key has it (and no query sees a NUL)
            stmt = stmt.where(ApiKey.app_id == app_id if is_id(app_id) else false())
        if kind is not None:
            stmt = stmt.where(ApiKey.kind == kind)
        if status == "active":
            stmt = stmt.where(_active(now))
        elif status == "revoked":
            stmt = stmt.where(ApiKey.revoked_at.is_not(None))
        elif status == "expired":
            stmt = stmt.where(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
        stmt = order_by(
            stmt, params, KEY_SORTS, default="createdTime", tiebreak=ApiKey.id.expression
        )
        rows, total = await fetch_page(self.session, stmt, params)
        return params.page([self._read(key, now) for key in rows], total)

    async def read(self, current: CurrentWorkspace, key_id: str) -> ApiKeyRead:
        current.require(Role.EDITOR)
        return self._read(await self._find(current, key_id), utcnow())

    async def update(
        self,
        current: CurrentWorkspace,
        key_id: str,
        data: ApiKeyUpdate,
        precondition: Precondition = NO_PRECONDITION,
    ) -> ApiKeyRead:
        """Admins rename a key or change its expiry and allow-lists (a revoked key is final)."""
        key = await self._find(current, key_id)
        current.require(Role.ADMIN)
        if key.revoked_at is not None:
            raise ConflictError("A revoked key cannot change", reason="api_key_revoked")
        advance(key, precondition)
        now = utcnow()
        given = data.model_fields_set
        if "expires_time" in given:
            if data.expires_time is not None and _aware(data.expires_time) <= now:
                raise _field_error("expiresTime", "must be in the future")
            if _status(key, now) == "expired":  # it becomes active again: one more to count
                await self._ensure_room(key.kind, current.id, key.subscription_id, now)
            key.expires_at = None if data.expires_time is None else _aware(data.expires_time)
        if data.allowed_origins is not None:
            self._check_origins(key.kind, data.allowed_origins)
            key.allowed_origins = list(dict.fromkeys(data.allowed_origins))
        if data.name is not None:
            key.name = data.name
        if data.allowed_ips is not None:
            key.allowed_ips = list(dict.fromkeys(data.allowed_ips))
        await self.session.flush()
        forget_key_after_commit(self.session, self.lookup, key.id, key.secret_hash)
        return self._read(key, now)

    async def revoke(
        self, current: CurrentWorkspace, key_id: str, precondition: Precondition = NO_PRECONDITION
    ) -> None:
        """Admins revoke; the key stops working at once here and within a second elsewhere.
        Revoking a revoked key changes nothing. `If-Match` is checked (412); revoking takes the
        next version (its status changes), its UPDATE conditional on the version checked.
        The workspace and the caller's account (`revoked_by`) are held first (`keys/holding.py`):
        holding the key first, a deletion of the owner's account cascading to the key waited
        for it while the revocation's `revoked_by` waited for the account (a deadlock)."""
        await hold_referenced(self.session, workspace_id=current.id, account_id=current.account_id)
        # Locked (PostgreSQL) and read afresh: concurrent revokes of one key wait for each other
        # and the later ones find it revoked, instead of losing on its version (409).
        key = await self._find(current, key_id, lock=True)
        current.require(Role.ADMIN)
        advance(key, precondition)
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            key.revoked_by = current.account_id
            await self.session.flush()
        forget_key_after_commit(self.session, self.lookup, key.id, key.secret_hash)

    def _ws_role(self, current: CurrentWorkspace, data: ApiKeyCreate) -> str:
        if data.app_id is not None:
            raise _field_error("appId", "workspace keys are not bound to an app")
        if data.allowed_origins:
            raise _field_error("allowedOrigins", "only publishable (pk) keys have origins")
        if data.role is None:
            raise _field_error("role", "is required for workspace keys", "missing_parameters")
        role = Role(data.role)
        if not current.role.at_least(role):
            raise InsufficientRoleError(role, current.role)
        return role.value

    async def _subscription(self, current: CurrentWorkspace, data: ApiKeyCreate) -> Subscription:
        if data.role is not None:
            raise _field_error("role", "only workspace (ws) keys have a role")
        if data.app_id is None:
            raise _field_error("appId", "is required for app and pk keys", "missing_parameters")
        self._check_origins(data.type, data.allowed_origins)
        subscription = (
            await self.session.scalar(
                select(Subscription).where(
                    Subscription.workspace_id == current.id, Subscription.app_id == data.app_id
                )
            )
            if is_id(data.app_id)
            else None
        )
        if subscription is None:
            raise SubscriptionNotFoundError(
                "Enable the app first: POST /api/v1/subscriptions with its appId"
            )
        return subscription

    @staticmethod
    def _check_origins(kind: str, origins: list[str]) -> None:
        if kind == "pk" and not origins:
            raise _field_error(
                "allowedOrigins", "publishable keys need at least one allowed origin"
            )
        if kind != "pk" and origins:
            raise _field_error("allowedOrigins", "only publishable (pk) keys have origins")

    async def _ensure_room(
        self, kind: str, workspace_id: str, subscription_id: str | None, now: datetime
    ) -> None:
        """400 `too_many_api_keys` when the key's resource — the workspace (ws keys) or the
        app subscription (app and pk keys) — holds its maximum of active keys; the resource
        stays locked until commit, so two requests cannot both pass the count."""
        if kind == "ws":
            if not await self._lock(Workspace, workspace_id):
                # Deleted by a concurrent request since it was read (the key's insert would
                # fail on its foreign key: a 500).
                raise WorkspaceNotFoundError()
            used = await self._count_active(ApiKey.workspace_id == workspace_id, "ws", now)
            resource = "workspace"
        else:
            assert subscription_id is not None
            if not await self._lock(Subscription, subscription_id):
                # Removed by a concurrent request since it was read: its keys went with it, and a
                # new one would point at nothing (the foreign key's refusal was a 500).
                raise SubscriptionNotFoundError(
                    "Enable the app first: POST /api/v1/subscriptions with its appId"
                )
            used = await self._count_active(ApiKey.subscription_id == subscription_id, None, now)
            resource = "app subscription"
        if used >= MAX_ACTIVE_KEYS:
            raise ValidationError(
                f"At most {MAX_ACTIVE_KEYS} active keys per {resource}; revoke one first",
                reason="too_many_api_keys",
            )

    async def _lock(self, model: type[Workspace] | type[Subscription], row_id: str) -> bool:
        """Serialise key creation per resource until commit, so two requests cannot both pass
        the count (a no-op UPDATE locks on both backends; see `WorkspaceService._lock_workspace`).
        False when the row is gone."""
        return bool(await lock_rows(self.session, model, model.id == row_id))

    async def _count_active(
        self, resource: ColumnElement[bool], kind: str | None, now: datetime
    ) -> int:
        stmt = select(func.count()).select_from(ApiKey).where(resource, _active(now))
        if kind is not None:
            stmt = stmt.where(ApiKey.kind == kind)
        return int(await self.session.scalar(stmt) or 0)

    async def _find(self, current: CurrentWorkspace, key_id: str, *, lock: bool = False) -> ApiKey:
        found = is_id(key_id)
        if found and lock:
            # SQLite: `FOR UPDATE` locks nothing and the driver begins at the first write, so a
            # concurrent revoke could commit between this read and our write (409 on its version).
            await begin_as_writer(await self.session.connection())
        key = (
            await self.session.get(ApiKey, key_id, with_for_update=lock, populate_existing=lock)
            if found
            else None
        )
        if key is None or key.workspace_id != current.id:
            raise ApiKeyNotFoundError()
        return key

    def _read(self, key: ApiKey, now: datetime) -> ApiKeyRead:
        pending = self.lookup.last_used.pending(key.id)
        last_used = key.last_used_at
        if pending is not None and (last_used is None or pending > last_used):
            last_used = pending
        return ApiKeyRead(
            id=key.id,
            type=cast(KeyType, key.kind),
            name=key.name,
            prefix=key.prefix,
            status=_status(key, now),
            app_id=key.app_id,
            subscription_id=key.subscription_id,
            role=key.role,
            expires_time=key.expires_at,
            allowed_ips=list(key.allowed_ips or []),
            allowed_origins=list(key.allowed_origins or []),
            last_used_time=last_used,
            created_by=key.created_by,
            version=key.version,
            created_time=key.created_at,
            revoked_time=key.revoked_at,
        )


def forget_key_after_commit(
    session: AsyncSession, lookup: KeyLookup, key_id: str, digest: str
) -> None:
    """The key's cached record goes once its change is committed (see `_forget_subscription`)."""
    after_commit(session, lambda: lookup.forget_key(key_id, digest))


def _aware(value: datetime) -> datetime:
    """Inputs without a zone are UTC (spec 003 times are UTC), in whole seconds: the key then
    expires at the second its `expiresTime` shows, not up to a second after it. One that UTC
    puts past year 1 or 9999 is a 400 naming `expiresTime`."""
    try:
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.replace(microsecond=0)
    except OverflowError:
        raise _field_error("expiresTime", "must be a time between years 1 and 9999") from None
