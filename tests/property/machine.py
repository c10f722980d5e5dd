"""The stateful property test of payments (issue 7, B1): a terminal that pays, retries with the
same Idempotency-Key, tries again for the same order, cancels, refunds and asks; providers that
fail, notify and drift; gateway processes that crash and resume. After every step the
providers' books (tests/property/books.py) must satisfy tests/property/invariants.py, and once
recovery has settled everything the gateway's word and the books agree.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.property.books import read_books
from tests.property.driver import Loop
from tests.property.invariants import PaymentView, RefundView, disagreements, money_invariants
from tests.property.world import LONGEST_HOLD, World, heal

T = TypeVar("T")
FAULT_ACTIONS = (
    "error_500",
    "error_500_after_apply",
    "bad_signature",
    "reset_after_apply",
    "truncate_after_apply",
    "html_200",
    "html_200_after_apply",
    "auth_refusal",
    "throttle_429",
    "unavailable_503",
    "delay_after_apply",  # applied, answered after the gateway gave up: costs its provider timeout
    "delay",  # held before it is applied, past the gateway's timeout: it lands late
)
OPERATIONS = {
    "ecard": ("consume", "query", "reverse", "refund"),
    "alipay": (
        "alipay.trade.pay",
        "alipay.trade.query",
        "alipay.trade.cancel",
        "alipay.trade.refund",
        "alipay.trade.fastpay.refund.query",
        "zoloz.authentication.customer.ftoken.query",
    ),
}
QUERY_OPERATION = {"ecard": "query", "alipay": "alipay.trade.query"}
PAY_OPERATION = {"ecard": "consume", "alipay": "alipay.trade.pay"}
CANCEL_OPERATIONS = {"ecard": ("reverse", "refund"), "alipay": ("alipay.trade.cancel", "alipay.trade.refund")}
REFUND_OPERATION = {"ecard": "refund", "alipay": "alipay.trade.refund"}
PAYERS = st.sampled_from(["ecard:31000001", "ecard:31000002", "ecard:31000006", "alipay:face"])
AMOUNTS = st.integers(min_value=1, max_value=2500)  # endings 91-94 (e-card) and 81-86 (Alipay) are magic
PICK = st.integers(min_value=0, max_value=2**16)  # which of the orders, payments or requests so far
FAULT = st.one_of(st.none(), st.sampled_from(FAULT_ACTIONS))  # met by the very call a rule makes


@dataclass
class Tally:
    """What the runs did, for the long run's report."""

    examples: int = 0
    steps: int = 0
    crashes: int = 0
    payments: int = 0
    refunds: int = 0
    faults: int = 0
    settles: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # wall time by rule (and set-up)

    def line(self) -> str:
        return (
            f"{self.examples} runs, {self.steps} steps, {self.crashes} crashes, {self.payments} payments, "
            f"{self.refunds} refunds, {self.faults} fault rules, {self.settles} settles"
        )

    def where_the_time_went(self) -> str:
        ranked = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in ranked)


@dataclass
class Sent:
    """One money-moving POST and its first answer, which a retry with the same key must match."""

    kind: str  # pay | cancel | refund
    path: str
    body: dict[str, Any] | None
    key: str
    payment_id: str | None  # what it is about (pay: the payment it created, once known)
    status: int | None = None  # None: it never got an answer (its process died under it)
    content: bytes = b""
    resource_id: str | None = None
    answers_current_state: bool = False  # first answer 202, or its process died: not a byte replay

    @classmethod
    def cancel(cls, payment_id: str) -> Sent:
        return cls(
            "cancel", f"/v1/payments/{payment_id}/cancel", None, "c-" + secrets.token_hex(8), payment_id
        )

    @classmethod
    def refund(cls, payment_id: str, amount: int) -> Sent:
        path, key = f"/v1/payments/{payment_id}/refunds", "r-" + secrets.token_hex(8)
        return cls("refund", path, {"amount": amount}, key, payment_id)


@dataclass
class Order:
    id: str
    payer: str
    amount: int
    payments: list[str] = field(default_factory=list)


class PaymentsMachine(RuleBasedStateMachine):
    def __init__(self, world: World, tally: Tally) -> None:
        super().__init__()
        self.world, self.tally, self.broken = world, tally, False
        self.loop = Loop()
        self.orders: dict[str, Order] = {}
        self.payments: dict[str, PaymentView] = {}
        self.refunds: dict[str, RefundView] = {}
        self.sent: list[Sent] = []
        self.crashes = 0
        try:
            self.run(world.start)
            self.start = self.run(self._books).balances
        except BaseException:
            self.loop.run(world.close)
            self.loop.close()
            raise
        tally.examples += 1

    # --- plumbing ------------------------------------------------------------------------------

    def run(self, work: Callable[[], Awaitable[T]]) -> T:
        name = work.__qualname__.split(".<locals>")[0].rsplit(".", 1)[-1]
        started = time.perf_counter()
        try:
            return self.loop.run(work)
        except BaseException:
            self.broken = True
            raise
        finally:
            self.tally.seconds[name] = self.tally.seconds.get(name, 0.0) + time.perf_counter() - started

    async def _books(self) -> Any:
        return await read_books(self.world.sandbox, self.world.payers)

    async def _call(self, sent: Sent) -> httpx.Response:
        return await self.world.device.call("POST", sent.path, sent.body, sent.key)

    def _see_payment(self, resource: dict[str, Any]) -> PaymentView:
        view = self.payments.get(resource["id"])
        if view is None:
            view = self.payments[resource["id"]] = PaymentView(
                resource["id"], resource["merchant_order_id"], resource["amount"], resource["adapter"]
            )
            order = self.orders.get(resource["merchant_order_id"])
            if order is not None and view.id not in order.payments:
                order.payments.append(view.id)
            self.tally.payments += 1
        view.see(resource)
        return view

    def _see_refund(self, resource: dict[str, Any]) -> RefundView:
        view = self.refunds.get(resource["id"])
        if view is None:
            view = self.refunds[resource["id"]] = RefundView(
                resource["id"], resource["payment_id"], resource["amount"]
            )
            self.payments[view.payment_id].refunds.append(view.id)
            self.tally.refunds += 1
        view.see(resource)
        return view

    async def _get_payment(self, payment_id: str) -> PaymentView:
        r = await self.world.device.call("GET", f"/v1/payments/{payment_id}")
        assert r.status_code == 200, r.text
        return self._see_payment(r.json())

    async def _discover(self, order: Order) -> None:
        """The order's payments as the gateway lists them (a crash may have hidden one)."""
        r = await self.world.device.call("GET", f"/v1/payments?merchant_order_id={order.id}")
        assert r.status_code == 200, r.text
        for resource in r.json()["data"]:
            self._see_payment(resource)
        assert set(order.payments) == {p["id"] for p in r.json()["data"]}, (order, r.json())
        live = [p["id"] for p in r.json()["data"] if p["status"] != "failed"]
        assert len(live) <= 1, f"order {order.id} has more than one payment that is not failed: {live}"

    def _first_answer(self, sent: Sent, r: httpx.Response) -> None:
        """Record a money call's first answer and see what it says."""
        sent.status, sent.content = r.status_code, r.content
        if r.status_code >= 400:
            return  # a refusal stores nothing (decision 0004): a retry runs afresh
        body = r.json()
        sent.resource_id = body["id"]
        sent.answers_current_state = sent.answers_current_state or r.status_code == 202
        if sent.kind == "refund":
            refund = self._see_refund(body)
            assert (r.status_code == 202) == (refund.status == "processing"), (r.status_code, body)
            return
        payment = self._see_payment(body)
        if sent.kind == "pay":
            sent.payment_id = payment.id
        pending = r.status_code == 202
        assert pending or payment.status in ("succeeded", "failed", "canceled"), (r.status_code, body)

    # --- the terminal --------------------------------------------------------------------------

    def _pay_request(self, order: Order) -> Sent:
        provider, _, card = order.payer.partition(":")
        body = {
            "merchant_order_id": order.id,
            "amount": order.amount,
            "currency": "CNY",
            "method": "face" if provider == "alipay" else "card",
            "credential": {"card_no": card} if provider == "ecard" else {},
            "store_id": self.world.store_id,
        }
        return Sent("pay", "/v1/payments", body, "k-" + secrets.token_hex(8), None)

    async def _with_face_token(self, sent: Sent) -> None:
        assert sent.body is not None
        if sent.body["method"] == "face":  # a fresh scan for every attempt; a retry sends the same
            sent.body["credential"] = {"face_token": await self.world.face_token()}

    async def _pay(self, order: Order) -> tuple[Sent, httpx.Response]:
        sent = self._pay_request(order)
        await self._with_face_token(sent)
        self.sent.append(sent)
        return sent, await self._call(sent)

    def _new_order(self, payer: str, amount: int) -> Order:
        order = Order("ord-" + secrets.token_hex(6), payer, amount)
        self.orders[order.id] = order
        return order

    @rule(payer=PAYERS, amount=AMOUNTS, fault=FAULT)
    def pay(self, payer: str, amount: int, fault: str | None) -> None:
        provider = payer.split(":")[0]

        async def work() -> None:
            armed = await self._arm(provider, (PAY_OPERATION[provider],), fault)
            sent, r = await self._pay(self._new_order(payer, amount))
            await self._disarm(armed)
            assert r.status_code in (201, 202), r.text  # a new order is never refused
            self._first_answer(sent, r)

        self.run(work)

    @rule()
    def lunch_by_card(self) -> None:
        """The everyday payment (and the first step hypothesis tries: it has no arguments)."""
        self.pay("ecard:31000001", 1250, None)

    @rule(pick=PICK)
    def pay_again_for_the_order(self, pick: int) -> None:
        """A new attempt (new key) for an order: a new payment only after a failed one."""
        order = self._pick(self.orders, pick)
        if order is None:
            return

        async def work() -> None:
            await self._discover(order)
            before = {pid: self.payments[pid].status for pid in order.payments}
            sent, r = await self._pay(order)
            if r.status_code in (201, 202):
                self._first_answer(sent, r)
                for pid in before:
                    assert (await self._get_payment(pid)).status == "failed", (pid, before, r.text)
            else:
                assert r.status_code == 409 and r.json()["code"] == "duplicate_order", r.text
                self._first_answer(sent, r)
                holder = r.json().get("payment_id")
                assert holder in before, (holder, before)
                # it held the order when it was asked (it may have failed since)
                assert before[holder] != "failed", (holder, before)

        self.run(work)

    @rule(pick=PICK)
    def retry_with_the_same_key(self, pick: int) -> None:
        """The same request again, same key, same bytes (a terminal that lost the answer)."""
        choices = {str(i): s for i, s in enumerate(self.sent) if s.status is None or 200 <= s.status < 300}
        sent = self._pick(choices, pick)
        if sent is not None:
            self.run(lambda: self._retry(sent))

    async def _retry(self, sent: Sent) -> None:
        r = await self._call(sent)
        if sent.status is None:  # its first try died with its process: this is the answer
            if r.status_code == 409 and r.json()["code"] == "idempotency_key_in_use":
                return  # the dead process's claim has not run out yet
            # what it had made, as it is now; or, had it made nothing yet, a first execution
            sent.answers_current_state = True
            assert r.status_code < 300 or sent.kind != "pay", r.text
            self._first_answer(sent, r)
            return
        if r.headers.get("idempotent-replayed") == "true" or not sent.answers_current_state:
            # a final answer is stored: the same status and bytes again, marked as a replay
            assert (r.status_code, r.content) == (sent.status, sent.content), (sent, r.text)
            assert r.headers.get("idempotent-replayed") == "true", r.headers
            return
        assert r.status_code in (200, 202), r.text  # the resource as it is now
        body = r.json()
        assert body["id"] == sent.resource_id, (sent, body)
        if sent.kind == "refund":
            refund = self._see_refund(body)
            assert (r.status_code == 202) == (refund.status == "processing"), (r.status_code, body)
        else:
            self._see_payment(body)

    @rule(pick=PICK, fault=FAULT)
    def cancel(self, pick: int, fault: str | None) -> None:
        payment = self._pick(self.payments, pick)
        if payment is None:
            return

        async def work() -> None:
            sent = Sent.cancel(payment.id)
            self.sent.append(sent)
            payment.cancel_asked = True
            armed = await self._arm(payment.adapter, CANCEL_OPERATIONS.get(payment.adapter, ()), fault)
            r = await self._call(sent)
            await self._disarm(armed)
            if r.status_code >= 400:
                code = r.json()["code"]
                now = await self._get_payment(payment.id)
                if code == "not_cancelable":
                    assert now.status == "failed", r.text
                elif code == "refund_in_progress":
                    assert await self._refund_in_flight(payment), r.text
                else:
                    assert code == "cancel_window_closed" and self.world.cancel_window_may_close, r.text
            elif r.status_code == 200:  # done: reversed, or a processing one the provider declined
                assert r.json()["status"] in ("canceled", "failed"), r.text
            self._first_answer(sent, r)

        self.run(work)

    async def _refund_in_flight(self, payment: PaymentView) -> bool:
        for rid in payment.refunds:
            r = await self.world.device.call("GET", f"/v1/refunds/{rid}")
            if self._see_refund(r.json()).status == "processing":
                return True
        return any(s.kind == "refund" and s.payment_id == payment.id and s.status is None for s in self.sent)

    @rule(pick=PICK, paid_only=st.booleans(), how=st.sampled_from(["part", "rest", "over"]), fault=FAULT)
    def refund(self, pick: int, paid_only: bool, how: str, fault: str | None) -> None:
        """``paid_only``: one the terminal saw succeed (else any: refusals are answers too)."""
        paid = {pid: p for pid, p in self.payments.items() if p.status == "succeeded"}
        payment = self._pick(paid if paid_only and paid else self.payments, pick)
        if payment is None:
            return
        refunds = [self.refunds[rid] for rid in payment.refunds]
        unknown = any(
            s.kind == "refund" and s.payment_id == payment.id and s.status is None for s in self.sent
        )
        low = sum(r.amount for r in refunds if r.status == "succeeded")
        high = sum(r.amount for r in refunds if r.status != "failed")
        left = max(payment.amount - high, 0)
        amount = {"part": max(1, left // 3), "rest": max(1, left), "over": left + 1}[how]

        async def work() -> None:
            sent = Sent.refund(payment.id, amount)
            self.sent.append(sent)
            operations = (REFUND_OPERATION[payment.adapter],) if payment.adapter in REFUND_OPERATION else ()
            armed = await self._arm(payment.adapter, operations, fault)
            r = await self._call(sent)
            await self._disarm(armed)
            if r.status_code >= 400:
                code = r.json()["code"]
                now = await self._get_payment(payment.id)
                if code == "not_refundable":
                    assert now.status != "succeeded" or now.cancel_asked, r.text
                else:
                    assert code == "refund_exceeds_amount", r.text
                    assert unknown or amount + high > payment.amount, (r.text, amount, high)
            else:
                assert amount + low <= payment.amount, (r.text, amount, low)
            self._first_answer(sent, r)

        self.run(work)

    @rule(
        pair=st.sampled_from(["one key twice", "two keys for one order", "cancel and refund", "two refunds"]),
        payer=PAYERS,
        amount=AMOUNTS,
        pick=PICK,
    )
    def at_once(self, pair: str, payer: str, amount: int, pick: int) -> None:
        """Two requests at the same moment (a terminal that retried too soon, two tills, a
        cancel racing a refund): each answer is one a request alone could get, and the books
        hold (checked after the step as after every step)."""
        payment = self._pick(self.payments, pick)
        if pair in ("cancel and refund", "two refunds") and payment is None:
            pair = "two keys for one order"

        async def work() -> None:
            if pair in ("one key twice", "two keys for one order"):
                order = self._new_order(payer, amount)
                first = self._pay_request(order)
                await self._with_face_token(first)
                second = (
                    first
                    if pair == "one key twice"
                    else Sent(**{**first.__dict__, "key": "k-" + secrets.token_hex(8)})
                )
            else:
                assert payment is not None
                left = payment.amount - sum(
                    self.refunds[r].amount for r in payment.refunds if self.refunds[r].status != "failed"
                )
                first = (
                    Sent.cancel(payment.id)
                    if pair == "cancel and refund"
                    else Sent.refund(payment.id, max(1, left))
                )
                second = Sent.refund(payment.id, max(1, left // 2 if pair == "cancel and refund" else left))
                payment.cancel_asked = payment.cancel_asked or first.kind == "cancel"
            for sent in {id(first): first, id(second): second}.values():
                self.sent.append(sent)
            answers = await asyncio.gather(self._call(first), self._call(second))
            allowed = {
                "pay": {"duplicate_order", "idempotency_key_in_use"},
                "cancel": {"refund_in_progress", "not_cancelable", "cancel_window_closed"},
                "refund": {"not_refundable", "refund_exceeds_amount"},
            }
            for sent, r in zip((first, second), answers, strict=True):
                if r.status_code >= 400:
                    assert r.status_code == 409 and r.json()["code"] in allowed[sent.kind], r.text
                if r.status_code == 409 and r.json()["code"] == "idempotency_key_in_use":
                    continue  # the other one is executing it: it has the answer
                if sent.status is None or sent.status >= 400:
                    self._first_answer(sent, r)
                elif r.status_code < 300:  # the same key's other answer: the same thing
                    assert r.json()["id"] == sent.resource_id, (sent, r.text)
            if first.kind == "pay":
                assert first.body is not None
                await self._discover(self.orders[first.body["merchant_order_id"]])

        self.run(work)

    @rule(pick=PICK)
    def query(self, pick: int) -> None:
        order = self._pick(self.orders, pick)
        if order is None:
            return

        async def work() -> None:
            await self._discover(order)
            for pid in order.payments:
                for rid in self.payments[pid].refunds:
                    r = await self.world.device.call("GET", f"/v1/refunds/{rid}")
                    assert r.status_code == 200, r.text
                    self._see_refund(r.json())

        self.run(work)

    # --- the providers -------------------------------------------------------------------------

    @rule(
        provider=st.sampled_from(sorted(OPERATIONS)),
        data=st.data(),
        action=st.sampled_from(FAULT_ACTIONS),
        trigger=st.sampled_from(["once", "twice", "three times", "at random"]),
    )
    def provider_fault(self, provider: str, data: st.DataObject, action: str, trigger: str) -> None:
        operation = data.draw(st.sampled_from(OPERATIONS[provider]), label="operation")
        rule_: dict[str, Any] = {"provider": provider, "operation": operation, "action": action}
        if action in ("delay", "delay_after_apply"):
            rule_["delay_ms"] = 1_500
        if trigger == "at random":
            rule_.update(times=-1, probability=0.3, seed=data.draw(st.integers(0, 2**16), label="seed"))
        else:
            rule_["times"] = {"once": 1, "twice": 2, "three times": 3}[trigger]
        self.run(lambda: self._fault(rule_))

    @rule(provider=st.sampled_from(sorted(QUERY_OPERATION)), lag_ms=st.sampled_from([500, 3_000, 600_000]))
    def query_lag(self, provider: str, lag_ms: int) -> None:
        """Applied, but queries do not see it for a while (600 s: past any recovery deadline)."""
        rule_ = {
            "provider": provider,
            "operation": QUERY_OPERATION[provider],
            "action": "query_lag",
            "delay_ms": lag_ms,
            "times": -1,
        }
        self.run(lambda: self._fault(rule_))

    async def _arm(self, provider: str | None, operations: tuple[str, ...], action: str | None) -> list[str]:
        """A fault rule on each of ``operations``, for the next call only."""
        if action is None or provider is None:
            return []
        armed = []
        for operation in operations:
            rule_: dict[str, Any] = {"provider": provider, "operation": operation, "action": action}
            if action in ("delay", "delay_after_apply"):
                rule_["delay_ms"] = 1_500
            armed.append(await self._fault(rule_))
        return armed

    async def _disarm(self, armed: list[str]) -> None:
        for rule_id in armed:  # (404 for a rule that fired: it is used up)
            await self.world.sandbox.delete(f"/_control/faults/{rule_id}")

    async def _fault(self, rule_: dict[str, Any]) -> str:
        r = await self.world.sandbox.post("/_control/faults", json=rule_)
        assert r.status_code == 200, r.text
        self.tally.faults += 1
        return str(r.json()["id"])

    @rule(
        provider=st.sampled_from(sorted(OPERATIONS)),
        offset=st.sampled_from([0, -120, 299, 301, -301, 900, 86_401]),
    )
    def clock_skew(self, provider: str, offset: int) -> None:
        """The e-card refuses requests more than 300 s off its clock; Alipay's day moves on (cancels
        are refused after 24 h, face tokens expire)."""

        async def work() -> None:
            r = await self.world.sandbox.post(f"/_control/clock/{provider}", json={"offset_seconds": offset})
            assert r.status_code == 200, r.text

        self.run(work)

    @rule(
        mode=st.sampled_from(["duplicate", "forged", "out_of_order", "delay", "drop"]),
        times=st.integers(1, 3),
    )
    def notification_fault(self, mode: str, times: int) -> None:
        """Alipay's asynchronous notifications, repeated, forged, reordered, late or lost."""

        async def work() -> None:
            spec = {"mode": mode, "delay_ms": 300, "times": times}
            r = await self.world.sandbox.post("/_control/alipay/notify-faults", json=spec)
            assert r.status_code == 200, r.text

        self.run(work)

    @rule()
    def notifications_arrive(self) -> None:
        self.run(self.world.drain)

    @rule()
    def providers_heal(self) -> None:
        self.run(lambda: heal(self.world.sandbox))

    # --- the gateway's processes ---------------------------------------------------------------

    @rule(advance=st.sampled_from([0.0, 2.0, 31.0, LONGEST_HOLD]))
    def time_passes(self, advance: float) -> None:
        """Recovery runs with the gateway's clock moved on (backoffs, holds, leases, deadlines)."""
        self.run(lambda: self.world.recover(advance))

    @rule(
        during=st.sampled_from(["pay", "cancel", "refund", "nothing"]),
        applied=st.booleans(),
        payer=PAYERS,
        amount=AMOUNTS,
        pick=PICK,
        then=st.sampled_from([4.0, 31.0]),
    )
    def crash_and_resume(
        self, during: str, applied: bool, payer: str, amount: int, pick: int, then: float
    ) -> None:
        """The gateway dies with a request in flight at the provider (its operation applied, or
        not yet), is started again on the same database, and recovery runs; the terminal then
        asks again with the same key. ``payer`` and ``amount`` are for a pay, ``pick`` chooses
        the payment for a cancel or a refund, ``then`` is how far the clock moves before recovery."""
        self._crash(during, payer, amount, pick, then, hold="delay_after_apply" if applied else "delay")

    @rule(
        during=st.sampled_from(["pay", "cancel", "refund"]),
        payer=PAYERS,
        amount=AMOUNTS,
        pick=PICK,
        after_ms=st.integers(0, 60),
    )
    def killed_mid_request(self, during: str, payer: str, amount: int, pick: int, after_ms: int) -> None:
        """The gateway dies ``after_ms`` into a request, wherever it is then: SIGKILLed by the long
        run mid transaction or mid call; in-process at its next provider call, or once it has
        answered."""
        self._crash(during, payer, amount, pick, 4.0, after_ms=after_ms)

    def _crash(
        self,
        during: str,
        payer: str,
        amount: int,
        pick: int,
        then: float,
        *,
        hold: str | None = None,
        after_ms: int = 0,
    ) -> None:
        if self.crashes >= self.world.crashes_per_run:
            return  # (a restart costs a fraction of a second: bounded in a bounded run)
        self.crashes += 1
        payment = self._pick(self.payments, pick)
        if during in ("cancel", "refund") and payment is None:
            during = "nothing"
        sent: Sent | None = None
        provider, operations = "ecard", ()
        if during == "pay":
            order = self._new_order(payer, amount)
            sent = self._pay_request(order)
            provider = order.payer.split(":")[0]
            operations = (PAY_OPERATION[provider],)
        elif payment is not None:
            provider = payment.adapter or "ecard"
            if during == "cancel":
                sent = Sent.cancel(payment.id)
                payment.cancel_asked = True
                operations = CANCEL_OPERATIONS[provider]
            else:
                sent = Sent.refund(payment.id, max(1, payment.amount // 4))
                operations = (REFUND_OPERATION[provider],)

        async def work() -> None:
            task: asyncio.Task[httpx.Response] | None = None
            rules = []
            if sent is not None:
                if sent.kind == "pay":
                    await self._with_face_token(sent)
                for operation in operations if hold is not None else ():
                    spec = {
                        "provider": provider,
                        "operation": operation,
                        "action": hold,
                        "delay_ms": 1_500,  # the gateway is dead long before that
                    }
                    rules.append(await self._fault(spec))
                self.sent.append(sent)
                task = asyncio.get_running_loop().create_task(self._call(sent))
                if hold is not None:
                    await self._until_the_provider_holds(task, rules)
                else:
                    await asyncio.wait({task}, timeout=after_ms / 1000)
                if task.done():  # it answered first (a refusal, or it was that quick)
                    self._first_answer(sent, task.result())
                    task = None
            answer = await self.world.crash(task)
            if answer is not None and sent is not None:  # it answered just before the end
                self._first_answer(sent, answer)
            self.tally.crashes += 1
            for rule_id in rules:
                await self.world.sandbox.delete(f"/_control/faults/{rule_id}")
            await self.world.recover(then)
            if sent is not None and sent.status is None:
                await self._retry(sent)

        self.run(work)

    async def _until_the_provider_holds(self, task: asyncio.Task[Any], rules: list[str]) -> None:
        for _ in range(600):
            if task.done():
                return
            r = await self.world.sandbox.get("/_control/events", params={"kind": "fault"})
            if any(e.get("rule_id") in rules for e in r.json()["events"]):
                await asyncio.sleep(0.01)  # past the apply, when it is a delay_after_apply
                return
            await asyncio.sleep(0.005)

    @staticmethod
    def _pick(items: dict[str, Any], pick: int) -> Any:
        """One of ``items`` by a drawn number (drawn whatever the state, so the draws of a run
        never depend on what the gateway answered)."""
        if not items:
            return None
        return list(items.values())[pick % len(items)]  # in the order they were first seen

    # --- invariants and the end ----------------------------------------------------------------

    @invariant()
    def the_books_hold(self) -> None:
        self.tally.steps += 1

        async def work() -> None:
            money_invariants(await self._books(), self.start, self.payments, self.refunds)

        self.run(work)

    @rule()
    def settle(self) -> None:
        self.run(self._settle)

    async def _settle(self) -> None:
        """Heal the providers, run recovery (moving the gateway's clock on) until nothing is in
        flight, then every gateway status must be what the providers hold."""
        self.tally.settles += 1
        await heal(self.world.sandbox)
        problems: list[str] = []
        for _ in range(self.world.settle_rounds):
            await self.world.drain()
            for sent in self.sent:
                if sent.status is None:
                    await self._retry(sent)
            for order in list(self.orders.values()):
                await self._discover(order)
            books = await self._books()
            for reference in books.refunds:  # a refund whose answer a crash took (refund id = reference)
                if reference not in self.refunds and not reference.endswith("-cancel"):
                    r = await self.world.device.call("GET", f"/v1/refunds/{reference}")
                    assert r.status_code == 200, (reference, r.text)
                    self._see_refund(r.json())
            payments, refunds = {}, {}
            for pid in self.payments:
                payments[pid] = (await self.world.device.call("GET", f"/v1/payments/{pid}")).json()
                self._see_payment(payments[pid])
            for rid in self.refunds:
                refunds[rid] = (await self.world.device.call("GET", f"/v1/refunds/{rid}")).json()
                self._see_refund(refunds[rid])
            problems = disagreements(books, payments, refunds)
            unanswered = self.world.waits_out_key_locks and any(s.status is None for s in self.sent)
            if not problems and not unanswered and not await self.world.pending():
                break
            await self.world.recover(LONGEST_HOLD)
        assert not problems, "after recovery settled, the gateway and the providers disagree:\n" + "\n".join(
            problems
        )
        if self.world.waits_out_key_locks:
            for sent in self.sent:
                assert sent.status is not None, f"a request never got an answer: {sent}"

    def teardown(self) -> None:
        try:
            if not self.broken:
                self.run(self._settle)
        finally:
            self.loop.run(self.world.close)
            self.loop.close()
