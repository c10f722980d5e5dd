"""Card management of the e-card system: loss report, its cancel, replacement, the blacklist.

Every status change is a blacklist change with its own version (docs/ecard-protocol.md, "Cards").
Plain synchronous functions over one merchant's state, like sandbox/ecard/ledger.py.
"""

from __future__ import annotations

from typing import Any, Literal

from sandbox.control import iso_utc
from sandbox.ecard.ledger import Outcome, fail
from sandbox.ecard.state import Card, Merchant


def _change(
    merchant: Merchant, card: Card, status: Literal["ACTIVE", "LOST"], now: float, reason: str
) -> tuple[str, dict[str, Any]]:
    card.status = status
    entry = merchant.add_change(card.card_no, status, now, reason)
    fields = {"card_no": card.card_no, "status": status, "version": entry.version, "reason": reason}
    return "ecard.card_status", fields


def _answer(merchant: Merchant, card: Card, changed: bool) -> dict[str, Any]:
    return {
        "result": "SUCCESS",
        "card_no": card.card_no,
        "status": card.status,
        "version": merchant.blacklist_version,
        "changed": changed,
    }


def report_lost(merchant: Merchant, card_no: str, now: float) -> Outcome:
    card = merchant.cards.get(card_no)
    if card is None:
        return fail("CARD_NOT_FOUND")
    if card.status == "LOST":
        return Outcome(200, _answer(merchant, card, False))
    event = _change(merchant, card, "LOST", now, "report_lost")
    return Outcome(200, _answer(merchant, card, True), [event])


def cancel_loss(merchant: Merchant, card_no: str, now: float) -> Outcome:
    card = merchant.cards.get(card_no)
    if card is None:
        return fail("CARD_NOT_FOUND")
    if card.replaced_by is not None:
        return fail("CARD_REPLACED")
    if card.status == "FROZEN":
        return fail("CARD_FROZEN")
    if card.status == "ACTIVE":
        return Outcome(200, _answer(merchant, card, False))
    event = _change(merchant, card, "ACTIVE", now, "cancel_loss")
    return Outcome(200, _answer(merchant, card, True), [event])


def replace(merchant: Merchant, old_card_no: str, new_card_no: str, now: float) -> Outcome:
    old = merchant.cards.get(old_card_no)
    if old is None:
        return fail("CARD_NOT_FOUND")

    def answer(changed: bool) -> dict[str, Any]:
        assert old is not None
        return {
            "result": "SUCCESS",
            "old_card_no": old_card_no,
            "new_card_no": new_card_no,
            "account_no": old.account_no,
            "status": "ACTIVE",
            "version": merchant.blacklist_version,
            "changed": changed,
        }

    if old.replaced_by == new_card_no:  # the same replacement again
        return Outcome(200, answer(False))
    if old.replaced_by is not None:
        return fail("CARD_REPLACED")
    if old.status == "FROZEN":
        return fail("CARD_FROZEN")
    if new_card_no in merchant.cards:
        return fail("CARD_EXISTS")
    events = []
    if old.status != "LOST":
        events.append(_change(merchant, old, "LOST", now, "replaced"))
    old.replaced_by = new_card_no
    # The PIN goes with the account holder; the wrong-PIN counter starts afresh.
    new = Card(new_card_no, old.account_no, old.student_ref, "LOST", old.pin)
    merchant.cards[new_card_no] = new
    events.append(_change(merchant, new, "ACTIVE", now, "issued"))
    fields = {"old_card_no": old_card_no, "new_card_no": new_card_no, "account_no": old.account_no}
    events.append(("ecard.card_replaced", fields))
    return Outcome(200, answer(True), events)


def blacklist(merchant: Merchant, since_version: int) -> Outcome:
    # A caller ahead of the provider (its list was reset) gets everything and rebuilds.
    start = since_version if since_version <= merchant.blacklist_version else 0
    changes = [
        {
            "version": entry.version,
            "card_no": entry.card_no,
            "status": entry.status,
            "at": iso_utc(entry.at),
            "reason": entry.reason,
        }
        for entry in merchant.blacklist[start:]
    ]
    return Outcome(200, {"result": "SUCCESS", "version": merchant.blacklist_version, "changes": changes})
