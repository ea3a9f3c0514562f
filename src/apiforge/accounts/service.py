"""Accounts: sign-up, sign-in with throttling, rotating refresh tokens, profile changes."""

import asyncio
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import EmailStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.accounts.models import Account, LoginSession, RefreshToken
from apiforge.accounts.passwords import (
    Verdict,
    check_console_password,
    hash_console_password,
    normalise_password,
)
from apiforge.accounts.schemas import (
    PasswordChange,
    PasswordChanged,
    ProfileUpdate,
    RegisterInput,
    TokenPair,
)
from apiforge.accounts.sessions import listed, session_end
from apiforge.accounts.throttle import LoginThrottle
from apiforge.accounts.tokens import issue_access_token
from apiforge.core.errors import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    ValidationError,
)
from apiforge.core.settings import Settings
from apiforge.idempotency.locking import NO_PRECONDITION, Precondition, advance
from apiforge.tools.clock import utcnow
from apiforge.tools.hashing import random_secret, sha256_hex
from apiforge.workspaces.service import create_workspace, personal_workspace_id


class RefreshReuseError(AuthenticationError):
    """A used refresh token came back: the whole family is revoked, and that must persist."""

    reason = "refresh_token_reused"
    message = "Refresh token was already used; the session has been ended"
    keep_changes = True


def _email_taken() -> ConflictError:
    return ConflictError("Email is already registered", reason="email_taken")


_EMAIL = TypeAdapter(EmailStr)


@dataclass(frozen=True, slots=True)
class Client:
    """Where a sign-in or a refresh comes from: what `/user/sessions` shows of a session."""

    ip: str = ""
    user_agent: str = ""


def _session_ended() -> AuthenticationError:
    return AuthenticationError("Session ended; sign in again", reason="session_revoked")


def _session_expired() -> AuthenticationError:
    return AuthenticationError(
        "Session reached its maximum lifetime; sign in again", reason="session_expired"
    )


def _changed_meanwhile() -> ConflictError:
    return ConflictError(
        "The password was changed by another request meanwhile",
        reason="password_changed_meanwhile",
    )


# How often a conditional write over the checked hash is retried after the hash moved and the
# password still proved right (another sign-in's rehash; once is the rule).
_RECHECKS = 3


def _wrong_credentials() -> AuthenticationError:
    return AuthenticationError("Email or password is wrong", reason="invalid_credentials")


def normalise_email(email: str) -> str:
    """The form an account's email is stored in: sign-up's `EmailStr` normalisation (Unicode NFC,
    an IDNA domain in its Unicode form) then lower case. Sign-in applies the same, so the address
    typed at sign-up (`Ade\u0301la@…`, `a@xn--bcher-kva.de`) finds its account again. Text that
    is no address is only trimmed and lowered: no account has it."""
    with suppress(PydanticValidationError):
        email = str(_EMAIL.validate_python(email))
    return email.strip().lower()


class AccountService:
    def __init__(self, session: AsyncSession, settings: Settings, throttle: LoginThrottle) -> None:
        self.session = session
        self.settings = settings
        self.throttle = throttle

    async def create_account(
        self, email: str, password: str, name: str = "", *, is_admin: bool = False
    ) -> Account:
        """Create an account and its personal workspace; 409 when the email is taken."""
        email = normalise_email(email)
        taken = await self.session.scalar(select(Account.id).where(Account.email == email))
        if taken:
            raise _email_taken()
        account = Account(
            email=email,
            password_hash=await asyncio.to_thread(hash_console_password, password),
            name=name,
            is_admin=is_admin,
        )
        self.session.add(account)
        try:
            await self.session.flush()
        except IntegrityError:  # a concurrent sign-up took the email between check and insert
            raise _email_taken() from None
        label = name or email.split("@", 1)[0]
        await create_workspace(
            self.session, account.id, f"{label}'s workspace"[:100], personal=True
        )
        return account

    async def register(self, data: RegisterInput, client: Client = Client()) -> TokenPair:
        account = await self.create_account(str(data.email), data.password, data.name)
        return await self._start_session(account, client)

    async def login(self, email: str, password: str, client: Client) -> TokenPair:
        """Sign in. The attempt counts as a failed one from before the password is checked
        (so concurrent attempts cannot outrun the throttle) until the password proves right;
        any other outcome, an unexpected error included, leaves it counted."""
        email = normalise_email(email)
        await self.throttle.reserve(email, client.ip)
        account = await self.session.scalar(select(Account).where(Account.email == email))
        stored = account.password_hash if account else None
        # argon2 is deliberately slow: keep it off the event loop.
        verdict = await asyncio.to_thread(check_console_password, stored, password)
        if verdict is Verdict.WRONG:
            raise _wrong_credentials()
        assert account is not None
        if account.status != "active":
            await self.throttle.give_back(email, client.ip)
            raise ForbiddenError("Account is disabled", reason="account_disabled")
        await self.throttle.succeeded(email, client.ip)
        checked, verdict = await self._note_login(
            account.id, account.password_hash, password, verdict
        )
        if verdict is Verdict.REHASH:
            await self._rehash(account.id, checked, password)
        return await self._start_session(account, client)

    async def _note_login(
        self, account_id: str, checked_hash: str, password: str, verdict: Verdict
    ) -> tuple[str, Verdict]:
        """Stamp the sign-in, only while the account is still active and its password is the
        one just checked: it may have been disabled (or deleted) while argon2 ran, after its
        sessions were ended, and a session started now would outlive the disabling (and come
        back to life on enabling); or its password changed, which ends every other session, and
        a sign-in with the old one must not start a new one. The UPDATE waits for a disabling or
        a change in flight (row lock; SQLite's one writer) and one that comes after it ends
        this session with the others. A hash that moved is checked again (`_recheck`): another
        sign-in may have rehashed this same password. Answers the hash and verdict that held."""
        # Not an ORM write: that would be conditional on the version read before argon2 ran,
        # and a profile edit committed meanwhile would turn a right password into a 409.
        for _ in range(_RECHECKS):
            stamped = await self.session.execute(
                update(Account)
                .where(
                    Account.id == account_id,
                    Account.status == "active",
                    Account.password_hash == checked_hash,
                )
                .values(last_login_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if stamped.rowcount == 1:  # type: ignore[attr-defined]
                return checked_hash, verdict
            status, now_hash = await self._status_and_hash(account_id)
            if status is not None and status != "active":
                raise ForbiddenError("Account is disabled", reason="account_disabled")
            rechecked = await self._recheck(now_hash, password)
            if rechecked is None:  # deleted, or its password changed meanwhile
                raise _wrong_credentials()
            checked_hash, verdict = rechecked
        raise _wrong_credentials()

    async def _status_and_hash(self, account_id: str) -> tuple[str | None, str | None]:
        row = (
            await self.session.execute(
                select(Account.status, Account.password_hash).where(Account.id == account_id)
            )
        ).first()
        return (None, None) if row is None else (row.status, row.password_hash)

    async def _recheck(self, now_hash: str | None, password: str) -> tuple[str, Verdict] | None:
        """The account's hash moved after `password` was checked against it: a password change,
        or a sign-in running alongside that rehashed this same password (a legacy form, an
        older argon2 cost). Only checking the password against the hash now tells which: the
        hash and verdict to write over, or None when the password is no longer right."""
        if now_hash is None:
            return None
        verdict = await asyncio.to_thread(check_console_password, now_hash, password)
        return None if verdict is Verdict.WRONG else (now_hash, verdict)

    async def _rehash(self, account_id: str, checked_hash: str, password: str) -> None:
        """Store the password's hash at today's cost and in its normalised form, only over the
        hash that was checked: a password changed meanwhile stays changed."""
        await self.session.execute(
            update(Account)
            .where(Account.id == account_id, Account.password_hash == checked_hash)
            .values(password_hash=await asyncio.to_thread(hash_console_password, password))
            .execution_options(synchronize_session=False)
        )

    async def change_password(
        self, account: Account, session_id: str, data: PasswordChange, ip: str
    ) -> PasswordChanged:
        """Check the current password (throttled with sign-ins: same email and IP windows, so
        this is no way round them), store the new one, and end every other session of the
        account; the caller's session stays signed in. Conditional on the hash checked and on
        the account being active: a change or a disabling committed meanwhile wins."""
        await self.throttle.reserve(account.email, ip)
        checked = account.password_hash
        verdict = await asyncio.to_thread(check_console_password, checked, data.current_password)
        if verdict is Verdict.WRONG:
            raise ValidationError(
                "Current password is wrong",
                errors=[{"field": "currentPassword", "message": "is wrong"}],
                reason="current_password_wrong",
            )
        await self.throttle.succeeded(account.email, ip)
        if normalise_password(data.new_password) == normalise_password(data.current_password):
            raise ValidationError(
                "The new password is the current one",
                errors=[{"field": "newPassword", "message": "must differ from the current one"}],
                reason="password_unchanged",
            )
        new_hash = await asyncio.to_thread(hash_console_password, data.new_password)
        for _ in range(_RECHECKS):
            changed = await self.session.execute(
                update(Account)
                .where(
                    Account.id == account.id,
                    Account.status == "active",
                    Account.password_hash == checked,
                )
                .values(password_hash=new_hash)
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount == 1:  # type: ignore[attr-defined]
                break
            status, now_hash = await self._status_and_hash(account.id)
            if status is None:  # deleted meanwhile, its sessions with it
                raise _session_ended()
            if status != "active":
                raise ForbiddenError("Account is disabled", reason="account_disabled")
            # Another session's change ended this one: the session is over, as documented. A
            # read, not `_hold_live_session`'s lock: that is taken after the account's.
            if not await self._is_live(session_id):
                raise _session_ended()
            rechecked = await self._recheck(now_hash, data.current_password)
            if rechecked is None:
                raise _changed_meanwhile()
            checked = rechecked[0]  # a sign-in rehashed the same password: write over that
        else:
            raise _changed_meanwhile()
        await self._hold_live_session(session_id)
        others = (
            LoginSession.account_id == account.id,
            LoginSession.id != session_id,
            LoginSession.revoked_at.is_(None),
        )
        # Reported as `/user/sessions` counts them: sessions long expired (every sign-in never
        # logged out) are ended too, but were no longer anyone's to end.
        usable = await self.session.scalar(
            select(func.count()).where(*others, *listed(self.settings, utcnow()))
        )
        await self.session.execute(
            update(LoginSession)
            .where(*others)
            .values(revoked_at=utcnow(), revoked_reason="password_changed")
            .execution_options(synchronize_session=False)
        )
        return PasswordChanged(id=account.id, ended_sessions=int(usable or 0))

    async def _is_live(self, session_id: str) -> bool:
        revoked = await self.session.execute(
            select(LoginSession.revoked_at).where(LoginSession.id == session_id)
        )
        row = revoked.first()
        return row is not None and row.revoked_at is None

    async def _hold_live_session(self, session_id: str) -> None:
        """401 `session_revoked` unless the session is still live, holding its row until the
        commit: the request was authenticated before argon2 ran, and a session ended meanwhile
        (its owner ending a stolen one from another device) must not then change the password
        and so end the owner's sessions. An ending not yet committed waits for this commit on
        PostgreSQL (the row lock; SQLite has one writer) and ends the session after the change,
        as it would have had it come later. A no-op write: a read would not wait for it."""
        held = await self.session.execute(
            update(LoginSession)
            .where(LoginSession.id == session_id, LoginSession.revoked_at.is_(None))
            .values(revoked_at=None)
            .execution_options(synchronize_session=False)
        )
        if held.rowcount != 1:  # type: ignore[attr-defined]
            raise _session_ended()

    async def refresh(self, token: str, client: Client = Client()) -> TokenPair:
        """Rotate: the presented token is spent; presenting a spent one ends its family."""
        found = await self._presented(token)
        if found is None:
            raise AuthenticationError("Invalid refresh token", reason="invalid_refresh_token")
        refresh, login, account = found
        # Before the session, as for access tokens: disabling ends every session too.
        if account.status != "active":
            raise AuthenticationError("Account is disabled", reason="account_disabled")
        if login.revoked_at is not None:
            raise _session_ended()
        now = utcnow()
        if self._session_end(login) <= now:
            raise _session_expired()
        if refresh.expires_at <= now:
            raise AuthenticationError("Refresh token expired", reason="refresh_token_expired")
        if refresh.used_at is not None:  # spent by a request that had finished: a replay
            await self.revoke_session(login.id, "refresh_reuse")
            raise RefreshReuseError()
        # Conditional update: of two concurrent refreshes with one token, exactly one wins.
        spent = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == refresh.id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            # Unused when read, spent by a request running alongside (one client refreshing
            # twice at once, e.g. two tabs): not a replay. Ending the session here would end
            # the pair the winner has just been given, leaving no winner at all.
            raise AuthenticationError(
                "Refresh token was just used by another request; use the tokens it returned",
                reason="refresh_token_spent",
            )
        # Conditional too: the session read live may have been ended since (a password change,
        # logout, an admin disabling the account); a pair issued in it would fail at first use.
        # The UPDATE waits for an ending in flight (row lock; SQLite's one writer).
        recorded = await self.session.execute(
            update(LoginSession)
            .where(LoginSession.id == login.id, LoginSession.revoked_at.is_(None))
            .values(refreshed_at=now, client_ip=client.ip, user_agent=client.user_agent)
            .execution_options(synchronize_session=False)
        )
        if recorded.rowcount != 1:  # type: ignore[attr-defined]
            raise _session_ended()
        return await self._issue(account, login)

    async def _presented(self, token: str) -> tuple[RefreshToken, LoginSession, Account] | None:
        """The refresh token with this secret, its session and account, as they are now."""
        row = (
            await self.session.execute(
                select(RefreshToken, LoginSession, Account)
                .join(LoginSession, LoginSession.id == RefreshToken.session_id)
                .join(Account, Account.id == LoginSession.account_id)
                .where(RefreshToken.token_hash == sha256_hex(token))
            )
        ).first()
        return None if row is None else (row.RefreshToken, row.LoginSession, row.Account)

    async def logout(self, session_id: str) -> None:
        await self.revoke_session(session_id, "logout")

    async def revoke_session(self, session_id: str, reason: str) -> None:
        await self.session.execute(
            update(LoginSession)
            .where(LoginSession.id == session_id, LoginSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )

    async def update_profile(
        self, account: Account, data: ProfileUpdate, precondition: Precondition = NO_PRECONDITION
    ) -> Account:
        advance(account, precondition)
        for field in data.model_fields_set:
            value = getattr(data, field)
            if value is not None:
                setattr(account, field, value)
        await self.session.flush()
        return account

    async def count_admins(self) -> int:
        return int(
            await self.session.scalar(select(func.count()).where(Account.is_admin.is_(True))) or 0
        )

    async def _start_session(self, account: Account, client: Client) -> TokenPair:
        login = LoginSession(
            account_id=account.id, client_ip=client.ip, user_agent=client.user_agent
        )
        self.session.add(login)
        await self.session.flush()
        return await self._issue(account, login)

    def _session_end(self, login: LoginSession) -> datetime:
        """When the session ends however often it is refreshed (`APIFORGE_SESSION_MAX_DAYS`)."""
        return session_end(self.settings, login.created_at)

    async def _issue(self, account: Account, login: LoginSession) -> TokenPair:
        """A new pair in the session; neither token outlives the session's maximum lifetime (none
        once it is over), and both end in whole seconds, as their ends are shown: a refresh token
        never works past its `expiresTime`, an access token (whose `exp` is whole seconds) never
        past the session's end."""
        now = utcnow()
        end = self._session_end(login)  # whole seconds
        if end <= now:
            raise _session_expired()
        secret = "rt_" + random_secret(32)
        refresh_end = now + timedelta(seconds=self.settings.refresh_token_ttl)
        self.session.add(
            RefreshToken(
                session_id=login.id,
                token_hash=sha256_hex(secret),
                expires_at=min(refresh_end.replace(microsecond=0), end),
            )
        )
        await self.session.flush()
        access_end = min(now + timedelta(seconds=self.settings.access_token_ttl), end)
        return TokenPair(
            access_token=issue_access_token(self.settings, account.id, login.id, access_end),
            refresh_token=secret,
            expires_in=int((access_end - now).total_seconds()),
            account_id=account.id,
            workspace_id=await personal_workspace_id(self.session, account.id) or "",
        )
