"""What FastAPI cannot infer for the OpenAPI document: the headers the device routes read by
hand (``Idempotency-Key``), the answers every device operation may give (429 with
``Retry-After``; replays), the 400 any operation gives a request it cannot read, and the shape
of every error. Device operations are the ones FastAPI marked with the ``deviceSignature``
security scheme (gateway.api.deps)."""

from __future__ import annotations

from typing import Any

__all__ = ["add_device_headers", "add_malformed_answers", "document_problems"]

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": (
        "1-255 visible ASCII characters, unique per device and request (a UUID is ideal); covered "
        "by the signature. A retry with the same key and body replays the first answer "
        "(`Idempotent-Replayed: true`)."
    ),
    # The format validate_key enforces (gateway.idempotency.service): visible ASCII, 0x21-0x7E.
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}

RATE_LIMITED = {
    "description": "Too many requests from this device (`rate_limited`); nothing was done or stored.",
    "headers": {
        "Retry-After": {"description": "seconds to wait before sending again", "schema": {"type": "integer"}}
    },
    "content": PROBLEM,
}

REPLAYED = {
    "description": "`true` when this is the stored answer of an earlier request with this key",
    "schema": {"type": "string", "enum": ["true"]},
}


def add_device_headers(schema: dict[str, Any]) -> None:
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            if not any("deviceSignature" in s for s in operation.get("security", [])):
                continue
            responses = operation.setdefault("responses", {})
            responses["429"] = RATE_LIMITED
            if method != "post":
                continue
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("name") == "Idempotency-Key" for p in parameters):
                parameters.append(IDEMPOTENCY_KEY)
            for status, answer in responses.items():
                if str(status).startswith("2"):
                    answer.setdefault("headers", {})["Idempotent-Replayed"] = REPLAYED


MALFORMED = (
    "`malformed_body`: the request cannot be read: a body that is not UTF-8 or not JSON, JSON "
    "nested deeper than 32 levels, or a NUL character in the body, a query or a path parameter "
    "(a lone UTF-16 surrogate counts as not UTF-8). Nothing was done or stored."
)
IDEMPOTENCY_KEY_PROBLEMS = " Also `idempotency_key_missing`, `idempotency_key_invalid` (`Idempotency-Key`)."


def add_malformed_answers(schema: dict[str, Any]) -> None:
    """Every operation may answer 400 ``malformed_body``; device POSTs also 400 for their key."""
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            device_post = method == "post" and any(
                "deviceSignature" in s for s in operation.get("security", [])
            )
            description = MALFORMED + (IDEMPOTENCY_KEY_PROBLEMS if device_post else "")
            operation.setdefault("responses", {})["400"] = {"description": description, "content": PROBLEM}


DATABASE_UNAVAILABLE = {
    "description": (
        "`database_unavailable`: the gateway cannot reach its database just now; nothing was "
        "done, so the same request (signed again) can be sent after `Retry-After`."
    ),
    "headers": {
        "Retry-After": {"description": "seconds to wait before sending again", "schema": {"type": "integer"}}
    },
    "content": PROBLEM,
}
PAYLOAD_TOO_LARGE = {
    "description": (
        "`payload_too_large`: the body is over 64 KiB (offline batches: 1 MiB); nothing was read past it"
    ),
    "content": PROBLEM,
}
NOT_READY = {"description": "`not_ready`: the database does not answer", "content": PROBLEM}
# The operations that answer without the database.
NO_DATABASE = {("get", "/healthz"), ("get", "/metrics")}


def document_problems(schema: dict[str, Any]) -> None:
    """Every error is an RFC 9457 problem, sent as ``application/problem+json``: FastAPI put the
    Problem schema under ``application/json`` (a type no error is sent as) and left the real one
    without a schema, so no checker validated an error body. Every operation that reads the
    database also documents its 503 (gateway.store.db: a lost database link), and every one that
    takes a body its 413 (gateway.api.problems.BodyLimitMiddleware, before any route). /metrics
    says its token is optional, as it is in a sandbox without one."""
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status, answer in responses.items():
                if str(status)[0] in "45" and "content" in answer:
                    answer["content"] = PROBLEM
            if "requestBody" in operation:
                responses.setdefault("413", PAYLOAD_TOO_LARGE)
            if path == "/readyz":
                responses["503"] = NOT_READY
            elif (method, path) not in NO_DATABASE:
                responses.setdefault("503", DATABASE_UNAVAILABLE)
            if path == "/metrics":
                # a sandbox without CAMPUSPAY_METRICS_TOKEN serves it to anyone
                # (gateway.api.health.check_metrics_access): the token is asked for only once set
                operation["security"] = [{"metricsToken": []}, {}]
