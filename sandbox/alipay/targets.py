"""Absolute-form request targets (``POST http://host/path?query HTTP/1.1``).

The official Alipay Python SDK sends its requests that way (``http.client`` given the whole URL),
and RFC 9112 section 3.2.2 says a server MUST accept them. uvicorn's h11 protocol passes the
target through as the path, so the sandbox app reduces it to the path before routing.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send


class AbsoluteFormTarget:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(("http://", "https://")):
            scope = dict(scope)
            scope["path"] = urlsplit(scope["path"]).path or "/"
            raw: bytes | None = scope.get("raw_path")
            if raw:
                scope["raw_path"] = (urlsplit(raw.decode("latin-1")).path or "/").encode("latin-1")
        await self.app(scope, receive, send)
