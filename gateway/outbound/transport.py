"""The httpx side of the guard: check every request, then connect to the checked address.

``GuardedTransport`` runs the guard on each request's host (per school, so each school's
allow-list applies) and hands the request with its checked ``Target`` to a connector:

- ``NetworkConnector`` opens the connection to the checked IP itself, so no second lookup can
  send it elsewhere (DNS rebinding). The request keeps its name for the ``Host`` header, TLS SNI
  and certificate verification (httpx's ``sni_hostname`` extension). Each host name has its own
  connection pool, so a TLS connection verified for one name never carries another name's
  request;
- ``PassThrough`` hands the checked request to an in-process transport (tests, the sandbox over
  ``httpx.ASGITransport``), where there is no address to pin.

A refused request raises ``OutboundRefused``, an ``httpx.ConnectError``: nothing was sent, which is
exactly what adapters read a ``ConnectError`` as. ``OutboundClient`` never follows redirects.
"""

from __future__ import annotations

import logging
import ssl
from collections import OrderedDict
from typing import Any, Protocol

import httpx

from gateway.outbound.guard import EndpointRefused, Guard, Target
from gateway.outbound.resolver import NameResolver, ResolutionFailed

__all__ = [
    "Connector",
    "GuardedTransport",
    "NetworkConnector",
    "OutboundClient",
    "OutboundRefused",
    "PassThrough",
]

log = logging.getLogger("campuspay.outbound")


class OutboundRefused(httpx.ConnectError):
    """The guard refused the destination; no byte was sent."""


class Connector(Protocol):
    async def send(self, request: httpx.Request, target: Target) -> httpx.Response: ...

    async def aclose(self) -> None: ...


class PassThrough:
    """An in-process transport behind the guard (no sockets, so nothing to pin)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def send(self, request: httpx.Request, target: Target) -> httpx.Response:
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self.transport.aclose()


def _pinned(request: httpx.Request, address: str, name: str) -> httpx.Request:
    # Host header and body as they are; only the address the socket opens to changes.
    return httpx.Request(
        request.method,
        request.url.copy_with(host=address),
        headers=request.headers,
        stream=request.stream,
        extensions={**request.extensions, "sni_hostname": name},
    )


class NetworkConnector:
    """Real sockets, opened to the checked address."""

    def __init__(
        self,
        resolver: NameResolver,
        *,
        limits: httpx.Limits,
        verify: ssl.SSLContext | None = None,
        max_hosts: int = 256,
    ) -> None:
        self.resolver, self.limits, self.max_hosts = resolver, limits, max_hosts
        self.verify = verify or httpx.create_ssl_context(trust_env=False)
        self._pools: OrderedDict[str, httpx.AsyncHTTPTransport] = OrderedDict()

    async def _pool(self, host: str) -> httpx.AsyncHTTPTransport:
        pool = self._pools.pop(host, None)
        if pool is None:
            pool = httpx.AsyncHTTPTransport(verify=self.verify, limits=self.limits, trust_env=False)
        self._pools[host] = pool
        while len(self._pools) > self.max_hosts:  # the least recently used host's idle connections
            _, old = self._pools.popitem(last=False)
            await old.aclose()
        return pool

    async def send(self, request: httpx.Request, target: Target) -> httpx.Response:
        addresses = target.addresses
        if addresses is None:  # a sandbox name: resolved once, here, and connected to as resolved
            try:
                addresses = tuple(await self.resolver.resolve(target.host, target.port))
            except ResolutionFailed as exc:
                raise httpx.ConnectError(str(exc), request=request) from exc
        pool = await self._pool(target.host)
        failure: httpx.ConnectError | None = None
        for address in addresses:
            try:
                return await pool.handle_async_request(_pinned(request, str(address), target.host))
            except httpx.ConnectError as exc:  # no connection, so nothing sent: the next address
                failure = exc
        assert failure is not None
        raise failure

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """One school's view of the shared connector: every request is judged with its allow-list."""

    def __init__(self, guard: Guard, connector: Connector, school_id: str | None) -> None:
        self.guard, self.connector, self.school_id = guard, connector, school_id

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        try:
            if url.scheme not in ("http", "https"):
                raise EndpointRefused(f"scheme {url.scheme!r} is not http(s)")
            port = url.port or (443 if url.scheme == "https" else 80)
            target = await self.guard.check(url.raw_host.decode("ascii"), port, self.school_id)
        except EndpointRefused as exc:
            log.warning("outbound call refused (school %s): %s", self.school_id, exc)
            raise OutboundRefused(str(exc), request=request) from exc
        return await self.connector.send(request, target)

    async def aclose(self) -> None:
        """The connector is shared by every school's client; ``Outbound.aclose`` closes it."""


class OutboundClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that never follows a redirect, whatever a caller asks: a
    provider's 3xx is its answer, and following it would let the answer pick the next host."""

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        return await super().send(request, stream=stream, auth=auth, follow_redirects=False)
