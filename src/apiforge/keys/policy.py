"""What a key may do at the moment it is presented: the `KeyRecord` and its checks.

Both edges call `check_key` with the resolved client address (see `tools/netpolicy.py`): revoked,
expired and orphaned keys are 401, a client outside the key's allowed IPs or a publishable key used
from a foreign origin is 403. Reasons are stable, so clients can tell a key to replace from a
request to fix.
"""

from dataclasses import dataclass
from datetime import datetime

from apiforge.core.errors import AuthenticationError, ForbiddenError
from apiforge.tools.netpolicy import IPNetwork, ip_allowed
from apiforge.workspaces.models import Role


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as the caches hold it: everything a call needs, no secret and no hash.

    `role` is what a `ws` key may do *now*: the lesser of the key's role and its creator's current
    role in the workspace, or None when the creator has left it or was disabled — a key never
    outlives, nor outranks, the person who made it.
    """

    id: str
    kind: str  # app | pk | ws
    workspace_id: str
    app_id: str | None
    subscription_id: str | None
    role: str | None
    account_id: str | None  # the creator
    expires_at: datetime | None
    revoked: bool
    allowed_ips: tuple[IPNetwork, ...]
    allowed_origins: frozenset[str]


def effective_role(key_role: str | None, member_role: str | None) -> str | None:
    if key_role is None or member_role is None:
        return None
    lesser = min(Role(key_role), Role(member_role), key=lambda role: role.rank)
    return lesser.value


def check_key(record: KeyRecord, *, now: datetime, client_ip: str, origin: str | None) -> None:
    """Raise unless `record` may be used now, from `client_ip`, by a page at `origin`."""
    if record.revoked:
        raise AuthenticationError("This API key has been revoked", reason="api_key_revoked")
    if record.expires_at is not None and record.expires_at <= now:
        raise AuthenticationError("This API key has expired", reason="api_key_expired")
    if record.kind == "ws" and record.role is None:
        raise AuthenticationError(
            "The creator of this key is no longer an active member of its workspace",
            reason="api_key_orphaned",
        )
    if record.allowed_ips and not ip_allowed(client_ip, record.allowed_ips):
        raise ForbiddenError(
            "This API key may not be used from this IP address", reason="ip_not_allowed"
        )
    if record.kind == "pk" and (not origin or origin.lower() not in record.allowed_origins):
        raise ForbiddenError(
            "This publishable key may not be used from this origin", reason="origin_not_allowed"
        )
