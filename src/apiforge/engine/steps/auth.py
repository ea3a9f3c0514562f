"""Step family: auth — end-user tokens (`jwtSign`, `jwtRevoke`), passwords (`password`), rights
(`userRight`).

These are the pieces an app needs for its own users: store an argon2 hash at sign-up, verify it at
sign-in, issue a token the gateway will accept for this app only, revoke a user's tokens (sign
out everywhere, a changed password), and keep per-target rights in the built-in user system.
Hashes, passwords and issued tokens are credentials: their steps are `sensitive`, so debug traces
show them masked.
"""

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, Literal

from pydantic import Field, model_validator

from apiforge.accounts.passwords import cost_allowed, hash_password, verify_password
from apiforge.core.errors import ValidationError
from apiforge.core.lazydb import LazyConnection
from apiforge.engine.base import RunContext
from apiforge.engine.errors import step_error
from apiforge.engine.revocations import RevocationKey, revoke_tokens
from apiforge.engine.spec import StepSpec
from apiforge.engine.tokens import (
    MAX_EXPIRES_IN,
    RESERVED_CLAIMS,
    ceil_ms,
    floor_ms,
    from_ms,
    sign_end_user_token,
)
from apiforge.engine.values import CompiledValue, is_expression
from apiforge.rights.schemas import MAX_ID_LENGTH, MAX_RIGHTS
from apiforge.rights.store import RightsKey, grant_rights, held_rights, revoke_rights
from apiforge.tools.clock import iso, utcnow

MAX_CLAIMS_BYTES = 8 * 1024
MAX_PASSWORD_LENGTH = 1024
DEFAULT_EXPIRES_IN = 7 * 86400


def _text(step_id: str, value: Any, field: str, *, allow_empty: bool = False) -> str:
    """An id-like value: a string or a whole number (a `number` arg is a float: 7.0 is "7"),
    at most `MAX_ID_LENGTH` characters."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise step_error(step_id, f"{field} must be a non-empty string", field=field)
    if len(value) > MAX_ID_LENGTH:
        raise step_error(step_id, f"{field} is longer than {MAX_ID_LENGTH}", field=field)
    return value


def _sub(step_id: str, value: Any) -> str:
    """A user id (`sub`) as `jwtSign` signs it and `jwtRevoke` revokes it: one rule for both, so
    every user a token names can be revoked. No NUL: PostgreSQL cannot store it (its revocation
    would be a 500, so its tokens could never be revoked). Other control characters are stored
    on both backends, and taken by both steps alike."""
    sub = _text(step_id, value, "sub")
    if "\x00" in sub:
        raise step_error(step_id, "sub cannot contain the NUL character", field="sub")
    return sub


def _rights(step_id: str, value: Any, field: str = "rights") -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_RIGHTS:
        raise step_error(step_id, f"{field} must be a list of at most {MAX_RIGHTS}", field=field)
    if not all(isinstance(item, str) for item in value):
        raise step_error(step_id, f"{field} must be a list of strings", field=field)
    return [_text(step_id, item, field) for item in value]


# --- jwtSign --------------------------------------------------------------------------------


class JwtSignSpec(StepSpec):
    """`{"type": "jwtSign", "sub", "expiresIn", "rights", "admin", "claims"}` → a token for one
    of the app's users, signed with the app's own secret, `aud` = the app id."""

    type: Literal["jwtSign"]
    sub: Any
    expires_in: Any = Field(default=DEFAULT_EXPIRES_IN, alias="expiresIn")
    rights: Any = Field(default_factory=list)
    admin: Any = False
    claims: Any = Field(default_factory=dict)

    def compile(self, compiler: Any) -> "JwtSignStep":
        expires_in = compiler.value(self.expires_in, "expiresIn")
        if expires_in.is_literal:
            _expires(self.id, expires_in.literal, compiler)
        # Literals are held to the limits every call would enforce: an API whose every call
        # must fail is refused when it is saved.
        sub = _compiled_sub(self.sub, compiler)
        rights = compiler.value(self.rights, "rights")
        if rights.is_literal and not (
            isinstance(rights.literal, list) and all(isinstance(r, str) for r in rights.literal)
        ):
            raise compiler.error("rights", "must be a list of strings")
        if rights.is_literal and (
            len(rights.literal) > MAX_RIGHTS
            or not all(0 < len(r) <= MAX_ID_LENGTH for r in rights.literal)
        ):
            raise compiler.error(
                "rights", f"at most {MAX_RIGHTS} rights of 1 to {MAX_ID_LENGTH} characters"
            )
        admin = compiler.value(self.admin, "admin")
        if admin.is_literal and not isinstance(admin.literal, bool):
            raise compiler.error("admin", "must be true or false")
        claims = compiler.value(self.claims, "claims")
        if not is_expression(self.claims):
            # A literal object, or one with expressions inside: its keys are fixed either way.
            if not isinstance(self.claims, dict):
                raise compiler.error("claims", "must be an object")
            clash = RESERVED_CLAIMS.intersection(self.claims)
            if clash:
                raise compiler.error("claims", f"may not set {', '.join(sorted(clash))}")
        if claims.is_literal and _claims_size(claims.literal) > MAX_CLAIMS_BYTES:
            raise compiler.error("claims", f"must be at most {MAX_CLAIMS_BYTES} bytes")
        return JwtSignStep(
            id=self.id,
            type=self.type,
            sub=sub,
            expires_in=expires_in,
            rights=rights,
            admin=admin,
            claims=claims,
        )


def _compiled_sub(value: Any, compiler: Any) -> CompiledValue:
    """`sub`, a literal one held to what every call would enforce."""
    sub: CompiledValue = compiler.value(value, "sub")
    if sub.is_literal and not (isinstance(sub.literal, str) and sub.literal):
        raise compiler.error("sub", "must be a non-empty string")
    if sub.is_literal and len(sub.literal) > MAX_ID_LENGTH:
        raise compiler.error("sub", f"must be at most {MAX_ID_LENGTH} characters")
    if sub.is_literal and "\x00" in sub.literal:
        raise compiler.error("sub", "cannot contain the NUL character")
    return sub


def _claims_size(claims: Any) -> int:
    """The claims' size as JSON; ValueError for NaN or an infinity."""
    return len(json.dumps(claims, default=str, allow_nan=False))


def _expires(step_id: str, value: Any, compiler: Any = None) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a `number` arg is a float
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_EXPIRES_IN:
        return value
    message = f"must be a whole number of seconds from 1 to {MAX_EXPIRES_IN}"
    if compiler is not None:
        raise compiler.error("expiresIn", message)
    raise step_error(step_id, f"expiresIn {message}", field="expiresIn")


@dataclass(slots=True)
class JwtSignStep:
    id: str
    type: str
    sub: CompiledValue
    expires_in: CompiledValue
    rights: CompiledValue
    admin: CompiledValue
    claims: CompiledValue
    sensitive: bool = True  # the output is a bearer credential

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {
            "sub": self.sub,
            "expiresIn": self.expires_in,
            "rights": self.rights,
            "admin": self.admin,
            "claims": self.claims,
        }

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        variables = ctx.variables()
        sub = _sub(self.id, self.sub.evaluate(variables))
        expires_in = _expires(self.id, self.expires_in.evaluate(variables))
        rights = _rights(self.id, self.rights.evaluate(variables))
        admin = self.admin.evaluate(variables)
        if not isinstance(admin, bool):
            raise step_error(self.id, "admin must be true or false", field="admin")
        claims = self.claims.evaluate(variables)
        if not isinstance(claims, dict):
            raise step_error(self.id, "claims must be an object", field="claims")
        clash = RESERVED_CLAIMS.intersection(claims)
        if clash:
            raise step_error(
                self.id, f"claims may not set {', '.join(sorted(clash))}", field="claims"
            )
        try:
            size = _claims_size(claims)
        except ValueError:  # NaN or an infinity (CEL's `1.0/0.0`) is not JSON: refused
            raise step_error(
                self.id, "claims may hold only finite numbers", field="claims"
            ) from None
        if size > MAX_CLAIMS_BYTES:
            raise step_error(self.id, f"claims over {MAX_CLAIMS_BYTES} bytes", field="claims")
        secret = await ctx.services.signing_secret_for(ctx.app_id, ctx.connection)
        token = sign_end_user_token(
            secret,
            ctx.app_id,
            sub=sub,
            now=ctx.now,
            expires_in=expires_in,
            rights=rights,
            admin=admin,
            claims=claims,
            workspace=ctx.partition,
            # Not before a revocation of this user earlier in the call (a changed password:
            # revoke, then sign a fresh token): `iat` equal to it is not "before" it.
            issued=max(floor_ms(ctx.now), ctx.revocations.get(sub, 0)),
        )
        return {
            "token": token,
            "expiresIn": expires_in,
            "expiresTime": iso(ctx.now + timedelta(seconds=expires_in)),
        }


# --- jwtRevoke ------------------------------------------------------------------------------


class JwtRevokeSpec(StepSpec):
    """`{"type": "jwtRevoke", "sub"}` → every token of user `sub` this app issued in the call's
    partition before now stops working (`{"sub", "revokedTime"}`); a token the call signs for
    them afterwards works."""

    type: Literal["jwtRevoke"]
    sub: Any

    def compile(self, compiler: Any) -> "JwtRevokeStep":
        return JwtRevokeStep(id=self.id, type=self.type, sub=_compiled_sub(self.sub, compiler))


@dataclass(slots=True)
class JwtRevokeStep:
    id: str
    type: str
    sub: CompiledValue

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"sub": self.sub}

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        sub = _sub(self.id, self.sub.evaluate(ctx.variables()))  # as `jwtSign` takes it
        # Rounded up: every token issued before now has an earlier `iat` (rounded down).
        revoked = ceil_ms(utcnow())
        key = RevocationKey(ctx.app_id, ctx.partition, sub)
        await revoke_tokens(ctx.connection, key, from_ms(revoked))
        ctx.revocations[sub] = max(revoked, ctx.revocations.get(sub, 0))
        _applied_once_committed(ctx, key)
        return {"sub": sub, "revokedTime": iso(from_ms(revoked))}


def _applied_once_committed(ctx: RunContext, key: RevocationKey) -> None:
    """This process's gateway forgets what it cached of the app's and the user's revocations
    once the call commits (forgotten before, a concurrent call could cache the old state again);
    nothing when it rolls back. A connection that reports no end (a test's) forgets at once."""
    forget = partial(ctx.services.tokens_revoked, key.app_id, key.workspace_id, key.sub)
    if isinstance(ctx.connection, LazyConnection):  # a gateway call's or a workflow's
        ctx.connection.on_end(lambda committed: forget() if committed else None)
    else:
        forget()


# --- password -------------------------------------------------------------------------------


class PasswordSpec(StepSpec):
    """`{"type": "password", "action": "hash", "password"}` → an argon2id hash to store;
    `{"action": "verify", "password", "hash"}` → true or false (a null hash, e.g. no such
    user, is false after the same work, so timing does not reveal which users exist)."""

    type: Literal["password"]
    action: Literal["hash", "verify"]
    password: Any
    hash: Any = None

    @model_validator(mode="after")
    def _hash_for_verify(self) -> "PasswordSpec":
        if self.action == "verify" and self.hash is None:
            raise ValueError("verify needs the stored hash in `hash`")
        if self.action == "hash" and self.hash is not None:
            raise ValueError("hash takes no `hash`")
        return self

    def compile(self, compiler: Any) -> "PasswordStep":
        return PasswordStep(
            id=self.id,
            type=self.type,
            action=self.action,
            password=compiler.value(self.password, "password"),
            hash=compiler.value(self.hash, "hash"),
        )


@dataclass(slots=True)
class PasswordStep:
    id: str
    type: str
    action: str
    password: CompiledValue
    hash: CompiledValue
    sensitive: bool = True  # input holds a password, output (for `hash`) a password hash

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"password": self.password, "hash": self.hash}

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        variables = ctx.variables()
        password = self.password.evaluate(variables)
        if not isinstance(password, str) or not password:
            raise step_error(self.id, "password must be a non-empty string", field="password")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise step_error(
                self.id, f"password longer than {MAX_PASSWORD_LENGTH}", field="password"
            )
        # argon2 takes tens of milliseconds of CPU on purpose: keep it off the event loop.
        if self.action == "hash":
            return await asyncio.to_thread(hash_password, password)
        stored = self.hash.evaluate(variables)
        if stored is not None and not isinstance(stored, str):
            raise step_error(self.id, "hash must be a string or null", field="hash")
        if stored and not stored.isascii():
            # Not an argon2 hash (those are ASCII), so no match, as for any other non-hash;
            # argon2-cffi raises on one (a 500) instead of refusing it.
            return False
        if stored and not cost_allowed(stored):
            # The cost is read from the hash: one from a caller could ask for gigabytes.
            raise step_error(
                self.id, "hash asks for a higher argon2 cost than this server uses", field="hash"
            )
        return await asyncio.to_thread(verify_password, stored or None, password)


# --- userRight ------------------------------------------------------------------------------


class UserRightSpec(StepSpec):
    """`{"type": "userRight", "action": "grant"|"revoke"|"check"|"get", "userId", "target",
    "rights", "match": "any"|"all"}` on the built-in user system of this app, in the calling
    workspace's partition. grant/revoke answer the rights left; check answers true/false; get
    answers the list. `revoke` without `rights` removes them all."""

    type: Literal["userRight"]
    action: Literal["grant", "revoke", "check", "get"]
    user_id: Any = Field(alias="userId")
    target: Any = ""
    rights: Any = None
    match: Literal["any", "all"] = "any"

    @model_validator(mode="after")
    def _rights_needed(self) -> "UserRightSpec":
        if self.action in {"grant", "check"} and self.rights is None:
            raise ValueError(f"{self.action} needs `rights`")
        if self.action == "get" and self.rights is not None:
            raise ValueError("get takes no `rights`")
        return self

    def compile(self, compiler: Any) -> "UserRightStep":
        rights = compiler.value(self.rights, "rights")
        if rights.is_literal and rights.literal is not None:
            literal = rights.literal
            if not isinstance(literal, list) or not all(isinstance(r, str) for r in literal):
                raise compiler.error("rights", "must be a list of strings")
            if len(literal) > MAX_RIGHTS or any(len(r) > MAX_ID_LENGTH for r in literal):
                raise compiler.error("rights", f"at most {MAX_RIGHTS} rights of 128 characters")
        return UserRightStep(
            id=self.id,
            type=self.type,
            action=self.action,
            user_id=compiler.value(self.user_id, "userId"),
            target=compiler.value(self.target, "target"),
            rights=rights,
            match=self.match,
        )


@dataclass(slots=True)
class UserRightStep:
    id: str
    type: str
    action: str
    user_id: CompiledValue
    target: CompiledValue
    rights: CompiledValue
    match: str

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"userId": self.user_id, "target": self.target, "rights": self.rights}

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        variables = ctx.variables()
        user_id = _text(self.id, self.user_id.evaluate(variables), "userId")
        target_value = self.target.evaluate(variables)
        target = _text(
            self.id, "" if target_value is None else target_value, "target", allow_empty=True
        )
        raw_rights = self.rights.evaluate(variables)
        rights = None if raw_rights is None else _rights(self.id, raw_rights)
        # The call's partition: one consumer of an app never reads or changes another's grants.
        key = RightsKey(ctx.partition, ctx.app_id, user_id, target)
        if self.action == "get":
            return await held_rights(ctx.connection, key) or []
        if self.action == "check":
            held = set(await held_rights(ctx.connection, key) or [])
            wanted = set(rights or [])
            if self.match == "all":
                return bool(wanted) and wanted <= held
            return bool(wanted & held)
        if self.action == "grant":
            try:
                return await grant_rights(ctx.connection, key, rights or [])
            except ValidationError as exc:
                raise step_error(self.id, exc.message, reason=exc.reason) from exc
        return await revoke_rights(ctx.connection, key, rights) or []


STEPS: dict[str, type[StepSpec]] = {
    "jwtSign": JwtSignSpec,
    "jwtRevoke": JwtRevokeSpec,
    "password": PasswordSpec,
    "userRight": UserRightSpec,
}
