"""The sandbox e-card provider against docs/ecard-protocol.md."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
from fastapi import FastAPI

from sandbox import create_sandbox_app
from sandbox.asgi import request_target

from .ecard_client import Ecard, balance, events, fresh_nonce

pytestmark = pytest.mark.unit


async def query(ecard: Ecard, order_ref: str) -> dict[str, object]:
    response = await ecard.post("query", {"order_ref": order_ref})
    assert response.status_code == 200 and ecard.response_verifies(response)
    body: dict[str, object] = response.json()
    return body


async def test_consume_debits_the_card_and_answers_signed(ecard: Ecard) -> None:
    response = await ecard.consume("ord_1", 1250)
    assert response.status_code == 200
    assert ecard.response_verifies(response)
    body = response.json()
    assert body["result"] == "SUCCESS" and body["status"] == "SUCCESS"
    assert (body["order_ref"], body["amount"], body["balance_after"]) == ("ord_1", 1250, 98_750)
    assert body["account_no"] == "A1001" and body["txn_id"].startswith("txn_")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["paid_at"])
    assert await balance(ecard.client, "31000001") == 98_750


async def test_same_order_ref_replays_the_first_result_and_debits_once(ecard: Ecard) -> None:
    first = await ecard.consume("ord_1", 1250)
    second = await ecard.consume("ord_1", 1250)
    assert second.status_code == 200 and ecard.response_verifies(second)
    assert second.json() == first.json()
    assert await balance(ecard.client, "31000001") == 98_750
    assert len(await events(ecard.client, kind="ecard.debit")) == 1


async def test_same_order_ref_with_other_details_is_a_conflict(ecard: Ecard) -> None:
    await ecard.consume("ord_1", 1250)
    for response in (await ecard.consume("ord_1", 1251), await ecard.consume("ord_1", 1250, "31000006")):
        assert response.status_code == 409 and ecard.response_verifies(response)
        assert response.json()["result"] == "FAIL" and response.json()["code"] == "ORDER_CONFLICT"
    assert await balance(ecard.client, "31000001") == 98_750
    assert await balance(ecard.client, "31000006") == 100_000_000


@pytest.mark.parametrize(
    ("card_no", "amount", "code"),
    [
        ("31000002", 501, "INSUFFICIENT_BALANCE"),
        ("31000003", 100, "CARD_LOST"),
        ("31000005", 100, "CARD_FROZEN"),
        ("39999999", 100, "CARD_NOT_FOUND"),
    ],
)
async def test_business_refusals_move_nothing_and_are_remembered(
    ecard: Ecard, card_no: str, amount: int, code: str
) -> None:
    response = await ecard.consume("ord_x", amount, card_no)
    assert response.status_code == 200 and ecard.response_verifies(response)
    assert response.json() == {
        "result": "FAIL",
        "code": code,
        "message": response.json()["message"],
        "order_ref": "ord_x",
    }
    assert await query(ecard, "ord_x") == {
        "result": "SUCCESS",
        "order_ref": "ord_x",
        "status": "FAILED",
        "amount": amount,
        "refunded_amount": 0,
        "code": code,
    }
    assert await events(ecard.client, kind="ecard.debit") == []
    # The stored refusal is replayed even if the card could pay now.
    assert (await ecard.consume("ord_x", amount, card_no)).json()["code"] == code


async def test_bob_can_spend_exactly_his_balance(ecard: Ecard) -> None:
    response = await ecard.consume("ord_bob", 500, "31000002")
    assert response.json()["balance_after"] == 0


async def test_a_wrong_pin_is_refused_and_the_right_one_or_none_pays(ecard: Ecard) -> None:
    wrong = await ecard.consume("ord_pin1", 100, "31000004", pin="0000")
    assert wrong.json()["code"] == "PIN_INVALID"
    assert (await ecard.consume("ord_pin2", 100, "31000004", pin="1234")).json()["result"] == "SUCCESS"
    # No PIN_REQUIRED thresholds yet: a payment without a PIN goes through.
    assert (await ecard.consume("ord_pin3", 100, "31000004")).json()["result"] == "SUCCESS"
    assert await balance(ecard.client, "31000004") == 19_800


async def test_query_tells_whether_money_moved(ecard: Ecard) -> None:
    paid = (await ecard.consume("ord_ok", 300)).json()
    assert await query(ecard, "ord_ok") == {
        "result": "SUCCESS",
        "order_ref": "ord_ok",
        "status": "SUCCESS",
        "amount": 300,
        "refunded_amount": 0,
        "txn_id": paid["txn_id"],
    }
    assert (await query(ecard, "ord_never"))["status"] == "NOT_FOUND"
    await ecard.post("reverse", {"order_ref": "ord_ok"})
    reversed_ = await query(ecard, "ord_ok")
    assert (reversed_["status"], reversed_["refunded_amount"], reversed_["txn_id"]) == (
        "REVERSED",
        300,
        paid["txn_id"],
    )


async def test_reverse_gives_the_money_back_once(ecard: Ecard) -> None:
    await ecard.consume("ord_r", 2000)
    first = await ecard.post("reverse", {"order_ref": "ord_r"})
    again = await ecard.post("reverse", {"order_ref": "ord_r"})
    expected = {"result": "SUCCESS", "order_ref": "ord_r", "status": "REVERSED", "reversed_amount": 2000}
    assert first.json() == expected and again.json() == expected
    assert ecard.response_verifies(first) and ecard.response_verifies(again)
    assert await balance(ecard.client, "31000001") == 100_000
    assert len(await events(ecard.client, kind="ecard.reverse")) == 1
    # A retry of the consume after the reverse is refused rather than replayed as paid.
    assert (await ecard.consume("ord_r", 2000)).json()["code"] == "ORDER_REVERSED"
    assert await balance(ecard.client, "31000001") == 100_000


async def test_reverse_before_the_consume_arrives_blocks_the_late_consume(ecard: Ecard) -> None:
    response = await ecard.post("reverse", {"order_ref": "ord_late"})
    assert response.json() == {
        "result": "SUCCESS",
        "order_ref": "ord_late",
        "status": "REVERSED",
        "reversed_amount": 0,
    }
    late = await ecard.consume("ord_late", 700)
    assert late.status_code == 200 and late.json()["code"] == "ORDER_REVERSED"
    assert await balance(ecard.client, "31000001") == 100_000
    assert (await query(ecard, "ord_late"))["status"] == "REVERSED"


async def test_reverse_of_a_failed_order_keeps_it_failed(ecard: Ecard) -> None:
    await ecard.consume("ord_f", 100, "31000003")
    response = await ecard.post("reverse", {"order_ref": "ord_f"})
    assert response.json() == {
        "result": "SUCCESS",
        "order_ref": "ord_f",
        "status": "FAILED",
        "reversed_amount": 0,
    }


async def test_refunds_are_partial_idempotent_and_bounded(ecard: Ecard) -> None:
    await ecard.consume("ord_rf", 1000)

    async def refund(ref: str, amount: int, order_ref: str = "ord_rf") -> httpx.Response:
        return await ecard.post("refund", {"order_ref": order_ref, "refund_ref": ref, "amount": amount})

    first = await refund("rf_1", 400)
    assert first.status_code == 200 and ecard.response_verifies(first)
    assert first.json() == {
        "result": "SUCCESS",
        "order_ref": "ord_rf",
        "refund_ref": "rf_1",
        "amount": 400,
        "refunded_total": 400,
        "balance_after": 99_400,
    }
    assert (await refund("rf_1", 400)).json() == first.json()
    conflict = await refund("rf_1", 300)
    assert conflict.status_code == 409 and conflict.json()["code"] == "ORDER_CONFLICT"
    assert (await refund("rf_2", 601)).json()["code"] == "REFUND_EXCEEDS_AMOUNT"
    assert (await refund("rf_2", 600)).json()["refunded_total"] == 1000
    assert await balance(ecard.client, "31000001") == 100_000
    assert len(await events(ecard.client, kind="ecard.refund")) == 2
    assert (await query(ecard, "ord_rf"))["refunded_amount"] == 1000
    assert (await refund("rf_3", 1, "ord_missing")).json()["code"] == "ORDER_NOT_FOUND"


async def test_refund_needs_a_successful_order_and_reverse_returns_the_rest(ecard: Ecard) -> None:
    await ecard.consume("ord_a", 1000)
    await ecard.post("refund", {"order_ref": "ord_a", "refund_ref": "rf_a", "amount": 250})
    reverse = await ecard.post("reverse", {"order_ref": "ord_a"})
    assert reverse.json()["reversed_amount"] == 750
    assert await balance(ecard.client, "31000001") == 100_000
    refund = await ecard.post("refund", {"order_ref": "ord_a", "refund_ref": "rf_b", "amount": 1})
    assert refund.json()["code"] == "NOT_REFUNDABLE"
    await ecard.consume("ord_failed", 100, "31000005")
    refund = await ecard.post("refund", {"order_ref": "ord_failed", "refund_ref": "rf_c", "amount": 1})
    assert refund.json()["code"] == "NOT_REFUNDABLE"


async def _assert_nothing_changed(client: httpx.AsyncClient) -> None:
    assert await balance(client, "31000001") == 100_000
    assert await events(client, kind="ecard.debit") == []


async def test_a_bad_signature_is_refused_signed_and_changes_nothing(ecard: Ecard) -> None:
    body = {"order_ref": "ord_1", "card_no": "31000001", "amount": 100, "currency": "CNY"}
    response = await ecard.post("consume", body, secret="not-the-secret-0000000000000000000")
    assert response.status_code == 401 and response.json()["code"] == "SIGNATURE_INVALID"
    assert ecard.response_verifies(response)
    await _assert_nothing_changed(ecard.client)
    assert (await query(ecard, "ord_1"))["status"] == "NOT_FOUND"


@pytest.mark.parametrize("skew", [-301, 301])
async def test_a_stale_or_future_timestamp_is_refused(ecard: Ecard, skew: int) -> None:
    body = {"order_ref": "ord_1", "card_no": "31000001", "amount": 100, "currency": "CNY"}
    response = await ecard.post("consume", body, timestamp=int(time.time()) + skew)
    assert response.status_code == 401 and response.json()["code"] == "TIMESTAMP_EXPIRED"
    await _assert_nothing_changed(ecard.client)


async def test_a_reused_nonce_is_refused(ecard: Ecard) -> None:
    nonce = fresh_nonce()
    assert (await ecard.post("query", {"order_ref": "x"}, nonce=nonce)).status_code == 200
    body = {"order_ref": "ord_1", "card_no": "31000001", "amount": 100, "currency": "CNY"}
    response = await ecard.post("consume", body, nonce=nonce)
    assert response.status_code == 401 and response.json()["code"] == "NONCE_REUSED"
    await _assert_nothing_changed(ecard.client)


async def test_unknown_merchant_and_missing_headers(client: httpx.AsyncClient) -> None:
    stranger = await Ecard(client, merchant="m_nobody").consume("ord_1", 100)
    assert stranger.status_code == 401 and stranger.json()["code"] == "MERCHANT_UNKNOWN"
    assert "X-Ecard-Signature" not in stranger.headers
    bare = await client.post("/ecard/v1/ping", json={}, headers={"X-Ecard-Merchant": "m_test"})
    assert bare.status_code == 401 and bare.json()["code"] == "SIGNATURE_INVALID"
    await _assert_nothing_changed(client)


async def test_responses_are_bound_to_the_request_nonce(ecard: Ecard) -> None:
    response = await ecard.post("ping", {})
    assert response.json()["merchant_id"] == "m_test"
    assert ecard.response_verifies(response)
    response.request.headers["X-Ecard-Nonce"] = fresh_nonce()
    assert not ecard.response_verifies(response)


@pytest.mark.parametrize(
    "body",
    [
        {"order_ref": "o", "card_no": "31000001", "amount": 0, "currency": "CNY"},
        {"order_ref": "o", "card_no": "31000001", "amount": "100", "currency": "CNY"},
        {"order_ref": "o", "card_no": "31000001", "amount": 100, "currency": "USD"},
        {"order_ref": "", "card_no": "31000001", "amount": 100, "currency": "CNY"},
        {"order_ref": "o", "card_no": "3100", "amount": 100, "currency": "CNY"},
        {"order_ref": "o", "card_no": "31000001", "amount": 100, "currency": "CNY", "pin": "12"},
        {"order_ref": "o", "card_no": "31000001", "amount": 100, "currency": "CNY", "tip": 1},
    ],
)
async def test_malformed_requests_answer_a_signed_422(ecard: Ecard, body: dict[str, object]) -> None:
    response = await ecard.post("consume", body)
    assert response.status_code == 422 and ecard.response_verifies(response)
    assert response.json()["result"] == "ERROR" and response.json()["code"] == "INVALID_REQUEST"
    await _assert_nothing_changed(ecard.client)


async def test_a_malformed_card_path_answers_a_signed_422(ecard: Ecard) -> None:
    response = await ecard.call("GET", "/v1/cards/abc")
    assert response.status_code == 422 and ecard.response_verifies(response)
    assert response.json()["code"] == "INVALID_REQUEST"


async def test_card_status(ecard: Ecard) -> None:
    response = await ecard.call("GET", "/v1/cards/31000003")
    assert response.status_code == 200 and ecard.response_verifies(response)
    assert response.json() == {
        "result": "SUCCESS",
        "card_no": "31000003",
        "status": "LOST",
        "account_no": "A1003",
        "student_ref": "stu_carol",
        "balance": 20_000,
    }
    assert (await ecard.call("GET", "/v1/cards/39999999")).json()["code"] == "CARD_NOT_FOUND"


async def test_mounted_under_a_prefix_signs_the_full_path() -> None:
    gateway = FastAPI()
    gateway.mount("/sandbox", create_sandbox_app())
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        ecard = Ecard(client, base="/sandbox/ecard")
        response = await ecard.consume("ord_m", 100)
        assert response.status_code == 200 and ecard.response_verifies(response)
        body = {"order_ref": "ord_n", "card_no": "31000001", "amount": 1, "currency": "CNY"}
        unprefixed = await ecard.post("consume", body, signed_path="/ecard/v1/consume")
        assert unprefixed.status_code == 401 and unprefixed.json()["code"] == "SIGNATURE_INVALID"
        card = await client.get("/sandbox/_control/ecard/merchants/m_test/cards/31000001")
        assert card.json()["balance"] == 99_900


async def test_fifty_concurrent_consumes_of_one_order_debit_once(ecard: Ecard) -> None:
    responses = await asyncio.gather(*(ecard.consume("ord_race", 100) for _ in range(50)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["txn_id"] for r in responses}) == 1
    assert await balance(ecard.client, "31000001") == 99_900
    assert len(await events(ecard.client, kind="ecard.debit")) == 1


async def test_merchants_are_isolated(client: httpx.AsyncClient, ecard: Ecard) -> None:
    created = await client.post("/ecard/merchants", json={})
    assert created.status_code == 200
    merchant_id, secret = created.json()["merchant_id"], created.json()["secret"]
    assert merchant_id.startswith("m_") and len(secret) == 40
    other = Ecard(client, merchant=merchant_id, secret=secret)
    assert (await other.consume("ord_1", 5000)).json()["balance_after"] == 95_000
    assert (await ecard.consume("ord_1", 1000)).json()["balance_after"] == 99_000
    assert await balance(client, "31000001", merchant_id) == 95_000
    assert await balance(client, "31000001") == 99_000
    debits = await events(client, kind="ecard.debit", merchant_id=merchant_id)
    assert [e["amount"] for e in debits] == [5000]
    impostor = Ecard(client, secret=secret)  # the new secret does not work for m_test
    assert (await impostor.post("ping", {})).status_code == 401
    events_text = str(await events(client))
    assert secret not in events_text


async def test_pins_never_reach_the_event_log(ecard: Ecard) -> None:
    await ecard.consume("ord_pin", 100, "31000004", pin="1234")
    await ecard.consume("ord_pin2", 100, "31000004", pin="9876")
    logged = await events(ecard.client, provider="ecard")
    assert "1234" not in str(logged) and "9876" not in str(logged)
    requests = [e for e in logged if e["kind"] == "request"]
    assert requests[0]["body"]["pin"] == "****" and requests[0]["body"]["card_no"] == "31000004"


@pytest.mark.parametrize(
    ("scope", "target"),
    [
        ({"path": "/ecard/v1/ping", "raw_path": b"/ecard/v1/ping", "root_path": "/ecard"}, "/ecard/v1/ping"),
        # Behind a proxy that stripped /api (server run with --root-path /api).
        (
            {"path": "/api/ecard/v1/ping", "raw_path": b"/ecard/v1/ping", "root_path": "/api/ecard"},
            "/api/ecard/v1/ping",
        ),
        # The client's percent-encoding is what it signed.
        ({"path": "/ecard/v1/cards/a b", "raw_path": b"/ecard/v1/cards/a%20b"}, "/ecard/v1/cards/a%20b"),
        ({"path": "/ecard/v1/ping", "query_string": b"x=1"}, "/ecard/v1/ping?x=1"),
    ],
)
def test_request_target_is_the_path_as_sent(scope: dict[str, object], target: str) -> None:
    assert request_target(scope) == target


async def test_the_merchants_books_list_every_order_and_refund(ecard: Ecard) -> None:
    await ecard.consume("ord_paid", 1000)
    await ecard.post("refund", {"order_ref": "ord_paid", "refund_ref": "ref_1", "amount": 300})
    await ecard.consume("ord_back", 700)
    await ecard.post("refund", {"order_ref": "ord_back", "refund_ref": "ref_2", "amount": 100})
    await ecard.post("reverse", {"order_ref": "ord_back"})
    await ecard.consume("ord_declined", 900, "31000002")  # over bob's 500
    await ecard.post("reverse", {"order_ref": "ord_never"})  # a reversal before any consume
    books = (await ecard.client.get(f"/_control/ecard/merchants/{ecard.merchant}/orders")).json()
    orders = {
        o["order_ref"]: (o["status"], o["debited"], o["amount"], o["refunded"], o["reversed_amount"])
        for o in books["orders"]
    }
    assert orders == {
        "ord_paid": ("SUCCESS", True, 1000, 300, 0),
        "ord_back": ("REVERSED", True, 700, 100, 600),
        "ord_declined": ("FAILED", False, 900, 0, 0),
        "ord_never": ("REVERSED", False, 0, 0, 0),
    }
    assert sorted((r["refund_ref"], r["order_ref"], r["amount"]) for r in books["refunds"]) == [
        ("ref_1", "ord_paid", 300),
        ("ref_2", "ord_back", 100),
    ]
    missing = await ecard.client.get("/_control/ecard/merchants/m_nobody/orders")
    assert missing.status_code == 404
