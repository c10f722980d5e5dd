"""Prometheus metrics (a registry per process, so tests and multiple apps do not collide).

Every label value comes from a closed set: a label set lives as long as the process, so a
value taken from the request (a path, a method token) would let anyone grow the gateway's
memory by sending odd requests (issue 7, A7).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONNECTIONS_CUT",
    "DB_STATEMENTS",
    "DB_TRANSACTIONS",
    "HTTP_LATENCY",
    "HTTP_METHODS",
    "PAYMENTS",
    "REGISTRY",
    "UNMATCHED",
    "WEBHOOK_BACKLOG",
    "WEBHOOK_DELIVERIES",
    "WEBHOOK_DELIVERY_RESULTS",
    "WEBHOOK_DISABLED",
    "WEBHOOK_DISABLED_REASONS",
    "WEBHOOK_OLDEST",
    "HttpMetricsMiddleware",
    "method_label",
    "route_label",
]

REGISTRY = CollectorRegistry()
HTTP_LATENCY = Histogram(
    "campuspay_http_request_seconds", "HTTP request latency", ["method", "route", "status"], registry=REGISTRY
)
PAYMENTS = Counter(
    "campuspay_payments_total",
    "Payments answered, by method and status",
    ["method", "status"],
    registry=REGISTRY,
)
# What a payment costs in database round trips; `campuspay bench` divides these by payments.
DB_STATEMENTS = Counter("campuspay_db_statements", "SQL statements sent to the database", registry=REGISTRY)
DB_TRANSACTIONS = Counter("campuspay_db_transactions", "Database transactions begun", registry=REGISTRY)
# Connections the server closed on a slow or surplus client (gateway/server.py); `reason` is
# header_timeout, body_timeout or too_many_connections.
CONNECTIONS_CUT = Counter(
    "campuspay_http_connections_cut",
    "Connections closed by the server: request not received in time, or over the connection cap",
    ["reason"],
    registry=REGISTRY,
)

# Outgoing webhooks (docs/webhooks.md, "Metrics"). The counter is this process's attempts; the
# gauges describe the whole database (every process reads the same), refreshed at each scrape.
WEBHOOK_DELIVERY_RESULTS = ("succeeded", "rejected", "timeout", "connection_error", "not_allowed")
WEBHOOK_DELIVERIES = Counter(
    "campuspay_webhook_deliveries",
    "Webhook delivery attempts by result: succeeded (2xx), rejected (another status), timeout, "
    "connection_error (refused, dropped, TLS), not_allowed (the outbound guard refused the address)",
    ["result"],
    registry=REGISTRY,
)
WEBHOOK_BACKLOG = Gauge(
    "campuspay_webhook_backlog",
    "Events waiting: stage=relay not numbered yet, stage=delivery deliveries pending (retries too)",
    ["stage"],
    registry=REGISTRY,
)
WEBHOOK_OLDEST = Gauge(
    "campuspay_webhook_oldest_undelivered_seconds",
    "Age of the oldest event not yet relayed or delivery still pending; 0 when none",
    registry=REGISTRY,
)
WEBHOOK_DISABLED_REASONS = ("failing", "disabled_by_admin")
WEBHOOK_DISABLED = Gauge(
    "campuspay_webhook_endpoints_disabled",
    "Disabled webhook endpoints, by reason",
    ["reason"],
    registry=REGISTRY,
)
for _result in WEBHOOK_DELIVERY_RESULTS:
    WEBHOOK_DELIVERIES.labels(_result)  # every series from the start: a rate needs its zero
for _stage in ("relay", "delivery"):
    WEBHOOK_BACKLOG.labels(_stage)
for _reason in WEBHOOK_DISABLED_REASONS:
    WEBHOOK_DISABLED.labels(_reason)

# The methods the API or its CORS-free clients use; any other token is counted as "other".
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def method_label(method: str) -> str:
    return method if method in HTTP_METHODS else "other"


def route_label(scope: Scope, root_path: str) -> str:
    """The template of the gateway route that took the request (``/v1/payments/{payment_id}``);
    for a mounted app (the sandbox) its mount, ``/sandbox/ecard/{path}``; else ``unmatched``.
    ``root_path`` is the scope's ``root_path`` before routing: mounts extend it."""
    mounted = str(scope.get("root_path", ""))
    if mounted != root_path and mounted.startswith(root_path):
        return mounted[len(root_path) :] + "/{path}"
    route = scope.get("route")
    return route.path if isinstance(route, Route) else UNMATCHED


class HttpMetricsMiddleware:
    """Request latency by method, route template and status. Pure ASGI: Starlette's
    ``BaseHTTPMiddleware`` runs each request in a task group of its own and copies the
    response through a stream, which cost more per payment than the SQL (issue 8)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")  # before routing (and mounts) extend it
        status = 500  # an exception escaping the app is answered 500 further out

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            labels = (method_label(scope["method"]), route_label(scope, root_path), str(status))
            HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - started)
