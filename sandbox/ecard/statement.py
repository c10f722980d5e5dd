"""The e-card system's daily statement (对账单): every money movement of one local day.

Answered to a signed ``POST /v1/statement`` as ``text/csv`` (UTF-8), signed like every other
answer (the signature covers the file's bytes). The day is the e-card system's own calendar
day (UTC+8). A day's statement exists from the next day on; before that, or while a
``bill_late`` fault holds it, the answer is ``FAIL STATEMENT_NOT_READY``. Layout
(docs/ecard-protocol.md, "Daily statement"): ``#`` comment lines, a header, one line per
movement, and a ``#`` trailer with counts and totals::

    type,order_ref,refund_ref,txn_id,card_no,amount,booked_at,occurred_at

``type`` is CONSUME (an online consume), OFFLINE (an uploaded offline record posted that day),
REVERSE (a reverse of a consume: ``amount`` is what it gave back) or REFUND (``refund_ref`` is
the request's); ``amount`` is fen; ``card_no`` is masked to its last four digits.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from datetime import date, datetime

from sandbox.bills import BillFaults
from sandbox.control import iso_utc
from sandbox.ecard.ledger import Outcome
from sandbox.ecard.state import Merchant, local_date

HEADER = ["type", "order_ref", "refund_ref", "txn_id", "card_no", "amount", "booked_at", "occurred_at"]


@dataclass(frozen=True)
class Line:
    type: str
    order_ref: str
    refund_ref: str
    txn_id: str
    card_no: str
    amount: int
    at: float
    occurred_at: float

    def plus_one_fen(self) -> Line:
        return replace(self, amount=self.amount + 1)

    def renamed(self, reference: str) -> Line:
        return replace(self, order_ref=reference, txn_id=f"txn_{reference[-20:].lower()}")

    def cells(self) -> list[str]:
        masked = f"****{self.card_no[-4:]}" if self.card_no else ""
        return [
            self.type,
            self.order_ref,
            self.refund_ref,
            self.txn_id,
            masked,
            str(self.amount),
            iso_utc(self.at),
            iso_utc(self.occurred_at),
        ]


def _lines(merchant: Merchant, day: date) -> list[Line]:
    lines: list[Line] = []
    for order in merchant.orders.values():
        paid = order.txn_id is not None  # only a consume that moved money has a txn_id
        if paid and local_date(order.recorded_at) == day:
            kind = "OFFLINE" if order.source == "offline" else "CONSUME"
            occurred = order.recorded_at
            if order.consume_result and isinstance(order.consume_result.get("paid_at"), str):
                occurred = datetime.fromisoformat(order.consume_result["paid_at"]).timestamp()
            lines.append(
                Line(
                    kind,
                    order.order_ref,
                    "",
                    order.txn_id or "",
                    order.card_no or "",
                    order.amount,
                    order.recorded_at,
                    occurred,
                )
            )
        if order.reversed_at is not None and order.reversed_amount and local_date(order.reversed_at) == day:
            lines.append(
                Line(
                    "REVERSE",
                    order.order_ref,
                    "",
                    order.txn_id or "",
                    order.card_no or "",
                    order.reversed_amount,
                    order.reversed_at,
                    order.reversed_at,
                )
            )
    for refund in merchant.refunds.values():
        if local_date(refund.at) == day:
            order = merchant.orders[refund.order_ref]
            lines.append(
                Line(
                    "REFUND",
                    refund.order_ref,
                    refund.refund_ref,
                    order.txn_id or "",
                    order.card_no or "",
                    refund.amount,
                    refund.at,
                    refund.at,
                )
            )
    return sorted(lines, key=lambda line: line.at)


def statement(merchant: Merchant, day: date, now: float, faults: BillFaults) -> tuple[Outcome | None, bytes]:
    """(a FAIL to answer, b"") while the day's statement is not ready, else (None, the file)."""
    if day >= local_date(now) or faults.late:
        return Outcome(
            200, {"result": "FAIL", "code": "STATEMENT_NOT_READY", "message": "the statement is not ready"}
        ), b""
    lines = faults.apply(
        _lines(merchant, day),
        reference=lambda line: line.order_ref,
        plus_one_fen=Line.plus_one_fen,
        renamed=Line.renamed,
    )
    out = io.StringIO()
    out.write(f"# CampusPay sandbox e-card daily statement\n# merchant: {merchant.merchant_id}\n")
    out.write(f"# date: {day.isoformat()} (UTC+8)\n# generated: {iso_utc(now)}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(line.cells() for line in lines)
    totals = {
        kind: sum(line.amount for line in lines if line.type == kind)
        for kind in ("CONSUME", "OFFLINE", "REVERSE", "REFUND")
    }
    net = totals["CONSUME"] + totals["OFFLINE"] - totals["REVERSE"] - totals["REFUND"]
    summary = ", ".join(f"{kind.lower()}: {amount}" for kind, amount in totals.items())
    out.write(f"# lines: {len(lines)}, {summary}, net: {net}\n")
    return None, out.getvalue().encode("utf-8")
