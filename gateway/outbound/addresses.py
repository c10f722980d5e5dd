"""What address a host names, and whether production may call it. Pure functions, no I/O.

A host is judged by the address it stands for, never by how it is spelled: ``127.1``,
``2130706433``, ``0x7f000001``, ``0177.0.0.1`` and ``::ffff:127.0.0.1`` are all 127.0.0.1, because
that is what a resolver (``inet_aton``) and a browser (the WHATWG URL standard) make of them.

In production (docs/decisions/0014-outbound-guard.md):

- always refused: loopback, unspecified (``0.0.0.0/8``, ``::``), link-local (``169.254.0.0/16``,
  ``fe80::/10``), the cloud metadata addresses, multicast, reserved and site-local addresses,
  IPv4-compatible IPv6, and any address that embeds (6to4, Teredo, NAT64) a refused IPv4 address;
- private ranges (``ALLOWLISTABLE``) only inside a network of the school's allow-list;
- every other non-public address (documentation, benchmarking, ...) refused;
- public addresses allowed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "ALLOWLISTABLE",
    "MAX_ALLOWLIST_ENTRIES",
    "IPAddress",
    "IPNetwork",
    "InvalidHost",
    "is_sandbox_name",
    "needs_allowlist",
    "parse_allowlist",
    "parse_host",
    "refusal",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Private-use ranges a school may open for its own on-site servers (RFC 1918, RFC 6598 shared
# address space used by some campus networks, RFC 4193 unique local IPv6).
ALLOWLISTABLE = _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
# Instance metadata services. Most sit in link-local space (refused anyway); these are named so
# that no allow-list entry can open them: Alibaba Cloud's lives in 100.64.0.0/10, AWS's IPv6 one in
# fc00::/7, and Azure's wire server on a public address.
_METADATA = _nets("169.254.169.254/32", "100.100.100.200/32", "fd00:ec2::254/128", "168.63.129.16/32")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = _nets("64:ff9b::/96", "64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
MAX_ALLOWLIST_ENTRIES = 64

_SANDBOX_SUFFIXES = (".test", ".localhost")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_DIGITS = {10: re.compile(r"[0-9]+"), 8: re.compile(r"[0-7]+"), 16: re.compile(r"[0-9a-f]+")}


class InvalidHost(ValueError):
    """Not a host name or address a call could go to."""


def is_sandbox_name(name: str) -> bool:
    """``localhost``, or a name under ``.test`` / ``.localhost``: reserved for local use and
    testing (RFC 6761, RFC 2606), so public DNS never assigns them."""
    name = name.lower().rstrip(".")
    return name == "localhost" or name.endswith(_SANDBOX_SUFFIXES)


def _ipv4_number(part: str) -> int | None:
    """One dotted part as the WHATWG URL standard reads it: decimal, 0x-hex, or 0-led octal."""
    base = 10
    if part[:2] in ("0x", "0X"):
        part, base = part[2:].lower(), 16
        if not part:
            return 0
    elif len(part) > 1 and part[0] == "0":
        part, base = part[1:], 8
    if not _DIGITS[base].fullmatch(part):
        return None
    return int(part, base)


def _ipv4(parts: list[str]) -> ipaddress.IPv4Address:
    numbers = [_ipv4_number(p) if p else None for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise InvalidHost("a host ending in a number must be an IPv4 address")
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        raise InvalidHost("IPv4 address part out of range")
    value = last + sum(n << (8 * (3 - i)) for i, n in enumerate(head))
    return ipaddress.IPv4Address(value)


def parse_host(host: str) -> IPAddress | str:
    """The address a URL host stands for, in any spelling; else the host as a lower-case name
    without its trailing dot. Raises ``InvalidHost`` for anything else."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in text:
        try:  # httpx keeps a zone id percent-encoded (fe80::1%25eth0)
            return ipaddress.IPv6Address(text.replace("%25", "%", 1))
        except ValueError:
            raise InvalidHost(f"{host!r} is not an IPv6 address") from None
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        raise InvalidHost("empty or over-long host name")
    labels = name.split(".")
    last = labels[-1]
    if last and (last.isdigit() or _ipv4_number(last) is not None):  # "ends in a number"
        return _ipv4(labels)
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidHost(f"{host!r} is not a valid host name")
    return name


def _embedded(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    inner: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        inner.append(ip.sixtofour)
    if ip.teredo is not None:
        inner.extend(ip.teredo)
    if any(ip in net for net in _NAT64):
        inner.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return inner


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a socket to ::ffff:a.b.c.d reaches a.b.c.d
    return ip


def _always_refused(ip: IPAddress) -> str | None:
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "unspecified (this host)"
    if any(ip in net for net in _METADATA):
        return "a cloud metadata address"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address):
        return "reserved" if ip.is_reserved else None
    if ip.is_site_local:
        return "site-local"
    if ip in _IPV4_COMPATIBLE:
        return "an IPv4-compatible IPv6 address (deprecated)"
    if ip.scope_id:
        return "an address with a zone id"
    return None


def needs_allowlist(ip: IPAddress) -> bool:
    """Whether the school's allow-list could decide this address (it lies in a private range)."""
    ip = _unmapped(ip)
    return any(ip in net for net in ALLOWLISTABLE)


def refusal(ip: IPAddress, allowlist: Sequence[IPNetwork] = ()) -> str | None:
    """Why production must not call ``ip``, or None when it may."""
    ip = _unmapped(ip)
    reason = _always_refused(ip)
    if reason is not None:
        return reason
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded(ip)
        for v4 in inner:
            why = refusal(v4, allowlist)
            if why is not None:
                return f"{why} (embedded in {ip})"
        if any(ip in net for net in _NAT64):
            return None  # DNS64 answers for public IPv4 hosts; the IPv4 address was judged
    if any(ip in net for net in allowlist):
        return None
    if ip.is_global:
        return None
    if needs_allowlist(ip):
        return "a private address not in this school's network allow-list"
    return "not a public address"


def parse_allowlist(cidrs: Iterable[str]) -> list[IPNetwork]:
    """Validated allow-list entries: networks (no host bits) inside the private ranges."""
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(cidr.strip(), strict=True)
        except ValueError as exc:
            raise ValueError(f"{cidr!r} is not a network in CIDR notation ({exc})") from None
        if not any(net.version == r.version and net.subnet_of(r) for r in ALLOWLISTABLE):  # type: ignore[arg-type]
            ranges = ", ".join(str(r) for r in ALLOWLISTABLE)
            raise ValueError(f"{cidr!r} is not inside a private range ({ranges})")
        if net not in networks:
            networks.append(net)
    if len(networks) > MAX_ALLOWLIST_ENTRIES:
        raise ValueError(f"at most {MAX_ALLOWLIST_ENTRIES} networks")
    return networks
