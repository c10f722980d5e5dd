"""Outgoing webhooks (Standard Webhooks): the outbox, endpoints, and their delivery."""

from gateway.webhooks.endpoints import EndpointPage, EndpointView, WebhookEndpoints
from gateway.webhooks.outbox import EVENT_TYPES, emit

__all__ = ["EVENT_TYPES", "EndpointPage", "EndpointView", "WebhookEndpoints", "emit"]
