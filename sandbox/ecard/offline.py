"""Offline consumption records uploaded later (docs/ecard-protocol.md, "Offline consumption records").

Each record is judged on its own, in order: rejected (not stored), a duplicate of a stored one,
held for review (stored, nothing moved) or posted (an order like any online consume).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sandbox.control import iso_utc
from sandbox.ecard.ledger import Outcome, debit, pin_required, subsidy_balance
from sandbox.ecard.models import OfflineRecord, OfflineUploadRequest
from sandbox.ecard.pipeline import validation_message
from sandbox.ecard.signing import TIMESTAMP_WINDOW_S
from sandbox.ecard.state import Merchant, OfflineStored, Order, local_date

Event = tuple[str, dict[str, Any]]


def _parse_moment(value: str) -> float | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def _stored_result(index: int, stored: OfflineStored, kind: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "index": index,
        "terminal_seq": stored.terminal_seq,
        "order_ref": stored.order_ref,
        "result": kind,
    }
    if kind == "duplicate":
        result["original_result"] = stored.result
    if stored.reason is not None:
        result["reason"] = stored.reason
    if stored.txn_id is not None:
        result.update(
            txn_id=stored.txn_id,
            amount=stored.amount,
            subsidy_used=stored.subsidy_used,
            balance_used=stored.balance_used,
        )
    return result


def _record(
    merchant: Merchant, terminal_id: str, index: int, raw: Any, now: float
) -> tuple[dict[str, Any], list[Event]]:
    result: dict[str, Any] = {"index": index}
    if isinstance(raw, dict):
        seq, ref = raw.get("terminal_seq"), raw.get("order_ref")
        if isinstance(seq, int) and not isinstance(seq, bool):
            result["terminal_seq"] = seq
        if isinstance(ref, str):
            result["order_ref"] = ref

    def rejected(reason: str, message: str | None = None) -> tuple[dict[str, Any], list[Event]]:
        result.update(result="rejected", reason=reason)
        if message is not None:
            result["message"] = message
        return result, []

    try:
        record = OfflineRecord.model_validate(raw)
    except ValidationError as exc:
        return rejected("malformed", validation_message(exc.errors(include_url=False)))
    occurred = _parse_moment(record.occurred_at)
    if occurred is None:
        return rejected("malformed", "occurred_at: not ISO 8601 with an offset")
    if occurred > now + TIMESTAMP_WINDOW_S:
        return rejected("occurred_in_future")
    key = (terminal_id, record.terminal_seq)
    stored = merchant.offline.get(key)
    if stored is not None:
        same = (stored.order_ref, stored.card_no, stored.amount, stored.occurred_at) == (
            record.order_ref,
            record.card_no,
            record.amount,
            occurred,
        )
        return (_stored_result(index, stored, "duplicate"), []) if same else rejected("sequence_reused")
    if record.order_ref in merchant.orders or record.order_ref in merchant.offline_refs:
        return rejected("order_ref_in_use")
    card = merchant.cards.get(record.card_no)
    if card is None:
        return rejected("card_not_found")

    day = local_date(occurred)
    stored = OfflineStored(
        terminal_id, record.terminal_seq, record.order_ref, record.card_no, record.amount, occurred, "posted"
    )
    if merchant.lost_at(card.card_no, occurred):
        stored.reason = "card_lost_before_record"
    elif card.status == "FROZEN":
        stored.reason = "card_frozen"
    elif pin_required(merchant, card, record.amount, day):
        stored.reason = "over_limit"  # online it would have needed the PIN the terminal could not check
    elif merchant.usable_subsidy(card.account_no, day) + merchant.balances[card.account_no] < record.amount:
        stored.reason = "insufficient_balance"
    merchant.offline[key] = stored
    fields: dict[str, Any] = {
        "terminal_id": terminal_id,
        "terminal_seq": record.terminal_seq,
        "order_ref": record.order_ref,
        "card_no": record.card_no,
        "amount": record.amount,
    }
    if stored.reason is not None:
        stored.result = "held_for_review"
        merchant.offline_refs[record.order_ref] = key
        return _stored_result(index, stored, stored.result), [
            ("ecard.offline_held", {**fields, "reason": stored.reason})
        ]

    stored.subsidy_used, stored.balance_used = debit(merchant, card.account_no, record.amount, day)
    stored.txn_id = f"txn_{secrets.token_hex(10)}"
    order = Order(
        record.order_ref, "SUCCESS", record.card_no, record.amount, record.currency, recorded_at=now
    )
    order.account_no, order.txn_id, order.day = card.account_no, stored.txn_id, day
    order.source = "offline"
    order.subsidy_used, order.balance_used = stored.subsidy_used, stored.balance_used
    balance = merchant.balances[card.account_no]
    # An online consume repeating this order_ref with the same details replays this success.
    order.consume_result = {
        "result": "SUCCESS",
        "order_ref": record.order_ref,
        "txn_id": order.txn_id,
        "status": "SUCCESS",
        "amount": record.amount,
        "balance_after": balance,
        "account_no": card.account_no,
        "paid_at": iso_utc(occurred),
        "subsidy_used": order.subsidy_used,
        "balance_used": order.balance_used,
        "subsidy_after": subsidy_balance(merchant, card.account_no),
        "meal_period": None,
    }
    merchant.orders[record.order_ref] = order
    debit_fields = {
        **fields,
        "account_no": card.account_no,
        "subsidy_used": order.subsidy_used,
        "balance_after": balance,
        "txn_id": order.txn_id,
        "source": "offline",
    }
    return _stored_result(index, stored, "posted"), [("ecard.debit", debit_fields)]


def upload(merchant: Merchant, req: OfflineUploadRequest, now: float) -> Outcome:
    results: list[dict[str, Any]] = []
    events: list[Event] = []
    for index, raw in enumerate(req.records):
        result, more = _record(merchant, req.terminal_id, index, raw, now)
        results.append(result)
        events.extend(more)
    body = {"result": "SUCCESS", "terminal_id": req.terminal_id, "results": results}
    return Outcome(200, body, events)


def stored_records(merchant: Merchant) -> list[dict[str, Any]]:
    """Every stored offline record and its result, for the control plane."""
    return [
        {
            "terminal_id": s.terminal_id,
            "terminal_seq": s.terminal_seq,
            "order_ref": s.order_ref,
            "card_no": s.card_no,
            "amount": s.amount,
            "occurred_at": iso_utc(s.occurred_at),
            "result": s.result,
            "reason": s.reason,
            "txn_id": s.txn_id,
        }
        for s in merchant.offline.values()
    ]
