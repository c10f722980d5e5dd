"""The face cloud's wire log: every request and response, with images replaced by their size.

Like sandbox.asgi.EventLogMiddleware, but face images never reach the event log: a JSON body's
`image` becomes `{"omitted": "image", "base64_chars": n}` and image responses are logged by
content type and length. Events carry the face group (`school`) as their merchant_id.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.asgi import request_target
from sandbox.control import ControlPlane

__all__ = ["FaceEventLog", "redacted"]


def redacted(body: bytes) -> tuple[Any, str | None]:
    """(the body as logged, the school it names) for a request body."""
    if not body:
        return None, None
    try:
        parsed = json.loads(body)
    except ValueError:
        return {"unparsed_bytes": len(body)}, None
    if not isinstance(parsed, dict):
        return {"unparsed_bytes": len(body)}, None
    if "image" in parsed:
        image = parsed["image"]
        size = len(image) if isinstance(image, str) else None
        parsed["image"] = {"omitted": "image", "base64_chars": size}
    school = parsed.get("school")
    return parsed, school if isinstance(school, str) else None


class FaceEventLog:
    def __init__(self, app: ASGIApp, control: ControlPlane, provider: str) -> None:
        self.app = app
        self.control = control
        self.provider = provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        school: str | None = query.get("school", [None])[0]
        request_body = bytearray()
        request_logged = False
        status: int | None = None
        content_type = ""
        response_body = bytearray()

        def log_request() -> None:
            nonlocal request_logged, school
            if request_logged:
                return
            request_logged = True
            body, named = redacted(bytes(request_body))
            school = school or named
            self.control.record(
                self.provider,
                "request",
                school,
                method=scope["method"],
                path=request_target(scope),
                body=body,
            )

        def log_response(**extra: Any) -> None:
            raw = bytes(response_body)
            body: Any
            if "json" in content_type:
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = {"unparsed_bytes": len(raw)}
            else:
                body = {"content_type": content_type or None, "bytes": len(raw)}
            self.control.record(self.provider, "response", school, status=status, body=body, **extra)

        async def logged_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not request_logged:
                request_body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    log_request()
            return message

        async def logged_send(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                log_request()
                status = message["status"]
                content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
            elif message["type"] == "http.response.body":
                response_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, logged_receive, logged_send)
        except Exception as exc:
            log_request()
            log_response(dropped=True, exception=type(exc).__name__)
            raise
        log_request()
        log_response()
