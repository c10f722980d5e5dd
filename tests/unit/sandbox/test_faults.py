"""The fault actions below HTTP and in front of the provider, signed refusals, query lag, rules
that fire every Nth time or at random, and per-provider clocks -- in-process (ASGI).

The same faults over a real socket are in test_server.py.
"""

# ruff: noqa: F811  (the bank fixtures imported from test_bank are redefined as parameters)
from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sandbox.control import SimulatedReset
from tests.sdk.alipay_kit import AlipayTestClient, face_token, load_public

from .ecard_client import Ecard, balance, events
from .test_bank import (
    BankClient,
    bank,  # noqa: F401  (fixture)
    bank_app,  # noqa: F401  (fixture)
    receiver,  # noqa: F401  (fixture)
    response_problem,
)
from .test_bank import balance as bank_balance

pytestmark = pytest.mark.unit


async def add_fault(client: httpx.AsyncClient, **rule: Any) -> dict[str, Any]:
    response = await client.post("/_control/faults", json={"provider": "ecard", **rule})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["rule"]
    return found


async def status_of(ecard: Ecard, order_ref: str) -> str:
    status: str = (await ecard.post("query", {"order_ref": order_ref})).json()["status"]
    return status


# --- below HTTP ------------------------------------------------------------------------------


async def test_reset_after_apply_is_a_read_error_in_process_and_the_money_moved(ecard: Ecard) -> None:
    await add_fault(ecard.client, operation="consume", action="reset_after_apply")
    with pytest.raises(httpx.ReadError) as caught:
        await ecard.consume("ord_1", 100)
    assert isinstance(caught.value, SimulatedReset)
    assert await status_of(ecard, "ord_1") == "SUCCESS"
    assert await balance(ecard.client, "31000001") == 99_900
    dropped = [e for e in await events(ecard.client, kind="response") if e.get("dropped")]
    assert [e["exception"] for e in dropped] == ["SimulatedReset"]


async def test_truncate_after_apply_cuts_the_signed_body_in_half(ecard: Ecard) -> None:
    await add_fault(ecard.client, operation="consume", action="truncate_after_apply")
    response = await ecard.consume("ord_1", 100)
    declared = int(response.headers["content-length"])
    assert response.status_code == 200 and len(response.content) == declared // 2
    with pytest.raises(ValueError):
        json.loads(response.content)
    assert not ecard.response_verifies(response)  # the signature covers the whole body
    assert await status_of(ecard, "ord_1") == "SUCCESS"


# --- in front of the provider ----------------------------------------------------------------


@pytest.mark.parametrize(("action", "applied"), [("html_200", False), ("html_200_after_apply", True)])
async def test_an_html_page_from_a_proxy_answers_200(ecard: Ecard, action: str, applied: bool) -> None:
    await add_fault(ecard.client, operation="consume", action=action)
    response = await ecard.consume("ord_1", 100)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert b"502 Bad Gateway" in response.content and "X-Ecard-Signature" not in response.headers
    assert await status_of(ecard, "ord_1") == ("SUCCESS" if applied else "NOT_FOUND")


@pytest.mark.parametrize(("action", "status"), [("throttle_429", 429), ("unavailable_503", 503)])
async def test_throttled_or_unavailable_with_retry_after_applies_nothing(
    ecard: Ecard, action: str, status: int
) -> None:
    await add_fault(ecard.client, operation="consume", action=action, delay_ms=2400)
    response = await ecard.consume("ord_1", 100)
    assert response.status_code == status and response.headers["retry-after"] == "2"
    assert await status_of(ecard, "ord_1") == "NOT_FOUND"
    await add_fault(ecard.client, operation="query", action=action)
    assert (await ecard.post("query", {"order_ref": "ord_1"})).headers["retry-after"] == "1"


# --- signed refusals -------------------------------------------------------------------------


async def test_the_ecards_refusal_is_a_signed_401_and_moves_nothing(ecard: Ecard) -> None:
    await add_fault(ecard.client, operation="reverse", action="auth_refusal")
    assert (await ecard.consume("ord_1", 100)).status_code == 200
    refused = await ecard.post("reverse", {"order_ref": "ord_1"})
    assert refused.status_code == 401 and ecard.response_verifies(refused)
    assert refused.json() == {
        "result": "ERROR",
        "code": "SIGNATURE_INVALID",
        "message": refused.json()["message"],
    }
    assert await status_of(ecard, "ord_1") == "SUCCESS"  # not reversed


async def alipay_client(client: httpx.AsyncClient) -> AlipayTestClient:
    values = (await client.get("/_control/test-values")).json()
    return AlipayTestClient(client, load_public(values["alipay"]["alipay_public_key"]))


async def test_alipays_refusal_is_signed_and_creates_no_trade(client: httpx.AsyncClient) -> None:
    alipay = await alipay_client(client)
    await client.post(
        "/_control/faults",
        json={"provider": "alipay", "operation": "alipay.trade.pay", "action": "auth_refusal"},
    )
    answer = await alipay.pay("T1", 1250, await face_token(client))
    assert answer.verified and answer.code == "40002" and answer.sub_code == "isv.invalid-signature"
    assert (await alipay.call("alipay.trade.query", {"out_trade_no": "T1"})).sub_code == "ACQ.TRADE_NOT_EXIST"


async def test_the_banks_refusal_is_a_signed_11_and_moves_nothing(
    bank: BankClient, client: httpx.AsyncClient
) -> None:
    before = await bank_balance(client)
    await client.post(
        "/_control/faults", json={"provider": "bank", "operation": "consume", "action": "auth_refusal"}
    )
    fields = bank.consume_fields(500)
    answer = await bank.send("/bank/gateway/api/backTransReq.do", fields)  # verifies the answer
    assert answer["respCode"] == "11" and response_problem(bank.mode, answer) is None
    assert await bank_balance(client) == before
    assert (await bank.query(fields["orderId"], fields["txnTime"]))["respCode"] == "34"


# --- query lag -------------------------------------------------------------------------------


async def test_query_lag_hides_what_was_applied_until_it_is_old_enough(ecard: Ecard) -> None:
    await add_fault(ecard.client, operation="query", action="query_lag", delay_ms=60_000, times=-1)
    assert (await ecard.consume("ord_1", 100)).json()["result"] == "SUCCESS"
    assert await status_of(ecard, "ord_1") == "NOT_FOUND"
    assert await balance(ecard.client, "31000001") == 99_900  # applied all the same
    await ecard.client.post("/_control/clock/ecard", json={"offset_seconds": 61})
    assert await status_of(ecard, "ord_1") == "SUCCESS"


async def test_query_lag_on_alipay_and_the_bank(bank: BankClient, client: httpx.AsyncClient) -> None:
    for provider, operation in (("alipay", "alipay.trade.query"), ("bank", "query")):
        rule = {"provider": provider, "operation": operation, "action": "query_lag", "times": -1}
        assert (await client.post("/_control/faults", json={**rule, "delay_ms": 60_000})).status_code == 200
    alipay = await alipay_client(client)
    assert (await alipay.pay("T1", 1250, await face_token(client))).code == "10000"
    assert (await alipay.call("alipay.trade.query", {"out_trade_no": "T1"})).sub_code == "ACQ.TRADE_NOT_EXIST"
    fields = bank.consume_fields(500)
    assert (await bank.send("/bank/gateway/api/backTransReq.do", fields))["respCode"] == "00"
    assert (await bank.query(fields["orderId"], fields["txnTime"]))["respCode"] == "34"
    await client.post("/_control/clock", json={"offset_seconds": 61})
    assert (await alipay.call("alipay.trade.query", {"out_trade_no": "T1"})).node[
        "trade_status"
    ] == "TRADE_SUCCESS"
    assert (await bank.query(fields["orderId"], fields["txnTime"]))["origRespCode"] == "00"


@pytest.mark.parametrize(
    "rule",
    [
        {"provider": "ecard", "operation": "consume", "action": "query_lag"},
        {"provider": "ecard", "action": "query_lag"},
        {"provider": "face", "operation": "identify", "action": "auth_refusal"},
        {"provider": "ecard", "action": "delay", "every": 2, "probability": 0.5},
        {"provider": "ecard", "action": "delay", "probability": 0},
        {"provider": "ecard", "action": "delay", "every": 0},
    ],
)
async def test_rules_that_cannot_work_are_refused(client: httpx.AsyncClient, rule: dict[str, Any]) -> None:
    assert (await client.post("/_control/faults", json=rule)).status_code == 422


# --- when rules fire -------------------------------------------------------------------------


async def test_every_nth_matching_request_is_hit(ecard: Ecard) -> None:
    rule = await add_fault(ecard.client, operation="consume", action="error_500", every=3, times=2)
    codes = [(await ecard.consume(f"ord_{i}", 10)).status_code for i in range(1, 10)]
    assert codes == [200, 200, 500, 200, 200, 500, 200, 200, 200]  # two hits, then used up
    assert (await ecard.client.get("/_control/faults")).json()["faults"] == []
    assert rule["every"] == 3 and rule["matched"] == 0


async def test_random_rules_are_repeatable_by_their_seed(app: FastAPI, ecard: Ecard) -> None:
    async def run(seed: int | None) -> tuple[list[int], int]:
        await ecard.client.post("/_control/reset")
        rule = await add_fault(
            ecard.client,
            operation="ping",
            action="error_500",
            probability=0.3,
            times=-1,
            **({"seed": seed} if seed is not None else {}),
        )
        codes = [(await ecard.post("ping", {})).status_code for _ in range(40)]
        listed = (await ecard.client.get("/_control/faults")).json()["faults"][0]
        assert listed["matched"] == 40
        return codes, rule["seed"]

    first, seed = await run(None)  # a seed is chosen and shown
    again, _ = await run(seed)
    assert first == again and 0 < first.count(500) < 40


async def test_a_rule_that_does_not_fire_leaves_the_request_to_the_next_rule(ecard: Ecard) -> None:
    await add_fault(ecard.client, operation="consume", action="error_500", every=2, times=-1)
    await add_fault(ecard.client, operation="consume", action="throttle_429", times=-1)
    codes = [(await ecard.consume(f"ord_{i}", 10)).status_code for i in range(1, 5)]
    assert codes == [429, 500, 429, 500]


# --- clocks ----------------------------------------------------------------------------------


async def test_each_provider_has_its_own_clock_offset(ecard: Ecard) -> None:
    clock = (await ecard.client.post("/_control/clock/ecard", json={"offset_seconds": 301})).json()
    assert clock["offset_seconds"] == 0 and clock["providers"]["ecard"]["offset_seconds"] == 301
    assert clock["providers"]["ecard"]["unix"] - clock["providers"]["bank"]["unix"] in (300, 301, 302)
    refused = await ecard.consume("ord_1", 100)  # signed with the real clock: 301 s behind the e-card's
    assert refused.status_code == 401 and refused.json()["code"] == "TIMESTAMP_EXPIRED"
    assert ecard.response_verifies(refused)
    assert int(refused.headers["X-Ecard-Timestamp"]) == pytest.approx(
        clock["providers"]["ecard"]["unix"], abs=5
    )
    assert (await ecard.client.post("/_control/clock/nope", json={"offset_seconds": 1})).status_code == 404
    await ecard.client.post("/_control/reset")
    assert (await ecard.client.get("/_control/clock")).json()["providers"]["ecard"]["offset_seconds"] == 0
