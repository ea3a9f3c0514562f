"""Client address behind proxies and CIDR allow-lists (`tools/netpolicy.py`)."""

import ipaddress

import pytest

from apiforge.tools.netpolicy import (
    ProxyPolicy,
    ip_allowed,
    normalise_cidr,
    parse_ip,
    parse_networks,
    proxy_policy,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.5", "203.0.113.5"),
        (" 203.0.113.5 ", "203.0.113.5"),
        ("203.0.113.5:8443", "203.0.113.5"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:203.0.113.5", "203.0.113.5"),  # IPv4 seen through an IPv6 socket
    ],
)
def test_parse_ip_reads_addresses_in_their_usual_spellings(text: str, expected: str) -> None:
    assert str(parse_ip(text)) == expected


@pytest.mark.parametrize("text", ["", "unknown", "999.1.1.1", "example.com", "1.2.3.4/8", "[::1"])
def test_parse_ip_refuses_anything_else(text: str) -> None:
    assert parse_ip(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("203.0.113.5", "203.0.113.5/32"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_normalise_cidr(text: str, expected: str) -> None:
    assert normalise_cidr(text) == expected


@pytest.mark.parametrize(
    "text", ["", "10.0.0.0/33", "10.0.0", "localhost", "'; DROP TABLE accounts; --", "1" * 80]
)
def test_normalise_cidr_refuses_what_is_not_a_range(text: str) -> None:
    with pytest.raises(ValueError, match="IP address or a CIDR"):
        normalise_cidr(text)


def test_ip_allowed_matches_by_family_and_range() -> None:
    networks = parse_networks(["203.0.113.0/24", "2001:db8::/32"])
    assert ip_allowed("203.0.113.77", networks)
    assert ip_allowed("::ffff:203.0.113.77", networks)
    assert ip_allowed("2001:db8::5", networks)
    assert ip_allowed(ipaddress.ip_address("203.0.113.1"), networks)
    assert not ip_allowed("203.0.114.1", networks)
    assert not ip_allowed("2001:db9::1", networks)
    assert not ip_allowed("", networks)
    assert not ip_allowed("not an ip", networks)
    assert not ip_allowed("203.0.113.1", ())


def test_without_trusted_proxies_the_socket_peer_is_the_client() -> None:
    policy = ProxyPolicy([])
    assert not policy.enabled
    assert policy.client_ip("198.51.100.7", "203.0.113.5") == "198.51.100.7"


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    policy = ProxyPolicy(["10.0.0.0/8"])
    assert policy.client_ip("198.51.100.7", "203.0.113.5, 10.0.0.1") == "198.51.100.7"


def test_a_trusted_proxy_names_the_client() -> None:
    policy = ProxyPolicy(["10.0.0.0/8"])
    assert policy.client_ip("10.0.0.2", "203.0.113.5") == "203.0.113.5"


def test_forged_entries_left_of_the_first_untrusted_hop_are_ignored() -> None:
    # The client wrote "10.9.9.9, 192.0.2.1"; our proxy appended the address it saw.
    policy = ProxyPolicy(["10.0.0.0/8"])
    assert policy.client_ip("10.0.0.2", "10.9.9.9, 192.0.2.1, 203.0.113.5") == "203.0.113.5"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    policy = ProxyPolicy(["10.0.0.0/8", "172.16.0.0/12"])
    assert policy.client_ip("10.0.0.2", "203.0.113.5, 172.16.0.9, 10.0.0.3") == "203.0.113.5"


def test_an_all_trusted_chain_yields_its_leftmost_address() -> None:
    policy = ProxyPolicy(["10.0.0.0/8"])
    assert policy.client_ip("10.0.0.2", "10.0.0.7, 10.0.0.3") == "10.0.0.7"


def test_garbage_in_the_chain_stops_at_the_last_trusted_address() -> None:
    policy = ProxyPolicy(["10.0.0.0/8"])
    assert policy.client_ip("10.0.0.2", "203.0.113.5, unknown") == "10.0.0.2"
    assert policy.client_ip("10.0.0.2", "") == "10.0.0.2"
    assert policy.client_ip("10.0.0.2", " , ") == "10.0.0.2"


def test_ipv6_peers_and_mapped_addresses() -> None:
    policy = ProxyPolicy(["2001:db8::/32"])
    assert policy.client_ip("2001:db8::1", "[2001:db8:ffff::1]:1234, 2a00::5") == "2a00::5"
    assert ProxyPolicy(["127.0.0.1"]).client_ip("::ffff:127.0.0.1", "203.0.113.5") == (
        "203.0.113.5"
    )


def test_star_trusts_every_peer() -> None:
    policy = ProxyPolicy(["*"])
    assert policy.enabled
    assert policy.client_ip("198.51.100.7", "203.0.113.5") == "203.0.113.5"


def test_an_unparseable_peer_is_passed_through() -> None:
    assert ProxyPolicy(["10.0.0.0/8"]).client_ip("testclient", "203.0.113.5") == "testclient"


def test_very_long_headers_are_read_only_so_far() -> None:
    policy = ProxyPolicy(["10.0.0.0/8"])
    chain = ", ".join(["10.0.0.1"] * 50 + ["10.0.0.9"])
    # Every hop trusted: the walk stops after the last 20 entries.
    assert policy.client_ip("10.0.0.2", "203.0.113.5, " + chain) == "10.0.0.1"


def test_a_bad_trusted_proxy_setting_fails_at_start() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        ProxyPolicy(["10.0.0.0/99"])


def test_policies_are_parsed_once_per_setting_value() -> None:
    assert proxy_policy(("10.0.0.0/8",)) is proxy_policy(("10.0.0.0/8",))


def test_star_trusts_the_peer_not_the_entries_the_client_wrote() -> None:
    """`*` makes any peer a proxy whose word counts: its own (right-most) entry names the
    client. The entries left of it were in the client's own header, so they name nobody."""
    policy = ProxyPolicy(["*"])
    assert policy.client_ip("10.0.0.1", "203.0.113.9, 198.51.100.7") == "198.51.100.7"
    assert policy.client_ip("10.0.0.1", "198.51.100.7") == "198.51.100.7"
    assert policy.client_ip("10.0.0.1", "unknown") == "10.0.0.1"
    # Listed proxies next to `*` are still walked through.
    both = ProxyPolicy(["*", "10.0.0.0/8"])
    assert both.client_ip("192.0.2.1", "203.0.113.9, 198.51.100.7, 10.0.0.5") == "198.51.100.7"
