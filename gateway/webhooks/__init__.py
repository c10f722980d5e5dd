"""Outgoing webhooks (Standard Webhooks): the outbox, endpoints, and their delivery."""

from gateway.webhooks.delivery import WebhookDeliverer, event_body
from gateway.webhooks.endpoints import EndpointPage, EndpointView, WebhookEndpoints
from gateway.webhooks.outbox import EVENT_TYPES, emit

__all__ = [
    "EVENT_TYPES",
    "EndpointPage",
    "EndpointView",
    "WebhookDeliverer",
    "WebhookEndpoints",
    "emit",
    "event_body",
]
