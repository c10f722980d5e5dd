# ruff: noqa: RUF001  (full-width punctuation is part of Alipay's own column names)
"""Bill parsers: Alipay's trade bill (zip of GBK CSVs) and the e-card's daily statement, read
into neutral rows. Files are built here in each provider's published layout, so the parsers are
checked against the format, not only against our sandbox (which tests/unit/adapters/
test_alipay_sandbox.py::test_download_bill covers)."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta, timezone

import pytest

from adapters.alipay.bills import parse_trade_bill
from adapters.base import BillKind, BillRow, BillUnavailable
from adapters.bills import yuan_to_fen
from adapters.ecard.statement import parse_statement

pytestmark = pytest.mark.unit

BEIJING = timezone(timedelta(hours=8))

# Alipay's trade bill detail columns, as its downloaded files carry them.
HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,"
    "对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
    "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,"
    "退款批次号/请求号,服务费（元）,分润（元）,备注"
)


def _line(
    trade_no: str, out_trade_no: str, kind: str, received: str, request_no: str = "", fee: str = ""
) -> str:
    fields = [
        f"{trade_no}\t",
        f"{out_trade_no}\t",
        kind,
        "午餐",
        "2026-03-01 11:58:01",
        "2026-03-01 11:58:03",
    ]
    fields += ["store_1", "一食堂", "", "dev_1", "138****0000", received.lstrip("-"), received]
    fields += ["0.00"] * 5 + ["", "0.00", "0.00", request_no, fee, "0.00", ""]
    return ",".join(fields)


def _alipay_bill(
    lines: list[str], *, header: str = HEADER, member: str = "20880000_20260301_业务明细.csv"
) -> bytes:
    text = "\r\n".join(
        [
            "#支付宝业务明细查询",
            "#账号：[20880000000000000156]",
            "#起始日期：[2026年03月01日 00:00:00]   终止日期：[2026年03月02日 00:00:00]",
            "#-----------------------------------------业务明细列表----------------------------------------",
            header,
            *lines,
            "#-----------------------------------------业务明细列表结束------------------------------------",
            "#交易合计：2笔，商家实收共12.50元",
            "#导出时间：[2026年03月02日 09:00:00]",
        ]
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, text.encode("gbk"))
        archive.writestr("20880000_20260301_业务明细(汇总).csv", "#汇总\r\n".encode("gbk"))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("text", "fen"), [("12.50", 1250), ("-3.1", -310), ("0", 0), (" 1,234.05 ", 123405), ("-0.01", -1)]
)
def test_yuan_is_parsed_exactly(text: str, fen: int) -> None:
    assert yuan_to_fen(text) == fen


@pytest.mark.parametrize("text", ["0.001", "abc", "NaN", "Infinity", "", "1e400"])
def test_what_is_not_a_bill_amount_is_refused(text: str) -> None:
    with pytest.raises(BillUnavailable) as refusal:
        yuan_to_fen(text)
    assert refusal.value.code == "MALFORMED_BILL"


def test_alipay_trade_bill_rows() -> None:
    bill = _alipay_bill(
        [
            _line("2026030122001", "ref_a", "交易", "12.50", fee="0.08"),
            _line("2026030122001", "ref_a", "退款", "-2.50", request_no="rfd_1"),
            _line("2026030122002", "ref_b", "交易", "3.00"),
            _line("2026030122002", "ref_b", "退款", "-3.00"),  # alipay.trade.cancel: no request number
        ]
    )
    rows = parse_trade_bill(bill)
    assert iter(rows) is rows  # streamed line by line, never a list
    assert list(rows) == [
        BillRow(
            BillKind.PAYMENT,
            "ref_a",
            1250,
            fee=8,
            provider_txn_id="2026030122001",
            at=datetime(2026, 3, 1, 11, 58, 3, tzinfo=BEIJING),
        ),
        BillRow(
            BillKind.REFUND,
            "ref_a",
            250,
            refund_reference="rfd_1",
            provider_txn_id="2026030122001",
            at=datetime(2026, 3, 1, 11, 58, 3, tzinfo=BEIJING),
        ),
        BillRow(
            BillKind.PAYMENT,
            "ref_b",
            300,
            provider_txn_id="2026030122002",
            at=datetime(2026, 3, 1, 11, 58, 3, tzinfo=BEIJING),
        ),
        BillRow(
            BillKind.REVERSAL,
            "ref_b",
            300,
            provider_txn_id="2026030122002",
            at=datetime(2026, 3, 1, 11, 58, 3, tzinfo=BEIJING),
        ),
    ]


def test_alipay_columns_are_found_by_name() -> None:
    """Alipay has added columns over the years: a reordered header with an extra column reads the same."""
    names = HEADER.split(",")
    order = [names.index(n) for n in ("商户订单号", "支付宝交易号", "完成时间", "业务类型", "商家实收（元）")]
    header = ",".join([names[i] for i in order] + ["新列"])
    line = ",".join(["ref_c\t", "2026030122003\t", "2026-03-01 12:00:00", "交易", "1.20", "x"])
    [row] = parse_trade_bill(_alipay_bill([line], header=header))
    assert (row.reference, row.provider_txn_id, row.amount, row.kind) == (
        "ref_c",
        "2026030122003",
        120,
        BillKind.PAYMENT,
    )


@pytest.mark.parametrize(
    "bill",
    [
        b"not a zip",
        _alipay_bill([], member="other.csv"),  # no detail list
        _alipay_bill([], header="支付宝交易号,业务类型"),  # a needed column missing
        _alipay_bill([_line("1", "ref", "转账", "1.00")]),  # not a trade or refund line
        _alipay_bill([_line("1", "ref", "交易", "1.005")]),  # not a bill amount
        _alipay_bill(["2026,ref,交易"]),  # too few fields
    ],
)
def test_what_is_not_an_alipay_trade_bill_is_refused(bill: bytes) -> None:
    with pytest.raises(BillUnavailable) as refusal:
        list(parse_trade_bill(bill))
    assert refusal.value.code == "MALFORMED_BILL"


STATEMENT = (
    "# e-card daily statement 2026-03-01 merchant M001\n"
    "type,order_ref,refund_ref,txn_id,card_no,amount,booked_at,occurred_at\n"
    "CONSUME,ref_a,,T1,623100******0001,1250,2026-03-01T03:58:03Z,2026-03-01T03:58:03Z\n"
    "REFUND,ref_a,rfd_1,T2,623100******0001,250,2026-03-01T04:10:00Z,\n"
    "REVERSE,ref_b,,T3,623100******0002,300,2026-03-01T04:11:00Z,\n"
    "OFFLINE,off_1,,T4,623100******0003,800,2026-03-01T05:00:00Z,2026-02-28T23:00:00Z\n"
    "# 4 lines\n"
)


def test_ecard_statement_rows() -> None:
    rows = parse_statement(STATEMENT.encode())
    assert iter(rows) is rows
    got = [(r.kind, r.reference, r.amount, r.refund_reference, r.provider_txn_id) for r in rows]
    assert got == [
        (BillKind.PAYMENT, "ref_a", 1250, None, "T1"),
        (BillKind.REFUND, "ref_a", 250, "rfd_1", "T2"),
        (BillKind.REVERSAL, "ref_b", 300, None, "T3"),
        (BillKind.OFFLINE, "off_1", 800, None, "T4"),
    ]
    first = next(parse_statement(STATEMENT.encode()))
    assert first.at == datetime(2026, 3, 1, 3, 58, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"type,order_ref\nCONSUME,ref\n",  # columns missing
        STATEMENT.replace("CONSUME", "GIFT").encode(),
        STATEMENT.replace(",1250,", ",12.50,").encode(),  # fen, not yuan
        STATEMENT.replace(",1250,", ",-1250,").encode(),
        STATEMENT.replace("2026-03-01T03:58:03Z,2026", "yesterday,2026").encode(),
        STATEMENT.encode("utf-16"),
    ],
)
def test_what_is_not_an_ecard_statement_is_refused(content: bytes) -> None:
    with pytest.raises(BillUnavailable) as refusal:
        list(parse_statement(content))
    assert refusal.value.code == "MALFORMED_BILL"
