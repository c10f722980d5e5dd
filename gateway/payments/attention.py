"""The needs-attention queue: payments and refunds their provider will not let the gateway resolve.

A provider that keeps refusing the gateway's own requests (its clock drifted, the school's keys
or merchant id are wrong, it disabled the merchant) leaves the outcome unknown, so the payment
stays ``processing`` (or a cancel stays pending) -- never ``failed`` or ``canceled`` on a guess.
Once that has lasted past the recovery deadline, the resolver marks it ``needs_attention``
(gateway/payments/resolver.py); this lists what is marked, school by school, for an operator to
fix the provider settings. Recovery keeps trying each one every ``refusal_retry_seconds``, and
it leaves the queue by itself once the provider answers.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from gateway.errors import Unprocessable
from gateway.store.db import Database
from gateway.store.models import Payment, Refund
from gateway.store.payments import PaymentRepository

__all__ = ["AttentionQueue"]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _refusal(value: str | None) -> dict[str, str] | None:
    if value is None:
        return None
    kind, _, code = value.partition(":")
    return {"kind": kind, "code": code}


def _cursor(at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, row_id = raw.split("|", 1)
        moment = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Unprocessable("validation_error", "cursor is not one this list gave out") from exc
    if moment.tzinfo is None or not row_id:
        raise Unprocessable("validation_error", "cursor is not one this list gave out")
    return moment, row_id


class AttentionQueue:
    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.db, self.clock = db, clock

    async def page(self, school_id: str, *, limit: int, cursor: str | None) -> dict[str, Any]:
        """One page of the school's queue, oldest refusal first (payments and refunds merged)."""
        after = _after(cursor)
        async with self.db.transaction(readonly=True) as session:
            payments, refunds = await PaymentRepository(session, self.clock).needing_attention(
                school_id, after, limit + 1
            )
            owners: dict[str, Payment] = {}
            if refunds:
                found = await session.execute(
                    select(Payment).where(Payment.id.in_({r.payment_id for r in refunds}))
                )
                owners = {p.id: p for p in found.scalars()}
        items = [self._payment(p) for p in payments] + [
            self._refund(r, owners[r.payment_id]) for r in refunds
        ]
        items.sort(key=lambda item: (item["_since"], item["id"]))
        more = len(items) > limit
        items = items[:limit]
        next_cursor = _cursor(items[-1]["_since"], items[-1]["id"]) if more else None
        for item in items:
            del item["_since"]
        return {"data": items, "next_cursor": next_cursor}

    @staticmethod
    def _payment(p: Payment) -> dict[str, Any]:
        assert p.refused_since is not None
        return {
            "_since": p.refused_since,
            "object": "payment",
            "id": p.id,
            "payment_id": p.id,
            "status": p.status,
            "reversal_requested": bool(p.reversal_requested),
            "amount": p.amount,
            "currency": p.currency,
            "adapter": p.adapter,
            "provider_reference": p.provider_reference,
            "refusal": _refusal(p.refusal),
            "refused_since": _iso(p.refused_since),
            "next_attempt_at": _iso(p.next_recovery_at),
            "created_at": _iso(p.created_at),
        }

    @staticmethod
    def _refund(r: Refund, payment: Payment) -> dict[str, Any]:
        assert r.refused_since is not None
        return {
            "_since": r.refused_since,
            "object": "refund",
            "id": r.id,
            "payment_id": r.payment_id,
            "status": r.status,
            "reversal_requested": False,
            "amount": r.amount,
            "currency": r.currency,
            "adapter": payment.adapter,
            "provider_reference": r.provider_reference,
            "refusal": _refusal(r.refusal),
            "refused_since": _iso(r.refused_since),
            "next_attempt_at": _iso(r.next_recovery_at),
            "created_at": _iso(r.created_at),
        }
