"""The recovery worker and the start-up resumer.

Payments whose outcome is unknown -- because the provider did not answer, the synchronous
budget ran out, or the process that was handling them died -- are driven to a final state
here: query, and past the deadline reverse with the same reference until acknowledged.
Several gateway processes may run this loop: each payment is leased with a compare-and-set on
``next_recovery_at`` before it is worked on, and every final transition is itself a CAS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select, update

from adapters.base import Outcome
from gateway.auth.nonces import NonceStore
from gateway.cards.status import CardStatusService
from gateway.idempotency.service import IdempotencyService
from gateway.payments.resolver import Resolver
from gateway.protection.consent import ConsentService
from gateway.store.db import Database
from gateway.store.models import Payment, Refund
from gateway.store.payments import PaymentRepository
from gateway.tenancy.providers import ProviderSettings

__all__ = ["RecoveryWorker"]

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=30)
ACTOR = "system:recovery"


class RecoveryWorker:
    def __init__(
        self,
        db: Database,
        resolver: Resolver,
        idempotency: IdempotencyService,
        nonces: NonceStore,
        *,
        consents: ConsentService,
        cards: CardStatusService,
        providers: ProviderSettings,
        clock: Callable[[], datetime],
        interval: float,
        batch: int = 50,
    ) -> None:
        self.db, self.resolver, self.idempotency, self.nonces = db, resolver, idempotency, nonces
        self.consents, self.cards, self.providers = consents, cards, providers
        self.clock, self.interval, self.batch = clock, interval, batch
        self._task: asyncio.Task[None] | None = None

    async def _lease(self, model: type[Payment] | type[Refund], row_id: str, seen: datetime | None) -> bool:
        async with self.db.transaction() as session:
            result = await session.execute(
                update(model)
                .where(model.id == row_id, model.next_recovery_at == seen)
                .values(next_recovery_at=self.clock() + LEASE)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def run_once(self, *, resume_all: bool = False) -> int:
        """One pass over what is due. ``resume_all`` (start-up) also takes payments a crashed
        process left without any schedule.

        Not even at start-up is anything taken before its ``next_recovery_at``: until then it is
        a live holder's (a worker's lease, a request's hold) or a backoff not yet run out. A
        holder that died frees it when that time passes, and the regular pass takes it then;
        a restarted process taking it earlier would work on it beside the live one."""
        now = self.clock()
        async with self.db.transaction() as session:
            repo = PaymentRepository(session, self.clock)
            payments = list(await repo.due_for_recovery(now, self.batch))
            refunds = list(await repo.refunds_due(now, self.batch))
            if resume_all:
                # payments whose handler died before scheduling anything
                stray = await session.execute(
                    select(Payment).where(Payment.status == "processing", Payment.next_recovery_at.is_(None))
                )
                payments.extend(stray.scalars())
        worked = 0
        for payment in payments:
            if not await self._lease(Payment, payment.id, payment.next_recovery_at):
                continue  # another process has it
            try:
                await self.resolver.step(payment.id, actor=ACTOR)
                worked += 1
            except Exception:
                log.exception("recovery of payment %s failed; will retry", payment.id)
        for refund in refunds:
            if not await self._lease(Refund, refund.id, refund.next_recovery_at):
                continue
            try:
                await self.resolver.refund_step(refund.id, actor=ACTOR)
                worked += 1
            except Exception:
                log.exception("recovery of refund %s failed; will retry", refund.id)
        worked += await self.run_deletions()
        return worked

    async def run_deletions(self) -> int:
        """COMPLIANCE rule 10: delete enrolments at the provider, retried until acknowledged."""
        done = 0
        for enrollment in await self.consents.deletions_due(self.batch):
            adapter = await self.providers.adapter(enrollment.school_id, enrollment.provider)
            try:
                if adapter is None:
                    raise RuntimeError(f"{enrollment.provider} is not configured")
                result = await adapter.delete_enrollment(enrollment.provider_user_id)
            except Exception as exc:
                log.warning("deleting enrolment %s failed: %s; will retry", enrollment.id, type(exc).__name__)
                result = None
            if result is not None and result.outcome is Outcome.SUCCEEDED:
                receipt = {"provider": enrollment.provider, **{k: str(v) for k, v in result.raw.items()}}
                await self.consents.deletion_done(enrollment, receipt, ACTOR)
                done += 1
            else:
                await self.consents.deletion_retry(
                    enrollment, self.resolver.backoff(enrollment.delete_attempts)
                )
        return done

    async def housekeeping(self) -> None:
        now = self.clock()
        await self.nonces.purge(now)
        await self.idempotency.purge(now)

    async def _loop(self) -> None:
        ticks = 0
        while True:
            try:
                await self.run_once()
                ticks += 1
                if ticks % 100 == 0:
                    await self.housekeeping()
                if ticks % 50 == 1:
                    await self.cards.sync_all()  # follow the e-card blacklist (terminals also pull it)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recovery pass failed")
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        await self.run_once(resume_all=True)
        self._task = asyncio.create_task(self._loop(), name="campuspay-recovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
