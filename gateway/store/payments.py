"""Repository for payments, attempts and refunds. Only this module writes their SQL."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.models import OfflineRecord, Payment, PaymentAttempt, Refund, utcnow

__all__ = ["PaymentRepository"]


class PaymentRepository:
    def __init__(self, session: AsyncSession, clock: Callable[[], datetime] = utcnow) -> None:
        self.session = session
        self.now = clock  # the gateway's clock, so stored times agree with created_at

    async def get(
        self, payment_id: str, *, school_id: str | None = None, lock: bool = False
    ) -> Payment | None:
        stmt = select(Payment).where(Payment.id == payment_id)
        if school_id is not None:
            stmt = stmt.where(Payment.school_id == school_id)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def live_for_order(self, device_id: str, merchant_order_id: str) -> Payment | None:
        stmt = select(Payment).where(
            Payment.device_id == device_id,
            Payment.merchant_order_id == merchant_order_id,
            Payment.status != "failed",
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def order_held_offline(self, device_id: str, merchant_order_id: str) -> bool:
        held = await self.session.scalar(
            select(OfflineRecord.id).where(
                OfflineRecord.device_id == device_id,
                OfflineRecord.merchant_order_id == merchant_order_id,
                OfflineRecord.status == "held_for_review",
            )
        )
        return held is not None

    async def for_order(self, device_id: str, merchant_order_id: str) -> Sequence[Payment]:
        stmt = (
            select(Payment)
            .where(Payment.device_id == device_id, Payment.merchant_order_id == merchant_order_id)
            .order_by(Payment.created_at)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def spent(self, student_id: str, start: datetime, end: datetime) -> int:
        """What the student spent in sales made in ``[start, end)``: the sum guardians' limits
        count (COMPLIANCE 15: every method together, offline records by their sale time, not by
        when they were posted). A payment still processing is counted (its money may be taken);
        refunds and cancels give their amount back."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(Payment.amount - Payment.refunded_amount), 0)).where(
                Payment.student_id == student_id,
                Payment.status.in_(["processing", "succeeded"]),
                Payment.occurred_at >= start,
                Payment.occurred_at < end,
            )
        )
        return int(total or 0)

    async def transition(
        self,
        payment_id: str,
        *,
        from_statuses: Iterable[str],
        to: str,
        unless_reversal_requested: bool = False,
        **values: Any,
    ) -> bool:
        """Compare-and-set the status. False if another actor moved the payment first."""
        stmt = (
            update(Payment)
            .where(Payment.id == payment_id, Payment.status.in_(list(from_statuses)))
            .values(status=to, updated_at=self.now(), **values)
        )
        if unless_reversal_requested:
            stmt = stmt.where(Payment.reversal_requested == 0)
        result = await self.session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def request_reversal(
        self, payment_id: str, from_statuses: Iterable[str], *, by: int, hold_until: datetime | None = None
    ) -> bool:
        """From now on no success may land on this payment; only its reversal finishes it.

        ``hold_until`` keeps the recovery worker away while the request that asked for the
        reversal is still driving it itself; without it the worker may take it at once."""
        result = await self.session.execute(
            update(Payment)
            .where(
                Payment.id == payment_id,
                Payment.status.in_(list(from_statuses)),
                Payment.reversal_requested == 0,
            )
            .values(
                reversal_requested=by,
                next_recovery_at=hold_until or self.now(),
                recovery_attempts=0,
                updated_at=self.now(),
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def hand_over(self, payment_id: str, *, held_until: datetime) -> None:
        """Make the payment due now, unless something holds it past ``held_until`` (a worker's
        lease): then that holder is still working on it."""
        await self.session.execute(
            update(Payment)
            .where(
                Payment.id == payment_id,
                or_(Payment.next_recovery_at.is_(None), Payment.next_recovery_at <= held_until),
            )
            .values(next_recovery_at=self.now())
        )

    async def note_refusal(
        self, payment_id: str, *, refusal: str | None, since: datetime | None, attention: bool
    ) -> None:
        """Whether the provider refuses our requests about this payment (None: it answered)."""
        await self.session.execute(
            update(Payment)
            .where(Payment.id == payment_id)
            .values(refusal=refusal, refused_since=since, needs_attention=attention)
        )

    async def needing_attention(
        self, school_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[Sequence[Payment], Sequence[Refund]]:
        """Up to ``limit`` payments and ``limit`` refunds of the school still being resolved
        whose refusals outlasted the deadline, oldest refusal first, after the cursor."""
        pending = or_(
            Payment.status == "processing",
            (Payment.status == "succeeded") & (Payment.reversal_requested > 0),
        )
        payments = select(Payment).where(Payment.school_id == school_id, Payment.needs_attention, pending)
        refunds = select(Refund).where(
            Refund.school_id == school_id, Refund.needs_attention, Refund.status == "processing"
        )
        if after is not None:
            at, row_id = after
            payments = payments.where(
                or_(Payment.refused_since > at, (Payment.refused_since == at) & (Payment.id > row_id))
            )
            refunds = refunds.where(
                or_(Refund.refused_since > at, (Refund.refused_since == at) & (Refund.id > row_id))
            )
        found_payments = await self.session.execute(
            payments.order_by(Payment.refused_since, Payment.id).limit(limit)
        )
        found_refunds = await self.session.execute(
            refunds.order_by(Refund.refused_since, Refund.id).limit(limit)
        )
        return found_payments.scalars().all(), found_refunds.scalars().all()

    async def schedule(self, payment_id: str, at: datetime, *, bump_attempts: bool = True) -> None:
        values: dict[str, Any] = {"next_recovery_at": at}
        if bump_attempts:
            values["recovery_attempts"] = Payment.recovery_attempts + 1
        await self.session.execute(update(Payment).where(Payment.id == payment_id).values(**values))

    async def due_for_recovery(self, now: datetime, limit: int) -> Sequence[Payment]:
        stmt = (
            select(Payment)
            .where(
                or_(
                    Payment.status == "processing",
                    (Payment.status == "succeeded") & (Payment.reversal_requested > 0),
                ),
                Payment.next_recovery_at <= now,
            )
            .order_by(Payment.next_recovery_at)
            .limit(limit)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def update_attempt(self, payment_id: str, status: str, provider_code: str | None) -> None:
        await self.session.execute(
            update(PaymentAttempt)
            .where(
                PaymentAttempt.payment_id == payment_id, PaymentAttempt.status.in_(["processing", "unknown"])
            )
            .values(status=status, provider_code=provider_code, updated_at=self.now())
        )

    async def switch_attempt(
        self,
        payment_id: str,
        *,
        from_reference: str,
        adapter: str,
        reference: str,
        routing: dict[str, Any],
        closed_as: str = "unreachable",
        provider_code: str = "UNREACHABLE",
    ) -> bool:
        """Fail over: close the attempt that was not accepted (``closed_as``: ``unreachable`` or
        ``refused``) and point the payment at the next one, with a compare-and-set so nothing new
        starts once the payment has moved (or a cancel came in)."""
        result = await self.session.execute(
            update(Payment)
            .where(
                Payment.id == payment_id,
                Payment.status == "processing",
                Payment.reversal_requested == 0,
                Payment.provider_reference == from_reference,
            )
            .values(adapter=adapter, provider_reference=reference, routing=routing, updated_at=self.now())
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return False
        await self.session.execute(
            update(PaymentAttempt)
            .where(
                PaymentAttempt.payment_id == payment_id, PaymentAttempt.provider_reference == from_reference
            )
            .values(status=closed_as, provider_code=provider_code, updated_at=self.now())
        )
        return True

    # refunds -------------------------------------------------------------------------------

    async def refund(
        self, refund_id: str, *, school_id: str | None = None, lock: bool = False
    ) -> Refund | None:
        stmt = select(Refund).where(Refund.id == refund_id)
        if school_id is not None:
            stmt = stmt.where(Refund.school_id == school_id)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def refunds_reserved(self, payment_id: str) -> int:
        """Money already given back or being given back for this payment."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(Refund.amount), 0)).where(
                Refund.payment_id == payment_id, Refund.status.in_(["processing", "succeeded"])
            )
        )
        return int(total or 0)

    async def refunds_processing(self, payment_id: str) -> int:
        count = await self.session.scalar(
            select(func.count())
            .select_from(Refund)
            .where(Refund.payment_id == payment_id, Refund.status == "processing")
        )
        return int(count or 0)

    async def transition_refund(self, refund_id: str, to: str, **values: Any) -> bool:
        result = await self.session.execute(
            update(Refund)
            .where(Refund.id == refund_id, Refund.status == "processing")
            .values(status=to, updated_at=self.now(), **values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def add_refunded(self, payment_id: str, amount: int) -> None:
        await self.session.execute(
            update(Payment)
            .where(Payment.id == payment_id)
            .values(refunded_amount=Payment.refunded_amount + amount, updated_at=self.now())
        )

    async def note_refund_refusal(
        self, refund_id: str, *, refusal: str | None, since: datetime | None, attention: bool
    ) -> None:
        await self.session.execute(
            update(Refund)
            .where(Refund.id == refund_id)
            .values(refusal=refusal, refused_since=since, needs_attention=attention)
        )

    async def schedule_refund(self, refund_id: str, at: datetime) -> None:
        await self.session.execute(
            update(Refund)
            .where(Refund.id == refund_id)
            .values(next_recovery_at=at, recovery_attempts=Refund.recovery_attempts + 1)
        )

    async def refunds_due(self, now: datetime, limit: int) -> Sequence[Refund]:
        stmt = (
            select(Refund)
            .where(Refund.status == "processing", Refund.next_recovery_at <= now)
            .order_by(Refund.next_recovery_at)
            .limit(limit)
        )
        return (await self.session.execute(stmt)).scalars().all()
