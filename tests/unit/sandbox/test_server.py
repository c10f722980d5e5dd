"""The sandbox on a real socket (sandbox/server.py): a reset is a TCP RST, a truncated answer
really stops half-way with the connection closed, and the money moved in both cases."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sandbox.control import SimulatedReset
from sandbox.server import sandbox_server

from .ecard_client import Ecard

pytestmark = pytest.mark.e2e


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = sandbox_server(log_level="warning", lifespan="off")
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "the sandbox server did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def fault(client: httpx.AsyncClient, **rule: Any) -> None:
    response = await client.post("/_control/faults", json={"provider": "ecard", **rule})
    assert response.status_code == 200, response.text


async def test_reset_after_apply_resets_the_tcp_connection(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        ecard = Ecard(client)
        await fault(client, operation="consume", action="reset_after_apply")
        with pytest.raises(httpx.ReadError) as caught:
            await ecard.consume("ord_1", 100)
        # httpx's own error from the broken socket (the raw-socket test shows it is an RST),
        # not the in-process stand-in raised out of the app.
        assert not isinstance(caught.value, SimulatedReset)
        query = await ecard.post("query", {"order_ref": "ord_1"})  # a new connection works
    assert query.json()["status"] == "SUCCESS" and ecard.response_verifies(query)


async def test_a_raw_socket_sees_an_rst_and_no_bytes(base_url: str) -> None:
    """Below httpx: the request goes out, and the read fails with ECONNRESET, no byte before it."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        await fault(client, operation="ping", action="reset_after_apply")
        request = await signed_ping(client)
    url = httpx.URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(request)
    await writer.drain()
    try:
        data: bytes | None = await reader.read(65536)
    except ConnectionResetError:
        data = None
    writer.close()
    assert data is None, f"expected a reset, read {data!r}"  # b"" would be an orderly close (FIN)


async def signed_ping(client: httpx.AsyncClient) -> bytes:
    """The exact bytes of a signed e-card ping request, as HTTP/1.1."""
    captured: list[httpx.Request] = []

    async def capture(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(capture), base_url=client.base_url) as mock:
        await Ecard(mock).post("ping", {})
    sent = captured[0]
    head = f"POST {sent.url.raw_path.decode()} HTTP/1.1\r\nHost: {sent.url.netloc.decode()}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in sent.headers.items() if k.lower() != "host")
    return (head + "\r\n").encode() + sent.content


async def test_truncate_after_apply_ends_the_body_early(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        ecard = Ecard(client)
        await fault(client, operation="consume", action="truncate_after_apply")
        with pytest.raises(httpx.RemoteProtocolError):
            await ecard.consume("ord_1", 100)
        query = await ecard.post("query", {"order_ref": "ord_1"})
    assert query.json()["status"] == "SUCCESS"


async def test_rules_that_break_nothing_below_http_answer_as_in_process(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        ecard = Ecard(client)
        await fault(client, operation="consume", action="throttle_429", delay_ms=3000)
        throttled = await ecard.consume("ord_1", 100)
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "3"
