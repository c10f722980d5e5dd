"""The outbox: events written in the same transaction as the state change they describe.

Payloads are thin -- ids, amounts and statuses, never names or card numbers -- and are
delivered later by the webhook worker (Standard Webhooks), so a crash between commit and
delivery loses nothing. ``emit`` refuses a payload carrying a field that would not be thin
(a name, a card number, a token, a secret), wherever the event comes from.

Each event names the resource it is about (``resource_id``: the payment, refund, consent, ...
from the payload's id field for its type; the event itself for one-off notices); the relay
numbers that resource's events 1, 2, 3... in commit order (``data.version``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.models import OutboxEvent, new_id, utcnow

__all__ = ["EVENT_TYPES", "emit", "resource_id"]

EVENT_TYPES = frozenset(
    {
        "payment.succeeded",
        "payment.failed",
        "payment.canceled",
        "payment.processing",
        "refund.succeeded",
        "refund.failed",
        "consent.withdrawn",
        "enrollment.deleted",
        "limit.exceeded",
        "guardian.notification",
        "webhook_endpoint.disabled",
        "webhook_endpoint.test",
        "reconciliation.completed",
        "reconciliation.exceptions_found",
        "alert.enrolled_faces",
    }
)


# The payload field naming the resource an event is about, by the type's first part.
_RESOURCE_FIELDS = {
    "payment": "payment_id",
    "refund": "refund_id",
    "consent": "consent_id",
    "enrollment": "enrollment_id",
    "webhook_endpoint": "endpoint_id",
    "reconciliation": "reconciliation_id",
}
# Fields a thin payload never has (COMPLIANCE: no personal data leaves in an event).
_NOT_THIN = frozenset(
    {"name", "card_no", "card_number", "pan", "face_token", "auth_code", "token", "secret", "email", "phone"}
)


def resource_id(event_type: str, data: dict[str, Any]) -> str | None:
    """The id of the resource ``data`` describes, or None for a notice about no one resource
    (a test event names its endpoint but changes nothing of it)."""
    if event_type == "webhook_endpoint.test":
        return None
    field = _RESOURCE_FIELDS.get(event_type.split(".", 1)[0])
    value = data.get(field) if field is not None else None
    return value if isinstance(value, str) else None


def _check_thin(value: Any, path: str = "data") -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in _NOT_THIN or key.endswith(("_name", "_token", "_secret")):
                raise ValueError(f"{path}.{key}: an event payload carries ids and codes, not this")
            _check_thin(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for inner in value:
            _check_thin(inner, path)


def emit(session: AsyncSession, *, school_id: str, event_type: str, data: dict[str, Any]) -> OutboxEvent:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    _check_thin(data)
    now = utcnow()
    event_id = new_id("evt")
    event = OutboxEvent(
        id=event_id,
        school_id=school_id,
        event_type=event_type,
        payload={"type": event_type, "timestamp": now.isoformat(), "data": data},
        created_at=now,
        next_attempt_at=now,
        resource_id=resource_id(event_type, data) or event_id,
    )
    session.add(event)
    return event
