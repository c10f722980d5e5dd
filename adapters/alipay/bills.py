# ruff: noqa: RUF001  (full-width punctuation is part of Alipay's own column names)
"""Reading Alipay's trade bill: a zip of GBK CSVs, the detail list framed by ``#`` lines.

The file behind ``bill_download_url`` holds ``…_业务明细.csv`` (one line per payment, 业务类型
交易, and per refund, 退款) and ``…_业务明细(汇总).csv`` (totals per store). Only the detail list
is read, line by line from the zip member (a large school's day is ~100,000 lines); columns are
found by their header names, not their positions, since Alipay has added columns over the years.
Ids end with a tab in Alipay's files (spreadsheets keep them as text): fields are stripped.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator

from adapters.base import BillKind, BillRow, BillUnavailable
from adapters.bills import MALFORMED, beijing_time, yuan_to_fen

__all__ = ["parse_trade_bill"]

_DETAIL = "业务明细.csv"
_TRADE_NO, _OUT_TRADE_NO, _TYPE = "支付宝交易号", "商户订单号", "业务类型"
_FINISHED, _RECEIVED, _REQUEST_NO, _FEE = "完成时间", "商家实收（元）", "退款批次号/请求号", "服务费（元）"
_PAID, _REFUNDED = "交易", "退款"


def _detail_member(archive: zipfile.ZipFile) -> str:
    for name in archive.namelist():
        if name.endswith(_DETAIL):
            return name
    raise BillUnavailable(MALFORMED, "the zip holds no 业务明细.csv")


def _table_lines(text: io.TextIOBase) -> Iterator[str]:
    """The CSV lines between the ``#`` framing: the header, then the rows."""
    for line in text:
        if line.startswith("#"):
            continue
        if line.strip():
            yield line


def parse_trade_bill(content: bytes) -> Iterator[BillRow]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise BillUnavailable(MALFORMED, "the bill is not a zip") from None
    with archive, archive.open(_detail_member(archive)) as raw:
        text = io.TextIOWrapper(raw, encoding="gbk", newline="")
        reader = csv.reader(_table_lines(text))
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise BillUnavailable(MALFORMED, "the detail list has no header") from None
        try:
            needed = (_TRADE_NO, _OUT_TRADE_NO, _TYPE, _FINISHED, _RECEIVED)
            at = {name: header.index(name) for name in needed}
        except ValueError as exc:
            raise BillUnavailable(MALFORMED, f"the detail list lacks a column: {exc}") from None
        request_no = header.index(_REQUEST_NO) if _REQUEST_NO in header else None
        fee = header.index(_FEE) if _FEE in header else None
        try:
            for fields in reader:
                if len(fields) < len(header):
                    raise BillUnavailable(MALFORMED, "a detail line has too few fields")
                yield _row(fields, at, request_no, fee)
        except UnicodeDecodeError:
            raise BillUnavailable(MALFORMED, "the detail list is not GBK") from None


def _row(fields: list[str], at: dict[str, int], request_no: int | None, fee: int | None) -> BillRow:
    kind_text = fields[at[_TYPE]].strip()
    received = yuan_to_fen(fields[at[_RECEIVED]])
    number = fields[request_no].strip() if request_no is not None else ""
    if kind_text == _PAID:
        kind, amount, refund_reference = BillKind.PAYMENT, received, None
    elif kind_text == _REFUNDED and not number:
        # A refund line without a request number is what alipay.trade.cancel gave back.
        kind, amount, refund_reference = BillKind.REVERSAL, -received, None
    elif kind_text == _REFUNDED:
        kind, amount, refund_reference = BillKind.REFUND, -received, number
    else:
        raise BillUnavailable(MALFORMED, f"unknown 业务类型 {kind_text[:10]!r}")
    return BillRow(
        kind,
        reference=fields[at[_OUT_TRADE_NO]].strip(),
        amount=amount,
        refund_reference=refund_reference,
        fee=yuan_to_fen(fields[fee]) if fee is not None and fields[fee].strip() else None,
        provider_txn_id=fields[at[_TRADE_NO]].strip() or None,
        at=beijing_time(fields[at[_FINISHED]]),
    )
