"""The bank's settlement file, UnionPay style: what ``fileTransRequest.do`` (txnType 76) serves.

A merchant asks for one settlement day (``settleDate``, MMDD, the bank's Beijing calendar day)
and gets ``fileContent``: the base64 of a zlib-deflated zip (how UnionPay's SDK decodes it)
holding one fixed-width text file, ``INN<yymmdd>88ZM_<merId>``, one line per transaction that
settled that day, fields separated by one space. The column set is the sandbox's own reading of
UnionPay's merchant file (no primary source gives the full layout; docs/bank-protocol.md):

    txnCode(3) traceNo(6) traceTime(10) accNo(19) txnAmt(12) orderId(32) queryId(21)
    origQryId(21) settleDate(4) txnTime(14) fee(12) reqReserved(up to 64, last, may be empty)

``txnCode`` is S22 (consume), S32 (void) or S30 (refund); amounts are fen, zero-padded;
``accNo`` is masked; text fields are left-justified and space-padded. A day whose file does not
exist yet (or is held by a ``bill_late`` fault) answers respCode 98.
"""

from __future__ import annotations

import base64
import io
import zipfile
import zlib
from dataclasses import dataclass, replace
from datetime import date, datetime

from sandbox.bank.state import BankState, Merchant, masked
from sandbox.bills import BillFaults

TXN_CODES = {"01": "S22", "31": "S32", "04": "S30"}
WIDTHS = (3, 6, 10, 19, 12, 32, 21, 21, 4, 14, 12)


@dataclass(frozen=True)
class Line:
    code: str
    trace_no: str
    trace_time: str
    acc_no: str
    amount: int
    order_id: str
    query_id: str
    orig_query_id: str
    settle_date: str
    txn_time: str
    req_reserved: str = ""  # echoed from the request, as UnionPay's merchant files carry it

    def plus_one_fen(self) -> Line:
        return replace(self, amount=self.amount + 1)

    def renamed(self, reference: str) -> Line:
        return replace(self, order_id=reference[:32], query_id=f"{self.query_id[:14]}9{self.query_id[-6:]}")

    def text(self) -> str:
        cells = (
            self.code,
            self.trace_no,
            self.trace_time,
            self.acc_no,
            f"{self.amount:012d}",
            self.order_id,
            self.query_id,
            self.orig_query_id,
            self.settle_date,
            self.txn_time,
            f"{0:012d}",  # the sandbox charges no fee
        )
        fixed = " ".join(cell.ljust(width) for cell, width in zip(cells, WIDTHS, strict=True))
        return f"{fixed} {self.req_reserved}".rstrip()


def settle_day(settle_date: str, now: datetime) -> date | None:
    """The calendar day a MMDD settleDate names: the latest such day not after today."""
    try:
        month, day = int(settle_date[:2]), int(settle_date[2:])
        found = date(now.year, month, day)
    except ValueError:
        try:  # 29 February of a year that has none: the last leap year's
            found = date(now.year - 1, int(settle_date[:2]), int(settle_date[2:]))
        except ValueError:
            return None
    return found if found <= now.date() else found.replace(year=found.year - 1)


def lines(state: BankState, merchant: Merchant, day: date) -> list[Line]:
    wanted = day.strftime("%Y%m%d")
    found = []
    for txn in state.orders.values():
        if txn.mer_id != merchant.mer_id or txn.resp_code != "00" or txn.settle_day != wanted:
            continue
        if txn.txn_type not in TXN_CODES:
            continue
        found.append(
            Line(
                TXN_CODES[txn.txn_type],
                txn.extras.get("traceNo", ""),
                txn.extras.get("traceTime", ""),
                masked(txn.acc_no) if txn.acc_no else "",
                txn.amount,
                txn.order_id,
                txn.query_id,
                txn.orig_query_id or "",
                txn.extras.get("settleDate", ""),
                txn.txn_time,
                txn.details.get("reqReserved", "") if txn.txn_type != "79" else "",
            )
        )
    return sorted(found, key=lambda line: line.query_id)


def settlement_file(
    state: BankState, merchant: Merchant, day: date, now: datetime, faults: BillFaults
) -> dict[str, str] | None:
    """The answer fields (fileName, fileContent), or None while the day's file does not exist."""
    if day >= now.date() or faults.late:
        return None
    rows = faults.apply(
        lines(state, merchant, day),
        reference=lambda line: line.order_id,
        plus_one_fen=Line.plus_one_fen,
        renamed=Line.renamed,
    )
    name = f"INN{day.strftime('%y%m%d')}88ZM_{merchant.mer_id}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, "".join(f"{row.text()}\r\n" for row in rows).encode("utf-8"))
    content = base64.b64encode(zlib.compress(buffer.getvalue())).decode("ascii")
    return {"fileName": f"{merchant.mer_id}_{day.strftime('%Y%m%d')}.zip", "fileContent": content}


__all__ = ["Line", "settle_day", "settlement_file"]
