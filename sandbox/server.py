"""The standalone sandbox on real sockets (`campuspay sandbox`): uvicorn, plus the hooks that let
fault rules break a connection below HTTP (a TCP reset, a body cut off half-way).

uvicorn keeps its transports to itself, so the HTTP protocol is subclassed to remember each
connection's transport by the client address the request's ASGI scope carries.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import get_remote_addr

from sandbox.app import create_sandbox_app

__all__ = ["Connections", "sandbox_server"]

CLOSE_WAIT_S = 5.0  # how long to wait for the event loop to report a broken connection as lost


class Connections:
    """The server side of every open client connection, by client (host, port)."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, int], tuple[asyncio.Transport, asyncio.Event]] = {}

    def opened(self, transport: asyncio.Transport) -> asyncio.Event:
        lost = asyncio.Event()
        client = get_remote_addr(transport)
        if client is not None:
            self._open[client] = (transport, lost)
        return lost

    def lost(self, transport: asyncio.Transport) -> None:
        client = get_remote_addr(transport)
        found = self._open.get(client) if client is not None else None
        if found is not None and found[0] is transport:
            del self._open[client]  # type: ignore[arg-type]
            found[1].set()

    async def reset(self, client: tuple[str, int] | None) -> bool:
        found = self._open.get(client) if client is not None else None
        if found is None:
            return False
        transport, lost = found
        sock = transport.get_extra_info("socket")
        # Linger on, timeout 0: closing the socket discards anything unsent and sends an RST
        # instead of a FIN, which is what a crashed peer or a middlebox dropping state looks like.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await _wait(lost)
        return True

    async def close(self, client: tuple[str, int] | None) -> bool:
        found = self._open.get(client) if client is not None else None
        if found is None:
            return False
        transport, lost = found
        transport.close()  # what was written goes out first, then a FIN
        await _wait(lost)
        return True


async def _wait(lost: asyncio.Event) -> None:
    # uvicorn treats a response the app never finished as an error unless the connection is
    # already lost by the time the app returns, so return only once it is.
    try:
        async with asyncio.timeout(CLOSE_WAIT_S):
            await lost.wait()
    except TimeoutError:
        pass


def tracking_protocol(connections: Connections) -> type[H11Protocol]:
    class TrackedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            connections.opened(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            connections.lost(self.transport)
            super().connection_lost(exc)

    return TrackedH11Protocol


def sandbox_server(
    app: FastAPI | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8090,
    state_dir: Path | None = None,
    **config: Any,
) -> uvicorn.Server:
    """A uvicorn server running the sandbox (a fresh one, keeping its books in `state_dir` when
    given, unless `app` is), whose fault rules can break real connections; `config` goes to
    uvicorn.Config."""
    app = app or create_sandbox_app(state_dir)
    connections = Connections()
    app.state.control.breaker = connections
    protocol = tracking_protocol(connections)
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, http=protocol, **config))
