"""Reading the e-card system's daily statement (docs/ecard-protocol.md, "Daily statement").

UTF-8 CSV: ``#`` comment lines, the header
``type,order_ref,refund_ref,txn_id,card_no,amount,booked_at,occurred_at``, one line per money
movement, a ``#`` trailer. Amounts are fen. Columns are found by name, so a vendor adding one
breaks nothing; lines are read one at a time (a large school's day is ~100,000 of them).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime

from adapters.base import BillKind, BillRow, BillUnavailable
from adapters.bills import MALFORMED

__all__ = ["parse_statement"]

_KINDS = {
    "CONSUME": BillKind.PAYMENT,
    "OFFLINE": BillKind.OFFLINE,
    "REVERSE": BillKind.REVERSAL,
    "REFUND": BillKind.REFUND,
}
_NEEDED = ("type", "order_ref", "refund_ref", "txn_id", "amount", "booked_at")


def _table_lines(text: io.TextIOBase) -> Iterator[str]:
    for line in text:
        if not line.startswith("#") and line.strip():
            yield line


def _time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BillUnavailable(MALFORMED, f"not a time: {text[:25]!r}") from None


def parse_statement(content: bytes) -> Iterator[BillRow]:
    text = io.TextIOWrapper(io.BytesIO(content), encoding="utf-8", newline="")
    reader = csv.reader(_table_lines(text))
    try:
        header = next(reader)
    except StopIteration:
        raise BillUnavailable(MALFORMED, "the statement has no header") from None
    except UnicodeDecodeError:
        raise BillUnavailable(MALFORMED, "the statement is not UTF-8") from None
    try:
        at = {name: header.index(name) for name in _NEEDED}
    except ValueError as exc:
        raise BillUnavailable(MALFORMED, f"the statement lacks a column: {exc}") from None
    try:
        for fields in reader:
            if len(fields) < len(header):
                raise BillUnavailable(MALFORMED, "a statement line has too few fields")
            kind = _KINDS.get(fields[at["type"]])
            if kind is None:
                raise BillUnavailable(MALFORMED, f"unknown line type {fields[at['type']][:12]!r}")
            amount = fields[at["amount"]]
            if not amount.isdigit():
                raise BillUnavailable(MALFORMED, f"not an amount in fen: {amount[:20]!r}")
            yield BillRow(
                kind,
                reference=fields[at["order_ref"]],
                amount=int(amount),
                refund_reference=fields[at["refund_ref"]] or None if kind is BillKind.REFUND else None,
                provider_txn_id=fields[at["txn_id"]] or None,
                at=_time(fields[at["booked_at"]]),
            )
    except UnicodeDecodeError:
        raise BillUnavailable(MALFORMED, "the statement is not UTF-8") from None
