"""Slow and surplus clients against a real ``campuspay serve`` on a real socket (issue 7, A8).

Before gateway/server.py, uvicorn cut no connection that kept sending: a byte every few seconds
held it for good. The servers here run with 1 s header and body timeouts (set through the
environment); every assertion is "closed", with a generous bound, never "closed after n s".
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import h11
import httpx
import pytest

from tests.procs import free_port, running

pytestmark = pytest.mark.e2e

BOUND = 30.0  # the server cuts after 1 s; this only tells "cut" from "held for good"
DRIP = 0.2  # seconds between two trickled bytes


def _serve(tmp: Path, **env: str) -> Iterator[int]:
    port = free_port()
    args = ["serve", "--port", str(port), "--data-dir", str(tmp / "data")]
    env = {"CAMPUSPAY_ENV": "sandbox", **env}
    with running(args, health=f"http://127.0.0.1:{port}/healthz", log=tmp / "serve.log", env=env):
        yield port


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A gateway that gives a request's headers 1 s and its body 1 s."""
    yield from _serve(
        tmp_path_factory.mktemp("short"),
        CAMPUSPAY_HEADER_TIMEOUT_SECONDS="1",
        CAMPUSPAY_BODY_TIMEOUT_SECONDS="1",
    )


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A gateway that holds at most 3 connections, with timeouts long enough to hold them."""
    yield from _serve(
        tmp_path_factory.mktemp("capped"),
        CAMPUSPAY_MAX_CONNECTIONS="3",
        CAMPUSPAY_HEADER_TIMEOUT_SECONDS="300",
        CAMPUSPAY_BODY_TIMEOUT_SECONDS="300",
    )


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=BOUND)


def _trickle_until_closed(sock: socket.socket, first: bytes, drip: bytes = b"a") -> bytes:
    """Send ``first``, then one byte every DRIP seconds (reading whatever comes back in between)
    until the server closes the connection; return all it sent. Fail if it is still open after
    BOUND seconds."""
    sock.sendall(first)
    received = b""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], DRIP)
        try:
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    return received
                received += chunk
            else:
                sock.send(drip)
        except (BrokenPipeError, ConnectionResetError):
            return received
    raise AssertionError(f"connection still open after {BOUND} s of trickling; got {received!r}")


def _responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The complete HTTP/1.1 responses in ``raw``, parsed by h11."""
    conn = h11.Connection(h11.CLIENT)
    if not raw:
        return []  # (receive_data(b"") would mean "the server closed")
    conn.receive_data(raw)
    out: list[tuple[int, dict[str, str], bytes]] = []
    while True:
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        event = conn.next_event()
        if not isinstance(event, h11.Response):
            return out
        headers = {k.decode(): v.decode() for k, v in event.headers}
        body = b""
        while isinstance(part := conn.next_event(), h11.Data):
            body += part.data
        if part is h11.NEED_DATA:
            return out  # the last one is not complete yet
        out.append((event.status_code, headers, body))
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return out
        conn.start_next_cycle()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read exactly one response (the connection may stay open)."""
    raw = b""
    while not _responses(raw):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a whole response: {raw!r}"
        raw += chunk
    return _responses(raw)[0]


def _assert_timed_out(raw: bytes) -> None:
    *_, (status, headers, body) = _responses(raw)
    assert status == 408, raw
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "request_timeout"


def test_a_header_trickle_is_cut_with_408(short: int) -> None:
    with _connect(short) as sock:
        raw = _trickle_until_closed(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    _assert_timed_out(raw)


def test_a_client_that_connects_and_says_nothing_is_cut(short: int) -> None:
    with _connect(short) as sock:
        raw = b""
        while chunk := sock.recv(65536):  # socket timeout BOUND: a held connection fails here
            raw += chunk
    _assert_timed_out(raw)


def test_a_body_trickle_is_cut_with_408(short: int) -> None:
    head = (
        b"POST /v1/payments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4000\r\n\r\n{"
    )
    with _connect(short) as sock:
        raw = _trickle_until_closed(sock, head, drip=b" ")
    _assert_timed_out(raw)


def test_the_next_request_on_a_kept_alive_connection_has_its_own_deadline(short: int) -> None:
    prompt = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with _connect(short) as sock:
        raw = _trickle_until_closed(sock, prompt + b"GET /healthz HTTP/1.1\r\nX-Slow: ")
    answers = _responses(raw)
    assert [status for status, _, _ in answers] == [200, 408]
    _assert_timed_out(raw)


def test_prompt_clients_are_served_and_cuts_are_counted(short: int) -> None:
    with _connect(short) as sock:
        _trickle_until_closed(sock, b"GET /healthz HTTP/1.1\r\n")
    metrics = httpx.get(f"http://127.0.0.1:{short}/metrics", timeout=BOUND)
    assert metrics.status_code == 200
    cuts = {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.text.splitlines()
        if line.startswith("campuspay_http_connections_cut_total{")
    }
    assert cuts['reason="header_timeout"'] >= 1


def _held(port: int) -> socket.socket:
    """A connection the server has taken (it answered one request on it) and holds: the next
    request is under way, its headers unfinished. Retries while the server is still full of
    connections an earlier test has closed but the server has not yet seen close."""
    deadline = time.monotonic() + BOUND
    while True:
        sock = _connect(port)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\n")
        status, _, _ = _read_response(sock)
        if status == 200:
            return sock
        sock.close()
        assert status == 503 and time.monotonic() < deadline, status
        time.sleep(DRIP)


def test_connections_above_the_cap_are_refused_until_one_closes(capped: int) -> None:
    held = [_held(capped) for _ in range(3)]
    try:
        with _connect(capped) as surplus:
            raw = b""
            while chunk := surplus.recv(65536):  # refused before it sends anything
                raw += chunk
        [(status, headers, body)] = _responses(raw)
        assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
        assert json.loads(body)["code"] == "server_busy"

        # The held connections are still served: the request under way on one completes.
        held[0].sendall(b"Host: 127.0.0.1\r\n\r\n")
        assert _read_response(held[0])[0] == 200

        held.pop().close()
        _held(capped).close()  # room again (it retries while the close is not yet seen)
    finally:
        for sock in held:
            sock.close()


def test_a_slow_but_timely_request_is_served(capped: int) -> None:
    with _held(capped) as sock:  # a whole request answered; the next one's headers begun
        for piece in (b"Host: 127.0.0.1\r\n", b"X-Slow: yes\r\n", b"\r\n"):
            time.sleep(DRIP)
            sock.sendall(piece)
        status, _, body = _read_response(sock)
    assert status == 200 and json.loads(body) == {"status": "ok"}
