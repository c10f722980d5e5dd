"""The e-card system's business rules: consume, query, reverse, refund, card status.

Plain synchronous functions over one merchant's state; the router calls them holding the
merchant's lock and turns each Outcome into a signed response plus event-log entries.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sandbox.control import iso_utc
from sandbox.ecard.models import ConsumeRequest, RefundRequest
from sandbox.ecard.state import PIN_ATTEMPTS, Card, Merchant, Order, Refund, local_date

MESSAGES = {
    "CARD_NOT_FOUND": "no such card",
    "CARD_LOST": "the card is reported lost",
    "CARD_FROZEN": "the card is frozen",
    "INSUFFICIENT_BALANCE": "the balance does not cover the amount",
    "PIN_REQUIRED": "this payment needs the card PIN",
    "PIN_INVALID": "wrong PIN",
    "PIN_LOCKED": f"the PIN is locked after {PIN_ATTEMPTS} wrong attempts; unlock it at the card office",
    "OUTSIDE_MEAL_PERIOD": "this store sells meals only during meal periods, or not this meal now",
    "PRICE_MISMATCH": "the amount is not this meal period's fixed price at this store",
    "CARD_EXISTS": "the new card number is already a card",
    "CARD_REPLACED": "the card was replaced by another card",
    "ORDER_CONFLICT": "the reference is already used with other details",
    "ORDER_REVERSED": "the order was reversed; it can no longer be paid",
    "ORDER_NOT_FOUND": "no such order",
    "REFUND_EXCEEDS_AMOUNT": "refunds would exceed what was paid",
    "NOT_REFUNDABLE": "only a successful order can be refunded",
}


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (kind, fields)


def fail(code: str, order_ref: str | None = None) -> Outcome:
    body: dict[str, Any] = {"result": "FAIL", "code": code, "message": MESSAGES[code]}
    if order_ref is not None:
        body["order_ref"] = order_ref
    return Outcome(409 if code == "ORDER_CONFLICT" else 200, body)


def pin_required(merchant: Merchant, card: Card, amount: int, day: date) -> bool:
    """Whether a payment must carry the card's PIN: over the account's per-payment threshold, or
    over its daily threshold together with what it spent that local day."""
    limits = merchant.limits.get(card.account_no)
    if limits is None:
        return False
    if limits.per_payment is not None and amount > limits.per_payment:
        return True
    spent = merchant.daily_spent.get((card.account_no, day), 0)
    return limits.daily is not None and spent + amount > limits.daily


def _pin_refusal(card: Card, given: str | None, needed: bool) -> str | None:
    """Checks a PIN that is sent (counting wrong ones) or needed; None when the PIN is fine."""
    if card.pin is None:
        return "PIN_REQUIRED" if needed else None  # nothing to check against
    if given is None:
        if not needed:
            return None
        return "PIN_LOCKED" if card.pin_locked else "PIN_REQUIRED"
    if card.pin_locked:
        return "PIN_LOCKED"
    if hmac.compare_digest(card.pin, given):
        card.pin_failures = 0
        return None
    card.pin_failures += 1
    if card.pin_failures >= PIN_ATTEMPTS:
        card.pin_locked = True
        return "PIN_LOCKED"
    return "PIN_INVALID"


def _meal_rules(merchant: Merchant, req: ConsumeRequest, now: float) -> tuple[str | None, str | None]:
    """(refusal code or None, the meal period to report) for a consume at this moment."""
    period = merchant.current_period(now)
    name = period.name if period is not None else None
    store = merchant.stores.get(req.store_ref) if req.store_ref is not None else None
    reported = name if store is not None or req.meal_period is not None else None
    if req.meal_period is not None and req.meal_period != name:
        return "OUTSIDE_MEAL_PERIOD", reported
    if store is not None:
        if store.meal_periods_only and name is None:
            return "OUTSIDE_MEAL_PERIOD", reported
        price = store.fixed_prices.get(name) if name is not None else None
        if price is not None and req.amount != price:
            return "PRICE_MISMATCH", reported
    return None, reported


def _refusal(merchant: Merchant, req: ConsumeRequest, now: float) -> tuple[str | None, str | None]:
    """(refusal code or None, meal period to report); checks in the documented order."""
    card = merchant.cards.get(req.card_no)
    if card is None:
        return "CARD_NOT_FOUND", None
    if card.status == "LOST":
        return "CARD_LOST", None
    if card.status == "FROZEN":
        return "CARD_FROZEN", None
    code, period = _meal_rules(merchant, req, now)
    if code is not None:
        return code, period
    day = local_date(now)
    code = _pin_refusal(card, req.pin, pin_required(merchant, card, req.amount, day))
    if code is not None:
        return code, period
    if merchant.usable_subsidy(card.account_no, day) + merchant.balances[card.account_no] < req.amount:
        return "INSUFFICIENT_BALANCE", period
    return None, period


def debit(merchant: Merchant, account_no: str, amount: int, day: date) -> tuple[int, int]:
    """Takes `amount` from the account, the subsidy valid on `day` first: (subsidy, balance) used."""
    from_subsidy = min(amount, merchant.usable_subsidy(account_no, day))
    if from_subsidy:
        merchant.subsidies[account_no].amount -= from_subsidy
    merchant.balances[account_no] -= amount - from_subsidy
    key = (account_no, day)
    merchant.daily_spent[key] = merchant.daily_spent.get(key, 0) + amount
    return from_subsidy, amount - from_subsidy


def subsidy_balance(merchant: Merchant, account_no: str) -> int:
    wallet = merchant.subsidies.get(account_no)
    return wallet.amount if wallet is not None else 0


def _give_back(merchant: Merchant, order: Order, amount: int, today: date) -> dict[str, int]:
    """Returns `amount` of an order where it came from, subsidy part first (docs: Subsidy wallet)."""
    assert order.account_no is not None  # only SUCCESS orders give back, and they have an account
    from_subsidy = min(amount, order.subsidy_used - order.subsidy_returned)
    order.subsidy_returned += from_subsidy
    restored = forfeited = 0
    if from_subsidy:
        wallet = merchant.subsidies.get(order.account_no)
        if wallet is not None and wallet.valid_on(today):
            wallet.amount += from_subsidy
            restored = from_subsidy
        else:
            forfeited = from_subsidy  # back to the funder: an expired subsidy is not cash
    merchant.balances[order.account_no] += amount - from_subsidy
    return {
        "subsidy_restored": restored,
        "balance_restored": amount - from_subsidy,
        "subsidy_forfeited": forfeited,
    }


def consume(merchant: Merchant, req: ConsumeRequest, now: float) -> Outcome:
    order = merchant.orders.get(req.order_ref)
    if order is not None:
        if order.card_no is not None and (order.card_no, order.amount, order.currency) != (
            req.card_no,
            req.amount,
            req.currency,
        ):
            return fail("ORDER_CONFLICT", req.order_ref)
        # Even a replay of a consume that once succeeded is refused after a reverse, so the
        # caller never reads "paid" for money that was given back.
        if order.status == "REVERSED" or order.consume_result is None:
            return fail("ORDER_REVERSED", req.order_ref)
        return Outcome(200, order.consume_result)
    if req.order_ref in merchant.offline_refs:  # a held offline record owns it
        return fail("ORDER_CONFLICT", req.order_ref)

    code, period = _refusal(merchant, req, now)
    order = Order(req.order_ref, "FAILED", req.card_no, req.amount, req.currency, code=code, recorded_at=now)
    merchant.orders[req.order_ref] = order
    if code is not None:
        order.consume_result = fail(code, req.order_ref).body
        fields = {"order_ref": req.order_ref, "card_no": req.card_no, "amount": req.amount, "code": code}
        return Outcome(200, order.consume_result, [("ecard.decline", fields)])

    card = merchant.cards[req.card_no]
    day = local_date(now)
    order.subsidy_used, order.balance_used = debit(merchant, card.account_no, req.amount, day)
    order.status, order.account_no, order.day = "SUCCESS", card.account_no, day
    order.txn_id = f"txn_{secrets.token_hex(10)}"
    balance = merchant.balances[card.account_no]
    order.consume_result = {
        "result": "SUCCESS",
        "order_ref": req.order_ref,
        "txn_id": order.txn_id,
        "status": "SUCCESS",
        "amount": req.amount,
        "balance_after": balance,
        "account_no": card.account_no,
        "paid_at": iso_utc(now),
        "subsidy_used": order.subsidy_used,
        "balance_used": order.balance_used,
        "subsidy_after": subsidy_balance(merchant, card.account_no),
        "meal_period": period,
    }
    debit_fields = {
        "order_ref": req.order_ref,
        "card_no": req.card_no,
        "account_no": card.account_no,
        "amount": req.amount,
        "subsidy_used": order.subsidy_used,
        "balance_after": balance,
        "txn_id": order.txn_id,
    }
    return Outcome(200, order.consume_result, [("ecard.debit", debit_fields)])


def query(merchant: Merchant, order_ref: str, *, hidden: bool = False) -> Outcome:
    """What happened to an order; `hidden` answers as if it had never arrived (query_lag)."""
    order = None if hidden else merchant.orders.get(order_ref)
    if order is None:
        body: dict[str, Any] = {"status": "NOT_FOUND", "amount": 0, "refunded_amount": 0}
    else:
        body = {
            "status": order.status,
            "amount": order.amount,
            "refunded_amount": order.refunded + order.reversed_amount,
        }
        if order.txn_id is not None:
            body["txn_id"] = order.txn_id
        if order.code is not None:
            body["code"] = order.code
    return Outcome(200, {"result": "SUCCESS", "order_ref": order_ref, **body})


def reverse(merchant: Merchant, order_ref: str, now: float) -> Outcome:
    order = merchant.orders.get(order_ref)
    events: list[tuple[str, dict[str, Any]]] = []
    if order is None:
        # Recorded so a consume still in flight is refused when it lands (ORDER_REVERSED).
        order = merchant.orders[order_ref] = Order(order_ref, "REVERSED", recorded_at=now)
        events.append(("ecard.reverse", {"order_ref": order_ref, "amount": 0, "prior_status": "NOT_FOUND"}))
    elif order.status == "SUCCESS":
        assert order.account_no is not None  # a SUCCESS order always has its account
        order.reversed_amount = order.amount - order.refunded
        order.reverse_split = _give_back(merchant, order, order.reversed_amount, local_date(now))
        if order.day is not None:  # a reversed payment no longer counts towards its day
            key = (order.account_no, order.day)
            merchant.daily_spent[key] = merchant.daily_spent.get(key, 0) - order.amount
        order.status = "REVERSED"
        order.reversed_at = now
        fields = {
            "order_ref": order_ref,
            "card_no": order.card_no,
            "account_no": order.account_no,
            "amount": order.reversed_amount,
            "balance_after": merchant.balances[order.account_no],
            "prior_status": "SUCCESS",
        }
        events.append(("ecard.reverse", fields))
    body: dict[str, Any] = {
        "result": "SUCCESS",
        "order_ref": order_ref,
        "status": order.status,
        "reversed_amount": order.reversed_amount,
    }
    if order.subsidy_used:
        body.update(
            order.reverse_split or {"subsidy_restored": 0, "balance_restored": 0, "subsidy_forfeited": 0}
        )
    return Outcome(200, body, events)


def refund(merchant: Merchant, req: RefundRequest, now: float) -> Outcome:
    done = merchant.refunds.get(req.refund_ref)
    if done is not None:
        if (done.order_ref, done.amount) != (req.order_ref, req.amount):
            return fail("ORDER_CONFLICT", req.order_ref)
        return Outcome(200, done.result)
    # Refusals are not stored under the refund_ref: nothing moved, so a retry is judged afresh.
    order = merchant.orders.get(req.order_ref)
    if order is None:
        return fail("ORDER_NOT_FOUND", req.order_ref)
    if order.status != "SUCCESS":
        return fail("NOT_REFUNDABLE", req.order_ref)
    if order.refunded + req.amount > order.amount:
        return fail("REFUND_EXCEEDS_AMOUNT", req.order_ref)
    assert order.account_no is not None  # a SUCCESS order always has its account
    order.refunded += req.amount
    split = _give_back(merchant, order, req.amount, local_date(now))
    balance = merchant.balances[order.account_no]
    result: dict[str, Any] = {
        "result": "SUCCESS",
        "order_ref": req.order_ref,
        "refund_ref": req.refund_ref,
        "amount": req.amount,
        "refunded_total": order.refunded,
        "balance_after": balance,
    }
    if order.subsidy_used:
        result.update(split, subsidy_after=subsidy_balance(merchant, order.account_no))
    merchant.refunds[req.refund_ref] = Refund(req.refund_ref, req.order_ref, req.amount, result, now)
    fields = {
        "order_ref": req.order_ref,
        "refund_ref": req.refund_ref,
        "card_no": order.card_no,
        "account_no": order.account_no,
        "amount": req.amount,
        "refunded_total": order.refunded,
        "balance_after": balance,
    }
    return Outcome(200, result, [("ecard.refund", fields)])


def card_info(merchant: Merchant, card_no: str) -> Outcome:
    card = merchant.cards.get(card_no)
    if card is None:
        return fail("CARD_NOT_FOUND")
    body: dict[str, Any] = {
        "result": "SUCCESS",
        "card_no": card.card_no,
        "status": card.status,
        "account_no": card.account_no,
        "student_ref": card.student_ref,
        "balance": merchant.balances[card.account_no],
    }
    wallet = merchant.subsidies.get(card.account_no)
    if wallet is not None:
        body["subsidy"] = {
            "amount": wallet.amount,
            "valid_from": wallet.valid_from.isoformat(),
            "valid_to": wallet.valid_to.isoformat(),
        }
    if card.replaced_by is not None:
        body["replaced_by"] = card.replaced_by
    if card.pin_locked:
        body["pin_locked"] = True
    return Outcome(200, body)
