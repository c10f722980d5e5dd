"""Prometheus metrics (a registry per process, so tests and multiple apps do not collide).

Every label value comes from a closed set: a label set lives as long as the process, so a
value taken from the request (a path, a method token) would let anyone grow the gateway's
memory by sending odd requests (issue 7, A7).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Route
from starlette.types import Scope

__all__ = [
    "CONNECTIONS_CUT",
    "DB_STATEMENTS",
    "DB_TRANSACTIONS",
    "HTTP_LATENCY",
    "HTTP_METHODS",
    "PAYMENTS",
    "REGISTRY",
    "UNMATCHED",
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
