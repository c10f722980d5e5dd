"""The control plane: fault rules, magic amounts, clock, reset, event log, test values."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sandbox.control import SimulatedDrop
from sandbox.testvalues import CARDS, MAGIC_AMOUNTS

from .ecard_client import SECRET, Ecard, balance, events

pytestmark = pytest.mark.unit
DOCS = Path(__file__).resolve().parents[3] / "docs" / "test-values.md"


async def add_fault(client: httpx.AsyncClient, **rule: Any) -> str:
    response = await client.post("/_control/faults", json={"provider": "ecard", **rule})
    assert response.status_code == 200, response.text
    fault_id: str = response.json()["id"]
    return fault_id


async def status_of(ecard: Ecard, order_ref: str) -> str:
    status: str = (await ecard.post("query", {"order_ref": order_ref})).json()["status"]
    return status


async def test_error_500_fails_before_applying_and_is_used_up(ecard: Ecard) -> None:
    await add_fault(ecard.client, operation="consume", action="error_500")
    response = await ecard.consume("ord_1", 100)
    assert response.status_code == 500 and ecard.response_verifies(response)
    assert response.json()["result"] == "ERROR"
    assert await status_of(ecard, "ord_1") == "NOT_FOUND"
    assert (await ecard.consume("ord_1", 100)).status_code == 200  # times defaults to 1
    faults = await events(ecard.client, kind="fault")
    assert len(faults) == 1 and faults[0]["action"] == "error_500" and faults[0]["order_ref"] == "ord_1"


async def test_error_500_after_apply_moves_the_money(ecard: Ecard) -> None:
    await add_fault(ecard.client, operation="consume", action="error_500_after_apply")
    response = await ecard.consume("ord_1", 100)
    assert response.status_code == 500 and response.json()["code"] == "INTERNAL_ERROR"
    assert await status_of(ecard, "ord_1") == "SUCCESS"
    assert await balance(ecard.client, "31000001") == 99_900


async def test_delay_holds_the_request(ecard: Ecard) -> None:
    await add_fault(ecard.client, operation="ping", action="delay", delay_ms=200)
    started = time.monotonic()
    assert (await ecard.post("ping", {})).status_code == 200
    assert time.monotonic() - started >= 0.2


async def test_hang_outlasts_the_client_and_applies_nothing_before_it(ecard: Ecard) -> None:
    await add_fault(ecard.client, operation="consume", action="hang")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ecard.consume("ord_1", 100), timeout=0.3)
    assert await status_of(ecard, "ord_1") == "NOT_FOUND"


async def test_bad_signature_applies_and_corrupts_the_signature(ecard: Ecard) -> None:
    await add_fault(ecard.client, operation="consume", action="bad_signature")
    response = await ecard.consume("ord_1", 100)
    assert response.status_code == 200 and response.json()["result"] == "SUCCESS"
    assert "X-Ecard-Signature" in response.headers and not ecard.response_verifies(response)
    assert await status_of(ecard, "ord_1") == "SUCCESS"


async def test_drop_after_apply_breaks_the_response(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
        ecard = Ecard(client)
        await add_fault(client, operation="consume", action="drop_after_apply")
        response = await ecard.consume("ord_1", 100)
        # What the client sees: Starlette's plain-text 500, no X-Ecard headers, not JSON.
        assert response.status_code == 500 and response.text == "Internal Server Error"
        assert "X-Ecard-Signature" not in response.headers
        assert await status_of(ecard, "ord_1") == "SUCCESS"
        dropped = [e for e in await events(client, kind="response") if e.get("dropped")]
        assert len(dropped) == 1 and dropped[0]["exception"] == "SimulatedDrop"


async def test_drop_after_apply_raises_through_a_default_asgi_transport(ecard: Ecard) -> None:
    await add_fault(ecard.client, operation="consume", action="drop_after_apply")
    with pytest.raises(SimulatedDrop):
        await ecard.consume("ord_1", 100)
    assert await status_of(ecard, "ord_1") == "SUCCESS"


async def test_rules_match_times_wildcards_and_deletion(ecard: Ecard) -> None:
    client = ecard.client
    await add_fault(client, operation="*", action="error_500", times=2, match={"order_ref": "ord_bad"})
    forever = await add_fault(
        client, operation="consume", action="error_500", times=-1, match={"card_no": "31000006"}
    )
    assert (await ecard.consume("ord_good", 100)).status_code == 200
    assert (await ecard.post("query", {"order_ref": "ord_bad"})).status_code == 500
    listed = (await client.get("/_control/faults")).json()["faults"]
    assert sorted(f["times"] for f in listed) == [-1, 1]
    assert (await ecard.consume("ord_bad", 100)).status_code == 500
    for ref in ("ord_f1", "ord_f2", "ord_f3"):
        assert (await ecard.consume(ref, 100, "31000006")).status_code == 500
    assert [f["id"] for f in (await client.get("/_control/faults")).json()["faults"]] == [forever]
    assert (await client.delete(f"/_control/faults/{forever}")).status_code == 200
    assert (await client.delete(f"/_control/faults/{forever}")).status_code == 404
    await add_fault(client, action="error_500")
    assert (await client.delete("/_control/faults")).json() == {"deleted": 1}
    assert (await ecard.consume("ord_f1", 100, "31000006")).status_code == 200


@pytest.mark.parametrize(
    "rule",
    [
        {"provider": "nope", "action": "error_500"},
        {"provider": "ecard", "operation": "teleport", "action": "error_500"},
        {"provider": "ecard", "action": "explode"},
        {"provider": "ecard", "action": "error_500", "times": 0},
    ],
)
async def test_invalid_fault_rules_are_refused(client: httpx.AsyncClient, rule: dict[str, Any]) -> None:
    assert (await client.post("/_control/faults", json=rule)).status_code == 422


async def test_magic_91_errors_before_applying(ecard: Ecard) -> None:
    response = await ecard.consume("ord_91", 1291)
    assert response.status_code == 500 and ecard.response_verifies(response)
    assert await status_of(ecard, "ord_91") == "NOT_FOUND"
    assert await balance(ecard.client, "31000001") == 100_000


async def test_magic_92_applies_then_errors(ecard: Ecard) -> None:
    response = await ecard.consume("ord_92", 1292)
    assert response.status_code == 500 and response.json()["result"] == "ERROR"
    assert await status_of(ecard, "ord_92") == "SUCCESS"
    assert await balance(ecard.client, "31000001") == 100_000 - 1292


async def test_magic_93_applies_then_holds_the_answer(ecard: Ecard) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ecard.consume("ord_93", 1293), timeout=0.3)
    assert await status_of(ecard, "ord_93") == "SUCCESS"


async def test_magic_94_applies_and_signs_badly(ecard: Ecard) -> None:
    response = await ecard.consume("ord_94", 1294)
    assert response.status_code == 200 and not ecard.response_verifies(response)
    assert await status_of(ecard, "ord_94") == "SUCCESS"


async def test_magic_amounts_never_touch_recovery_calls(ecard: Ecard) -> None:
    await ecard.consume("ord_1", 10_000)
    refund = await ecard.post("refund", {"order_ref": "ord_1", "refund_ref": "rf_1", "amount": 191})
    assert refund.status_code == 200 and ecard.response_verifies(refund)
    assert (await ecard.post("reverse", {"order_ref": "ord_1"})).json()["reversed_amount"] == 10_000 - 191


async def test_the_clock_moves_every_notion_of_now(ecard: Ecard) -> None:
    moved = await ecard.client.post("/_control/clock", json={"offset_seconds": 86_400})
    assert moved.json()["offset_seconds"] == 86_400
    stale = await ecard.consume("ord_1", 100)  # signed with the real time, a day behind
    assert stale.status_code == 401 and stale.json()["code"] == "TIMESTAMP_EXPIRED"
    body = {"order_ref": "ord_1", "card_no": "31000001", "amount": 100, "currency": "CNY"}
    response = await ecard.post("consume", body, timestamp=int(time.time()) + 86_400)
    assert response.status_code == 200
    assert abs(int(response.headers["X-Ecard-Timestamp"]) - (time.time() + 86_400)) < 5
    assert (await ecard.client.get("/_control/clock")).json()["offset_seconds"] == 86_400


async def test_reset_restores_everything(client: httpx.AsyncClient, ecard: Ecard) -> None:
    await ecard.consume("ord_1", 100)
    created = (await client.post("/ecard/merchants", json={})).json()
    await add_fault(client, action="error_500", times=-1, match={"order_ref": "nope"})
    await client.post("/_control/clock", json={"offset_seconds": 50})
    before_reset = (await client.get("/_control/events")).json()["last_seq"]

    assert (await client.post("/_control/reset")).status_code == 200

    assert await balance(client, "31000001") == 100_000
    assert (await client.get("/_control/faults")).json()["faults"] == []
    assert (await client.get("/_control/clock")).json()["offset_seconds"] == 0
    assert await events(client) == []
    assert (await status_of(ecard, "ord_1")) == "NOT_FOUND"
    stranger = Ecard(client, merchant=created["merchant_id"], secret=created["secret"])
    assert (await stranger.post("ping", {})).json()["code"] == "MERCHANT_UNKNOWN"
    assert min(e["seq"] for e in await events(client)) > before_reset  # seq never restarts


async def test_event_log_filters_and_records_both_directions(client: httpx.AsyncClient, ecard: Ecard) -> None:
    await ecard.consume("ord_1", 100)
    cursor = (await client.get("/_control/events")).json()["last_seq"]
    await ecard.consume("ord_2", 200)
    newer = await events(client, since_seq=cursor)
    assert [e["kind"] for e in newer] == ["request", "ecard.debit", "response"]
    seqs = [e["seq"] for e in newer]
    assert seqs == sorted(seqs) and seqs[0] == cursor + 1
    request, debit, response = newer
    assert request["path"] == "/ecard/v1/consume" and request["body"]["order_ref"] == "ord_2"
    assert request["merchant_id"] == "m_test" and request["headers"]["x-ecard-nonce"]
    assert debit == {
        **debit,
        "provider": "ecard",
        "merchant_id": "m_test",
        "order_ref": "ord_2",
        "card_no": "31000001",
        "amount": 200,
        "balance_after": 99_700,
    }
    assert response["status"] == 200 and response["body"]["txn_id"] == debit["txn_id"]
    assert [e["order_ref"] for e in await events(client, provider="ecard", kind="ecard.debit")] == [
        "ord_1",
        "ord_2",
    ]
    assert await events(client, merchant_id="m_other") == []
    assert await events(client, provider="alipay") == []


async def test_test_values_serve_the_fixed_table(client: httpx.AsyncClient) -> None:
    values = (await client.get("/_control/test-values")).json()
    assert values["face"] and all({"school", "student"} <= set(u) for u in values["face"])  # see test_face.py
    assert values["ecard_default_merchant"] == {"merchant_id": "m_test", "secret": SECRET}
    cards = {c["card_no"]: c for c in values["cards"]}
    assert cards["31000001"] == {
        "card_no": "31000001",
        "pin": None,
        "status": "ACTIVE",
        "balance": 100_000,
        "student": "stu_alice",
        "account_no": "A1001",
    }
    assert (cards["31000003"]["status"], cards["31000004"]["pin"], cards["31000005"]["status"]) == (
        "LOST",
        "1234",
        "FROZEN",
    )
    assert cards["31000006"]["balance"] == 100_000_000 and cards["31000002"]["balance"] == 500
    assert [(m["ending"], m["provider"]) for m in values["magic_amounts"]] == [
        (91, "ecard"),
        (92, "ecard"),
        (93, "ecard"),
        (94, "ecard"),
    ]


async def test_control_card_endpoint_answers_404_for_unknowns(client: httpx.AsyncClient) -> None:
    assert (await client.get("/_control/ecard/merchants/m_test/cards/39999999")).status_code == 404
    assert (await client.get("/_control/ecard/merchants/m_nope/cards/31000001")).status_code == 404


def test_docs_list_every_test_card_and_magic_amount() -> None:
    lines = DOCS.read_text(encoding="utf-8").splitlines()
    for card in CARDS:
        facts = [
            card.card_no,
            card.student,
            card.account_no,
            card.status,
            f"| {card.balance} |",
            card.pin or "—",
        ]
        assert any(all(fact in line for fact in facts) for line in lines), f"{card.card_no} missing or stale"
    for magic in MAGIC_AMOUNTS:
        assert any(f"| {magic.ending} |" in line or f"`{magic.ending}`" in line for line in lines), magic
    assert SECRET in "\n".join(lines)
