"""``Outbound``: the clients every call out of the gateway uses, one per school, one guard."""

from __future__ import annotations

import httpx

from gateway.outbound.guard import Guard, Target
from gateway.outbound.transport import Connector, GuardedTransport, OutboundClient

__all__ = ["Outbound"]


class Outbound:
    """Provider calls (the adapters' ``httpx.AsyncClient``), ``/check`` and webhook deliveries
    all take their client from here, so each request is judged by ``guard`` and connected by
    ``connector`` to the checked address."""

    def __init__(self, guard: Guard, connector: Connector, *, timeout: float) -> None:
        self.guard, self.connector, self.timeout = guard, connector, timeout
        self._clients: dict[str | None, OutboundClient] = {}

    def client(self, school_id: str | None) -> httpx.AsyncClient:
        """The client for calls made on behalf of ``school_id`` (None: the platform itself);
        its allow-list applies. Clients share one connector and its connection pools."""
        client = self._clients.get(school_id)
        if client is None:
            client = OutboundClient(
                transport=GuardedTransport(self.guard, self.connector, school_id),
                timeout=self.timeout,
                trust_env=False,  # no proxy from the environment may stand between check and connect
                follow_redirects=False,
            )
            self._clients[school_id] = client
        return client

    async def check_url(self, url: str, school_id: str | None) -> Target:
        """Judge a configured URL now, as a call to it will be judged."""
        return await self.guard.check_url(url, school_id)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
        await self.connector.aclose()
