# ruff: noqa: RUF001  (full-width punctuation is part of Alipay's own strings)
"""The bills behind alipay.data.dataservice.bill.downloadurl.query, in Alipay's layout.

``trade``: a zip holding two GBK-encoded CSV files, the detail list (业务明细) and the summary
(业务明细(汇总)), each framed by ``#`` comment lines. ``signcustomer``: the account's ledger
(账务明细), one line per money movement with a running balance, and its summary. The layouts
follow published samples as closely as could be told; docs/alipay-sandbox.md says what is known
and what is not. Bill faults (sandbox/bills.py) change the rows before either file is written.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from sandbox.alipay import wire
from sandbox.alipay.state import AlipayState, App, Trade
from sandbox.bills import BillFaults

DETAIL_HEADER = [
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
]
SUMMARY_HEADER = [
    "门店编号",
    "门店名称",
    "交易订单总笔数",
    "退款订单总笔数",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "卡消费金额（元）",
    "服务费（元）",
    "分润（元）",
    "实收净额（元）",
]
ZERO = "0.00"
EOL = "\r\n"


@dataclass(frozen=True)
class Row:
    trade: Trade
    kind: str  # 交易 (a payment) or 退款 (a refund, cancel refunds included)
    at: float
    received: int  # fen the merchant got: positive for a payment, negative for a refund
    request_no: str
    total: int  # the order amount shown (the trade's, unless a bill fault changed the row)

    def plus_one_fen(self) -> Row:
        more = 1 if self.received >= 0 else -1
        return replace(self, received=self.received + more, total=self.total + (more if more > 0 else 0))

    def renamed(self, reference: str) -> Row:
        trade = replace(
            self.trade, out_trade_no=reference, trade_no=f"{self.trade.trade_no[:13]}{reference[-15:]}"
        )
        return replace(self, trade=trade)


def _chinese(moment: datetime) -> str:
    return moment.strftime("%Y年%m月%d日 %H:%M:%S")


def _rows(state: AlipayState, app: App, first: date, last: date) -> Iterator[Row]:
    def within(unix: float) -> bool:
        return first <= wire.beijing(unix).date() <= last

    for trade in state.trades.values():
        if trade.app_id != app.app_id:
            continue
        if trade.paid_at is not None and within(trade.paid_at):
            yield Row(trade, "交易", trade.paid_at, trade.total, "", trade.total)
        refunds = list(trade.refunds.values())
        if trade.cancel_refund is not None:
            refunds.append(trade.cancel_refund)
        for refund in refunds:
            if within(refund.at):
                yield Row(trade, "退款", refund.at, -refund.amount, refund.out_request_no, trade.total)


def day_rows(state: AlipayState, app: App, first: date, last: date, faults: BillFaults) -> list[Row]:
    """The rows of the days first..last (Beijing time) in time order, as the faults make them."""
    rows = sorted(_rows(state, app, first, last), key=lambda r: r.at)
    return faults.apply(
        rows,
        reference=lambda r: r.trade.out_trade_no,
        plus_one_fen=Row.plus_one_fen,
        renamed=Row.renamed,
    )


def _detail_line(row: Row) -> list[str]:
    trade = row.trade
    # Ids end with a tab in Alipay's files (so spreadsheets keep them as text): strip fields.
    return [
        f"{trade.trade_no}\t",
        f"{trade.out_trade_no}\t",
        row.kind,
        trade.subject,
        wire.beijing_time(trade.created_at),
        wire.beijing_time(row.at),
        trade.store_id or "",
        "",
        "",
        trade.terminal_id or "",
        f"138****{trade.buyer_id[-4:]}" if trade.buyer_id else "",
        wire.yuan(row.total),
        wire.yuan(row.received),
        ZERO,
        ZERO,
        ZERO,
        ZERO,
        ZERO,
        "",
        ZERO,
        ZERO,
        f"{row.request_no}\t" if row.request_no else "",
        ZERO,
        ZERO,
        "",
    ]


def _csv(lines: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=EOL)
    writer.writerows(lines)
    return out.getvalue()


def _frame(app: App, first: date, last: date, now: float) -> tuple[str, str, str, str]:
    account = f"{app.seller_id}0156"
    label = first.strftime("%Y%m%d") if first == last else first.strftime("%Y%m")
    start = datetime.combine(first, datetime.min.time())
    end = datetime.combine(last + timedelta(days=1), datetime.min.time())
    period = f"#起始日期：[{_chinese(start)}]   终止日期：[{_chinese(end)}]"
    exported = f"#导出时间：[{_chinese(wire.beijing(now).replace(tzinfo=None))}]"
    return account, label, period, exported


def _zip(account: str, label: str, files: dict[str, str]) -> tuple[str, bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for suffix, text in files.items():
            archive.writestr(f"{account}_{label}_{suffix}.csv", text.encode("gbk", "replace"))
    return f"{account}_{label}.csv.zip", buffer.getvalue()


def trade_bill(app: App, rows: list[Row], first: date, last: date, now: float) -> tuple[str, bytes]:
    """(zip filename, zip bytes) of the app's trade bill for the days first..last (Beijing time)."""
    account, label, period, exported = _frame(app, first, last, now)

    paid = [r for r in rows if r.kind == "交易"]
    refunded = [r for r in rows if r.kind == "退款"]
    paid_total = wire.yuan(sum(r.received for r in paid))
    refunded_total = wire.yuan(sum(r.received for r in refunded))
    detail = EOL.join(
        [
            "#支付宝业务明细查询",
            f"#账号：[{account}]",
            period,
            "#-----------------------------------------业务明细列表----------------------------------------",
        ]
    )
    detail += EOL + _csv([DETAIL_HEADER, *(_detail_line(r) for r in rows)])
    detail += EOL.join(
        [
            "#-----------------------------------------业务明细列表结束------------------------------------",
            f"#交易合计：{len(paid)}笔，商家实收共：{paid_total}元，商家优惠共：0.00元",
            f"#退款合计：{len(refunded)}笔，商家实收退款共：{refunded_total}元，商家优惠退款共：0.00元",
            exported,
        ]
    )
    detail += EOL

    stores: dict[str, list[Row]] = {}
    for row in rows:
        stores.setdefault(row.trade.store_id or "", []).append(row)

    def summary_line(store: str, group: list[Row]) -> list[str]:
        payments = [r for r in group if r.kind == "交易"]
        net = sum(r.received for r in group)
        return [
            store,
            "",
            str(len(payments)),
            str(len(group) - len(payments)),
            wire.yuan(sum(r.total for r in payments)),
            wire.yuan(net),
            ZERO,
            ZERO,
            ZERO,
            ZERO,
            ZERO,
            wire.yuan(net),
        ]

    summary_rows = [summary_line(store, group) for store, group in sorted(stores.items())]
    total = summary_line("合计", rows)
    summary = EOL.join(
        [
            "#支付宝业务汇总查询",
            f"#账号：[{account}]",
            period,
            "#-----------------------------------------业务汇总列表----------------------------------------",
        ]
    )
    summary += EOL + _csv([SUMMARY_HEADER, *summary_rows, total])
    summary += EOL.join(
        [
            "#-----------------------------------------业务汇总列表结束------------------------------------",
            exported,
        ]
    )
    summary += EOL

    return _zip(account, label, {"业务明细": detail, "业务明细(汇总)": summary})


LEDGER_HEADER = [
    "账务流水号",
    "业务流水号",
    "商户订单号",
    "商品名称",
    "发生时间",
    "对方账号",
    "收入金额（+元）",
    "支出金额（-元）",
    "账户余额（元）",
    "交易渠道",
    "业务类型",
    "备注",
]


def signcustomer_bill(app: App, rows: list[Row], first: date, last: date, now: float) -> tuple[str, bytes]:
    """(zip filename, zip bytes) of the account's ledger (账务明细) for the days first..last: one
    line per money movement, income or outgo, with the balance after it (from zero: the sandbox
    keeps no opening balance)."""
    account, label, period, exported = _frame(app, first, last, now)
    balance = 0
    lines = []
    for number, row in enumerate(rows, 1):
        balance += row.received
        business = row.trade.trade_no if row.kind == "交易" else f"{row.trade.trade_no}_{row.request_no}"
        lines.append(
            [
                f"{wire.beijing(row.at).strftime('%Y%m%d')}{number:012d}\t",
                f"{business}\t",
                f"{row.trade.out_trade_no}\t",
                row.trade.subject,
                wire.beijing_time(row.at),
                f"138****{row.trade.buyer_id[-4:]}" if row.trade.buyer_id else "",
                wire.yuan(row.received) if row.received >= 0 else ZERO,
                wire.yuan(row.received) if row.received < 0 else ZERO,
                wire.yuan(balance),
                "支付宝",
                "在线支付" if row.kind == "交易" else "交易退款",
                f"{row.request_no}" if row.request_no else "",
            ]
        )
    income = [r.received for r in rows if r.received >= 0]
    outgo = [r.received for r in rows if r.received < 0]
    detail = EOL.join(
        [
            "#支付宝账务明细查询",
            f"#账号：[{account}]",
            period,
            "#-----------------------------------------账务明细列表----------------------------------------",
        ]
    )
    detail += EOL + _csv([LEDGER_HEADER, *lines])
    detail += EOL.join(
        [
            "#-----------------------------------------账务明细列表结束------------------------------------",
            f"#支出合计：{len(outgo)}笔，共{wire.yuan(sum(outgo))}元",
            f"#收入合计：{len(income)}笔，共{wire.yuan(sum(income))}元",
            exported,
        ]
    )
    detail += EOL
    summary = EOL.join(
        [
            "#支付宝账务汇总查询",
            f"#账号：[{account}]",
            period,
            "#-----------------------------------------账务汇总列表----------------------------------------",
        ]
    )
    summary += EOL + _csv(
        [
            ["收入笔数", "收入金额（+元）", "支出笔数", "支出金额（-元）", "期末余额（元）"],
            [
                str(len(income)),
                wire.yuan(sum(income)),
                str(len(outgo)),
                wire.yuan(sum(outgo)),
                wire.yuan(balance),
            ],
        ]
    )
    summary += EOL.join(
        [
            "#-----------------------------------------账务汇总列表结束------------------------------------",
            exported,
        ]
    )
    summary += EOL
    return _zip(account, label, {"账务明细": detail, "账务明细(汇总)": summary})


BILLS = {"trade": trade_bill, "signcustomer": signcustomer_bill}
