"""The sandbox Alipay's trades: out_trade_no rules, face-token rules, balances, withholding
agreements, refunds, cancel and close, magic amounts, ftoken query, enrolment deletion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sandbox.testvalues import ALIPAY_BUYER_BALANCE, ALIPAY_MAGIC_AMOUNTS
from tests.sdk.alipay_kit import (
    ALICE,
    BOB,
    OTHER_SCHOOL,
    SCHOOL,
    ZED,
    AlipayTestClient,
    FakeFaceDirectory,
    face_token,
    face_user,
    load_public,
)

pytestmark = pytest.mark.unit
ALICE_ID = "2088101000000001"


@pytest.fixture
async def alipay(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[AlipayTestClient]:
    values = (await client.get("/_control/test-values")).json()
    yield AlipayTestClient(client, load_public(values["alipay"]["alipay_public_key"]))
    await app.state.alipay.aclose()


async def balance(client: httpx.AsyncClient, user_id: str = ALICE_ID) -> int:
    found: int = (await client.get(f"/_control/alipay/buyers/{user_id}")).json()["balance"]
    return found


async def status(alipay: AlipayTestClient, out_trade_no: str) -> str | None:
    answer = await alipay.call("alipay.trade.query", {"out_trade_no": out_trade_no})
    found: str | None = answer.node.get("trade_status") or answer.sub_code
    return found


async def move_clock(client: httpx.AsyncClient, seconds: int) -> None:
    assert (await client.post("/_control/clock", json={"offset_seconds": seconds})).status_code == 200


# --- out_trade_no rules --------------------------------------------------------------------------


async def test_a_face_payment_succeeds_and_charges_the_buyer(alipay: AlipayTestClient) -> None:
    answer = await alipay.pay("T1", 1250, await face_token(alipay.http))
    node = answer.node
    assert (node["code"], node["msg"], node["out_trade_no"], node["total_amount"]) == (
        "10000",
        "Success",
        "T1",
        "12.50",
    )
    assert node["buyer_user_id"] == ALICE_ID and len(node["trade_no"]) == 28
    assert node["fund_bill_list"] == [{"fund_channel": "ALIPAYACCOUNT", "amount": "12.50"}]
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE - 1250
    assert await status(alipay, "T1") == "TRADE_SUCCESS"


async def test_same_out_trade_no_same_details_is_the_same_trade(alipay: AlipayTestClient) -> None:
    token = await face_token(alipay.http)
    first = await alipay.pay("T1", 1250, token)
    again = await alipay.pay("T1", 1250, token)
    assert again.raw == first.raw  # the same node, byte for byte, and the same signature
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE - 1250


async def test_same_out_trade_no_other_details_is_context_inconsistent(alipay: AlipayTestClient) -> None:
    token = await face_token(alipay.http)
    await alipay.pay("T1", 1250, token)
    answer = await alipay.pay("T1", 1300, token)
    assert (answer.code, answer.sub_code) == ("40004", "ACQ.CONTEXT_INCONSISTENT")
    assert (await alipay.pay("T1", 1250, token, subject="dinner")).sub_code == "ACQ.CONTEXT_INCONSISTENT"
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE - 1250


async def test_a_paid_trade_paid_again_with_another_token_has_success(alipay: AlipayTestClient) -> None:
    await alipay.pay("T1", 1250, await face_token(alipay.http))
    second = await face_token(alipay.http)
    answer = await alipay.pay("T1", 1250, second)
    assert (answer.sub_code, answer.node["buyer_user_id"]) == ("ACQ.TRADE_HAS_SUCCESS", ALICE_ID)
    assert (await alipay.pay("T2", 100, second)).code == "10000"  # that token was not used up


async def test_a_closed_trade_cannot_be_paid_again(alipay: AlipayTestClient) -> None:
    token = await face_token(alipay.http)
    await alipay.pay("T1", 1250, token)
    await alipay.call("alipay.trade.cancel", {"out_trade_no": "T1"})
    assert (await alipay.pay("T1", 1250, token)).sub_code == "ACQ.TRADE_HAS_CLOSE"


# --- face token rules ----------------------------------------------------------------------------


async def test_a_token_is_used_up_by_the_first_trade_it_completes(alipay: AlipayTestClient) -> None:
    token = await face_token(alipay.http)
    assert (await alipay.pay("T1", 100, token)).code == "10000"
    answer = await alipay.pay("T2", 100, token)
    assert (answer.code, answer.sub_code) == ("40004", "ACQ.PAYMENT_AUTH_CODE_INVALID")
    assert "already used" in answer.node["sub_msg"]
    assert answer.node["buyer_pay_amount"] == "0.00"
    assert (await alipay.pay("T1", 100, token)).code == "10000"  # retrying the same trade still works
    looked_up = (await alipay.http.get(f"/_control/face/tokens/{token}")).json()
    assert looked_up["used_by"] == f"{alipay.app_id}:T1"


async def test_an_expired_token_is_invalid(alipay: AlipayTestClient) -> None:
    token = await face_token(alipay.http)
    await move_clock(alipay.http, 3600)
    answer = await alipay.pay("T1", 100, token)
    assert answer.sub_code == "ACQ.PAYMENT_AUTH_CODE_INVALID" and "expired" in answer.node["sub_msg"]
    assert await status(alipay, "T1") == "ACQ.TRADE_NOT_EXIST"


async def test_unknown_tokens_and_payment_code_scenes_are_invalid(alipay: AlipayTestClient) -> None:
    assert (await alipay.pay("T1", 100, "fp" + "x" * 33)).sub_code == "ACQ.PAYMENT_AUTH_CODE_INVALID"
    answer = await alipay.pay("T2", 100, await face_token(alipay.http), scene="bar_code")
    assert answer.sub_code == "ACQ.PAYMENT_AUTH_CODE_INVALID"
    assert (await alipay.pay("T3", 100, await face_token(alipay.http), scene="nfc")).sub_code == (
        "ACQ.INVALID_PARAMETER"
    )


async def test_a_token_of_a_deleted_user_fails(alipay: AlipayTestClient) -> None:
    token = await face_token(alipay.http)
    deleted = await alipay.call(
        "alipay.commerce.educate.facefeature.delete", {"school_id": SCHOOL, "user_id": ALICE_ID}
    )
    assert deleted.code == "10000" and deleted.verified
    answer = await alipay.pay("T1", 100, token)
    assert answer.sub_code == "ACQ.USER_FACE_PAYMENT_SWITCH_OFF"
    ftoken = await alipay.call(
        "zoloz.authentication.customer.ftoken.query", {"ftoken": token, "biz_type": "1"}
    )
    assert ftoken.sub_code == "ZOLOZ.FTOKEN_INVALID"


async def test_a_refusal_creates_no_trade_and_uses_no_token(alipay: AlipayTestClient) -> None:
    await alipay.http.put(f"/_control/alipay/buyers/{ALICE_ID}", json={"balance": 500})
    token = await face_token(alipay.http)
    answer = await alipay.pay("T1", 1000, token)
    assert (answer.sub_code, answer.node["sub_msg"]) == ("ACQ.BUYER_BALANCE_NOT_ENOUGH", "买家余额不足")
    assert await status(alipay, "T1") == "ACQ.TRADE_NOT_EXIST"
    await alipay.http.put(f"/_control/alipay/buyers/{ALICE_ID}", json={"balance": 5000})
    assert (await alipay.pay("T1", 1000, token)).code == "10000"
    assert await balance(alipay.http) == 4000


async def test_token_rules_against_a_fake_directory(app: FastAPI, alipay: AlipayTestClient) -> None:
    """Exact boundaries, independent of the face cloud's own token lifetime."""
    fake = FakeFaceDirectory()
    app.state.alipay.directory = fake
    now = (await alipay.http.get("/_control/clock")).json()["unix"]
    user = fake.add_user("school-x", "stu_x")
    late = fake.mint(user, now - 300, ttl_s=299)  # expired a second ago
    assert (await alipay.pay("T1", 100, late)).sub_code == "ACQ.PAYMENT_AUTH_CODE_INVALID"
    token = fake.mint(user, now, ttl_s=600)
    assert (await alipay.pay("T2", 100, token)).code == "10000"
    assert fake.tokens[token].used_by == f"{alipay.app_id}:T2"
    fake.delete_user("school-x", user.user_id)
    assert (await alipay.pay("T2", 100, token)).code == "10000"  # the paid trade replays
    assert (await alipay.pay("T3", 100, fake.mint(user, now))).sub_code == "ACQ.USER_FACE_PAYMENT_SWITCH_OFF"


# --- K12 withholding ----------------------------------------------------------------------------


def withholding(agreement_no: str | None) -> dict[str, Any]:
    biz: dict[str, Any] = {
        "product_code": "GENERAL_WITHHOLDING",
        "business_params": {"iot_pay_action": "local_face_pay"},
        "store_id": "canteen-1",
        "terminal_id": "pos-7",
    }
    biz["scene"] = "security_code"
    if agreement_no is not None:
        biz["agreement_params"] = {"agreement_no": agreement_no}
    return biz


async def test_withholding_needs_the_agreement_of_the_tokens_user(alipay: AlipayTestClient) -> None:
    alice = await face_user(alipay.http, ALICE)
    bob = await face_user(alipay.http, BOB)
    answer = await alipay.pay("W1", 800, await face_token(alipay.http), **withholding(alice["agreement_no"]))
    assert answer.code == "10000" and answer.node["buyer_user_id"] == alice["user_id"]
    wrong = await alipay.pay("W2", 800, await face_token(alipay.http), **withholding(bob["agreement_no"]))
    assert wrong.sub_code == "ACQ.AGREEMENT_NOT_EXIST"
    missing = await alipay.pay("W3", 800, await face_token(alipay.http), **withholding(None))
    assert missing.sub_code == "ACQ.INVALID_PARAMETER"
    await alipay.http.put(f"/_control/alipay/agreements/{alice['agreement_no']}", json={"valid": False})
    invalid = await alipay.pay("W4", 800, await face_token(alipay.http), **withholding(alice["agreement_no"]))
    assert invalid.sub_code == "ACQ.AGREEMENT_INVALID"
    trade = (await alipay.http.get(f"/_control/alipay/apps/{alipay.app_id}/trades/W1")).json()
    assert (trade["product_code"], trade["agreement_no"]) == ("GENERAL_WITHHOLDING", alice["agreement_no"])


async def test_business_params_may_come_as_a_json_string(alipay: AlipayTestClient) -> None:
    alice = await face_user(alipay.http, ALICE)
    biz = withholding(alice["agreement_no"])
    biz["business_params"] = '{"iot_pay_action":"local_face_pay"}'
    assert (await alipay.pay("W1", 800, await face_token(alipay.http), **biz)).code == "10000"
    biz["business_params"] = "{broken"
    assert (
        await alipay.pay("W2", 800, await face_token(alipay.http), **biz)
    ).sub_code == "ACQ.INVALID_PARAMETER"


# --- refunds -------------------------------------------------------------------------------------


async def refund(
    alipay: AlipayTestClient, amount: str, request_no: str | None, out_trade_no: str = "T1"
) -> Any:
    biz = {"out_trade_no": out_trade_no, "refund_amount": amount}
    if request_no is not None:
        biz["out_request_no"] = request_no
    return await alipay.call("alipay.trade.refund", biz)


async def test_partial_refunds_by_out_request_no(alipay: AlipayTestClient) -> None:
    await alipay.pay("T1", 1000, await face_token(alipay.http))
    first = await refund(alipay, "3.00", "R1")
    assert (first.code, first.node["fund_change"], first.node["refund_fee"]) == ("10000", "Y", "3.00")
    retry = await refund(alipay, "3.00", "R1")
    assert (retry.node["fund_change"], retry.node["refund_fee"]) == ("N", "3.00")
    assert (await refund(alipay, "4.00", "R1")).sub_code == "ACQ.CONTEXT_INCONSISTENT"
    second = await refund(alipay, "5.00", "R2")
    assert second.node["refund_fee"] == "8.00"
    over = await refund(alipay, "2.01", "R3")
    assert (over.sub_code, over.node["sub_msg"]) == (
        "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
        "退款金额超限 (sandbox: at most 2.00 left to refund)",
    )
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE - 1000 + 800
    assert await status(alipay, "T1") == "TRADE_SUCCESS"
    last = await refund(alipay, "2.00", "R3")
    assert last.node["refund_fee"] == "10.00"
    assert await status(alipay, "T1") == "TRADE_CLOSED"  # refunded in full
    assert (await refund(alipay, "0.01", "R4")).sub_code == "ACQ.TRADE_HAS_CLOSE"
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE


async def test_a_refund_without_out_request_no_is_keyed_by_the_trade(alipay: AlipayTestClient) -> None:
    await alipay.pay("T1", 1000, await face_token(alipay.http))
    assert (await refund(alipay, "1.00", None)).node["fund_change"] == "Y"
    assert (await refund(alipay, "1.00", None)).node["fund_change"] == "N"
    query = await alipay.call(
        "alipay.trade.fastpay.refund.query", {"out_trade_no": "T1", "out_request_no": "T1"}
    )
    assert query.node["refund_amount"] == "1.00"


async def test_refund_query(alipay: AlipayTestClient) -> None:
    paid = await alipay.pay("T1", 1000, await face_token(alipay.http))
    await refund(alipay, "2.50", "R1")
    found = await alipay.call(
        "alipay.trade.fastpay.refund.query", {"trade_no": paid.node["trade_no"], "out_request_no": "R1"}
    )
    assert found.verified
    assert {
        k: found.node[k] for k in ("out_request_no", "refund_amount", "total_amount", "refund_status")
    } == {
        "out_request_no": "R1",
        "refund_amount": "2.50",
        "total_amount": "10.00",
        "refund_status": "REFUND_SUCCESS",
    }
    missing = await alipay.call(
        "alipay.trade.fastpay.refund.query", {"out_trade_no": "T1", "out_request_no": "R9"}
    )
    assert missing.code == "10000" and "refund_amount" not in missing.node  # Alipay's "no such refund"
    nothing = await alipay.call(
        "alipay.trade.fastpay.refund.query", {"out_trade_no": "T9", "out_request_no": "R1"}
    )
    assert nothing.sub_code == "ACQ.TRADE_NOT_EXIST"


async def test_refunds_of_unpaid_missing_and_finished_trades(alipay: AlipayTestClient) -> None:
    assert (await refund(alipay, "1.00", "R1", "T9")).sub_code == "ACQ.TRADE_NOT_EXIST"
    await alipay.pay("T85", 185, await face_token(alipay.http))  # magic 85: exists, never paid
    assert (await refund(alipay, "1.00", "R1", "T85")).sub_code == "ACQ.TRADE_STATUS_ERROR"
    await alipay.pay("T1", 1000, await face_token(alipay.http))
    await move_clock(alipay.http, 91 * 24 * 3600)
    assert await status(alipay, "T1") == "TRADE_FINISHED"
    assert (await refund(alipay, "1.00", "R1")).sub_code == "ACQ.TRADE_HAS_FINISHED"


# --- cancel and close ----------------------------------------------------------------------------


async def test_cancel_refunds_a_paid_trade_in_full(alipay: AlipayTestClient) -> None:
    await alipay.pay("T1", 1000, await face_token(alipay.http))
    await refund(alipay, "3.00", "R1")
    answer = await alipay.call("alipay.trade.cancel", {"out_trade_no": "T1"})
    node = answer.node
    assert (node["code"], node["action"], node["retry_flag"], answer.verified) == (
        "10000",
        "refund",
        "N",
        True,
    )
    assert "gmt_refund_pay" in node
    assert await status(alipay, "T1") == "TRADE_CLOSED"
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE
    again = await alipay.call("alipay.trade.cancel", {"out_trade_no": "T1"})
    assert (again.code, again.node["action"]) == ("10000", "refund")
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE


async def test_cancel_closes_an_unpaid_trade(alipay: AlipayTestClient) -> None:
    answer = await alipay.pay("T1", 1085, await face_token(alipay.http))  # magic 85
    assert (answer.code, answer.sub_code) == ("40004", "ACQ.SYSTEM_ERROR")
    assert await status(alipay, "T1") == "WAIT_BUYER_PAY"
    cancel = await alipay.call("alipay.trade.cancel", {"out_trade_no": "T1"})
    assert (cancel.node["action"], cancel.node["retry_flag"]) == ("close", "N")
    assert await status(alipay, "T1") == "TRADE_CLOSED"
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE


async def test_cancel_before_the_pay_arrives_blocks_the_late_pay(alipay: AlipayTestClient) -> None:
    cancel = await alipay.call("alipay.trade.cancel", {"out_trade_no": "T1"})
    assert (cancel.code, cancel.node["action"]) == ("10000", "close")
    assert await status(alipay, "T1") == "TRADE_CLOSED"
    late = await alipay.pay("T1", 1000, await face_token(alipay.http))
    assert late.sub_code == "ACQ.TRADE_HAS_CLOSE"
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE
    by_trade_no = await alipay.call("alipay.trade.cancel", {"trade_no": "2099010122001000000000000000"})
    assert by_trade_no.sub_code == "ACQ.TRADE_NOT_EXIST"


async def test_cancel_is_only_possible_within_24_hours(alipay: AlipayTestClient) -> None:
    await alipay.pay("T1", 1000, await face_token(alipay.http))
    await move_clock(alipay.http, 24 * 3600 + 60)
    answer = await alipay.call("alipay.trade.cancel", {"out_trade_no": "T1"})
    assert (answer.sub_code, answer.node["retry_flag"]) == ("ACQ.TRADE_CANCEL_TIME_OUT", "N")
    assert await status(alipay, "T1") == "TRADE_SUCCESS"
    assert (await refund(alipay, "10.00", "R1")).code == "10000"  # refunds still work


async def test_close(alipay: AlipayTestClient) -> None:
    assert (await alipay.call("alipay.trade.close", {"out_trade_no": "T1"})).sub_code == "ACQ.TRADE_NOT_EXIST"
    await alipay.pay("T1", 1085, await face_token(alipay.http))  # magic 85: waiting for the buyer
    closed = await alipay.call("alipay.trade.close", {"out_trade_no": "T1"})
    assert closed.code == "10000" and closed.node["out_trade_no"] == "T1"
    assert (await alipay.call("alipay.trade.close", {"out_trade_no": "T1"})).code == "10000"
    await alipay.pay("T2", 1000, await face_token(alipay.http))
    assert (
        await alipay.call("alipay.trade.close", {"out_trade_no": "T2"})
    ).sub_code == "ACQ.TRADE_STATUS_ERROR"


# --- magic amounts -------------------------------------------------------------------------------


async def test_81_user_paying_then_success_on_the_second_query(alipay: AlipayTestClient) -> None:
    token = await face_token(alipay.http)
    answer = await alipay.pay("T1", 1281, token)
    assert (answer.code, answer.node["msg"], answer.node["out_trade_no"]) == (
        "10003",
        "order success pay inprocess",
        "T1",
    )
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE
    assert await status(alipay, "T1") == "WAIT_BUYER_PAY"
    assert (await alipay.pay("T1", 1281, token)).code == "10003"
    assert await status(alipay, "T1") == "TRADE_SUCCESS"
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE - 1281
    assert (await alipay.pay("T1", 1281, token)).code == "10000"
    assert (await alipay.pay("T2", 100, token)).sub_code == "ACQ.PAYMENT_AUTH_CODE_INVALID"  # used up


async def test_81_cancelled_while_the_user_is_paying(alipay: AlipayTestClient) -> None:
    await alipay.pay("T1", 181, await face_token(alipay.http))
    assert (await alipay.call("alipay.trade.cancel", {"out_trade_no": "T1"})).node["action"] == "close"
    assert await status(alipay, "T1") == "TRADE_CLOSED"
    assert await status(alipay, "T1") == "TRADE_CLOSED"
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE


async def test_82_unknown_but_paid(alipay: AlipayTestClient) -> None:
    answer = await alipay.pay("T1", 182, await face_token(alipay.http))
    assert (answer.code, answer.node["msg"], answer.sub_code, answer.verified) == (
        "20000",
        "Service Currently Unavailable",
        "isp.unknow-error",
        True,
    )
    assert await status(alipay, "T1") == "TRADE_SUCCESS"
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE - 182


async def test_83_unknown_and_not_created(alipay: AlipayTestClient) -> None:
    token = await face_token(alipay.http)
    assert (await alipay.pay("T1", 183, token)).code == "20000"
    assert await status(alipay, "T1") == "ACQ.TRADE_NOT_EXIST"
    assert (await alipay.pay("T2", 100, token)).code == "10000"  # the token was not used


async def test_84_paid_with_a_bad_sign(alipay: AlipayTestClient) -> None:
    answer = await alipay.pay("T1", 184, await face_token(alipay.http))
    assert answer.code == "10000" and answer.sign is not None and not answer.verified
    assert await status(alipay, "T1") == "TRADE_SUCCESS"


async def test_86_first_cancel_asks_for_a_retry(alipay: AlipayTestClient) -> None:
    await alipay.pay("T1", 186, await face_token(alipay.http))
    first = await alipay.call("alipay.trade.cancel", {"out_trade_no": "T1"})
    assert (first.sub_code, first.node["retry_flag"]) == ("ACQ.SYSTEM_ERROR", "Y")
    assert await status(alipay, "T1") == "TRADE_SUCCESS"
    second = await alipay.call("alipay.trade.cancel", {"out_trade_no": "T1"})
    assert (second.code, second.node["action"]) == ("10000", "refund")


def test_magic_amount_endings_do_not_collide_with_the_ecard() -> None:
    from sandbox.testvalues import MAGIC_AMOUNTS

    assert {m.ending for m in ALIPAY_MAGIC_AMOUNTS}.isdisjoint({m.ending for m in MAGIC_AMOUNTS})
    assert [m.ending for m in ALIPAY_MAGIC_AMOUNTS] == [81, 82, 83, 84, 85, 86]


# --- ftoken query and enrolment deletion ---------------------------------------------------------


async def test_ftoken_query_names_the_user_and_face_group_without_using_the_token(
    alipay: AlipayTestClient,
) -> None:
    token = await face_token(alipay.http, ZED, OTHER_SCHOOL)
    answer = await alipay.call(
        "zoloz.authentication.customer.ftoken.query", {"ftoken": token, "biz_type": "1"}
    )
    zed = await face_user(alipay.http, ZED, OTHER_SCHOOL)
    assert (answer.code, answer.node["uid"], answer.node["group_id"], answer.verified) == (
        "10000",
        zed["user_id"],
        OTHER_SCHOOL,
        True,
    )
    assert (await alipay.pay("T1", 100, token)).code == "10000"  # resolving did not use it up
    unknown = await alipay.call("zoloz.authentication.customer.ftoken.query", {"ftoken": "fp-nope"})
    assert (unknown.code, unknown.sub_code) == ("40004", "ZOLOZ.FTOKEN_INVALID")
    await move_clock(alipay.http, 3600)
    expired = await alipay.call("zoloz.authentication.customer.ftoken.query", {"ftoken": token})
    assert expired.sub_code == "ZOLOZ.FTOKEN_EXPIRED" and "expired" in expired.node["sub_msg"]


async def test_facefeature_delete(alipay: AlipayTestClient) -> None:
    method = "alipay.commerce.educate.facefeature.delete"
    wrong_school = await alipay.call(method, {"school_id": OTHER_SCHOOL, "user_id": ALICE_ID})
    assert wrong_school.sub_code == "FACE_USER_NOT_EXIST"
    assert (await alipay.call(method, {"group_id": SCHOOL, "user_id": ALICE_ID})).code == "10000"
    assert (await alipay.call(method, {"school_id": SCHOOL, "user_id": ALICE_ID})).code == "10000"  # a retry
    assert (await alipay.call(method, {"school_id": SCHOOL})).sub_code == "isv.invalid-parameter"
    group = (await alipay.http.get(f"/_control/face/groups/{SCHOOL}")).json()
    assert ALICE not in [u["student"] for u in group["users"]]
    logged = (await alipay.http.get("/_control/events", params={"kind": "alipay.enrolment_deleted"})).json()
    assert [e["user_id"] for e in logged["events"]] == [ALICE_ID, ALICE_ID]


async def test_reset_restores_trades_balances_and_agreements(alipay: AlipayTestClient) -> None:
    await alipay.pay("T1", 1000, await face_token(alipay.http))
    await alipay.http.put("/_control/alipay/agreements/x", json={"valid": False})
    await alipay.http.post("/_control/reset")
    assert await status(alipay, "T1") == "ACQ.TRADE_NOT_EXIST"
    assert await balance(alipay.http) == ALIPAY_BUYER_BALANCE


async def test_the_apps_books_list_every_trade(alipay: AlipayTestClient) -> None:
    await alipay.pay("T1", 1000, await face_token(alipay.http))
    await refund(alipay, "3.00", "R1")
    await alipay.pay("T2", 500, await face_token(alipay.http))
    await alipay.call("alipay.trade.cancel", {"out_trade_no": "T2"})
    await alipay.pay("T85", 1085, await face_token(alipay.http))  # magic 85: created, never paid
    books = (await alipay.http.get(f"/_control/alipay/apps/{alipay.app_id}/trades")).json()["trades"]
    trades = {
        t["out_trade_no"]: (t["trade_status"], t["paid"], t["total_amount"], t["refunded_amount"])
        for t in books
    }
    assert trades == {
        "T1": ("TRADE_SUCCESS", True, "10.00", "3.00"),
        "T2": ("TRADE_CLOSED", True, "5.00", "5.00"),
        "T85": ("WAIT_BUYER_PAY", False, "10.85", "0.00"),
    }
    t1 = next(t for t in books if t["out_trade_no"] == "T1")
    assert t1["refunds"] == [{"out_request_no": "R1", "refund_amount": "3.00"}]
    assert next(t for t in books if t["out_trade_no"] == "T2")["cancel_action"] == "refund"
    assert (await alipay.http.get("/_control/alipay/apps/2021999999999999/trades")).status_code == 404
