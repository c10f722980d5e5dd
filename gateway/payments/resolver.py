"""Turning provider answers into final states -- and learning the truth after an unknown.

Rules (DESIGN.md, "A payment, step by step"):

* only a verified success or failure is final; anything else schedules a query;
* past the recovery deadline (or when a terminal cancels) the payment is marked
  ``reversal_requested`` *before* the reversal is sent, and from then on no success can land:
  ``transition(..., unless_reversal_requested=True)``; the reversal is retried until the
  provider acknowledges it;
* every final transition writes the payment, the attempt, an audit entry and an outbox event
  in one transaction;
* a refusal of the gateway's *request* (``ProviderResult.refused``: credentials, signature,
  clock, parameters, throttling) is no news about the payment: it is retried like any unknown,
  and the payment (or refund) notes since when it is refused. One whose refusals outlast the
  recovery deadline needs an operator: it is marked ``needs_attention`` (audit entry, log,
  ``GET /v1/schools/{id}/recovery/needs-attention``) and tried every ``refusal_retry`` seconds,
  never failed or canceled on a guess;
* a transaction that writes an attempt locks its payment row first, the order a cancel's
  finish takes too (PostgreSQL would otherwise deadlock the two).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import CANCEL_UNAVAILABLE, Adapter, Outcome, ProviderResult, RefundRequest
from gateway.payments.state import ALLOWED, FAILURE_MESSAGES, failure_code_for, refund_failure_code_for
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.store.db import Database
from gateway.store.models import Payment, Refund
from gateway.store.payments import PaymentRepository
from gateway.tenancy.providers import ProviderSettings
from gateway.webhooks.outbox import emit

__all__ = ["REVERSAL_BY_RECOVERY", "REVERSAL_BY_TERMINAL", "Resolver", "Respond", "cancel_refund_reference"]

# Called inside the transaction that moves a payment to its final state, with the payment as
# it now is: the request that is waiting for that state stores its answer in the same commit.
Respond = Callable[[AsyncSession, Payment], Awaitable[None]]

log = logging.getLogger(__name__)
# what a final answer (or any answer that is not a refusal) leaves of a refusal
_NOT_REFUSED: dict[str, Any] = {"refusal": None, "refused_since": None, "needs_attention": False}
REVERSAL_BY_RECOVERY = 1  # the outcome stayed unknown past the deadline
REVERSAL_BY_TERMINAL = 2  # the terminal asked to cancel


def cancel_refund_reference(provider_reference: str) -> str:
    """The refund reference of a cancel that refunds a partly refunded payment's remainder."""
    return f"{provider_reference}-cancel"


def payment_event_data(p: Payment) -> dict[str, Any]:
    """The thin payload of every payment.* event, wherever the payment changed state."""
    return {
        "payment_id": p.id,
        "status": p.status,
        "amount": p.amount,
        "currency": p.currency,
        "merchant_order_id": p.merchant_order_id,
        "store_id": p.store_id,
        "failure_code": p.failure_code,
        "refunded_amount": p.refunded_amount or 0,  # None on a payment not yet flushed
    }


class Resolver:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        providers: ProviderSettings,
        *,
        clock: Callable[[], datetime],
        interval: float,
        max_backoff: float = 30.0,
        attention_after: float = 60.0,
        refusal_retry: float = 300.0,
    ) -> None:
        self.max_backoff = max_backoff
        self.attention_after = timedelta(seconds=attention_after)
        self.refusal_retry = timedelta(seconds=refusal_retry)
        self.db, self.keyring, self.providers, self.clock, self.interval = (
            db,
            keyring,
            providers,
            clock,
            interval,
        )

    def backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.interval * (2 ** min(attempts, 10)), self.max_backoff))

    def _next_try(self, attempts: int, attention: bool) -> datetime:
        # An operator has to fix what is refused (keys, clock, merchant): asking every few
        # seconds would only hammer the provider until then.
        return self.clock() + (self.refusal_retry if attention else self.backoff(attempts))

    def _refusal_after(
        self, refusal: str | None, since: datetime | None, attention: bool, result: ProviderResult
    ) -> tuple[str | None, datetime | None, bool]:
        """(refusal, refused_since, needs_attention) once ``result`` is taken into account: any
        answer but a refusal ends a run of refusals; one that outlasts the deadline needs an
        operator."""
        if result.refused is None:
            return None, None, False
        now = self.clock()
        if refusal is None or since is None:
            since = now
        attention = attention or now - since >= self.attention_after
        return f"{result.refused.value}:{result.code or '-'}"[:80], since, attention

    async def _attention_records(
        self, session: Any, kind: str, row_id: str, school_id: str, refusal: str | None, since: datetime
    ) -> None:
        log.error(
            "%s %s needs attention: the provider has refused the gateway's requests since %s (%s);"
            " it stays unresolved until that is fixed",
            kind,
            row_id,
            since.isoformat(),
            refusal,
        )
        await audit.append(
            session,
            self.keyring,
            chain=school_id,
            actor="system:recovery",
            action=f"{kind}.needs_attention",
            object_type=kind,
            object_id=row_id,
            data={"refusal": refusal, "refused_since": since.isoformat()},
        )

    async def finish(
        self,
        payment_id: str,
        to: str,
        *,
        actor: str,
        from_statuses: tuple[str, ...] = ("processing",),
        guard_reversal: bool = False,
        provider_code: str | None = None,
        respond: Respond | None = None,
        **values: Any,
    ) -> bool:
        """One transaction: CAS the status, update the attempt, audit, outbox (and, with
        ``respond``, the waiting request's stored answer).

        The only place a payment's status changes; ``ALLOWED`` (gateway/payments/state.py) is
        the state machine, so no caller can ask for a move backwards."""
        illegal = [s for s in from_statuses if to not in ALLOWED.get(s, frozenset())]
        if illegal:
            raise ValueError(f"not a payment transition: {illegal} -> {to}")
        async with self.db.transaction() as session:
            repo = PaymentRepository(session, self.clock)
            moved = await repo.transition(
                payment_id,
                from_statuses=from_statuses,
                to=to,
                unless_reversal_requested=guard_reversal,
                next_recovery_at=None,
                **_NOT_REFUSED,
                **values,
            )
            if not moved:
                return False
            await repo.update_attempt(payment_id, {"canceled": "reversed"}.get(to, to), provider_code)
            payment = await repo.get(payment_id)
            assert payment is not None
            await audit.append(
                session,
                self.keyring,
                chain=payment.school_id,
                actor=actor,
                action=f"payment.{to}",
                object_type="payment",
                object_id=payment.id,
                data={
                    "amount": payment.amount,
                    "failure_code": payment.failure_code,
                    "provider_code": provider_code,
                    "refunded_amount": payment.refunded_amount,
                },
            )
            emit(
                session,
                school_id=payment.school_id,
                event_type=f"payment.{to}",
                data=payment_event_data(payment),
            )
            if respond is not None:
                await respond(session, payment)
            return True

    async def apply(
        self, payment: Payment, result: ProviderResult, *, actor: str, respond: Respond | None = None
    ) -> None:
        """Apply the answer to a pay, a query or a notification. ``respond``: see ``finish``;
        called only if this answer makes the payment final."""
        paid = result.amount
        if result.outcome is Outcome.SUCCEEDED and paid is not None and paid != payment.amount:
            # Verified, but not this payment's amount: never a success. Left unknown, it is queried
            # again and, past the deadline, reversed with the same reference.
            log.error(
                "payment %s: the provider reports %d fen paid, the payment is %d fen; not taken as success",
                payment.id,
                paid,
                payment.amount,
            )
            result = ProviderResult(Outcome.UNKNOWN, code="AMOUNT_MISMATCH")
        if result.outcome is Outcome.SUCCEEDED:
            await self.finish(
                payment.id,
                "succeeded",
                actor=actor,
                guard_reversal=True,
                provider_txn_id=result.provider_txn_id,
                respond=respond,
            )
        elif result.outcome is Outcome.FAILED:
            code = failure_code_for(result.code)
            await self.finish(
                payment.id,
                "failed",
                actor=actor,
                respond=respond,
                provider_code=result.code,
                failure_code=code,
                failure_message=FAILURE_MESSAGES.get(code, result.message or code),
            )
        elif result.outcome is Outcome.REVERSED:
            await self._reversed(payment, actor=actor, provider_code=result.code)
        else:
            await self._unresolved(payment.id, result, attempt=True)

    async def _unresolved(self, payment_id: str, result: ProviderResult, *, attempt: bool) -> None:
        """No final answer (an unknown, or a refusal of our request): note which, and try again
        later. ``attempt``: the answer is about the pay attempt (a pay or a query), so the
        attempt row records it too."""
        async with self.db.transaction() as session:
            repo = PaymentRepository(session, self.clock)
            payment = await repo.get(payment_id, lock=True)  # the row before its attempt, see above
            if payment is None or not (
                payment.status == "processing"
                or (payment.status == "succeeded" and payment.reversal_requested)
            ):
                return  # finished meanwhile: nothing of this answer matters any more
            # (read before the updates below, which refresh the loaded row)
            marked, attempts = payment.needs_attention, payment.recovery_attempts
            refusal, since, attention = self._refusal_after(
                payment.refusal, payment.refused_since, marked, result
            )
            if attempt:
                await repo.update_attempt(payment.id, "unknown", result.code)
            await repo.note_refusal(payment.id, refusal=refusal, since=since, attention=attention)
            if attention and not marked:
                assert since is not None
                await self._attention_records(
                    session, "payment", payment.id, payment.school_id, refusal, since
                )
            await repo.schedule(payment.id, self._next_try(attempts, attention))

    async def _reversed(self, payment: Payment, *, actor: str, provider_code: str | None = None) -> None:
        # Decided on the row as it is now, not on the caller's copy: a terminal's cancel may have
        # been requested (or a success landed) while a worker was stepping an older snapshot.
        async with self.db.transaction() as session:
            fresh = await PaymentRepository(session, self.clock).get(payment.id)
        payment = fresh if fresh is not None else payment
        if payment.status == "succeeded" or payment.reversal_requested == REVERSAL_BY_TERMINAL:
            await self.finish(
                payment.id,
                "canceled",
                actor=actor,
                from_statuses=("processing", "succeeded"),
                provider_code=provider_code,
                refunded_amount=payment.amount if payment.status == "succeeded" else 0,
            )
        else:
            code = "outcome_unknown_reversed"
            await self.finish(
                payment.id,
                "failed",
                actor=actor,
                provider_code=provider_code,
                failure_code=code,
                failure_message=FAILURE_MESSAGES[code],
            )

    async def step(self, payment_id: str, *, actor: str) -> Payment:
        """One recovery step for a payment that is processing or awaiting its reversal."""
        async with self.db.transaction() as session:
            payment = await PaymentRepository(session, self.clock).get(payment_id)
        assert payment is not None
        pending = payment.status == "processing" or (
            payment.status == "succeeded" and payment.reversal_requested
        )
        if not pending or payment.adapter is None or payment.provider_reference is None:
            return payment
        adapter = await self.providers.adapter(payment.school_id, payment.adapter)
        if adapter is None:
            log.error(
                "payment %s: provider settings for %s are gone; will retry", payment.id, payment.adapter
            )
            await self._reschedule(payment)
        elif payment.reversal_requested or (
            payment.recovery_deadline and self.clock() >= payment.recovery_deadline
        ):
            await self._reverse(adapter, payment, actor=actor)
        else:
            await self.apply(
                payment, await self._safe(adapter.query, payment.provider_reference), actor=actor
            )
        async with self.db.transaction() as session:
            fresh = await PaymentRepository(session, self.clock).get(payment_id)
        assert fresh is not None
        return fresh

    async def _reverse(self, adapter: Adapter, payment: Payment, *, actor: str) -> None:
        if not payment.reversal_requested:
            async with self.db.transaction() as session:
                # whoever is stepping it (a worker's lease, a request's hold) keeps it
                await PaymentRepository(session, self.clock).request_reversal(
                    payment.id, ("processing",), by=REVERSAL_BY_RECOVERY, hold_until=payment.next_recovery_at
                )
                await audit.append(
                    session,
                    self.keyring,
                    chain=payment.school_id,
                    actor=actor,
                    action="payment.reversal_requested",
                    object_type="payment",
                    object_id=payment.id,
                    data={"reason": "outcome unknown past deadline"},
                )
            payment.reversal_requested = REVERSAL_BY_RECOVERY
        assert payment.provider_reference is not None
        if payment.status == "succeeded" and payment.refunded_amount > 0:
            await self._refund_rest(adapter, payment, actor=actor)
            return
        result = await self._safe(adapter.cancel, payment.provider_reference)
        if result.outcome in (Outcome.REVERSED, Outcome.FAILED):
            await self._reversed(payment, actor=actor, provider_code=result.code)
        elif result.outcome is Outcome.UNKNOWN and result.code == CANCEL_UNAVAILABLE:
            await self._reverse_without_cancel(adapter, payment, actor=actor)
        else:
            await self._unresolved(payment.id, result, attempt=False)

    async def _reverse_without_cancel(self, adapter: Adapter, payment: Payment, *, actor: str) -> None:
        """The provider verifiably refused to cancel (its window passed), so nothing was
        reversed. Ask what happened: money that moved is given back by a refund of what is left;
        a payment that never moved money is over. Retried until one of the two is verified."""
        assert payment.provider_reference is not None
        truth = await self._safe(adapter.query, payment.provider_reference)
        if truth.outcome is Outcome.SUCCEEDED and truth.amount in (None, payment.amount):
            await self._refund_rest(adapter, payment, actor=actor)
        elif truth.outcome in (Outcome.REVERSED, Outcome.FAILED):
            await self._reversed(payment, actor=actor, provider_code=truth.code)
        else:
            await self._unresolved(payment.id, truth, attempt=False)

    async def _refund_rest(self, adapter: Adapter, payment: Payment, *, actor: str) -> None:
        """Cancel a partly refunded payment: refund exactly what is left. The gateway knows that
        amount; a provider's reversal may not (a UnionPay-style void is refused once anything
        was refunded, and its full refund is refused without saying what remains). No refund
        can start meanwhile (``reversal_requested``), so the amount is stable across retries,
        and the reference is derived, so a retry can never give back twice."""
        assert payment.provider_reference is not None
        rest = payment.amount - payment.refunded_amount
        if rest <= 0:  # refunds already gave everything back
            await self._reversed(payment, actor=actor, provider_code="REFUNDED")
            return
        request = RefundRequest(
            reference=payment.provider_reference,
            refund_reference=cancel_refund_reference(payment.provider_reference),
            amount=rest,
            reason="cancel",
        )
        result = await self._safe(adapter.refund, request)
        if result.outcome is Outcome.SUCCEEDED:
            await self._reversed(payment, actor=actor, provider_code=result.code or "REFUNDED_REST")
            return
        if result.outcome is Outcome.FAILED:
            # a refusal is not "nothing moved": the payment stands, retried with backoff and logged
            log.error(
                "payment %s: the cancel's refund of the remaining %d fen was refused (%s); will retry",
                payment.id,
                rest,
                result.code,
            )
        await self._unresolved(payment.id, result, attempt=False)

    async def _reschedule(self, payment: Payment) -> None:
        async with self.db.transaction() as session:
            await PaymentRepository(session, self.clock).schedule(
                payment.id, self.clock() + self.backoff(payment.recovery_attempts)
            )

    @staticmethod
    async def _safe(call: Callable[[Any], Any], argument: Any) -> ProviderResult:
        try:
            result: ProviderResult = await call(argument)
            return result
        except Exception as exc:  # a query or reversal that could not be sent is simply retried later
            log.warning("provider call failed: %s", type(exc).__name__)
            return ProviderResult(Outcome.UNKNOWN, code=type(exc).__name__)

    # refunds -----------------------------------------------------------------------------

    async def apply_refund(self, refund: Refund, result: ProviderResult, *, actor: str) -> None:
        async with self.db.transaction() as session:
            repo = PaymentRepository(session, self.clock)
            if result.outcome is Outcome.SUCCEEDED:
                if await repo.transition_refund(
                    refund.id, "succeeded", next_recovery_at=None, **_NOT_REFUSED
                ):
                    await repo.add_refunded(refund.payment_id, refund.amount)
                    await self._refund_records(session, refund, "succeeded", actor)
            elif result.outcome is Outcome.FAILED:
                code = refund_failure_code_for(result.code)
                message = f"{result.message or 'refused by the provider'} ({result.code or 'no code'})"
                if await repo.transition_refund(
                    refund.id,
                    "failed",
                    next_recovery_at=None,
                    failure_code=code,
                    failure_message=message[:500],
                    **_NOT_REFUSED,
                ):
                    await self._refund_records(session, refund, "failed", actor)
            else:
                fresh = await repo.refund(refund.id, lock=True)
                if fresh is None or fresh.status != "processing":
                    return
                marked, attempts = fresh.needs_attention, fresh.recovery_attempts  # before the updates
                refusal, since, attention = self._refusal_after(
                    fresh.refusal, fresh.refused_since, marked, result
                )
                await repo.note_refund_refusal(refund.id, refusal=refusal, since=since, attention=attention)
                if attention and not marked:
                    assert since is not None
                    await self._attention_records(
                        session, "refund", refund.id, refund.school_id, refusal, since
                    )
                await repo.schedule_refund(refund.id, self._next_try(attempts, attention))

    async def _refund_records(self, session: Any, refund: Refund, status: str, actor: str) -> None:
        await audit.append(
            session,
            self.keyring,
            chain=refund.school_id,
            actor=actor,
            action=f"refund.{status}",
            object_type="refund",
            object_id=refund.id,
            data={"payment_id": refund.payment_id, "amount": refund.amount},
        )
        emit(
            session,
            school_id=refund.school_id,
            event_type=f"refund.{status}",
            data={
                "refund_id": refund.id,
                "payment_id": refund.payment_id,
                "amount": refund.amount,
                "status": status,
            },
        )

    async def refund_step(self, refund_id: str, *, actor: str) -> Refund:
        async with self.db.transaction() as session:
            repo = PaymentRepository(session, self.clock)
            refund = await repo.refund(refund_id)
            assert refund is not None
            payment = await repo.get(refund.payment_id)
        assert payment is not None and payment.adapter and payment.provider_reference
        if refund.status != "processing":
            return refund
        adapter = await self.providers.adapter(payment.school_id, payment.adapter)
        if adapter is None:
            result = ProviderResult(Outcome.UNKNOWN, code="NOT_CONFIGURED")
        else:
            request = RefundRequest(
                reference=payment.provider_reference,
                refund_reference=refund.provider_reference,
                amount=refund.amount,
                reason=refund.reason,
            )
            try:
                result = await adapter.refund(request)
            except Exception as exc:
                log.warning("refund %s: %s", refund.id, type(exc).__name__)
                result = ProviderResult(Outcome.UNKNOWN, code=type(exc).__name__)
        await self.apply_refund(refund, result, actor=actor)
        async with self.db.transaction() as session:
            fresh = await PaymentRepository(session, self.clock).refund(refund_id)
        assert fresh is not None
        return fresh
