"""A real HTTP receiver on a real socket that verifies deliveries with the Python
``standardwebhooks`` package, as a school's system would."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: dict[str, Any] | None  # the event, when the signature verified


@dataclass
class Receiver:
    url: str
    secret: str | None = None  # set once the endpoint is created
    # the status to answer; a callable decides per request (it may block: a hanging receiver)
    answer: int | Callable[[Received], int] = 204
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.verified for r in self.received if r.verified is not None]

    @property
    def unverified(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.verified is None]

    async def wait_for(self, count: int, within: float = 20.0) -> list[dict[str, Any]]:
        """Verified events, once at least ``count`` arrived (bounded wait, not a timing assert)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.events) < count:
            if loop.time() > deadline:
                raise AssertionError(f"{self.url}: {len(self.events)} of {count} events after {within} s")
            await asyncio.sleep(0.05)
        return self.events


@contextmanager
def receiver(path: str = "/hooks") -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            verified = None
            if state.secret is not None:
                try:
                    verified = Webhook(state.secret).verify(body, headers)
                except WebhookVerificationError:
                    verified = None
            got = Received(headers, body, verified)
            with state.lock:
                state.received.append(got)
            status = state.answer(got) if callable(state.answer) else state.answer
            reply = json.dumps({"ok": 200 <= status < 300}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


async def forget_webhooks(h: Any) -> None:
    """At a test's end: delete the school's endpoints (with their deliveries) and relay what is
    left. The PostgreSQL database is shared by a session's tests, and the worker serves every
    school: a later test must not find this one's pending deliveries or unnumbered events."""
    while True:
        r = await h.admin("GET", f"/v1/schools/{h.school_id}/webhook-endpoints")
        endpoints = r.json()["data"] if r.status_code == 200 else []
        if not endpoints:
            break
        for endpoint in endpoints:
            await h.admin("DELETE", f"/v1/schools/{h.school_id}/webhook-endpoints/{endpoint['id']}")
    while await h.services.webhooks.relay():
        pass
