"""The delivery log and the admin's hand on it: every attempt per endpoint or per event,
redelivering one event or every failed one since a time, and a test event.

A redelivery makes the delivery due now (the worker signs it afresh, with the same
``webhook-id``, so a receiver that already has it de-duplicates); its attempt is counted after
the ones before, so a failed redelivery of a delivery past its schedule is ``failed`` again at
once rather than starting days of retries the admin did not ask for. Each of these actions is in
the school's audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.store.db import Database
from gateway.store.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_id
from gateway.webhooks.delivery import TEST
from gateway.webhooks.endpoints import WebhookEndpoints
from gateway.webhooks.outbox import emit

__all__ = ["DeliveryLog"]


def _after(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 19:
        raise Unprocessable("validation_error", "cursor is not one this list gave out")
    return int(cursor)


def _attempt(row: WebhookAttempt, event_type: str) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "delivery_id": row.delivery_id,
        "endpoint_id": row.endpoint_id,
        "event_id": row.event_id,
        "event_type": event_type,
        "attempt": row.attempt,
        "status_code": row.status_code,
        "succeeded": row.status_code is not None and 200 <= row.status_code < 300,
        "error": row.error,
        "duration_ms": row.duration_ms,
        "response_body": row.response_body,
        "at": row.at,
    }


class DeliveryLog:
    def __init__(self, db: Database, endpoints: WebhookEndpoints, clock: Callable[[], datetime]) -> None:
        self.db, self.endpoints, self.clock = db, endpoints, clock

    async def attempts(
        self,
        school_id: str,
        *,
        endpoint_id: str | None = None,
        event_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        """Attempts, newest first, of one endpoint or one event (or both)."""
        after = _after(cursor)
        query = (
            select(WebhookAttempt, OutboxEvent.event_type)
            .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
            .join(OutboxEvent, OutboxEvent.id == WebhookAttempt.event_id)
            .where(WebhookDelivery.school_id == school_id)
        )
        async with self.db.transaction(readonly=True) as session:
            if endpoint_id is not None:
                endpoint = await session.get(WebhookEndpoint, endpoint_id)
                if endpoint is None or endpoint.school_id != school_id:
                    raise NotFound("no such webhook endpoint")
                query = query.where(WebhookAttempt.endpoint_id == endpoint_id)
            if event_id is not None:
                event = await session.get(OutboxEvent, event_id)
                if event is None or event.school_id != school_id:
                    if endpoint_id is None:  # the event's own log: it must exist
                        raise NotFound("no such event")
                query = query.where(WebhookAttempt.event_id == event_id)
            if after is not None:
                query = query.where(WebhookAttempt.id < after)
            if created_after is not None:
                query = query.where(WebhookAttempt.at > created_after)
            if created_before is not None:
                query = query.where(WebhookAttempt.at < created_before)
            found = await session.execute(query.order_by(WebhookAttempt.id.desc()).limit(limit + 1))
            rows = [(row[0], row[1]) for row in found]
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "data": [_attempt(row, event_type) for row, event_type in rows],
            "next_cursor": str(rows[-1][0].id) if more else None,
        }

    async def redeliver(
        self, school_id: str, endpoint_id: str, *, event_id: str | None, since: datetime | None, actor: str
    ) -> dict[str, Any]:
        """Make one event's delivery due now (creating it if the endpoint never had it), or
        every failed delivery of events since ``since``; how many."""
        if (event_id is None) == (since is None):
            raise Unprocessable("validation_error", "send exactly one of event_id and since")
        now = self.clock()
        async with self.db.transaction() as session:
            endpoint = await self.endpoints.locked(session, school_id, endpoint_id)
            if endpoint.status != "enabled":
                raise Conflict(
                    "endpoint_disabled", "enable the endpoint first: deliveries wait while disabled"
                )
            if event_id is not None:
                event = await session.get(OutboxEvent, event_id)
                if event is None or event.school_id != school_id:
                    raise NotFound("no such event")
                if event.sequence is None:
                    raise Conflict("event_not_relayed", "this event is delivered once it is relayed")
                found = await session.execute(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.event_id == event.id)
                    .with_for_update()
                )
                delivery = found.scalar_one_or_none()
                if delivery is None:
                    session.add(
                        WebhookDelivery(
                            id=new_id("whd"),
                            school_id=school_id,
                            endpoint_id=endpoint.id,
                            event_id=event.id,
                            state="pending",
                            next_attempt_at=now,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                else:
                    delivery.state, delivery.next_attempt_at, delivery.updated_at = "pending", now, now
                count = 1
                await self.endpoints.audit(
                    session, endpoint, "redelivered", actor, event_id=event.id, count=1
                )
            else:
                assert since is not None
                events = select(OutboxEvent.id).where(
                    OutboxEvent.school_id == school_id, OutboxEvent.created_at >= since
                )
                result = await session.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.endpoint_id == endpoint.id,
                        WebhookDelivery.state == "failed",
                        WebhookDelivery.event_id.in_(events),
                    )
                    .values(state="pending", next_attempt_at=now, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                count = int(getattr(result, "rowcount", 0) or 0)
                await self.endpoints.audit(
                    session, endpoint, "redelivered", actor, since=since.isoformat(), count=count
                )
        return {"redelivered": count}

    async def send_test(self, school_id: str, endpoint_id: str, *, actor: str) -> dict[str, Any]:
        """A ``webhook_endpoint.test`` event for this endpoint alone, delivered like any other."""
        async with self.db.transaction() as session:
            endpoint = await self.endpoints.locked(session, school_id, endpoint_id)
            if endpoint.status != "enabled":
                raise Conflict(
                    "endpoint_disabled", "enable the endpoint first: deliveries wait while disabled"
                )
            event = emit(
                session,
                school_id=school_id,
                event_type=TEST,
                data={"endpoint_id": endpoint.id, "status": "test"},
            )
            await self.endpoints.audit(session, endpoint, "test_sent", actor, event_id=event.id)
        return {"event_id": event.id}
