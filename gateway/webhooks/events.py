"""The event list a receiver catches up from: ``GET /v1/schools/{s}/events?after_sequence=N``.

Only relayed events are listed (those with a ``sequence``): the relay numbers them per school
in commit order, after commit, so reading in ``sequence`` order after the last number seen
never skips an event that commits later (CONTRACT.md, "Events and webhooks").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from gateway.errors import Unprocessable
from gateway.store.db import Database
from gateway.store.models import OutboxEvent
from gateway.webhooks.delivery import event_document

__all__ = ["EventFilter", "EventLog"]


@dataclass(frozen=True)
class EventFilter:
    after_sequence: int = 0
    types: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None


def _after(cursor: str | None, after_sequence: int) -> int:
    """The cursor is the last sequence of the previous page; it wins over ``after_sequence``."""
    if cursor is None:
        return after_sequence
    if not cursor.isdigit() or len(cursor) > 19:
        raise Unprocessable("validation_error", "cursor is not one this list gave out")
    return int(cursor)


class EventLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(
        self, school_id: str, where: EventFilter, *, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        after = _after(cursor, where.after_sequence)
        query = select(OutboxEvent).where(
            OutboxEvent.school_id == school_id,
            OutboxEvent.sequence.is_not(None),
            OutboxEvent.sequence > after,
        )
        if where.types:
            query = query.where(OutboxEvent.event_type.in_(where.types))
        if where.created_after is not None:
            query = query.where(OutboxEvent.created_at > where.created_after)
        if where.created_before is not None:
            query = query.where(OutboxEvent.created_at < where.created_before)
        async with self.db.transaction(readonly=True) as session:
            found = await session.execute(query.order_by(OutboxEvent.sequence).limit(limit + 1))
            rows = list(found.scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "data": [event_document(row) for row in rows],
            "next_cursor": str(rows[-1].sequence) if more else None,
        }
