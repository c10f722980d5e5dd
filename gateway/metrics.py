"""Prometheus metrics (a registry per process, so tests and multiple apps do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["DB_STATEMENTS", "DB_TRANSACTIONS", "HTTP_LATENCY", "PAYMENTS", "REGISTRY"]

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
