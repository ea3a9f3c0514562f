"""SSRF guard for outbound HTTP: parse a URL strictly, resolve its host, refuse private targets.

`check_url` answers the one address a request may connect to. The caller connects to that exact
address (never resolving the name again), so a DNS answer that changes between the check and the
connection — rebinding — cannot steer the request elsewhere. Redirects are followed by the caller
one hop at a time, each hop going through `check_url` again.

Refused: loopback, private (IPv6 site-local `fec0::/10` too), link-local (cloud metadata at
169.254.169.254), carrier-grade NAT, multicast, reserved, unspecified and documentation ranges
(IPv6 `2001:db8::/32` and `3fff::/20`), SRv6 SIDs (`5f00::/16`), in IPv4 and IPv6, including
IPv4 hidden inside IPv6 (mapped `::ffff:127.0.0.1`, 6to4, Teredo, NAT64) and the legacy IPv4
spellings that resolvers still accept (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`). An
operator can allow hosts (by exact name, IP or CIDR) — for an internal service or a test server.
"""

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
# Special-purpose ranges (IANA registry: not globally reachable) that `ipaddress` tables of the
# supported Pythons miss or hold only as part of reserved space: 3fff::/20 (documentation,
# RFC 9637) passed as public on 3.11; 5f00::/16 (SRv6 SIDs, RFC 9602) is named so it stays
# refused whatever a later Python decides about the space around it.
_NOT_GLOBAL = (ipaddress.IPv6Network("3fff::/20"), ipaddress.IPv6Network("5f00::/16"))


class NetGuardError(ValueError):
    """The URL may not be fetched; `reason` is a stable snake_case word for the caller."""

    reason = "invalid_url"


class BlockedTargetError(NetGuardError):
    """The URL names (or resolves to) an address outbound requests must never reach."""

    reason = "ssrf_blocked"


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed, normalised URL: what to ask for (`host`, `target`) and where (`port`)."""

    scheme: str
    host: str  # lower-case name without trailing dot, or the canonical text of an IP literal
    port: int
    target: str  # path and query, as sent in the request line
    ip: IPAddress | None  # set when the URL spells an address instead of a name

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def url_for(self, address: IPAddress) -> str:
        """The URL that connects to `address` while asking for this target."""
        host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.target}"


def parse_ipv4_legacy(host: str) -> ipaddress.IPv4Address | None:
    """Parse IPv4 the way the WHATWG URL standard (and `inet_aton`) does, or None if not IPv4.

    `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` all mean 127.0.0.1 to a resolver; a naive
    check on the text would wave them through.
    """
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts.pop()
    if not parts or not re.fullmatch(r"(0[xX][0-9a-fA-F]*|[0-9]+)", parts[-1]):
        return None  # the last label is not a number: this is a host name
    if len(parts) > 4:
        raise NetGuardError(f"invalid IPv4 address {host!r}")
    numbers: list[int] = []
    for part in parts:
        if re.fullmatch(r"0[xX][0-9a-fA-F]*", part):
            numbers.append(int(part[2:] or "0", 16))
        elif re.fullmatch(r"0[0-7]+", part):
            numbers.append(int(part, 8))
        elif re.fullmatch(r"[0-9]+", part):
            numbers.append(int(part, 10))
        else:
            raise NetGuardError(f"invalid IPv4 address {host!r}")
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise NetGuardError(f"invalid IPv4 address {host!r}")
    value = last
    for index, n in enumerate(head):
        value += n << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public_address(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses (and the IPv4 inside IPv6 forms)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None and not is_public_address(inner):
            return False
        if address.scope_id or address.is_site_local:  # fec0::/10: deprecated, still private
            return False
        if any(address in network for network in _NOT_GLOBAL):
            return False
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_reserved
        or address.is_unspecified
    )


def parse_url(url: str) -> Target:
    """Split and normalise an http(s) URL; anything ambiguous is refused, never guessed."""
    if not isinstance(url, str) or len(url) > 8192:
        raise NetGuardError("url must be a string of at most 8192 characters")
    if any(ch in url for ch in "\\\t\r\n ") or not url.isprintable():
        raise NetGuardError("url contains whitespace, backslashes or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise NetGuardError(f"invalid url: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise NetGuardError("only http and https urls may be requested")
    if "@" in parts.netloc:
        raise NetGuardError("urls with credentials are refused; send them in a header")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise NetGuardError("url has no host")
    if port == 0:
        raise NetGuardError("port 0 is not a valid port")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    bracketed = parts.netloc.rsplit("@", 1)[-1].startswith("[")
    ip: IPAddress | None
    if bracketed:
        if "%" in raw_host:
            raise NetGuardError("IPv6 zone identifiers are refused")
        try:
            ip = ipaddress.IPv6Address(raw_host)
        except ValueError as exc:
            raise NetGuardError(f"invalid IPv6 address {raw_host!r}") from exc
        host = str(ip)
    else:
        ip = parse_ipv4_legacy(raw_host)
        host = str(ip) if ip is not None else _normalise_name(raw_host)
    return Target(scheme, host, port or DEFAULT_PORTS[scheme], target, ip)


def _normalise_name(raw: str) -> str:
    """The ASCII form of a host name, mapped by UTS #46 (non-transitional) as browsers and curl
    map it. Python's own `idna` codec is IDNA 2003, which maps `faß.de` to `fass.de` (and a
    final sigma to a medial one): another domain with another owner, so a request and its
    secrets went to a host the author never named."""
    try:
        name = (
            raw.lower()
            if raw.isascii()
            else idna.encode(raw, uts46=True, transitional=False).decode("ascii")
        )
    except (idna.IDNAError, UnicodeError) as exc:
        raise NetGuardError(f"invalid host name {raw!r}") from exc
    name = name.removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise NetGuardError(f"invalid host name {raw!r}")
    return name


class AllowList:
    """Operator-trusted destinations: exact host names, IP addresses or CIDR networks."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            text = entry.strip().lower().removesuffix(".")
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            try:
                self.networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                self.names.add(text)

    def allows_name(self, host: str) -> bool:
        return host in self.names

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (A and AAAA)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NetGuardError(f"host {host!r} does not resolve") from exc
    return [str(info[4][0]) for info in infos]


async def check_url(
    url: str, allow: AllowList, resolver: Resolver = system_resolver
) -> tuple[Target, IPAddress]:
    """Parse `url` and return it with the one address the request must connect to.

    Every address the name resolves to must be acceptable (public or allow-listed), not just the
    first, so a name with one public and one private record cannot be used to reach the latter.
    """
    target = parse_url(url)
    if target.ip is not None:
        addresses: list[IPAddress] = [target.ip]
    else:
        addresses = []
        for text in await resolver(target.host, target.port):
            try:
                addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError as exc:
                raise NetGuardError(f"resolver returned an invalid address {text!r}") from exc
        if not addresses:
            raise NetGuardError(f"host {target.host!r} does not resolve")
    if allow.allows_name(target.host):
        return target, addresses[0]
    for address in addresses:
        if not (is_public_address(address) or allow.allows_address(address)):
            shown = target.host if target.ip is not None else f"{target.host} ({address})"
            raise BlockedTargetError(f"requests to {shown} are refused: not a public address")
    return target, addresses[0]
