"""RFC 9457 problem responses for every error, plus the middleware every response passes:
request ids, the ``Date`` header, and the body size limit."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from email.utils import formatdate
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ProblemError, problem_body

__all__ = ["BodyLimitMiddleware", "ResponseHeadersMiddleware", "install_handlers", "problem_response"]

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def problem_response(
    code: str,
    detail: str | None,
    request_id: str | None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = problem_body(code, detail, request_id=request_id, **extra)
    return Response(
        json.dumps(body).encode(), status_code=body["status"], media_type=PROBLEM_JSON, headers=headers
    )


def validation_problem(errors: Sequence[Mapping[str, Any]], request_id: str | None) -> Response:
    # never echo the input back: it may hold a PIN or a card number
    cleaned: list[dict[str, Any]] = [
        {"loc": [str(p) for p in (e.get("loc") or ())], "msg": str(e.get("msg")), "type": str(e.get("type"))}
        for e in errors
    ]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in cleaned)[:500]
    # A body that is not JSON at all cannot be validated: 400, like the other unreadable requests
    # (CONTRACT.md "Malformed requests"; the rest are refused by gateway.api.malformed).
    code = "malformed_body" if any(e["type"] == "json_invalid" for e in cleaned) else "validation_error"
    return problem_response(code, detail, request_id, errors=cleaned)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> Response:
        return problem_response(exc.code, exc.detail, _request_id(request), headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return validation_problem(exc.errors(), _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # 400: FastAPI could not read the body (gateway.api.malformed refuses such bodies first)
        code = {
            400: "malformed_body",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }.get(exc.status_code)
        if code is None:
            code = "validation_error" if exc.status_code == 422 else "internal_error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return problem_response(code, None, _request_id(request), headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # Starlette answers this one outside every middleware, ResponseHeadersMiddleware
        # included, so the headers every response carries are set here.
        request_id = _request_id(request) or "req_" + secrets.token_hex(12)
        headers = {"Date": formatdate(_gateway_now(request.scope), usegmt=True), "X-Request-Id": request_id}
        return problem_response("internal_error", None, request_id, headers=headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method the path answers. Starlette names only those of the first route whose path
    matched, and each method of a path is a route of its own here (GET and POST on
    /v1/payments), so its Allow left the others out (RFC 9110 15.5.6: the target's methods).
    Asked of the router itself, method by method: included routers are not a flat list."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return ", ".join(allowed)


def _gateway_now(scope: Scope) -> float:
    """The gateway's clock (the one signatures are checked against), once the app has started."""
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    clock = getattr(services, "clock", None)
    if callable(clock):
        now = clock()
        if isinstance(now, datetime):
            return now.timestamp()
    return time.time()


class ResponseHeadersMiddleware:
    """Adds ``Date`` (terminals correct their clocks from it, so it is the clock signatures are
    checked against) and ``X-Request-Id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + secrets.token_hex(12)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                headers.append((b"date", formatdate(_gateway_now(scope), usegmt=True).encode()))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """413 before the body is read past the limit (64 KiB; offline batches 1 MiB)."""

    def __init__(self, app: ASGIApp, *, default: int, large_paths: dict[str, int]) -> None:
        self.app, self.default, self.large_paths = app, default, large_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.large_paths.get(scope["path"], self.default)
        request_id = scope.get("state", {}).get("request_id")
        too_large = problem_response("payload_too_large", f"body exceeds {limit} bytes", request_id)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await too_large(scope, receive, send)
                return
        # Without (or despite) a Content-Length, read the body here, up to the limit, and hand
        # the app the buffered bytes. Raising from inside ``receive`` instead would surface deep
        # in the app (wrapped in an ExceptionGroup by the http middleware) as a 500.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before finishing its request
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def buffered_receive() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, buffered_receive, send)
