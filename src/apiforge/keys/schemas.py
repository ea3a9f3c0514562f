"""Request and response models of `/api/v1/subscriptions` and `/api/v1/api-keys`.

A key is never shown again after `ApiKeyCreated`: `ApiKeyRead` has its prefix, never the secret
or its hash.
"""

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator

from apiforge.http.schemas import ApiModel, Flag, InputModel, Text, Timestamp, not_null
from apiforge.tools.netpolicy import normalise_cidr

MAX_ALLOWED_ENTRIES = 20
KeyType = Literal["app", "pk", "ws"]
KeyStatus = Literal["active", "expired", "revoked"]
KeyRole = Literal["viewer", "editor", "admin"]  # never owner: ownership is not delegable
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Control characters and spaces: never in an `Origin` header (and PostgreSQL cannot store NUL).
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_IDNA_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")  # ß ς ZWNJ ZWJ


def normalise_origin(text: str) -> str:
    """`HTTPS://App.Example.com:443` → `https://app.example.com`: the form browsers send in
    `Origin`, so the gateway compares strings."""
    text = text.strip()
    parts = urlsplit(text)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or _UNSAFE.search(text):
        raise ValueError("must be an origin like https://app.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("must be an origin like https://app.example.com (no path)")
    if "*" in parts.netloc:  # a browser sends one exact origin: `*.example.com` matches none
        raise ValueError("must be an exact origin: wildcards are not supported, list each one")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    host = parts.hostname.lower()
    host = f"[{_ipv6_host(host)}]" if ":" in host else _ascii_host(host)
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _ipv6_host(host: str) -> str:
    """Browsers send an IPv6 host compressed (`[0:0::0:1]` → `[::1]`, `[::ffff:1.2.3.4]` →
    `[::ffff:102:304]`), and never with a zone."""
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        address = None
    if address is None or address.scope_id is not None:
        raise ValueError("must be an origin with a valid IPv6 address (no zone)")
    return str(address)


def _ascii_host(host: str) -> str:
    """Browsers send an internationalised host in its ASCII form (`bücher.example` →
    `xn--bcher-kva.example`). The few characters IDNA 2003 (Python's codec) maps otherwise than
    browsers (UTS 46) are refused rather than stored in a form no browser sends."""
    if host.isascii():
        return host
    if not _IDNA_DEVIATIONS.isdisjoint(host):
        raise ValueError("must give this host name in its ASCII (xn--) form")
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("must be an origin with a valid host name") from None


Cidr = Annotated[str, Field(max_length=64), AfterValidator(normalise_cidr)]
Origin = Annotated[str, Field(max_length=255), AfterValidator(normalise_origin)]
AllowedIps = Annotated[list[Cidr], Field(max_length=MAX_ALLOWED_ENTRIES)]
AllowedOrigins = Annotated[list[Origin], Field(max_length=MAX_ALLOWED_ENTRIES)]
KeyName = Annotated[Text, Field(min_length=1, max_length=100)]
IdText = Annotated[str, Field(min_length=1, max_length=64)]


# --- subscriptions ----------------------------------------------------------------------------


class SubscriptionCreate(InputModel):
    app_id: IdText


class SubscriptionUpdate(InputModel):
    enabled: Flag


class SubscriptionRead(ApiModel):
    id: str
    app_id: str
    app_name: str
    enabled: Flag
    version: int
    created_time: Timestamp
    updated_time: Timestamp


# --- API keys ---------------------------------------------------------------------------------


class ApiKeyCreate(InputModel):
    """`app`/`pk` keys need `appId` (an app the workspace has enabled), `pk` keys also at least
    one allowed origin; `ws` keys need a `role` no higher than the creator's. The combinations
    are checked by the service, which names the offending field."""

    type: KeyType
    name: KeyName
    app_id: IdText | None = None
    role: KeyRole | None = None
    expires_time: datetime | None = None
    allowed_ips: AllowedIps = Field(default_factory=list)
    allowed_origins: AllowedOrigins = Field(default_factory=list)


class ApiKeyUpdate(InputModel):
    """Fields left out stay; `expiresTime: null` removes the expiry. Only it may be null: a null
    name or allow-list would change nothing, though it reads as "clear it" (`[]` clears a list)."""

    name: KeyName | None = None
    expires_time: datetime | None = None
    allowed_ips: AllowedIps | None = None
    allowed_origins: AllowedOrigins | None = None

    _no_null = field_validator("name", "allowed_ips", "allowed_origins", mode="before")(not_null)


class ApiKeyCreated(ApiModel):
    """The only response that carries the secret."""

    id: str
    key: str
    prefix: str


class ApiKeyRead(ApiModel):
    id: str
    type: KeyType
    name: str
    prefix: str
    status: KeyStatus
    app_id: str | None
    subscription_id: str | None
    role: str | None
    expires_time: Timestamp | None
    allowed_ips: list[str]
    allowed_origins: list[str]
    last_used_time: Timestamp | None
    created_by: str | None
    version: int
    created_time: Timestamp
    revoked_time: Timestamp | None
