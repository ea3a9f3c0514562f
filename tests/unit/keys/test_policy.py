"""`check_key`: what a key may do at the moment it is presented."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from apiforge.core.errors import ApiforgeError
from apiforge.keys.policy import KeyRecord, check_key, effective_role
from apiforge.tools.netpolicy import parse_networks

NOW = datetime(2030, 1, 1, tzinfo=UTC)
KEY = KeyRecord(
    id="k",
    kind="app",
    workspace_id="w",
    app_id="a",
    subscription_id="s",
    role=None,
    account_id="u",
    expires_at=None,
    revoked=False,
    allowed_ips=(),
    allowed_origins=frozenset(),
)


def _refusal(record: KeyRecord, client_ip: str = "203.0.113.5", origin: str | None = None) -> str:
    with pytest.raises(ApiforgeError) as caught:
        check_key(record, now=NOW, client_ip=client_ip, origin=origin)
    return f"{caught.value.status} {caught.value.reason}"


def test_a_plain_key_passes() -> None:
    check_key(KEY, now=NOW, client_ip="203.0.113.5", origin=None)


def test_revoked_and_expired_keys_are_401() -> None:
    assert _refusal(replace(KEY, revoked=True)) == "401 api_key_revoked"
    assert _refusal(replace(KEY, expires_at=NOW)) == "401 api_key_expired"
    assert _refusal(replace(KEY, expires_at=NOW - timedelta(seconds=1))) == "401 api_key_expired"
    check_key(
        replace(KEY, expires_at=NOW + timedelta(seconds=1)), now=NOW, client_ip="", origin=None
    )


def test_revocation_is_reported_before_expiry() -> None:
    assert _refusal(replace(KEY, revoked=True, expires_at=NOW)) == "401 api_key_revoked"


def test_a_workspace_key_without_a_role_is_orphaned() -> None:
    ws = replace(KEY, kind="ws", app_id=None, subscription_id=None, role="editor")
    check_key(ws, now=NOW, client_ip="", origin=None)
    assert _refusal(replace(ws, role=None)) == "401 api_key_orphaned"


def test_allowed_ips_are_enforced() -> None:
    limited = replace(KEY, allowed_ips=parse_networks(["203.0.113.0/24", "2001:db8::/32"]))
    check_key(limited, now=NOW, client_ip="203.0.113.200", origin=None)
    check_key(limited, now=NOW, client_ip="2001:db8::1", origin=None)
    assert _refusal(limited, client_ip="198.51.100.1") == "403 ip_not_allowed"
    assert _refusal(limited, client_ip="") == "403 ip_not_allowed"


def test_publishable_keys_need_an_allowed_origin() -> None:
    pk = replace(KEY, kind="pk", allowed_origins=frozenset({"https://app.example.com"}))
    check_key(pk, now=NOW, client_ip="", origin="https://app.example.com")
    check_key(pk, now=NOW, client_ip="", origin="https://APP.example.com")
    assert _refusal(pk, origin=None) == "403 origin_not_allowed"
    assert _refusal(pk, origin="") == "403 origin_not_allowed"
    assert _refusal(pk, origin="https://evil.example.com") == "403 origin_not_allowed"
    assert _refusal(pk, origin="http://app.example.com") == "403 origin_not_allowed"


def test_other_keys_ignore_the_origin() -> None:
    check_key(KEY, now=NOW, client_ip="", origin="https://anything.example")


@pytest.mark.parametrize(
    ("key_role", "member_role", "expected"),
    [
        ("admin", "owner", "admin"),
        ("admin", "editor", "editor"),
        ("viewer", "owner", "viewer"),
        ("editor", "editor", "editor"),
        ("editor", None, None),
        (None, "owner", None),
    ],
)
def test_effective_role_is_the_lesser_one(
    key_role: str | None, member_role: str | None, expected: str | None
) -> None:
    assert effective_role(key_role, member_role) == expected
