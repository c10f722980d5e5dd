# ruff: noqa: RUF001  (full-width punctuation is part of Alipay's bill layout)
"""The sandbox Alipay's daily trade bill, and the documents that describe the sandbox Alipay."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sandbox.alipay.trades import METHODS
from sandbox.testvalues import ALIPAY_DEFAULT_APP_ID, ALIPAY_DEFAULT_SELLER_ID, ALIPAY_MAGIC_AMOUNTS
from tests.sdk.alipay_kit import BOB, AlipayTestClient, face_token, load_public, new_key, public_pem

pytestmark = pytest.mark.unit
DOCS = Path(__file__).resolve().parents[3] / "docs"
BILL = "alipay.data.dataservice.bill.downloadurl.query"


@pytest.fixture
async def alipay(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[AlipayTestClient]:
    values = (await client.get("/_control/test-values")).json()
    yield AlipayTestClient(client, load_public(values["alipay"]["alipay_public_key"]))
    await app.state.alipay.aclose()


def rows(text: str) -> tuple[list[str], list[list[str]]]:
    """(comment lines, CSV rows) of one bill file."""
    comments = [line for line in text.splitlines() if line.startswith("#")]
    table = "\n".join(line for line in text.splitlines() if line and not line.startswith("#"))
    return comments, list(csv.reader(io.StringIO(table)))


async def test_the_days_bill_lists_payments_and_refunds(
    alipay: AlipayTestClient, client: httpx.AsyncClient
) -> None:
    first = await alipay.pay("T1", 1250, await face_token(client), store_id="canteen-1", terminal_id="pos-1")
    await alipay.pay("T2", 300, await face_token(client, BOB), subject="水果")
    await alipay.call(
        "alipay.trade.refund", {"out_trade_no": "T1", "refund_amount": "2.00", "out_request_no": "R1"}
    )
    await alipay.call("alipay.trade.cancel", {"out_trade_no": "T2"})
    day = first.node["gmt_payment"][:10]

    today = await alipay.call(BILL, {"bill_type": "trade", "bill_date": day})
    assert (today.code, today.sub_code) == ("40004", "isp.bill_not_exist")  # a day's bill exists the next day
    await client.post("/_control/clock", json={"offset_seconds": 86400})
    answer = await alipay.call(BILL, {"bill_type": "trade", "bill_date": day})
    assert answer.code == "10000" and answer.verified
    url = answer.node["bill_download_url"]
    assert url.startswith("http://sandbox.test/alipay/bills/")

    response = await client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    account = f"{ALIPAY_DEFAULT_SELLER_ID}0156"
    stamp = day.replace("-", "")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = sorted(archive.namelist())
        assert names == [f"{account}_{stamp}_业务明细(汇总).csv", f"{account}_{stamp}_业务明细.csv"]
        detail = archive.read(names[1]).decode("gbk")
        summary = archive.read(names[0]).decode("gbk")

    comments, table = rows(detail)
    assert comments[0] == "#支付宝业务明细查询" and comments[1] == f"#账号：[{account}]"
    assert table[0][:3] == ["支付宝交易号", "商户订单号", "业务类型"] and len(table[0]) == 25
    body = [[field.strip() for field in row] for row in table[1:]]
    assert [(r[1], r[2], r[11], r[12], r[21]) for r in body] == [
        ("T1", "交易", "12.50", "12.50", ""),
        ("T2", "交易", "3.00", "3.00", ""),
        ("T1", "退款", "12.50", "-2.00", "R1"),
        ("T2", "退款", "3.00", "-3.00", ""),
    ]
    assert body[0][6] == "canteen-1" and body[0][9] == "pos-1" and body[1][3] == "水果"
    assert "#交易合计：2笔，商家实收共：15.50元，商家优惠共：0.00元" in comments
    assert "#退款合计：2笔，商家实收退款共：-5.00元，商家优惠退款共：0.00元" in comments

    _, totals = rows(summary)
    assert totals[-1][0] == "合计" and totals[-1][2:4] == ["2", "2"] and totals[-1][-1] == "10.50"


async def test_a_month_and_the_apps_own_trades_only(
    alipay: AlipayTestClient, client: httpx.AsyncClient
) -> None:
    paid = await alipay.pay("T1", 1250, await face_token(client))
    key = new_key()
    created = (await client.post("/alipay/apps", json={"app_public_key": public_pem(key)})).json()
    other = AlipayTestClient(client, alipay.alipay_public_key, created["app_id"], key)
    await client.post("/_control/clock", json={"offset_seconds": 40 * 86400})
    month = paid.node["gmt_payment"][:7]
    mine = await alipay.call(BILL, {"bill_type": "trade", "bill_date": month})
    theirs = await other.call(BILL, {"bill_type": "trade", "bill_date": month})
    for answer, expected in ((mine, 1), (theirs, 0)):
        archive = zipfile.ZipFile(io.BytesIO((await client.get(answer.node["bill_download_url"])).content))
        detail = next(n for n in archive.namelist() if n.endswith("_业务明细.csv"))
        assert month.replace("-", "") in detail
        assert len(rows(archive.read(detail).decode("gbk"))[1]) == 1 + expected


@pytest.mark.parametrize(
    "biz",
    [
        {"bill_type": "fund", "bill_date": "2020-01-01"},
        {"bill_type": "trade", "bill_date": "2020-13-01"},
        {"bill_type": "trade", "bill_date": "20200101"},
        {"bill_type": "trade"},
    ],
)
async def test_bill_parameter_errors(alipay: AlipayTestClient, biz: dict[str, str]) -> None:
    answer = await alipay.call(BILL, biz)
    assert (answer.code, answer.sub_code) == ("40002", "isv.invalid-parameter")


async def test_unknown_bill_links_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/alipay/bills/nope/x.csv.zip")).status_code == 404


# --- the documents ------------------------------------------------------------------------------


async def test_test_values_serve_the_alipay_table(client: httpx.AsyncClient) -> None:
    values = (await client.get("/_control/test-values")).json()["alipay"]
    assert values["default_app"]["app_id"] == ALIPAY_DEFAULT_APP_ID
    assert values["default_app"]["app_private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert values["alipay_public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in values["alipay_public_key"]
    assert [m["ending"] for m in values["magic_amounts"]] == [m.ending for m in ALIPAY_MAGIC_AMOUNTS]


def test_docs_describe_every_magic_amount_method_and_the_default_app() -> None:
    test_values = (DOCS / "test-values.md").read_text(encoding="utf-8")
    guide = (DOCS / "alipay-sandbox.md").read_text(encoding="utf-8")
    for magic in ALIPAY_MAGIC_AMOUNTS:
        assert f"| {magic.ending} | alipay |" in test_values, magic
        assert f"| {magic.ending} |" in guide, magic
    for method in METHODS:
        assert f"`{method}`" in guide, method
    for document in (test_values, guide):
        assert ALIPAY_DEFAULT_APP_ID in document
