"""The SSRF guard: strict URL parsing, every private spelling refused, allow-list, resolution."""

import ipaddress

import pytest

from apiforge.tools.netguard import (
    AllowList,
    BlockedTargetError,
    NetGuardError,
    Resolver,
    check_url,
    is_public_address,
    parse_ipv4_legacy,
    parse_url,
)

NOBODY = AllowList()


def fake_resolver(table: dict[str, list[str]]) -> Resolver:
    """Answers from a table: lets tests name hosts resolving anywhere without any DNS traffic."""

    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise NetGuardError(f"host {host!r} does not resolve")
        return table[host]

    return resolve


PUBLIC = fake_resolver({"api.example.com": ["93.184.216.34"]})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1:8080/admin",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://10.255.255.255/",
        "http://172.16.0.1/",
        "http://172.31.255.254/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://240.0.0.1/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://017700000001/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[2002:7f00:1::]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[fd12:3456::1]/",
        "http://[ff02::1]/",
        "https://127.0.0.1:443/",
    ],
)
async def test_private_loopback_and_link_local_targets_are_refused(url: str) -> None:
    with pytest.raises(BlockedTargetError) as caught:
        await check_url(url, NOBODY)
    assert caught.value.reason == "ssrf_blocked"
    assert "refused" in str(caught.value)


async def test_host_name_resolving_to_loopback_is_refused() -> None:
    # `localhost` comes from /etc/hosts: a real resolution, no traffic leaves the machine.
    with pytest.raises(BlockedTargetError, match=r"localhost \(127\.0\.0\.1\)|localhost \(::1\)"):
        await check_url("http://localhost:9/", NOBODY)


async def test_every_resolved_address_must_be_public_not_just_the_first() -> None:
    resolver = fake_resolver({"mixed.example": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(BlockedTargetError, match=r"10\.0\.0\.7"):
        await check_url("http://mixed.example/", NOBODY, resolver)


async def test_name_resolving_to_metadata_address_is_refused() -> None:
    resolver = fake_resolver({"metadata.internal.example": ["169.254.169.254"]})
    with pytest.raises(BlockedTargetError):
        await check_url("http://metadata.internal.example/", NOBODY, resolver)


async def test_name_resolving_to_mapped_ipv6_loopback_is_refused() -> None:
    resolver = fake_resolver({"sneaky.example": ["::ffff:127.0.0.1"]})
    with pytest.raises(BlockedTargetError):
        await check_url("http://sneaky.example/", NOBODY, resolver)


async def test_public_host_gives_the_address_to_pin() -> None:
    target, address = await check_url("https://API.example.com./v1/x?q=1", NOBODY, PUBLIC)
    assert address == ipaddress.ip_address("93.184.216.34")
    assert target.host == "api.example.com"
    assert target.port == 443
    assert target.target == "/v1/x?q=1"
    assert target.host_header == "api.example.com"
    assert target.url_for(address) == "https://93.184.216.34:443/v1/x?q=1"


async def test_public_ip_literal_passes_without_resolution() -> None:
    async def no_dns(host: str, port: int) -> list[str]:
        raise AssertionError("an IP literal must not be resolved")

    target, address = await check_url("http://8.8.8.8:8080", NOBODY, no_dns)
    assert str(address) == "8.8.8.8"
    assert target.target == "/"
    assert target.host_header == "8.8.8.8:8080"


async def test_allow_list_by_name_ip_and_cidr() -> None:
    resolver = fake_resolver({"billing.internal": ["10.1.2.3"], "other.internal": ["10.9.9.9"]})
    by_name = AllowList(["Billing.Internal."])
    _, address = await check_url("http://billing.internal/", by_name, resolver)
    assert str(address) == "10.1.2.3"
    with pytest.raises(BlockedTargetError):
        await check_url("http://other.internal/", by_name, resolver)

    by_ip = AllowList(["127.0.0.1"])
    _, address = await check_url("http://127.0.0.1:8000/", by_ip)
    assert str(address) == "127.0.0.1"
    # The allow-list is about addresses and exact names: another loopback address stays refused.
    with pytest.raises(BlockedTargetError):
        await check_url("http://127.0.0.2/", by_ip)

    by_cidr = AllowList(["10.1.0.0/16", "[::1]"])
    await check_url("http://billing.internal/", by_cidr, resolver)
    await check_url("http://[::1]/", by_cidr)
    with pytest.raises(BlockedTargetError):
        await check_url("http://other.internal/", by_cidr, resolver)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/",
        "http://user:pw@example.com/",
        "http://example.com@127.0.0.1/",
        "http:///nohost",
        "http://exa mple.com/",
        "http://example.com\\@127.0.0.1/",
        "http://example.com/\r\nHost: evil",
        "http://[::1%25eth0]/",
        "http://[not-an-ip]/",
        "http://1.2.3.4.5/",
        "http://256.1.1.1/",
        "http://0x100000000/",
        "http://example..com/",
        "http://-bad-.example/",
        "http://example.com:0/",
        "http://example.com:99999/",
        "http://" + "a" * 64 + ".example/",
        "http://example.com/" + "x" * 9000,
    ],
)
def test_ambiguous_or_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(NetGuardError):
        parse_url(url)


def test_legacy_ipv4_spellings_parse_like_a_resolver() -> None:
    assert str(parse_ipv4_legacy("2130706433")) == "127.0.0.1"
    assert str(parse_ipv4_legacy("0x7f.1")) == "127.0.0.1"
    assert str(parse_ipv4_legacy("0177.0.0.1")) == "127.0.0.1"
    assert str(parse_ipv4_legacy("127.1")) == "127.0.0.1"
    assert str(parse_ipv4_legacy("10.1.258")) == "10.1.1.2"
    assert str(parse_ipv4_legacy("1.2.3.4.")) == "1.2.3.4"
    assert parse_ipv4_legacy("example.com") is None
    assert parse_ipv4_legacy("1e100.net") is None


def test_ipv6_literal_host_header_keeps_brackets() -> None:
    target = parse_url("http://[2606:4700::1111]:8443/a")
    assert target.host == "2606:4700::1111"
    assert target.host_header == "[2606:4700::1111]:8443"
    assert target.url_for(ipaddress.IPv6Address("2606:4700::1111")) == (
        "http://[2606:4700::1111]:8443/a"
    )


def test_internationalised_names_are_normalised_to_ascii() -> None:
    assert parse_url("http://bücher.example/").host == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        ("2002:5db8:d822::1", True),  # 6to4 of a public address
        ("127.0.0.1", False),
        ("100.100.100.200", False),  # carrier-grade NAT (also Alibaba's metadata address)
        ("192.0.2.1", False),  # documentation
        ("198.18.0.1", False),  # benchmarking
        ("::ffff:10.0.0.1", False),
        ("2001:db8::1", False),
        ("3fff::1", False),  # documentation (RFC 9637), unknown to Python 3.11's tables
        ("3fff:fff:ffff::1", False),
        ("3fff:1000::1", True),  # just past it
        ("5f00::1", False),  # SRv6 SIDs (RFC 9602)
        ("::", False),
    ],
)
def test_public_address_classification(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


async def test_unresolvable_host_is_a_clear_error() -> None:
    with pytest.raises(NetGuardError, match="does not resolve") as caught:
        await check_url("http://nowhere.invalid/", NOBODY, fake_resolver({}))
    assert not isinstance(caught.value, BlockedTargetError)
