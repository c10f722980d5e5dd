"""The sandbox Alipay's asynchronous notifications: signed as Alipay signs them, delivered over ASGI
into another app, retried on Alipay's (scaled) schedule until the answer is exactly ``success``,
and the notification faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse

from tests.sdk.alipay_kit import (
    AlipayTestClient,
    content_to_sign,
    face_token,
    free_port,
    load_public,
    rsa2_verifies,
)

pytestmark = pytest.mark.unit
NOTIFY_URL = "http://merchant.test/notify"


class Merchant:
    """A merchant's notify endpoint: records every notification, answers from a script."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.answers: list[tuple[int, str]] = []
        self.app = FastAPI()

        @self.app.post("/notify")
        async def notify(request: Request) -> Response:
            body = (await request.body()).decode("ascii")
            assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
            self.received.append(dict(parse_qsl(body, keep_blank_values=True)))
            status, text = self.answers.pop(0) if self.answers else (200, "success")
            return PlainTextResponse(text, status_code=status)


@pytest.fixture
def merchant() -> Merchant:
    return Merchant()


@pytest.fixture
async def alipay(
    app: FastAPI, client: httpx.AsyncClient, merchant: Merchant
) -> AsyncIterator[AlipayTestClient]:
    values = (await client.get("/_control/test-values")).json()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=merchant.app)) as into_merchant:
        app.state.alipay.notify_client = into_merchant
        await client.post("/_control/alipay/notify-schedule", json={"scale": 0.001})
        yield AlipayTestClient(client, load_public(values["alipay"]["alipay_public_key"]))
        await app.state.alipay.aclose()


async def until(check: Callable[[], Awaitable[bool] | bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if await result if isinstance(result, Awaitable) else result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def notify_events(client: httpx.AsyncClient, kind: str = "alipay.notify") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await client.get("/_control/events", params={"kind": kind})).json()[
        "events"
    ]
    return found


async def paid(alipay: AlipayTestClient, out_trade_no: str = "T1", fen: int = 1250) -> dict[str, Any]:
    answer = await alipay.pay(out_trade_no, fen, await face_token(alipay.http), notify_url=NOTIFY_URL)
    assert answer.code == "10000", answer.raw
    return answer.node


async def test_payment_notification_is_signed_like_alipays(
    alipay: AlipayTestClient, merchant: Merchant
) -> None:
    node = await paid(alipay)
    await until(lambda: len(merchant.received) == 1)
    form = merchant.received[0]
    assert form["trade_status"] == "TRADE_SUCCESS" and form["notify_type"] == "trade_status_sync"
    assert (form["out_trade_no"], form["trade_no"], form["total_amount"]) == ("T1", node["trade_no"], "12.50")
    assert (form["buyer_id"], form["app_id"], form["sign_type"]) == (
        node["buyer_user_id"],
        alipay.app_id,
        "RSA2",
    )
    assert form["gmt_payment"] == node["gmt_payment"] and len(form["notify_id"]) >= 32
    assert form["fund_bill_list"] == '[{"amount":"12.50","fundChannel":"ALIPAYACCOUNT"}]'
    assert all(value != "" for value in form.values())
    # Verified over every parameter except sign AND sign_type.
    signed = content_to_sign(form, exclude=("sign", "sign_type"))
    assert rsa2_verifies(alipay.alipay_public_key, signed.encode(), form["sign"])
    with_type = content_to_sign(form, exclude=("sign",))
    assert not rsa2_verifies(alipay.alipay_public_key, with_type.encode(), form["sign"])


async def test_no_notify_url_no_notification(alipay: AlipayTestClient, merchant: Merchant) -> None:
    assert (await alipay.pay("T1", 100, await face_token(alipay.http))).code == "10000"
    await asyncio.sleep(0.1)
    assert merchant.received == [] and await notify_events(alipay.http) == []


async def test_retried_until_the_answer_is_exactly_success(
    alipay: AlipayTestClient, merchant: Merchant
) -> None:
    merchant.answers = [(200, "fail"), (200, "success\n"), (500, "success"), (200, "SUCCESS")]
    await alipay.http.post("/_control/alipay/notify-schedule", json={"scale": 0.0002})
    started = time.monotonic()
    await paid(alipay)
    await until(lambda: len(merchant.received) == 5, within=15)
    elapsed = time.monotonic() - started
    # Alipay's waits 4m, 10m, 10m, 1h scaled by 0.0002: 0.048 + 0.12 + 0.12 + 0.72 s.
    assert elapsed >= 1.0
    assert len({n["notify_id"] for n in merchant.received}) == 1  # the same notification each time
    logged = await notify_events(alipay.http)
    assert [(e["attempt"], e["delivered"]) for e in logged] == [
        (1, False),
        (2, False),
        (3, False),
        (4, False),
        (5, True),
    ]
    assert logged[0]["answer"] == "fail" and logged[2]["status"] == 500
    await asyncio.sleep(0.3)
    assert len(merchant.received) == 5  # nothing after success


async def test_schedule_is_alipays_and_scalable(client: httpx.AsyncClient) -> None:
    schedule = (await client.get("/_control/alipay/notify-schedule")).json()
    assert (
        schedule["retry_waits_s"] == [240, 600, 600, 3600, 7200, 21600, 54000] and schedule["attempts"] == 8
    )
    scaled = (await client.post("/_control/alipay/notify-schedule", json={"scale": 0.5})).json()
    assert scaled["retry_waits_s"][0] == 120
    assert (await client.post("/_control/alipay/notify-schedule", json={"scale": 0})).status_code == 422


async def test_gives_up_after_eight_attempts(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Without a client of its own the sandbox makes real connections: here to a closed port."""
    values = (await client.get("/_control/test-values")).json()
    alipay = AlipayTestClient(client, load_public(values["alipay"]["alipay_public_key"]))
    await client.post("/_control/alipay/notify-schedule", json={"scale": 0.00001})
    url = f"http://127.0.0.1:{free_port()}/notify"
    assert (await alipay.pay("T1", 100, await face_token(client), notify_url=url)).code == "10000"
    try:
        await until(lambda: notify_events(client, "alipay.notify_gave_up"), within=10)
        attempts = await notify_events(client)
        assert len(attempts) == 8 and all(not e["delivered"] and e["error"] for e in attempts)
    finally:
        await app.state.alipay.aclose()


async def test_refund_and_cancel_notifications(alipay: AlipayTestClient, merchant: Merchant) -> None:
    await paid(alipay, fen=1000)
    await alipay.call(
        "alipay.trade.refund", {"out_trade_no": "T1", "refund_amount": "4.00", "out_request_no": "R1"}
    )
    await alipay.call("alipay.trade.cancel", {"out_trade_no": "T1"})
    await until(lambda: len(merchant.received) == 3)
    by_status = sorted(merchant.received, key=lambda n: float(n.get("refund_fee", "0")))
    pay, partial, closed = by_status
    assert "refund_fee" not in pay and pay["trade_status"] == "TRADE_SUCCESS"
    assert (partial["trade_status"], partial["refund_fee"], partial["out_biz_no"]) == (
        "TRADE_SUCCESS",
        "4.00",
        "R1",
    )
    assert "gmt_refund" in partial
    assert (closed["trade_status"], closed["refund_fee"]) == (
        "TRADE_CLOSED",
        "10.00",
    ) and "gmt_close" in closed
    for form in merchant.received:
        assert rsa2_verifies(
            alipay.alipay_public_key,
            content_to_sign(form, exclude=("sign", "sign_type")).encode(),
            form["sign"],
        )


async def test_user_paying_trade_notifies_when_it_succeeds(
    alipay: AlipayTestClient, merchant: Merchant
) -> None:
    answer = await alipay.pay("T1", 181, await face_token(alipay.http), notify_url=NOTIFY_URL)
    assert answer.code == "10003"
    await alipay.call("alipay.trade.query", {"out_trade_no": "T1"})
    await asyncio.sleep(0.05)
    assert merchant.received == []
    await alipay.call("alipay.trade.query", {"out_trade_no": "T1"})
    await until(lambda: len(merchant.received) == 1)
    assert merchant.received[0]["trade_status"] == "TRADE_SUCCESS"


# --- notification faults ------------------------------------------------------------------------


async def add_notify_fault(client: httpx.AsyncClient, **spec: Any) -> None:
    response = await client.post("/_control/alipay/notify-faults", json=spec)
    assert response.status_code == 200, response.text


async def test_drop(alipay: AlipayTestClient, merchant: Merchant) -> None:
    await add_notify_fault(alipay.http, mode="drop", out_trade_no="T1")
    await paid(alipay, "T1")
    await paid(alipay, "T2")
    await until(lambda: len(merchant.received) == 1)
    await asyncio.sleep(0.1)
    assert [n["out_trade_no"] for n in merchant.received] == ["T2"]
    assert [e["mode"] for e in await notify_events(alipay.http, "alipay.notify_fault")] == ["drop"]


async def test_duplicate(alipay: AlipayTestClient, merchant: Merchant) -> None:
    await add_notify_fault(alipay.http, mode="duplicate")
    await paid(alipay)
    await until(lambda: len(merchant.received) == 2)
    assert merchant.received[0] == merchant.received[1]
    await asyncio.sleep(0.1)
    assert len(merchant.received) == 2


async def test_delay(alipay: AlipayTestClient, merchant: Merchant) -> None:
    await add_notify_fault(alipay.http, mode="delay", delay_ms=300)
    started = time.monotonic()
    await paid(alipay)
    await until(lambda: len(merchant.received) == 1)
    assert time.monotonic() - started >= 0.3


async def test_out_of_order(alipay: AlipayTestClient, merchant: Merchant) -> None:
    await add_notify_fault(alipay.http, mode="out_of_order", trade_status="TRADE_SUCCESS", delay_ms=5000)
    await paid(alipay, fen=1000)
    await asyncio.sleep(0.1)
    assert merchant.received == []  # held back
    await alipay.call(
        "alipay.trade.refund", {"out_trade_no": "T1", "refund_amount": "10.00", "out_request_no": "R1"}
    )
    await until(lambda: len(merchant.received) == 2)
    assert [n["trade_status"] for n in merchant.received] == ["TRADE_CLOSED", "TRADE_SUCCESS"]


async def test_out_of_order_is_released_after_its_hold(alipay: AlipayTestClient, merchant: Merchant) -> None:
    await add_notify_fault(alipay.http, mode="out_of_order", delay_ms=200)
    await paid(alipay)
    await until(lambda: len(merchant.received) == 1)


async def test_faults_are_listed_used_up_and_cleared(client: httpx.AsyncClient) -> None:
    await add_notify_fault(client, mode="drop", times=2)
    listed = (await client.get("/_control/alipay/notify-faults")).json()
    assert [(f["mode"], f["times"]) for f in listed["faults"]] == [("drop", 2)]
    assert (await client.post("/_control/alipay/notify-faults", json={"mode": "lose"})).status_code == 422
    assert (
        await client.post("/_control/alipay/notify-faults", json={"mode": "drop", "times": 0})
    ).status_code == 422
    assert (await client.delete("/_control/alipay/notify-faults")).json() == {"deleted": 1}


async def test_reset_stops_pending_deliveries(alipay: AlipayTestClient, merchant: Merchant) -> None:
    merchant.answers = [(200, "no")]
    await alipay.http.post("/_control/alipay/notify-schedule", json={"scale": 1})
    await paid(alipay)
    await until(lambda: len(merchant.received) == 1)
    assert (await alipay.http.get("/_control/alipay/notify-faults")).json()["pending_deliveries"] == 1
    await alipay.http.post("/_control/reset")
    assert (await alipay.http.get("/_control/alipay/notify-faults")).json()["pending_deliveries"] == 0
    assert (await alipay.http.get("/_control/alipay/notify-schedule")).json()["scale"] == 1.0


async def test_forged_goes_first_once_and_does_not_verify(
    alipay: AlipayTestClient, merchant: Merchant
) -> None:
    merchant.answers = [(400, "fail")]  # the merchant refuses the forgery; the genuine one is taken
    await add_notify_fault(alipay.http, mode="forged")
    await paid(alipay)
    await until(lambda: len(merchant.received) == 2)
    forged, genuine = merchant.received

    def verifies(note: dict[str, str]) -> bool:
        text = content_to_sign(note, exclude=("sign", "sign_type"))
        return rsa2_verifies(alipay.alipay_public_key, text.encode(), note["sign"])

    assert {k: v for k, v in forged.items() if k != "sign"} == {
        k: v for k, v in genuine.items() if k != "sign"
    }
    assert not verifies(forged) and verifies(genuine)
    log = await notify_events(alipay.http)
    assert [(e["forged"], e["delivered"]) for e in log] == [(True, False), (False, True)]
    await asyncio.sleep(0.1)
    assert len(merchant.received) == 2  # a forger does not retry


async def test_notification_faults_fire_every_nth_time(alipay: AlipayTestClient, merchant: Merchant) -> None:
    await add_notify_fault(alipay.http, mode="drop", every=2, times=-1)
    for n in range(1, 5):
        await paid(alipay, f"T{n}")
    await until(lambda: len(merchant.received) == 2)
    await asyncio.sleep(0.1)
    assert [n["out_trade_no"] for n in merchant.received] == ["T1", "T3"]
    listed = (await alipay.http.get("/_control/alipay/notify-faults")).json()["faults"]
    assert listed[0]["matched"] == 4
