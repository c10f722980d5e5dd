"""ASGI helpers shared by the providers: the request path as the client sent it, and event logging."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.control import ControlPlane

LOGGED_BODY_LIMIT = 4_096  # characters of a non-JSON body kept in the event log


def request_target(scope: Scope) -> str:
    """The path and query the client sent, including any mount or proxy prefix.

    Starlette keeps the mount prefix in scope["path"] (root_path is the prefix, not a separate
    piece), and servers given --root-path put the proxy-stripped prefix there too. scope["path"]
    is percent-decoded though, so when raw_path is the tail of it, the client's own encoding is
    kept from raw_path.
    """
    path: str = scope["path"]
    raw: bytes | None = scope.get("raw_path")
    if raw:
        raw_text = raw.decode("latin-1")
        decoded = unquote(raw_text)
        if path.endswith(decoded):
            path = path[: len(path) - len(decoded)] + raw_text
    query: bytes = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def loggable_body(body: bytes) -> Any:
    """A body as it goes into the event log: parsed JSON when possible (masked by the log)."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        # Unparsable bodies could still hold a PIN, so only their size is kept.
        return {"unparsed_bytes": len(body)}


def _text_body(body: bytes, content_type: str) -> Any:
    if "json" in content_type:
        return loggable_body(body)
    return body.decode("utf-8", "replace")[:LOGGED_BODY_LIMIT]


class EventLogMiddleware:
    """Logs every request a provider receives and every response it sends, as the wire saw them."""

    def __init__(
        self, app: ASGIApp, control: ControlPlane, provider: str, merchant_header: str, header_prefix: str
    ) -> None:
        self.app = app
        self.control = control
        self.provider = provider
        self.merchant_header = merchant_header
        self.header_prefix = header_prefix.lower()

    def _headers(self, headers: Headers) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k.lower().startswith(self.header_prefix)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        merchant = request_headers.get(self.merchant_header)
        request_body = bytearray()
        request_logged = False
        status: int | None = None
        response_headers = Headers()
        response_body = bytearray()

        def log_request() -> None:
            nonlocal request_logged
            if not request_logged:
                request_logged = True
                self.control.record(
                    self.provider,
                    "request",
                    merchant,
                    method=scope["method"],
                    path=request_target(scope),
                    headers=self._headers(request_headers),
                    body=loggable_body(bytes(request_body)),
                )

        def log_response(**extra: Any) -> None:
            self.control.record(
                self.provider,
                "response",
                merchant,
                status=status,
                request_nonce=request_headers.get(f"{self.header_prefix}nonce"),
                headers=self._headers(response_headers),
                body=_text_body(bytes(response_body), response_headers.get("content-type", "")),
                **extra,
            )

        async def logged_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not request_logged:
                request_body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    log_request()
            return message

        async def logged_send(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                log_request()  # handlers that never read the body (404s) are logged here
                status = message["status"]
                response_headers = Headers(raw=message.get("headers", []))
            elif message["type"] == "http.response.body":
                response_body.extend(message.get("body", b""))
            await send(message)

        # The response is logged once the app is done, so an exception raised after Starlette
        # already sent its plain 500 (SimulatedDrop) is logged as one dropped response.
        try:
            await self.app(scope, logged_receive, logged_send)
        except Exception as exc:
            log_request()
            log_response(dropped=True, exception=type(exc).__name__)
            raise
        log_request()
        log_response()
