"""The sandbox bank's magic amounts and fault rules: every faulted answer is never a verifiable
success, and a query always tells whether money moved."""

# ruff: noqa: F811  (the fixtures imported from test_bank are redefined as parameters)
from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

from sandbox.control import SimulatedDrop

from .test_bank import (
    BACK,
    BankClient,
    Receiver,
    balance,
    bank,  # noqa: F401  (fixture)
    bank_app,  # noqa: F401  (fixture)
    events,
    receiver,  # noqa: F401  (fixture)
    response_problem,
    sign_request,
    until,
)

pytestmark = pytest.mark.unit


async def raw_consume(bank: BankClient, fields: dict[str, str]) -> httpx.Response:
    return await bank.client.post(
        BACK,
        content=urlencode(sign_request(bank.mode, fields)),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )


async def test_71_processing_then_success_on_the_second_query(
    bank: BankClient, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    before = await balance(client)
    fields = bank.consume_fields(1271)
    answer = await bank.send(BACK, fields)
    assert answer["respCode"] == "04"
    assert await balance(client) == before
    assert (await bank.send(BACK, fields))["respCode"] == "04"  # a repeat: still unknown
    first = await bank.query(fields["orderId"], fields["txnTime"])
    assert first["origRespCode"] == "05"
    assert (await bank.void({**answer, "txnAmt": "1271"}))["respCode"] == "35"  # not settled
    second = await bank.query(fields["orderId"], fields["txnTime"])
    assert second["origRespCode"] == "00" and second["queryId"] == answer["queryId"]
    assert await balance(client) == before - 1271
    await until(lambda: len(receiver.received) == 1)
    assert receiver.received[0]["queryId"] == answer["queryId"]
    assert (await bank.send(BACK, fields))["respCode"] == "00"  # a repeat now: settled


async def test_72_applied_then_http_500(bank: BankClient, client: httpx.AsyncClient) -> None:
    before = await balance(client)
    fields = bank.consume_fields(372)
    response = await raw_consume(bank, fields)
    assert response.status_code == 500
    assert await balance(client) == before - 372
    assert (await bank.query(fields["orderId"], fields["txnTime"]))["origRespCode"] == "00"
    assert (await raw_consume(bank, fields)).status_code == 500  # a repeat: same magic, no new debit
    assert await balance(client) == before - 372


@pytest.mark.parametrize(
    ("amount", "problem"), [(173, "signature"), (174, "validity"), (175, "subject"), (176, "chain")]
)
async def test_73_to_76_answers_never_verify(
    bank: BankClient, client: httpx.AsyncClient, amount: int, problem: str
) -> None:
    before = await balance(client)
    fields = bank.consume_fields(amount)
    answer = await bank.send(BACK, fields, verify=False)
    assert answer["respCode"] == "00"
    assert response_problem("01", answer) == problem
    assert await balance(client) == before - amount  # applied: a query says so
    assert (await bank.query(fields["orderId"], fields["txnTime"]))["origRespCode"] == "00"


@pytest.mark.parametrize("mode", ["11", "12"])
@pytest.mark.parametrize("amount", [173, 174, 175, 176])
async def test_73_to_76_for_keyed_merchants_are_bad_signatures(
    bank_app: FastAPI, client: httpx.AsyncClient, mode: str, amount: int
) -> None:
    answer = await BankClient(client, mode).send(
        BACK, BankClient(client, mode).consume_fields(amount), verify=False
    )
    assert answer["respCode"] == "00"
    assert response_problem(mode, answer) == "signature"


async def test_fault_rules_through_the_control_plane(bank: BankClient, client: httpx.AsyncClient) -> None:
    before = await balance(client)
    fields = bank.consume_fields(500)
    rule = {
        "provider": "bank",
        "operation": "consume",
        "action": "error_500",
        "match": {"order_ref": fields["orderId"]},
    }
    assert (await client.post("/_control/faults", json=rule)).status_code == 200
    assert (await raw_consume(bank, fields)).status_code == 500
    assert await balance(client) == before  # before applying
    assert (await bank.query(fields["orderId"], fields["txnTime"]))["respCode"] == "34"
    assert (await bank.send(BACK, fields))["respCode"] == "00"  # the rule is used up

    await client.post(
        "/_control/faults", json={"provider": "bank", "operation": "query", "action": "bad_signature"}
    )
    found = await bank.send(
        "/bank/gateway/api/queryTrans.do",
        bank.base("00", "00", "000000", orderId=fields["orderId"], txnTime=fields["txnTime"]),
        verify=False,
    )
    assert response_problem("01", found) == "signature"
    drop = {"provider": "bank", "operation": "refund", "action": "drop_after_apply"}
    assert (await client.post("/_control/faults", json=drop)).status_code == 200
    with pytest.raises(SimulatedDrop, match="dropped on purpose"):
        await bank.refund({"queryId": found["queryId"]}, 100)
    assert await balance(client) == before - 400  # the dropped refund was applied
    unknown = await client.post(
        "/_control/faults", json={"provider": "bank", "operation": "nope", "action": "error_500"}
    )
    assert unknown.status_code == 422
    kinds = [e["action"] for e in await events(client, "bank.fault")]
    assert kinds == ["error_500", "bad_signature", "drop_after_apply"]


async def notify_fault(client: httpx.AsyncClient, **spec: Any) -> None:
    response = await client.post("/_control/bank/notify-faults", json=spec)
    assert response.status_code == 200, response.text


async def test_notification_drop_and_duplicate(
    bank: BankClient, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await notify_fault(client, mode="drop", txn_type="01")
    paid = await bank.consume(300)
    await notify_fault(client, mode="duplicate")
    refunded = await bank.refund(paid, 100)
    await until(lambda: len(receiver.received) == 2)
    await asyncio.sleep(0.1)
    assert [n["queryId"] for n in receiver.received] == [refunded["queryId"]] * 2  # no consume's
    faults = await events(client, "bank.notify_fault")
    assert [(f["mode"], f["order_id"]) for f in faults] == [
        ("drop", paid["orderId"]),
        ("duplicate", refunded["orderId"]),
    ]


async def test_notification_out_of_order_holds_the_consume_until_its_refund(
    bank: BankClient, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await notify_fault(client, mode="out_of_order", txn_type="01", delay_ms=10_000)
    paid = await bank.consume(300)
    await asyncio.sleep(0.1)
    assert receiver.received == []
    await bank.refund(paid, 100)
    await until(lambda: len(receiver.received) == 2)
    assert [n["txnType"] for n in receiver.received] == ["04", "01"]


@pytest.mark.parametrize("mode", ["01", "11"])
async def test_a_forged_notification_goes_first_once_and_never_verifies(
    bank_app: FastAPI, client: httpx.AsyncClient, receiver: Receiver, mode: str
) -> None:
    receiver.statuses = [400]  # refused; the genuine one that follows is taken
    await notify_fault(client, mode="forged")
    await BankClient(client, mode).consume(300)
    await until(lambda: len(receiver.received) == 2)
    forged, genuine = receiver.received
    assert forged["orderId"] == genuine["orderId"] and forged["txnAmt"] == genuine["txnAmt"]
    assert response_problem(mode, forged) == ("chain" if mode == "01" else "signature")
    assert response_problem(mode, genuine) is None
    log = await events(client, "bank.notify")
    assert [(e["forged"], e["delivered"]) for e in log] == [(True, False), (False, True)]


async def test_notification_faults_are_listed_and_cleared(client: httpx.AsyncClient) -> None:
    await notify_fault(client, mode="drop", probability=0.5, seed=3, times=-1)
    listed = (await client.get("/_control/bank/notify-faults")).json()
    assert [(f["mode"], f["seed"], f["matched"]) for f in listed["faults"]] == [("drop", 3, 0)]
    assert (await client.post("/_control/bank/notify-faults", json={"mode": "lose"})).status_code == 422
    assert (await client.delete("/_control/bank/notify-faults")).json() == {"deleted": 1}
