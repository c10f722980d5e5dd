"""The HTTP server ``campuspay serve`` runs: uvicorn's h11 protocol, plus deadlines for receiving
a request and a cap on open connections (decision 0013).

uvicorn times out only a connection idle *between* requests, and any byte received cancels that
timer, so a client trickling a byte every few seconds held its connection for good. Here:

- a request's headers must be complete within ``header_timeout`` of its first byte (for a new
  connection: of the connection, so a client that connects and says nothing is cut too);
- its body must be complete within ``body_timeout`` of the end of the headers;
- past either, the client gets ``408 request_timeout`` (unless a response has begun; then the
  connection is just closed) and the connection is closed: after a cut-off request the framing
  of the connection is lost;
- above ``max_connections`` open connections, a new one is answered ``503 server_busy`` with
  ``Retry-After`` and closed at once, before any of its bytes are read.

Once a request is received, the application's time is its own (``sync_budget_seconds`` bounds
payments), so a slow provider never turns into a 408.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.errors import problem_body
from gateway.metrics import CONNECTIONS_CUT
from gateway.settings import Settings

__all__ = ["GuardedH11Protocol", "ServerLimits", "guarded_protocol", "run"]

log = logging.getLogger("campuspay.server")


@dataclass(frozen=True)
class ServerLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        return cls(settings.header_timeout_seconds, settings.body_timeout_seconds, settings.max_connections)


class GuardedH11Protocol(H11Protocol):
    """One connection. ``limits`` is set on the subclass ``guarded_protocol`` makes, because
    uvicorn builds protocols from a class and its own config only."""

    limits: ClassVar[ServerLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "headers" | "body" while a deadline runs

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            CONNECTIONS_CUT.labels("too_many_connections").inc()
            log.debug("refused %s: %d connections open", self.client, len(self.connections) - 1)
            self._answer_and_close("server_busy", {"retry-after": "1"})
            return
        self._start("headers")

    def data_received(self, data: bytes) -> None:
        if self._phase is None and self.conn.their_state is h11.IDLE:
            self._start("headers")  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start the next cycle and parse pipelined bytes
        if self.transport.is_closing():
            self._stop()
        elif self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            # Part of the next request is already here: its deadline runs from now, and it
            # replaces the idle keep-alive timer uvicorn has just set.
            self._unset_keepalive_if_required()
            self._start("headers")
        else:
            self._follow()

    # deadlines

    def _follow(self) -> None:
        """Move the deadline along with h11's view of the request being received."""
        state = self.conn.their_state
        if self.transport.is_closing():
            self._stop()
        elif state is h11.IDLE:
            pass  # still in the headers (or idle: then no deadline runs, and uvicorn's keep-alive does)
        elif state is h11.SEND_BODY:
            if self._phase != "body":
                self._start("body")
        else:  # DONE, MUST_CLOSE, CLOSED, ERROR: nothing more to receive for this request
            self._stop()

    def _start(self, phase: str) -> None:
        self._stop()
        timeout = self.limits.header_timeout if phase == "headers" else self.limits.body_timeout
        self._phase = phase
        self._deadline = self.loop.call_later(timeout, self._expired)

    def _stop(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, None

    def _expired(self) -> None:
        phase, self._deadline, self._phase = self._phase, None, None
        if self.transport.is_closing():
            return
        CONNECTIONS_CUT.labels("header_timeout" if phase == "headers" else "body_timeout").inc()
        log.debug("cut %s: request %s not received in time", self.client, phase)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The application waits for the rest of the body: it now hears http.disconnect,
            # and whatever it still sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()  # too late for a 408
                return
        self._answer_and_close("request_timeout", {})

    def _answer_and_close(self, code: str, headers: dict[str, str]) -> None:
        """A problem answer written by the server itself (no application, no request id), then
        close: HTTP allows it before or during a request (RFC 9110 §15.5.9, §15.6.4)."""
        problem = problem_body(code)
        body = json.dumps(problem).encode()
        fields = {
            "content-type": "application/problem+json",
            "content-length": str(len(body)),
            "date": formatdate(usegmt=True),
            "connection": "close",
            **headers,
        }
        status = HTTPStatus(problem["status"])
        try:
            for event in (
                h11.Response(status_code=status.value, headers=list(fields.items()), reason=status.phrase),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
        except h11.LocalProtocolError:
            pass  # h11 cannot answer in this state: just close
        self.transport.close()


def guarded_protocol(limits: ServerLimits) -> type[GuardedH11Protocol]:
    return type("CampusPayH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def run(app: Any, *, host: str, port: int, settings: Settings) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, as ``campuspay serve`` does."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=guarded_protocol(ServerLimits.from_settings(settings)),
        log_level=settings.log_level.lower(),
        date_header=False,  # the gateway sets Date from its own clock (ResponseHeadersMiddleware)
    )
