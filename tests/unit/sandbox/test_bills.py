"""Every provider's bill in its own shape, and the bill faults that make one late, partial or wrong."""

from __future__ import annotations

import base64
import csv
import io
import time
import zipfile
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.sdk.alipay_kit import BOB, AlipayTestClient, face_token, load_public

from .ecard_client import Ecard
from .test_bank import BankClient

pytestmark = pytest.mark.unit
BILL = "alipay.data.dataservice.bill.downloadurl.query"
FILE = "/bank/gateway/api/fileTransRequest.do"
BEIJING = timezone(timedelta(hours=8))
DAY = 86_400


@pytest.fixture
async def alipay(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[AlipayTestClient]:
    values = (await client.get("/_control/test-values")).json()
    yield AlipayTestClient(client, load_public(values["alipay"]["alipay_public_key"]))
    await app.state.alipay.aclose()


async def fault(client: httpx.AsyncClient, provider: str, operation: str, action: str, **extra: Any) -> None:
    response = await client.post(
        "/_control/faults", json={"provider": provider, "operation": operation, "action": action, **extra}
    )
    assert response.status_code == 200, response.text


def detail_rows(content: bytes, suffix: str) -> list[list[str]]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        name = next(n for n in archive.namelist() if n.endswith(f"_{suffix}.csv"))
        text = archive.read(name).decode("gbk")
    table = "\n".join(line for line in text.splitlines() if line and not line.startswith("#"))
    return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(table))][1:]


async def alipay_bill(
    alipay: AlipayTestClient, client: httpx.AsyncClient, day: str, kind: str = "trade"
) -> bytes:
    answer = await alipay.call(BILL, {"bill_type": kind, "bill_date": day})
    assert answer.code == "10000", answer.node
    response = await client.get(answer.node["bill_download_url"])
    assert response.status_code == 200
    return response.content


# --- Alipay ------------------------------------------------------------------------------------


async def test_alipay_signcustomer_lists_every_movement_with_a_running_balance(
    alipay: AlipayTestClient, client: httpx.AsyncClient
) -> None:
    paid = await alipay.pay("T1", 1250, await face_token(client))
    await alipay.call(
        "alipay.trade.refund", {"out_trade_no": "T1", "refund_amount": "2.00", "out_request_no": "R1"}
    )
    day = paid.node["gmt_payment"][:10]
    await client.post("/_control/clock", json={"offset_seconds": DAY})
    rows = detail_rows(await alipay_bill(alipay, client, day, "signcustomer"), "账务明细")
    assert [(r[2], r[6], r[7], r[8], r[10], r[11]) for r in rows] == [
        ("T1", "12.50", "0.00", "12.50", "在线支付", ""),
        ("T1", "0.00", "-2.00", "10.50", "交易退款", "R1"),
    ]


async def test_alipay_bill_links_expire_after_30_seconds(
    alipay: AlipayTestClient, client: httpx.AsyncClient
) -> None:
    paid = await alipay.pay("T1", 100, await face_token(client))
    await client.post("/_control/clock", json={"offset_seconds": DAY})
    answer = await alipay.call(BILL, {"bill_type": "trade", "bill_date": paid.node["gmt_payment"][:10]})
    url = answer.node["bill_download_url"]
    await client.post("/_control/clock", json={"offset_seconds": DAY + 31})
    assert (await client.get(url)).status_code == 403


async def test_alipay_bill_faults(alipay: AlipayTestClient, client: httpx.AsyncClient) -> None:
    paid = await alipay.pay("T1", 1250, await face_token(client))
    await alipay.pay("T2", 300, await face_token(client, BOB))
    await alipay.pay("T3", 400, await face_token(client))
    day = paid.node["gmt_payment"][:10]
    await client.post("/_control/clock", json={"offset_seconds": DAY})
    await fault(client, "alipay", BILL, "bill_late")
    late = await alipay.call(BILL, {"bill_type": "trade", "bill_date": day})
    assert (late.code, late.sub_code) == ("40004", "isp.bill_not_exist")
    await fault(client, "alipay", BILL, "bill_row_missing", match={"order_ref": "T2"})
    await fault(client, "alipay", BILL, "bill_amount_changed", match={"order_ref": "T3"})
    await fault(client, "alipay", BILL, "bill_extra_row")
    rows = detail_rows(await alipay_bill(alipay, client, day), "业务明细")
    refs = [(r[1], r[11], r[12]) for r in rows]
    assert refs[:2] == [("T1", "12.50", "12.50"), ("T3", "4.01", "4.01")]
    assert len(refs) == 3 and refs[2][0].startswith("SBXNEVER") and refs[2][2] == "12.50"
    # rules are used up: the next bill is right again
    assert [r[1] for r in detail_rows(await alipay_bill(alipay, client, day), "业务明细")] == [
        "T1",
        "T2",
        "T3",
    ]
    await fault(client, "alipay", BILL, "bill_partial")
    assert [r[1] for r in detail_rows(await alipay_bill(alipay, client, day), "业务明细")] == ["T1"]


async def test_bill_actions_target_bill_operations_only(client: httpx.AsyncClient) -> None:
    for provider, operation in (("alipay", "alipay.trade.pay"), ("ecard", "consume"), ("bank", "consume")):
        response = await client.post(
            "/_control/faults", json={"provider": provider, "operation": operation, "action": "bill_late"}
        )
        assert response.status_code == 422, response.text


# --- e-card ------------------------------------------------------------------------------------


def statement_lines(response: httpx.Response) -> tuple[list[str], list[list[str]]]:
    text = response.text
    comments = [line for line in text.splitlines() if line.startswith("#")]
    table = [line for line in text.splitlines() if line and not line.startswith("#")]
    return comments, list(csv.reader(io.StringIO("\n".join(table))))


async def test_ecard_statement_lists_consumes_reversals_refunds_and_offline_postings(
    ecard: Ecard, client: httpx.AsyncClient
) -> None:
    assert (await ecard.consume("o1", 500)).json()["result"] == "SUCCESS"
    assert (await ecard.consume("o2", 300)).json()["result"] == "SUCCESS"
    await ecard.post("refund", {"order_ref": "o1", "refund_ref": "r1", "amount": 200})
    await ecard.post("reverse", {"order_ref": "o2"})
    occurred = (datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)).isoformat()
    record = {
        "terminal_seq": 1,
        "order_ref": "off1",
        "card_no": "31000001",
        "amount": 150,
        "occurred_at": occurred,
    }
    await ecard.post("offline/upload", {"terminal_id": "pos-1", "records": [record]})
    today = datetime.now(BEIJING).date().isoformat()
    not_yet = await ecard.post("statement", {"date": today})
    assert not_yet.json()["code"] == "STATEMENT_NOT_READY" and ecard.response_verifies(not_yet)

    await client.post("/_control/clock", json={"offset_seconds": DAY})
    later = int(time.time()) + DAY
    response = await ecard.post("statement", {"date": today}, timestamp=later)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert ecard.response_verifies(response)  # the signature covers the file's bytes
    comments, table = statement_lines(response)
    assert table[0] == [
        "type",
        "order_ref",
        "refund_ref",
        "txn_id",
        "card_no",
        "amount",
        "booked_at",
        "occurred_at",
    ]
    assert sorted((r[0], r[1], r[2], r[5]) for r in table[1:]) == [
        ("CONSUME", "o1", "", "500"),
        ("CONSUME", "o2", "", "300"),
        ("OFFLINE", "off1", "", "150"),
        ("REFUND", "o1", "r1", "200"),
        ("REVERSE", "o2", "", "300"),
    ]
    assert all(r[4] == "****0001" for r in table[1:])
    assert comments[-1] == "# lines: 5, consume: 800, offline: 150, reverse: 300, refund: 200, net: 450"

    await fault(client, "ecard", "statement", "bill_amount_changed", match={"order_ref": "o1"})
    await fault(client, "ecard", "statement", "bill_row_missing", match={"order_ref": "off1"})
    changed = statement_lines(await ecard.post("statement", {"date": today}, timestamp=later))[1]
    assert sorted((r[0], r[1], r[5]) for r in changed[1:]) == [
        ("CONSUME", "o1", "501"),
        ("CONSUME", "o2", "300"),
        ("REFUND", "o1", "201"),
        ("REVERSE", "o2", "300"),
    ]
    await fault(client, "ecard", "statement", "bill_late")
    late = await ecard.post("statement", {"date": today}, timestamp=later)
    assert late.json()["code"] == "STATEMENT_NOT_READY"


# --- bank --------------------------------------------------------------------------------------


async def settlement(bank: BankClient, settle_date: str) -> dict[str, str]:
    fields = bank.base("76", "01", "000000", settleDate=settle_date, fileType="00")
    fields.pop("orderId")
    return await bank.send(FILE, fields)


def file_lines(answer: dict[str, str]) -> list[str]:
    archive = zipfile.ZipFile(io.BytesIO(zlib.decompress(base64.b64decode(answer["fileContent"]))))
    (name,) = archive.namelist()
    assert name.startswith("INN") and name.endswith(f"88ZM_{answer['merId']}")
    return archive.read(name).decode("utf-8").splitlines()


async def test_bank_settlement_file(client: httpx.AsyncClient) -> None:
    bank = BankClient(client)
    paid = await bank.consume(1200, reqReserved="pay_ref-1")
    other = await bank.consume(800)
    assert paid["respCode"] == other["respCode"] == "00"
    await bank.refund(paid, 500)
    await bank.void(other)
    settle_date = paid["settleDate"]
    assert (await settlement(bank, settle_date))["respCode"] == "98"  # today's file is not made yet

    await client.post("/_control/clock", json={"offset_seconds": DAY})
    bank_next_day = BankClient(client)
    answer = await settlement(bank_next_day, settle_date)
    assert answer["respCode"] == "00" and answer["fileName"].endswith(".zip")
    lines = file_lines(answer)
    cells = [line.split() for line in lines]
    assert sorted((c[0], int(c[4])) for c in cells) == [
        ("S22", 800),
        ("S22", 1200),
        ("S30", 500),
        ("S32", 800),
    ]
    assert {c[5] for c in cells if c[0] == "S22"} == {paid["orderId"], other["orderId"]}
    assert all(len(line) >= 3 + 6 + 10 + 19 + 12 + 32 + 21 + 21 + 4 + 14 + 12 + 10 for line in lines)
    consume = next(c for c in cells if c[5] == paid["orderId"])
    assert consume[6] == paid["queryId"] and consume[-1] == "pay_ref-1"

    await fault(client, "bank", "file_transfer", "bill_extra_row", match={"order_ref": paid["orderId"]})
    extra = [line.split() for line in file_lines(await settlement(bank_next_day, settle_date))]
    assert len(extra) == 5 and any(c[5].startswith("SBXNEVER") and int(c[4]) == 1200 for c in extra)
    await fault(client, "bank", "file_transfer", "bill_late")
    assert (await settlement(bank_next_day, settle_date))["respCode"] == "98"
