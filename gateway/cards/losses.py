"""Loss history of cards (COMPLIANCE rules 19, 20): every report kept, not only the last.

A card can be lost, found and lost again. An offline record is held for review when the card was
lost *at its sale time* -- by any report, including one that was cancelled since -- so the
history is the whole list of ``[lost_at, found_at)`` periods, one row each in ``card_losses``.
Only this module writes that table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.models import Card, CardLoss, new_id

__all__ = ["Period", "losses_of", "record_found", "record_lost", "was_lost"]

# (lost_at, found_at); found_at None: still lost
Period = tuple[datetime, datetime | None]


async def _open(session: AsyncSession, card_id: str) -> CardLoss | None:
    return (
        await session.execute(
            select(CardLoss)
            .where(CardLoss.card_id == card_id, CardLoss.found_at.is_(None))
            .order_by(CardLoss.lost_at)
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()


async def record_lost(session: AsyncSession, card: Card, at: datetime) -> None:
    """The card is lost from ``at``. A report while one is still open is the same loss (the
    gateway's block, then the e-card's confirmation of it): the earlier time is kept, since
    holding a record for review is the safe side."""
    current = await _open(session, card.id)
    if current is None:
        session.add(CardLoss(id=new_id("cls"), card_id=card.id, school_id=card.school_id, lost_at=at))
    elif at < current.lost_at:
        current.lost_at = at


async def record_found(session: AsyncSession, card: Card, at: datetime) -> None:
    """The open loss, if any, ends at ``at`` (never before it began)."""
    current = await _open(session, card.id)
    if current is not None:
        current.found_at = max(at, current.lost_at)


async def losses_of(session: AsyncSession, card_ids: Iterable[str]) -> dict[str, list[Period]]:
    """Every loss period of these cards, oldest first, in one query."""
    ids = sorted(set(card_ids))
    out: dict[str, list[Period]] = {card_id: [] for card_id in ids}
    if not ids:
        return out
    rows = await session.execute(
        select(CardLoss.card_id, CardLoss.lost_at, CardLoss.found_at)
        .where(CardLoss.card_id.in_(ids))
        .order_by(CardLoss.card_id, CardLoss.lost_at)
    )
    for card_id, lost_at, found_at in rows:
        out[card_id].append((lost_at, found_at))
    return out


def was_lost(periods: Sequence[Period], moment: datetime) -> bool:
    """Whether any report had the card lost at ``moment``."""
    return any(lost <= moment and (found is None or moment < found) for lost, found in periods)
