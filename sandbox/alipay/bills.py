# ruff: noqa: RUF001  (full-width punctuation is part of Alipay's own strings)
"""The trade bill behind alipay.data.dataservice.bill.downloadurl.query, in Alipay's layout.

Alipay serves a zip holding two GBK-encoded CSV files, the detail list (业务明细) and the
summary (业务明细(汇总)), each framed by ``#`` comment lines. The layout here follows published
samples as closely as could be told; docs/alipay-sandbox.md says what is known and what is not.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sandbox.alipay import wire
from sandbox.alipay.state import AlipayState, App, Trade

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


def _chinese(moment: datetime) -> str:
    return moment.strftime("%Y年%m月%d日 %H:%M:%S")


def _rows(state: AlipayState, app: App, first: date, last: date) -> Iterator[Row]:
    def within(unix: float) -> bool:
        return first <= wire.beijing(unix).date() <= last

    for trade in state.trades.values():
        if trade.app_id != app.app_id:
            continue
        if trade.paid_at is not None and within(trade.paid_at):
            yield Row(trade, "交易", trade.paid_at, trade.total, "")
        refunds = list(trade.refunds.values())
        if trade.cancel_refund is not None:
            refunds.append(trade.cancel_refund)
        for refund in refunds:
            if within(refund.at):
                yield Row(trade, "退款", refund.at, -refund.amount, refund.out_request_no)


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
        wire.yuan(trade.total),
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


def trade_bill(state: AlipayState, app: App, first: date, last: date, now: float) -> tuple[str, bytes]:
    """(zip filename, zip bytes) of the app's trade bill for the days first..last (Beijing time)."""
    rows = sorted(_rows(state, app, first, last), key=lambda r: r.at)
    account = f"{app.seller_id}0156"
    label = first.strftime("%Y%m%d") if first == last else first.strftime("%Y%m")
    start = datetime.combine(first, datetime.min.time())
    end = datetime.combine(last + timedelta(days=1), datetime.min.time())
    period = f"#起始日期：[{_chinese(start)}]   终止日期：[{_chinese(end)}]"
    exported = f"#导出时间：[{_chinese(wire.beijing(now).replace(tzinfo=None))}]"

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
            wire.yuan(sum(r.trade.total for r in payments)),
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

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{account}_{label}_业务明细.csv", detail.encode("gbk", "replace"))
        archive.writestr(f"{account}_{label}_业务明细(汇总).csv", summary.encode("gbk", "replace"))
    return f"{account}_{label}.csv.zip", buffer.getvalue()
