"""PaymentService: the payment, cancel and refund flows.

Steps (DESIGN.md): authenticate (done by the router) -> idempotency claim (router) -> resolve the
payer -> protect -> route -> commit ``processing`` before calling out -> call with a deadline ->
finish in one transaction, or answer 202 and leave the rest to the recovery worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import (
    AdapterError,
    AgreementCredential,
    CardCredential,
    FaceCredential,
    IdentificationFailed,
    Outcome,
    PaymentRequest,
    ProviderEvent,
    ProviderResult,
    ProviderUnreachable,
)
from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.idempotency.service import Answer, Claim, IdempotencyService
from gateway.payments.resolver import REVERSAL_BY_TERMINAL, Resolver, payment_event_data
from gateway.payments.routing import Decision, RoutingService, unrouted_failure
from gateway.payments.state import FAILURE_MESSAGES, face_token_failure, payment_resource
from gateway.protection import audit
from gateway.protection.consent import ConsentService
from gateway.protection.crypto import Keyring
from gateway.store.db import Database
from gateway.store.dialect import insert_ignore
from gateway.store.models import Payment, PaymentAttempt, ProviderNotification, Refund, Store, new_id
from gateway.store.payments import PaymentRepository
from gateway.tenancy.funding import FundingService, Payer
from gateway.tenancy.providers import ProviderSettings
from gateway.tenancy.service import TenancyService
from gateway.webhooks.outbox import emit

__all__ = ["Caller", "PaymentInput", "PaymentService", "is_pending"]

log = logging.getLogger(__name__)
# The worker leaves a payment alone this long past the synchronous budget: its request may still
# be finishing it. A crash costs at most this delay before recovery starts.
HANDOVER_MARGIN = 2.0


@dataclass(frozen=True)
class Caller:
    device_id: str
    school_id: str

    @property
    def actor(self) -> str:
        return f"device:{self.device_id}"


@dataclass(frozen=True)
class PaymentInput:
    merchant_order_id: str
    amount: int
    currency: str
    method: str
    store_id: str
    card_no: str | None = None
    pin: str | None = None
    face_token: str | None = None
    description: str | None = None
    terminal_params: str | None = None


@dataclass(frozen=True)
class _NotAccepted:
    """An attempt nothing can have been applied of: how it is recorded, and how the payment
    fails if no other provider can take it."""

    outcome: str  # the attempt's status, and its entry in the routing record
    provider_code: str
    failure_code: str

    @property
    def reason(self) -> str:
        if self.outcome == "unreachable":
            return "provider unreachable: the request never reached it"
        return f"provider refused the request ({self.provider_code}): nothing was applied"


_UNREACHABLE = _NotAccepted("unreachable", "UNREACHABLE", "provider_unavailable")


def _answer(payment: Payment) -> Answer:
    """The stored answer to the request that created ``payment``, now final (201)."""
    return Answer(201, json.dumps(payment_resource(payment)).encode())


def _refused(payment: Payment, code: str, routing: dict[str, Any] | None) -> dict[str, Any] | None:
    """A payment about to be committed ``processing`` is refused instead, before any provider
    is asked: nothing of an attempt is kept."""
    payment.status, payment.failure_code = "failed", code
    payment.failure_message = FAILURE_MESSAGES[code]
    payment.provider_reference = payment.recovery_deadline = payment.next_recovery_at = None
    if routing is not None:
        routing = {**routing, "chosen": None, "attempts": []}
    payment.routing = routing
    return routing


def is_pending(payment: Payment) -> bool:
    """Still being resolved: the answer is 202 until this is False."""
    return payment.status == "processing" or (
        payment.status == "succeeded" and payment.reversal_requested > 0
    )


class PaymentService:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        tenancy: TenancyService,
        providers: ProviderSettings,
        resolver: Resolver,
        consents: ConsentService,
        funding: FundingService,
        routing: RoutingService,
        *,
        clock: Callable[[], datetime],
        sync_budget: float,
        recovery_deadline: float,
    ) -> None:
        self.db, self.keyring, self.tenancy, self.providers = db, keyring, tenancy, providers
        self.resolver, self.consents, self.clock = resolver, consents, clock
        self.funding, self.routing = funding, routing
        self.sync_budget, self.recovery_deadline = sync_budget, recovery_deadline

    # queries -----------------------------------------------------------------------------

    async def get(self, caller: Caller, payment_id: str) -> Payment:
        async with self.db.transaction(readonly=True) as session:
            payment = await PaymentRepository(session, self.clock).get(payment_id, school_id=caller.school_id)
        if payment is None:
            raise NotFound("no such payment")
        return payment

    async def list_for_order(self, caller: Caller, merchant_order_id: str) -> Sequence[Payment]:
        async with self.db.transaction(readonly=True) as session:
            return await PaymentRepository(session, self.clock).for_order(caller.device_id, merchant_order_id)

    async def get_refund(self, caller: Caller, refund_id: str) -> Refund:
        async with self.db.transaction(readonly=True) as session:
            refund = await PaymentRepository(session, self.clock).refund(
                refund_id, school_id=caller.school_id
            )
        if refund is None:
            raise NotFound("no such refund")
        return refund

    # pay ---------------------------------------------------------------------------------

    async def create(self, caller: Caller, data: PaymentInput, claim: Claim) -> tuple[Payment, Answer | None]:
        """The payment, and the answer to its request when that was stored with its final state
        (then the request has nothing more to write)."""
        store = await self.tenancy.get_store(caller.school_id, data.store_id)
        if store is None:
            raise Unprocessable("store_unknown", f"no store {data.store_id!r} at this school")
        failure: str | None = None
        student_id = adapter_name = card_last4 = agreement_no = None
        payer: Payer | None = None
        decision: Decision | None = None
        if data.method == "card":
            assert data.card_no is not None
            card_last4 = data.card_no[-4:]
        plan = await self.routing.plan(
            caller.school_id,
            method=data.method,
            amount=data.amount,
            currency=data.currency,
            store=store,
            at=self.clock(),
            card_no=data.card_no,
        )
        limit_check = plan.limit_check
        if data.method == "card":
            student_id, payer = plan.student_id, plan.payer
            if plan.refusal is not None:
                # refused by the card itself or by its payer's per-payment limit: no route, no
                # provider asked
                failure = plan.refusal
            else:
                decision = plan.decision
                adapter_name = await self.routing.take_candidate(caller.school_id, decision, 0)
                if adapter_name is None:
                    failure = unrouted_failure(decision)
        else:
            assert data.face_token is not None
            decision = plan.decision
            face = await self._resolve_face(caller.school_id, data.face_token, decision)
            failure, student_id, adapter_name, agreement_no = face

        now = self.clock()
        payment = Payment(
            id=new_id("pay"),
            school_id=caller.school_id,
            device_id=caller.device_id,
            store_id=store.id,
            merchant_order_id=data.merchant_order_id,
            amount=data.amount,
            currency=data.currency,
            method=data.method,
            adapter=adapter_name,
            student_id=student_id,
            card_last4=card_last4,
            description=data.description,
            created_at=now,
            occurred_at=now,  # an online sale happens when it is taken
            updated_at=now,
        )
        routing = decision.record() if decision is not None else None
        if routing is not None and adapter_name is not None and not failure:
            routing["chosen"] = adapter_name
            routing["attempts"] = [{"n": 1, "adapter": adapter_name}]
        payment.routing = routing
        if failure:
            payment.status, payment.failure_code = "failed", failure
            payment.failure_message = FAILURE_MESSAGES[failure]
        else:
            payment.status = "processing"
            payment.provider_reference = f"{payment.id}-1"
            payment.recovery_deadline = now + timedelta(seconds=self.recovery_deadline)
            # The worker leaves it alone while this request is still working on it.
            payment.next_recovery_at = self._hold()
        try:
            async with self.db.transaction() as session:
                repo = PaymentRepository(session, self.clock)
                live = await repo.live_for_order(caller.device_id, data.merchant_order_id)
                if live is not None:
                    raise Conflict(
                        "duplicate_order", f"payment {live.id} already holds this order", payment_id=live.id
                    )
                if await repo.order_held_offline(caller.device_id, data.merchant_order_id):
                    # the sale was made offline and waits for review; charging it online too could
                    # take the money twice once the review posts it
                    raise Conflict("duplicate_order", "an offline record of this order is held for review")
                if payment.status == "processing" and student_id is not None:
                    # COMPLIANCE rule 15, counted here so that it is exact: of two tills spending
                    # one remaining budget at once, one wins (gateway.protection.limits)
                    limit_check = await self.routing.limits.enforce(
                        session,
                        school_id=caller.school_id,
                        student_id=student_id,
                        amount=data.amount,
                        at=payment.occurred_at,
                        store=store,
                        limits=plan.limits,
                    )
                    if limit_check is not None and limit_check.exceeded is not None:
                        routing = _refused(payment, "limit_exceeded", routing)
                if limit_check is not None and routing is not None:
                    routing["limits"] = limit_check.record()
                session.add(payment)
                await session.flush()
                answer = None
                if payment.status == "processing":
                    assert adapter_name is not None and payment.provider_reference is not None
                    session.add(
                        PaymentAttempt(
                            id=new_id("att"),
                            payment_id=payment.id,
                            adapter=adapter_name,
                            provider_reference=payment.provider_reference,
                            status="processing",
                        )
                    )
                    await IdempotencyService.attach(session, claim, "payment", payment.id)
                else:  # refused before any provider was asked: final now
                    answer = _answer(payment)
                    await IdempotencyService.answer(session, claim, "payment", payment.id, answer)
                await audit.append(
                    session,
                    self.keyring,
                    chain=caller.school_id,
                    actor=caller.actor,
                    action="payment.created",
                    object_type="payment",
                    object_id=payment.id,
                    data={
                        "amount": data.amount,
                        "method": data.method,
                        "status": payment.status,
                        "failure_code": payment.failure_code,
                        "adapter": adapter_name,
                        "routing": routing,
                    },
                )
                if limit_check is not None and payment.failure_code == "limit_exceeded":
                    emit(
                        session,
                        school_id=caller.school_id,
                        event_type="limit.exceeded",
                        data={
                            "payment_id": payment.id,
                            "student_id": student_id,
                            "limit": limit_check.exceeded,
                            "amount": payment.amount,
                            "currency": payment.currency,
                        },
                    )
                if payment.status == "failed":
                    emit(
                        session,
                        school_id=caller.school_id,
                        event_type="payment.failed",
                        data=payment_event_data(payment),
                    )
        except IntegrityError as exc:
            # Two different keys raced for the same order; the database let exactly one in.
            async with self.db.transaction() as session:
                live = await PaymentRepository(session, self.clock).live_for_order(
                    caller.device_id, data.merchant_order_id
                )
            raise Conflict(
                "duplicate_order",
                "another payment already holds this order",
                payment_id=live.id if live else None,
            ) from exc
        if payment.status != "processing":
            return payment, answer
        assert decision is not None
        return await self._execute(payment, data, store, agreement_no, payer, decision, claim)

    def _request(
        self,
        payment: Payment,
        data: PaymentInput,
        store: Store,
        agreement_no: str | None,
        payer: Payer | None,
        store_ref: str,
    ) -> PaymentRequest:
        assert payment.provider_reference is not None
        credential: CardCredential | FaceCredential | AgreementCredential
        if data.face_token is not None:
            credential = FaceCredential(face_token=data.face_token)
        elif payer is not None and payer.kind == "bank_agreement":
            # only the agreement token reaches the bank, never the card number
            assert payer.agreement_token is not None
            credential = AgreementCredential(token=payer.agreement_token, card_last4=payer.card_last4)
        else:
            credential = CardCredential(card_no=data.card_no or "", pin=data.pin)
        return PaymentRequest(
            reference=payment.provider_reference,
            amount=payment.amount,
            currency=payment.currency,
            method=payment.method,
            credential=credential,
            agreement_no=agreement_no,
            store_ref=store_ref,
            terminal_ref=payment.device_id,
            description=data.description,
            terminal_params=data.terminal_params,
        )

    async def _execute(
        self,
        payment: Payment,
        data: PaymentInput,
        store: Store,
        agreement_no: str | None,
        payer: Payer | None,
        decision: Decision,
        claim: Claim,
    ) -> tuple[Payment, Answer | None]:
        """Call the attempt's adapter. Only an attempt that nothing can have been applied of --
        it provably never reached its provider (``ProviderUnreachable``), or the provider
        verifiably refused the request itself (``refused`` with ``nothing_applied``) -- moves on
        to the next candidate, as a new attempt with its own reference, committed before the
        call like the first. Anything else, an unknown included, stays with the adapter that
        was called."""
        assert payment.adapter is not None and payment.provider_reference is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.sync_budget
        actor = f"device:{payment.device_id}"
        # face tokens and enrolments belong to one provider: a face payment never fails over
        index = decision.candidates.index(payment.adapter)
        attempt = 1
        answered: list[tuple[Payment, Answer]] = []

        async def respond(session: AsyncSession, final: Payment) -> None:
            answer = _answer(final)
            await IdempotencyService.answer(session, claim, "payment", final.id, answer)
            answered.append((final, answer))

        while True:
            adapter = await self.providers.adapter(payment.school_id, payment.adapter)
            assert adapter is not None
            # the provider's own name for the store (its meal periods and fixed prices hang on it)
            store_ref = await self.providers.store_ref(payment.school_id, payment.adapter, store.id)
            request = self._request(payment, data, store, agreement_no, payer, store_ref)
            not_accepted: _NotAccepted | None = None
            try:
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    result = await adapter.pay(request)
            except ProviderUnreachable as exc:
                log.warning("payment %s attempt %d: %s", payment.id, attempt, exc)
                not_accepted = _UNREACHABLE
            except TimeoutError:
                result = ProviderResult(Outcome.UNKNOWN, code="SYNC_BUDGET")
            else:
                if result.refused is not None and result.nothing_applied:
                    log.warning(
                        "payment %s attempt %d: %s refused the request (%s %s); nothing was applied",
                        payment.id,
                        attempt,
                        payment.adapter,
                        result.refused.value,
                        result.code,
                    )
                    not_accepted = _NotAccepted("refused", result.code or "REFUSED", "provider_refused")
            if not_accepted is not None:
                await self._tell_breaker(payment, decision, technical_failure=True)
                following = None
                if payment.method == "card":
                    following = await self.routing.take_candidate(payment.school_id, decision, index + 1)
                if following is not None and await self._fail_over(
                    payment, following, attempt + 1, decision, not_accepted
                ):
                    index, attempt = decision.candidates.index(following), attempt + 1
                    continue
                code = not_accepted.failure_code
                await self.resolver.finish(
                    payment.id,
                    "failed",
                    actor=actor,
                    provider_code=not_accepted.provider_code,
                    failure_code=code,
                    failure_message=FAILURE_MESSAGES[code],
                    respond=respond,
                )
                if answered:
                    return answered[0]
                return await self.get(Caller(payment.device_id, payment.school_id), payment.id), None
            # the provider's answer first: bookkeeping must never be able to lose it
            await self.resolver.apply(payment, result, actor=actor, respond=respond)
            await self._tell_breaker(payment, decision, technical_failure=result.outcome is Outcome.UNKNOWN)
            if answered:
                return answered[0]
            return await self._drive(payment.id, deadline, actor=actor), None

    async def _tell_breaker(self, payment: Payment, decision: Decision, *, technical_failure: bool) -> None:
        """Breaker bookkeeping, which only steers *new* attempts (decision 0010): if it fails,
        the payment goes on all the same."""
        assert payment.adapter is not None
        try:
            if technical_failure:
                await self.routing.breaker.failure(payment.school_id, payment.adapter, decision.policy)
            else:
                await self.routing.breaker.success(payment.school_id, payment.adapter)
        except Exception as exc:
            log.warning(
                "payment %s: breaker of %s not updated (%s: %s)",
                payment.id,
                payment.adapter,
                type(exc).__name__,
                exc,
            )

    async def _fail_over(
        self, payment: Payment, adapter: str, attempt: int, decision: Decision, why: _NotAccepted
    ) -> bool:
        """One transaction: the attempt that was not accepted is closed (``unreachable`` or
        ``refused``) and the next one is committed (payment adapter and reference included)
        before it is sent. False when the payment moved meanwhile (a cancel, say): then
        nothing new is sent."""
        previous, reference = payment.adapter, f"{payment.id}-{attempt}"
        routing = dict(payment.routing or decision.record())
        attempts = [dict(a) for a in routing.get("attempts", [])]
        if attempts:
            attempts[-1]["outcome"] = why.outcome
        attempts.append({"n": attempt, "adapter": adapter})
        routing.update(chosen=adapter, attempts=attempts, skipped=list(decision.skipped))
        async with self.db.transaction() as session:
            repo = PaymentRepository(session, self.clock)
            moved = await repo.switch_attempt(
                payment.id,
                from_reference=payment.provider_reference or "",
                adapter=adapter,
                reference=reference,
                routing=routing,
                closed_as=why.outcome,
                provider_code=why.provider_code,
            )
            if not moved:
                return False
            session.add(
                PaymentAttempt(
                    id=new_id("att"),
                    payment_id=payment.id,
                    adapter=adapter,
                    provider_reference=reference,
                    status="processing",
                )
            )
            await audit.append(
                session,
                self.keyring,
                chain=payment.school_id,
                actor="system:routing",
                action="payment.failover",
                object_type="payment",
                object_id=payment.id,
                data={
                    "from": previous,
                    "to": adapter,
                    "attempt": attempt,
                    "reason": why.reason,
                },
            )
        payment.adapter, payment.provider_reference, payment.routing = adapter, reference, routing
        return True

    async def _resolve_face(
        self, school_id: str, face_token: str, decision: Decision
    ) -> tuple[str | None, str | None, str | None, str | None]:
        """Token -> provider user -> enrolment -> consent, before any money moves. The routed
        face adapter identifies the token and, if all is well, takes the payment.

        Returns (refusal, student_id, adapter, agreement_no)."""
        adapter_name = await self.routing.take_candidate(school_id, decision, 0)
        if adapter_name is None:
            return unrouted_failure(decision), None, None, None
        adapter = await self.providers.adapter(school_id, adapter_name)
        assert adapter is not None
        config = await self.providers.config(school_id, adapter_name)
        assert config is not None
        try:
            async with asyncio.timeout(self.sync_budget / 2):
                identity = await adapter.identify(face_token)
        except IdentificationFailed as exc:
            return face_token_failure(exc.code), None, adapter_name, None
        except (AdapterError, TimeoutError) as exc:
            log.warning("face identification at %s failed: %s", adapter_name, type(exc).__name__)
            return "provider_unavailable", None, adapter_name, None  # nothing was charged
        group = config.options.get("face_group")
        if identity.group is not None and group is not None and identity.group != group:
            return "enrollment_scope", None, adapter_name, None  # a token from another school's face group
        check = await self.consents.check_face(school_id, adapter_name, identity.user_id)
        if check.refusal is not None or check.enrollment is None:
            return check.refusal, check.student_id, adapter_name, None
        return None, check.student_id, adapter_name, check.enrollment.agreement_no

    async def _drive(
        self, payment_id: str, deadline: float, *, actor: str, step_now: bool = False
    ) -> Payment:
        """Run recovery steps inline until the payment is final or the budget is spent.

        ``step_now``: this request holds the payment (its ``next_recovery_at`` is the request's
        own hold, see ``_hold``), so the first step runs at once instead of waiting it out."""
        loop = asyncio.get_running_loop()
        while True:
            async with self.db.transaction(readonly=True) as session:
                payment = await PaymentRepository(session, self.clock).get(payment_id)
            assert payment is not None
            if not is_pending(payment):
                return payment
            wait = 0.0
            if payment.next_recovery_at is not None and not step_now:
                wait = max(0.0, (payment.next_recovery_at - self.clock()).total_seconds())
            step_now = False
            if loop.time() + wait >= deadline:
                await self._hand_over(payment_id)
                return payment
            await asyncio.sleep(wait)
            try:
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    await self.resolver.step(payment_id, actor=actor)
            except TimeoutError:
                await self._hand_over(payment_id)
                async with self.db.transaction(readonly=True) as session:
                    again = await PaymentRepository(session, self.clock).get(payment_id)
                assert again is not None
                return again

    def _hold(self) -> datetime:
        """Until when the recovery worker leaves alone a payment this request is working on."""
        return self.clock() + timedelta(seconds=self.sync_budget + HANDOVER_MARGIN)

    async def _hand_over(self, payment_id: str) -> None:
        """The budget ran out: the worker takes over now. A worker's lease (longer than any
        request's hold) is left as it is, so a working worker is not joined by a second one."""
        async with self.db.transaction() as session:
            await PaymentRepository(session, self.clock).hand_over(payment_id, held_until=self._hold())

    # cancel ------------------------------------------------------------------------------

    def cancel_window_end(self, payment: Payment, store: Store) -> datetime:
        local = payment.created_at.astimezone(ZoneInfo(store.timezone))
        midnight = datetime.combine(
            local.date() + timedelta(days=1), datetime.min.time(), tzinfo=local.tzinfo
        )
        return midnight

    async def cancel(self, caller: Caller, payment_id: str, claim: Claim) -> Payment:
        deadline = asyncio.get_running_loop().time() + self.sync_budget
        async with self.db.transaction() as session:
            repo = PaymentRepository(session, self.clock)
            payment = await repo.get(payment_id, school_id=caller.school_id, lock=True)
            if payment is None:
                raise NotFound("no such payment")
            if payment.status == "failed":
                raise Conflict("not_cancelable", "a failed payment moved no money")
            if payment.status == "canceled":
                await IdempotencyService.attach(session, claim, "payment", payment.id)
                return payment
            store = await session.get(Store, payment.store_id)
            assert store is not None
            if self.clock() >= self.cancel_window_end(payment, store):
                raise Conflict(
                    "cancel_window_closed",
                    "payments can be canceled until midnight of their day "
                    f"in the store's time zone ({store.timezone}); refund instead",
                )
            if await repo.refunds_processing(payment.id):
                raise Conflict("refund_in_progress")
            step_now = False
            if not payment.reversal_requested:
                # held for this request: a worker picking it up in between would make the
                # request wait the worker's lease out and answer "not yet" for no reason
                step_now = await repo.request_reversal(
                    payment.id, ("processing", "succeeded"), by=REVERSAL_BY_TERMINAL, hold_until=self._hold()
                )
            await IdempotencyService.attach(session, claim, "payment", payment.id)
            await audit.append(
                session,
                self.keyring,
                chain=caller.school_id,
                actor=caller.actor,
                action="payment.cancel_requested",
                object_type="payment",
                object_id=payment.id,
                data={"status": payment.status},
            )
        return await self._drive(payment.id, deadline, actor=caller.actor, step_now=step_now)

    # refund ------------------------------------------------------------------------------

    async def refund(
        self, caller: Caller, payment_id: str, amount: int, reason: str | None, claim: Claim
    ) -> Refund:
        deadline = asyncio.get_running_loop().time() + self.sync_budget
        async with self.db.transaction() as session:
            repo = PaymentRepository(session, self.clock)
            payment = await repo.get(payment_id, school_id=caller.school_id, lock=True)
            if payment is None:
                raise NotFound("no such payment")
            if payment.status != "succeeded" or payment.reversal_requested:
                raise Conflict(
                    "not_refundable", f"payment is {payment.status}; only succeeded payments refund"
                )
            reserved = await repo.refunds_reserved(payment.id)
            if reserved + amount > payment.amount:
                raise Conflict(
                    "refund_exceeds_amount",
                    f"{payment.amount - reserved} fen of {payment.amount} can still be refunded",
                    refundable_amount=payment.amount - reserved,
                )
            refund = Refund(
                id=new_id("re"),
                payment_id=payment.id,
                school_id=payment.school_id,
                device_id=caller.device_id,
                amount=amount,
                currency=payment.currency,
                reason=reason,
                status="processing",
                next_recovery_at=self._hold(),
            )
            refund.provider_reference = refund.id
            session.add(refund)
            await session.flush()
            await IdempotencyService.attach(session, claim, "refund", refund.id)
            await audit.append(
                session,
                self.keyring,
                chain=caller.school_id,
                actor=caller.actor,
                action="refund.created",
                object_type="refund",
                object_id=refund.id,
                data={"payment_id": payment.id, "amount": amount},
            )
        loop = asyncio.get_running_loop()
        while refund.status == "processing" and loop.time() < deadline:
            try:
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    refund = await self.resolver.refund_step(refund.id, actor=caller.actor)
            except TimeoutError:
                break
            if refund.status == "processing" and refund.next_recovery_at is not None:
                await asyncio.sleep(
                    min(
                        max(0.0, (refund.next_recovery_at - self.clock()).total_seconds()),
                        max(0.0, deadline - loop.time()),
                    )
                )
        return refund

    async def on_notification(self, school_id: str, adapter: str, event: ProviderEvent) -> None:
        """Apply a verified notification once; repeats are recognised by their dedupe key."""
        async with self.db.transaction() as session:
            values = {
                "id": new_id("ntf"),
                "school_id": school_id,
                "adapter": adapter,
                "dedupe_key": event.dedupe_key[:128],
                "reference": event.reference[:64],
                "outcome": event.outcome.value,
                "received_at": self.clock(),
            }
            inserted = await session.execute(insert_ignore(session, ProviderNotification.__table__, values))  # type: ignore[arg-type]
            if not inserted.rowcount:  # type: ignore[attr-defined]
                return  # seen before
            payment = (
                await session.execute(
                    select(Payment).where(
                        Payment.school_id == school_id, Payment.provider_reference == event.reference
                    )
                )
            ).scalar_one_or_none()
        if payment is None or payment.adapter != adapter:
            log.warning("%s notification for unknown reference at %s", adapter, school_id)
            return
        result = ProviderResult(event.outcome, provider_txn_id=event.provider_txn_id, amount=event.amount)
        if payment.status == "processing":
            await self.resolver.apply(payment, result, actor=f"provider:{adapter}")

    async def snapshot(self, resource_type: str, resource_id: str) -> Any:
        async with self.db.transaction(readonly=True) as session:
            repo = PaymentRepository(session, self.clock)
            return await (repo.get(resource_id) if resource_type == "payment" else repo.refund(resource_id))
