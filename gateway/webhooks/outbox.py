"""The outbox: events written in the same transaction as the state change they describe.

Payloads are thin -- ids, amounts and statuses, never names or card numbers -- and are
delivered later by the webhook worker (Standard Webhooks), so a crash between commit and
delivery loses nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.models import OutboxEvent, new_id, utcnow

__all__ = ["EVENT_TYPES", "emit"]

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
        "reconciliation.completed",
        "reconciliation.exceptions_found",
        "alert.enrolled_faces",
    }
)


def emit(session: AsyncSession, *, school_id: str, event_type: str, data: dict[str, Any]) -> OutboxEvent:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    now = utcnow()
    event = OutboxEvent(
        id=new_id("evt"),
        school_id=school_id,
        event_type=event_type,
        payload={"type": event_type, "timestamp": now.isoformat(), "data": data},
        created_at=now,
        next_attempt_at=now,
    )
    session.add(event)
    return event
