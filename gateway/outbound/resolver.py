"""Name resolution for calls out: one lookup, whose answer is both checked and connected to."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Protocol

from gateway.outbound.addresses import IPAddress

__all__ = ["NameResolver", "ResolutionFailed", "SystemResolver"]


class ResolutionFailed(Exception):
    """The name has no address (or the lookup failed)."""


class NameResolver(Protocol):
    async def resolve(self, name: str, port: int) -> list[IPAddress]:
        """Every address ``name`` has now, in the resolver's order; raises ``ResolutionFailed``."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``: /etc/hosts, then DNS), bounded in time."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    async def resolve(self, name: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise ResolutionFailed(f"{name} does not resolve ({type(exc).__name__})") from exc
        addresses: list[IPAddress] = []
        for *_, sockaddr in infos:
            ip = ipaddress.ip_address(sockaddr[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise ResolutionFailed(f"{name} has no address")
        return addresses
