"""The one decision on where the gateway may connect, run at PUT, at start-up and at call time.

``sandbox``: only sandbox hosts (loopback, ``localhost``, ``*.test``, ``*.localhost``), judged by
name (decision 0003). ``production``: sandbox names are refused, and every address the host
stands for (a literal in any spelling, or every answer of one lookup) must pass
``addresses.refusal`` with the school's network allow-list. A name whose answers mix allowed and
refused addresses is refused: the connection could go to either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from gateway.outbound.addresses import (
    InvalidHost,
    IPAddress,
    IPNetwork,
    is_sandbox_name,
    needs_allowlist,
    parse_host,
    refusal,
)
from gateway.outbound.resolver import NameResolver, ResolutionFailed
from gateway.settings import Environment

__all__ = ["AllowlistSource", "EndpointInvalid", "EndpointRefused", "EndpointUnresolved", "Guard", "Target"]

AllowlistSource = Callable[[str], Awaitable[Sequence[IPNetwork]]]
SANDBOX_ONLY = (
    "the sandbox environment only talks to sandbox hosts (loopback, localhost, *.test, *.localhost)"
)


class EndpointInvalid(ValueError):
    """Not an absolute http(s) URL this gateway can call."""


class EndpointRefused(Exception):
    """The guard refuses this host in this environment; nothing may be sent to it."""


class EndpointUnresolved(EndpointRefused):
    """The name has no address now, so it cannot be judged (nor reached)."""


@dataclass(frozen=True)
class Target:
    """A checked destination. ``addresses`` are the checked addresses to connect to, in order;
    None only for a sandbox name, which the sandbox environment allows wherever it resolves."""

    host: str
    port: int
    addresses: tuple[IPAddress, ...] | None


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


class Guard:
    def __init__(self, env: Environment, resolver: NameResolver, allowlists: AllowlistSource) -> None:
        self.env, self.resolver, self.allowlists = env, resolver, allowlists

    async def check_url(self, url: str, school_id: str | None) -> Target:
        """Judge a configured endpoint the way a call to it will be judged."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            # httpx cannot call it, but say so as a refusal when the host is a refused address
            # (httpx rejects the octal spelling 0177.0.0.1, a resolver takes it as 127.0.0.1).
            host = urlsplit(url).hostname
            if host and self.env is Environment.PRODUCTION:
                try:
                    address = parse_host(host)
                except InvalidHost:
                    address = None
                if address is not None and not isinstance(address, str):
                    await self._judge(f"{host}", (address,), school_id)
            raise EndpointInvalid(f"endpoint is not a URL this gateway can call: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise EndpointInvalid("endpoint must be an absolute http(s) URL")
        host = parsed.raw_host.decode("ascii")
        try:
            parse_host(host)
        except InvalidHost as exc:
            raise EndpointInvalid(f"endpoint host: {exc}") from None
        return await self.check(host, parsed.port or _default_port(parsed.scheme), school_id)

    async def check(self, host: str, port: int, school_id: str | None) -> Target:
        """The checked target for ``host``: raises ``EndpointRefused`` (or ``EndpointUnresolved``)."""
        try:
            address = parse_host(host)
        except InvalidHost as exc:
            raise EndpointRefused(str(exc)) from None
        if self.env is Environment.SANDBOX:
            if isinstance(address, str):
                if not is_sandbox_name(address):
                    raise EndpointRefused(SANDBOX_ONLY)
                return Target(host, port, None)
            mapped = getattr(address, "ipv4_mapped", None) or address
            if not mapped.is_loopback:
                raise EndpointRefused(SANDBOX_ONLY)
            return Target(host, port, (address,))
        if isinstance(address, str):
            if is_sandbox_name(address):
                raise EndpointRefused(f"{address} is a sandbox host name")
            try:
                addresses = tuple(await self.resolver.resolve(address, port))
            except ResolutionFailed as exc:
                raise EndpointUnresolved(str(exc)) from exc
        else:
            addresses = (address,)
        await self._judge(host, addresses, school_id)
        return Target(host, port, addresses)

    async def _judge(self, host: str, addresses: tuple[IPAddress, ...], school_id: str | None) -> None:
        # The allow-list is read only for a private address, so public providers cost no query.
        allowlist: Sequence[IPNetwork] = ()
        if school_id is not None and any(needs_allowlist(ip) for ip in addresses):
            allowlist = await self.allowlists(school_id)
        for ip in addresses:
            why = refusal(ip, allowlist)
            if why is not None:
                shown = host if host == str(ip) else f"{host} ({ip})"
                raise EndpointRefused(f"production does not call {shown}: {why}")
