"""The outbound guard's pieces: host spellings, the address rules, the allow-list, the guard's
decision, redirects. In memory; the socket tests are in tests/integration/test_outbound_guard.py."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import httpx
import pytest

from gateway.outbound import EndpointRefused, EndpointUnresolved, Guard, IPNetwork, Outbound, PassThrough
from gateway.outbound.addresses import InvalidHost, parse_allowlist, parse_host, refusal
from gateway.outbound.transport import OutboundRefused
from gateway.settings import Environment
from tests.outbound_helpers import PUBLIC_IP, StaticResolver

pytestmark = pytest.mark.unit

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0.0.0.0", "0.0.0.0"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:7f00:1", "::ffff:127.0.0.1"),
        ("fe80::1%25eth0", "fe80::1%eth0"),
    ],
)
def test_every_spelling_of_an_address_is_that_address(host: str, address: str) -> None:
    assert parse_host(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("Ecard.Campus.Example", "ecard.campus.example"),
        ("localhost.", "localhost"),
        ("1e100.net", "1e100.net"),
    ],
)
def test_names_stay_names(host: str, name: str) -> None:
    assert parse_host(host) == name


@pytest.mark.parametrize(
    "host",
    ["1.2.3.999", "256.0.0.1", "1.2.3.4.5", "0x1.0xg.0.1", "1.08", "08.0.0.1", "a b", "-x.com", "[::zz]"],
)
def test_hosts_that_are_neither(host: str) -> None:
    with pytest.raises(InvalidHost):
        parse_host(host)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("fec0::1", "site-local"),
        ("::7f00:1", "IPv4-compatible"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("10.1.2.3", "allow-list"),
        ("192.168.1.10", "allow-list"),
        ("fd12::1", "allow-list"),
        ("192.0.2.10", "not a public address"),  # documentation
        ("198.18.0.1", "not a public address"),  # benchmarking
    ],
)
def test_production_refuses(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", [PUBLIC_IP, "2001:4860:4860::8888", "::ffff:1.2.3.4", "64:ff9b::102:304"])
def test_production_allows_public_addresses(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_an_allow_list_opens_private_addresses_only_inside_it_and_never_the_always_refused() -> None:
    campus = parse_allowlist(["10.20.0.0/16", "100.64.0.0/10", "fd00::/8"])
    assert refusal(ipaddress.ip_address("10.20.3.4"), campus) is None
    assert refusal(ipaddress.ip_address("::ffff:10.20.3.4"), campus) is None
    assert refusal(ipaddress.ip_address("10.21.0.1"), campus) is not None
    assert refusal(ipaddress.ip_address("100.64.0.9"), campus) is None
    for always in ("100.100.100.200", "fd00:ec2::254"):
        assert "metadata" in (refusal(ipaddress.ip_address(always), campus) or "")


@pytest.mark.parametrize(
    "cidr",
    ["127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/0", "8.8.8.0/24", "10.0.0.1/8", "::/0", "fe80::/10", "x"],
)
def test_the_allow_list_takes_private_networks_only(cidr: str) -> None:
    with pytest.raises(ValueError):
        parse_allowlist([cidr])


def _guard(
    env: Environment,
    resolver: StaticResolver,
    allowlist: Sequence[IPNetwork] = (),
    seen: list[str] | None = None,
) -> Guard:
    async def allowlists(school_id: str) -> Sequence[IPNetwork]:
        if seen is not None:
            seen.append(school_id)
        return allowlist

    return Guard(env, resolver, allowlists)


async def test_production_judges_every_address_a_name_resolves_to() -> None:
    resolver = StaticResolver(
        {
            "ecard.campus.example": [PUBLIC_IP],
            "mixed.example": [PUBLIC_IP, "127.0.0.1"],
            "ip6.example": ["::1"],
        }
    )
    guard = _guard(Environment.PRODUCTION, resolver)
    target = await guard.check("ecard.campus.example", 443, "sch_1")
    assert target.addresses == (ipaddress.ip_address(PUBLIC_IP),)
    for name in ("mixed.example", "ip6.example"):
        with pytest.raises(EndpointRefused, match="loopback"):
            await guard.check(name, 443, "sch_1")
    with pytest.raises(EndpointUnresolved):
        await guard.check("nowhere.example", 443, "sch_1")
    for name in ("localhost", "localhost.", "ecard.test", "x.localhost"):
        with pytest.raises(EndpointRefused, match="sandbox host name"):
            await guard.check(name, 443, "sch_1")
    assert "localhost" not in resolver.calls  # a sandbox name is refused before any lookup


async def test_the_allow_list_is_read_only_for_private_addresses() -> None:
    seen: list[str] = []
    resolver = StaticResolver({"ecard.lan": ["10.20.0.5"], "public.example": [PUBLIC_IP]})
    guard = _guard(Environment.PRODUCTION, resolver, parse_allowlist(["10.20.0.0/16"]), seen)
    await guard.check("public.example", 80, "sch_1")
    assert seen == []
    assert (await guard.check("ecard.lan", 80, "sch_1")).addresses == (ipaddress.ip_address("10.20.0.5"),)
    assert seen == ["sch_1"]


async def test_sandbox_takes_sandbox_hosts_by_name_without_a_lookup() -> None:
    resolver = StaticResolver()
    guard = _guard(Environment.SANDBOX, resolver)
    assert (await guard.check("sandbox.test", 80, None)).addresses is None
    assert (await guard.check("127.1", 80, None)).addresses == (LOOPBACK,)
    for host in ("ecard.example.com", "10.0.0.8", "sandbox.test.example.com"):
        with pytest.raises(EndpointRefused, match="sandbox hosts"):
            await guard.check(host, 80, None)
    assert resolver.calls == []


async def test_check_url_judges_urls_httpx_cannot_call_by_their_address() -> None:
    guard = _guard(Environment.PRODUCTION, StaticResolver())
    with pytest.raises(EndpointRefused, match="loopback"):
        await guard.check_url("http://0177.0.0.1/ecard", None)  # httpx rejects it, a resolver does not


async def test_redirects_are_never_followed_and_refused_hosts_get_no_request() -> None:
    seen: list[str] = []

    def provider(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    resolver = StaticResolver({"provider.example": [PUBLIC_IP], "rebound.example": ["127.0.0.1"]})
    outbound = Outbound(
        _guard(Environment.PRODUCTION, resolver), PassThrough(httpx.MockTransport(provider)), timeout=1
    )
    client = outbound.client("sch_1")
    response = await client.get("http://provider.example/pay", follow_redirects=True)
    assert response.status_code == 302
    assert seen == ["http://provider.example/pay"]
    with pytest.raises(OutboundRefused, match="loopback"):
        await client.get("http://rebound.example/pay")
    assert isinstance(OutboundRefused("x"), httpx.ConnectError)  # adapters read it as "never sent"
    assert seen == ["http://provider.example/pay"]
    await outbound.aclose()
