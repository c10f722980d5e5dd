"""Prometheus metrics (a registry per process, so tests and multiple apps do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["HTTP_LATENCY", "PAYMENTS", "REGISTRY"]

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
