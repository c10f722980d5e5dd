"""The e-card system's business rules: consume, query, reverse, refund, card status.

Plain synchronous functions over one merchant's state; the router calls them holding the
merchant's lock and turns each Outcome into a signed response plus event-log entries.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from sandbox.control import iso_utc
from sandbox.ecard.models import ConsumeRequest, RefundRequest
from sandbox.ecard.state import Card, Merchant, Order, Refund

MESSAGES = {
    "CARD_NOT_FOUND": "no such card",
    "CARD_LOST": "the card is reported lost",
    "CARD_FROZEN": "the card is frozen",
    "INSUFFICIENT_BALANCE": "the balance does not cover the amount",
    "PIN_REQUIRED": "this payment needs the card PIN",
    "PIN_INVALID": "wrong PIN",
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


def pin_required(card: Card, amount: int) -> bool:
    """Whether a payment must carry the card's PIN.

    Per-payment and daily limits above which the PIN becomes mandatory are not modelled yet, so
    no payment requires one; a PIN that is given is still checked (PIN_INVALID).
    """
    return False


def _refusal(merchant: Merchant, req: ConsumeRequest) -> str | None:
    card = merchant.cards.get(req.card_no)
    if card is None:
        return "CARD_NOT_FOUND"
    if card.status == "LOST":
        return "CARD_LOST"
    if card.status == "FROZEN":
        return "CARD_FROZEN"
    if card.pin is not None and req.pin is not None and not hmac.compare_digest(card.pin, req.pin):
        return "PIN_INVALID"
    if card.pin is not None and req.pin is None and pin_required(card, req.amount):
        return "PIN_REQUIRED"
    if merchant.balances[card.account_no] < req.amount:
        return "INSUFFICIENT_BALANCE"
    return None


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

    code = _refusal(merchant, req)
    order = Order(req.order_ref, "FAILED", req.card_no, req.amount, req.currency, code=code)
    merchant.orders[req.order_ref] = order
    if code is not None:
        order.consume_result = fail(code, req.order_ref).body
        fields = {"order_ref": req.order_ref, "card_no": req.card_no, "amount": req.amount, "code": code}
        return Outcome(200, order.consume_result, [("ecard.decline", fields)])

    card = merchant.cards[req.card_no]
    merchant.balances[card.account_no] -= req.amount
    order.status, order.account_no = "SUCCESS", card.account_no
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
    }
    debit = {
        "order_ref": req.order_ref,
        "card_no": req.card_no,
        "account_no": card.account_no,
        "amount": req.amount,
        "balance_after": balance,
        "txn_id": order.txn_id,
    }
    return Outcome(200, order.consume_result, [("ecard.debit", debit)])


def query(merchant: Merchant, order_ref: str) -> Outcome:
    order = merchant.orders.get(order_ref)
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


def reverse(merchant: Merchant, order_ref: str) -> Outcome:
    order = merchant.orders.get(order_ref)
    events: list[tuple[str, dict[str, Any]]] = []
    if order is None:
        # Recorded so a consume still in flight is refused when it lands (ORDER_REVERSED).
        order = merchant.orders[order_ref] = Order(order_ref, "REVERSED")
        events.append(("ecard.reverse", {"order_ref": order_ref, "amount": 0, "prior_status": "NOT_FOUND"}))
    elif order.status == "SUCCESS":
        assert order.account_no is not None  # a SUCCESS order always has its account
        order.reversed_amount = order.amount - order.refunded
        merchant.balances[order.account_no] += order.reversed_amount
        order.status = "REVERSED"
        fields = {
            "order_ref": order_ref,
            "card_no": order.card_no,
            "account_no": order.account_no,
            "amount": order.reversed_amount,
            "balance_after": merchant.balances[order.account_no],
            "prior_status": "SUCCESS",
        }
        events.append(("ecard.reverse", fields))
    body = {
        "result": "SUCCESS",
        "order_ref": order_ref,
        "status": order.status,
        "reversed_amount": order.reversed_amount,
    }
    return Outcome(200, body, events)


def refund(merchant: Merchant, req: RefundRequest) -> Outcome:
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
    merchant.balances[order.account_no] += req.amount
    balance = merchant.balances[order.account_no]
    result = {
        "result": "SUCCESS",
        "order_ref": req.order_ref,
        "refund_ref": req.refund_ref,
        "amount": req.amount,
        "refunded_total": order.refunded,
        "balance_after": balance,
    }
    merchant.refunds[req.refund_ref] = Refund(req.refund_ref, req.order_ref, req.amount, result)
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
    body = {
        "result": "SUCCESS",
        "card_no": card.card_no,
        "status": card.status,
        "account_no": card.account_no,
        "student_ref": card.student_ref,
        "balance": merchant.balances[card.account_no],
    }
    return Outcome(200, body)
