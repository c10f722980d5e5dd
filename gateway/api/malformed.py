"""Requests that cannot be read: 400 ``malformed_body`` (CONTRACT.md "Malformed requests").

A body that is not UTF-8 or not JSON, JSON nested deeper than 32 levels, and a NUL character
(or a lone UTF-16 surrogate, which is not text either) in any string or key of the body, in a
query parameter or in a path parameter: each is refused here, once for every endpoint, before
any router, signature check or database sees it. The parsers behind would fail on them in
ways that are not answers: Python's JSON parser overflows its stack on deep nesting, FastAPI
answered 500 for a body it could not decode, and PostgreSQL refuses NUL in text, so a stored
string with one became a 500 after the request had been half executed (SQLite took it).

Bodies are judged by MalformedBodyMiddleware, before routing; path and query parameters by the
application-wide dependency ``reject_malformed_parameters``, once routing has named them. The
checks are cheap and run before authentication, so they cost no more than reading the body:
UTF-8 decoding, substring searches and, only when the body has more than 32 brackets, a nesting
count over the bracket characters. Only a body that holds the escape of a NUL or a surrogate is
parsed here, to name the field. Not-JSON is left to the parser each route uses anyway (FastAPI's
for admin bodies, pydantic's for device bodies), whose ``json_invalid`` error the problem
handlers answer as ``malformed_body`` too (gateway.api.problems.validation_problem).

Bodies of provider notifications (``/v1/notify/…``) and of the mounted sandbox are not judged:
they are verified on their exact bytes by the adapter, in the provider's own encoding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.problems import problem_response
from gateway.errors import BadRequest

__all__ = [
    "MAX_DEPTH",
    "MalformedBodyMiddleware",
    "MalformedParameters",
    "body_problems",
    "query_problems",
    "reject_malformed_parameters",
]

MAX_DEPTH = 32
_UNJUDGED_BODIES = ("/v1/notify/", "/sandbox/")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string literal, escapes included
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")  # one pass, so "{[]}" takes two as it should
_SURROGATE = re.compile("[\ud800-\udfff]")

Problem = tuple[list[str | int], str, str]  # loc, msg, type


def _nesting(body: bytes) -> int:
    """How deep the JSON in ``body`` nests, counted up to MAX_DEPTH + 1."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return 0  # cannot nest deeper than it has openers (brackets in strings only add to these)
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    while brackets and depth <= MAX_DEPTH:
        # Each pass removes the innermost pairs: as many passes as the structure is deep.
        shorter = _INNERMOST.sub(b"", brackets)
        if shorter == brackets:  # unbalanced: not JSON, which its parser will say
            return 0
        brackets, depth = shorter, depth + 1
    return depth


_NUL = "a NUL character (\\u0000) is not allowed in text"


def _bad_text(value: str) -> str | None:
    if "\x00" in value:
        return _NUL
    if _SURROGATE.search(value):
        return "a lone UTF-16 surrogate is not text"
    return None


def _strings(value: Any) -> Iterator[tuple[list[str | int], str]]:
    """Every string (keys included) in a parsed JSON value, with where it is."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, str):
            yield loc, item
        elif isinstance(item, dict):
            for key, child in item.items():
                yield [*loc, key], key
                stack.append((child, [*loc, key]))
        elif isinstance(item, list):
            stack.extend((child, [*loc, index]) for index, child in enumerate(item))


def body_problems(body: bytes) -> list[Problem]:
    """Why ``body`` cannot be read as a JSON request, or [] (an empty body is for the route)."""
    if not body:
        return []
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [(["body"], f"not UTF-8 (byte 0x{body[exc.start]:02x} at {exc.start})", "utf8_invalid")]
    if _nesting(body) > MAX_DEPTH:
        return [(["body"], f"JSON nested deeper than {MAX_DEPTH} levels", "json_too_deep")]
    if b"\\u0000" not in body and b"\\ud" not in body and b"\\uD" not in body:
        return []
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        return [(["body"], f"not JSON: {exc}", "json_invalid")]
    found = ((loc, _bad_text(text)) for loc, text in _strings(parsed))
    return [(["body", *loc], msg, "text_invalid") for loc, msg in found if msg]


def query_problems(query_string: bytes) -> list[Problem]:
    if b"%00" not in query_string and b"\x00" not in query_string:
        return []
    # read as Starlette reads it (the routes see these values)
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    found = ((name, _bad_text(name + value)) for name, value in pairs)
    return [(["query", name], msg, "text_invalid") for name, msg in found if msg]


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _described(problems: list[Problem]) -> tuple[str, list[dict[str, Any]]]:
    """The problem's ``detail`` and ``errors``, shaped like a validation problem's."""
    errors = [{"loc": [str(p) for p in loc], "msg": msg, "type": kind} for loc, msg, kind in problems]
    return "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)[:500], errors


def _refusal(problems: list[Problem], request_id: str | None) -> Response:
    detail, errors = _described(problems)
    return problem_response("malformed_body", detail, request_id, errors=errors)


class MalformedParameters(BadRequest):
    def __init__(self, problems: list[Problem]) -> None:
        detail, errors = _described(problems)
        super().__init__("malformed_body", detail, errors=errors)


async def reject_malformed_parameters(request: Request) -> None:
    """An application-wide dependency (gateway.app): it runs for every route once routing has
    named the path parameters, before the route's own dependencies (authentication) and body."""
    problems: list[Problem] = [
        (["path", name], _NUL, "text_invalid")
        for name, value in request.path_params.items()
        if isinstance(value, str) and "\x00" in value
    ]
    problems += query_problems(request.scope.get("query_string", b""))
    if problems:
        raise MalformedParameters(problems)


class MalformedBodyMiddleware:
    """Answers 400 ``malformed_body`` for a body that cannot be read (see the module). Sits
    inside BodyLimitMiddleware, so the body it reads is bounded already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope).startswith(_UNJUDGED_BODIES):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before finishing its request
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problems = body_problems(body)
        if problems:
            request_id = scope.get("state", {}).get("request_id")
            await _refusal(problems, request_id)(scope, receive, send)
            return
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)
