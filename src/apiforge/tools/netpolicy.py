"""Inbound IP policy: who the client is behind proxies, and CIDR allow-lists.

The client address is the socket peer. `X-Forwarded-For` is read only when that peer is a
configured trusted proxy (`APIFORGE_TRUSTED_PROXIES`), and then from the right: each proxy appends
the address it saw, so the right-most entry that is *not* a trusted proxy is the first hop nobody
we trust vouches for — the client. Entries further left were written by the client itself and are
ignored, so a forged `X-Forwarded-For: 10.0.0.1, …` never passes an allow-list. IPv4 addresses
seen through IPv6 sockets (`::ffff:203.0.113.5`) are compared as IPv4.

Per-IP limits count an IPv6 client by its /64 (`limit_group`): one subscriber or host is handed
a whole /64 (RFC 6177, SLAAC), and could otherwise step through its 2^64 addresses to escape any
limit. IPv4 addresses count one by one, and so do the IPv6 forms that carry an IPv4 client
(NAT64, IPv4-compatible, 6to4, Teredo: `_carried_ipv4`).
"""

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_FORWARDED_HOPS = 20  # a longer header is read only this far from the right
IPV6_CLIENT_PREFIX = 64  # the block per-IP limits count an IPv6 client by
_IPV6_HOST_BITS = 128 - IPV6_CLIENT_PREFIX
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # IPv4 addresses written as IPv6
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known translation prefix
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # IPv4-compatible (RFC 4291, deprecated); not ::1


def parse_ip(text: str) -> IPAddress | None:
    """The address in `text` (IPv4-mapped IPv6 unwrapped), or None when it is not one."""
    value = text.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.5:443"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalise_cidr(text: str) -> str:
    """`10.1.2.3/8` → `10.0.0.0/8`, `203.0.113.5` → `203.0.113.5/32`, `::ffff:203.0.113.5` →
    `203.0.113.5/32`; ValueError otherwise. A zone (`fe80::1%eth0`) is refused: it names an
    interface of one host, matching ignores it, and it may hold any text (even a NUL)."""
    value = text.strip()
    if not value or len(value) > 64:
        raise ValueError("must be an IP address or a CIDR range")
    if "%" in value:
        raise ValueError("must be an IP address or a CIDR range without a zone (%…)")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("must be an IP address or a CIDR range") from None
    return str(_unmapped(network))


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(_unmapped(ipaddress.ip_network(value.strip(), strict=False)) for value in values)


def _unmapped(network: IPNetwork) -> IPNetwork:
    """A range of IPv4-mapped addresses (`::ffff:203.0.113.0/120`) as the IPv4 range it is:
    clients are compared as IPv4 (`parse_ip`), so the IPv6 form would never match anyone."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        low_bits = int(network.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((low_bits, network.prefixlen - 96))
    return network


def ip_allowed(address: str | IPAddress | None, networks: Iterable[IPNetwork]) -> bool:
    """Whether `address` lies in one of `networks` (an unknown address never does)."""
    ip = parse_ip(address) if isinstance(address, str) else address
    if ip is None:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def limit_group(ip: str) -> str:
    """What per-IP limits count `ip` (a client address as `ProxyPolicy.client_ip` gives it)
    under: an IPv4 address itself, an IPv6 address's /64 (`2001:db8:0:1::/64`), an IPv4-mapped
    one or one carrying an IPv4 client (`_carried_ipv4`) as that IPv4 address; a zone
    (`fe80::1%eth0`) is ignored; text that is no address stays as it is. An IPv4 address, the
    common case, costs one substring test; an IPv6 one a cache lookup (`_ipv6_group`)."""
    return _ipv6_group(ip) if ":" in ip else ip


@lru_cache(maxsize=4096)
def _ipv6_group(ip: str) -> str:
    address = parse_ip(ip)
    if address is None:
        return ip
    if address.version == 4:  # IPv4-mapped, or "203.0.113.5:443"
        return str(address)
    carried = _carried_ipv4(address)
    if carried is not None:
        return str(carried)
    network = int(address) >> _IPV6_HOST_BITS << _IPV6_HOST_BITS
    return f"{ipaddress.IPv6Address(network)}/{IPV6_CLIENT_PREFIX}"


def _carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 client an IPv6 address stands for, where its /64 is not one client's: behind a
    NAT64/SIIT translator (`64:ff9b::/96`) and in the IPv4-compatible form (`::a.b.c.d`) every
    IPv4 client shares one /64, as do all clients of one Teredo server (`2001::/32`); a 6to4
    site (`2002:<IPv4>::/48`) owns 65,536 of them. Each counts as its IPv4 address."""
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    teredo = address.teredo
    return teredo[1] if teredo is not None else None


class ProxyPolicy:
    """The configured trusted proxies, parsed once; `*` trusts every peer (only for a server
    reachable solely through its proxy): the peer's own entry, the right-most, names the client,
    and entries left of it count only as far as they are listed proxies. Trusting every entry
    made the left-most, which the client wrote itself, the client."""

    __slots__ = ("_networks", "_trust_all")

    def __init__(self, trusted: Iterable[str]) -> None:
        values = [value.strip() for value in trusted if value.strip()]
        self._trust_all = "*" in values
        self._networks = parse_networks(v for v in values if v != "*")

    @property
    def enabled(self) -> bool:
        return self._trust_all or bool(self._networks)

    def trusts(self, address: IPAddress) -> bool:
        """Whether the socket peer `address` is a proxy whose `X-Forwarded-For` counts."""
        return self._trust_all or self.listed(address)

    def listed(self, address: IPAddress) -> bool:
        """Whether `address`, an entry of the chain, is a configured proxy (never by `*`)."""
        return ip_allowed(address, self._networks)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address as text: the peer, or what trusted proxies say it was."""
        peer_ip = parse_ip(peer)
        if peer_ip is None:
            return peer
        if not forwarded_for or not self.enabled or not self.trusts(peer_ip):
            return str(peer_ip)
        client = peer_ip
        hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
            address = parse_ip(hop)
            if address is None:  # garbage in the chain: stop at the last address we trust
                break
            client = address
            if not self.listed(address):
                break
        return str(client)


@lru_cache(maxsize=16)
def proxy_policy(trusted: tuple[str, ...]) -> ProxyPolicy:
    """The policy of one setting value, parsed once per process."""
    return ProxyPolicy(trusted)
