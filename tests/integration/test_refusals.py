"""A provider refusing the gateway's own requests never settles a payment (issue 7, A1).

Through the whole gateway against the sandbox e-card: its clock drifted more than 5 minutes
(``POST /_control/clock/ecard``: every request refused with a signed 401 TIMESTAMP_EXPIRED), or
fault rules answering ``auth_refusal`` (a signed 401 SIGNATURE_INVALID). The recovery worker is
stepped by hand (``run_workers=False``) and the gateway clock moved, so nothing here waits on
time: the harness's recovery deadline is 6 s, and a refusal outlasting it puts the payment or
refund in the needs-attention queue, retried every ``refusal_retry_seconds`` (20 s here, 300 s by default).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Harness, start_harness
from tests.routing_helpers import attempts, configure_ecard, debits, put_rules

pytestmark = pytest.mark.integration

QUEUE = "/v1/schools/{}/recovery/needs-attention"


@pytest.fixture
async def h(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    # (a short retry period: the gateway clock may move only so far before device signatures,
    # made with the real clock, fall outside its 300 s window)
    async with start_harness(
        database_url=database_url, data_dir=tmp_path, run_workers=False, refusal_retry_seconds=20
    ) as harness:
        yield harness


async def _ecard_clock(h: Harness, offset: int) -> None:
    r = await h.sandbox.post("/_control/clock/ecard", json={"offset_seconds": offset})
    assert r.status_code == 200, r.text


async def _queue(h: Harness, **params: Any) -> dict[str, Any]:
    r = await h.gateway.get(QUEUE.format(h.school_id), params=params, headers=h.admin_headers())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _kinds(h: Harness) -> list[str]:
    return [e["kind"] for e in await h.events() if e["kind"].startswith("ecard.")]


async def _requests(h: Harness, path_end: str) -> list[dict[str, Any]]:
    return [e for e in await h.events("request") if str(e.get("path", "")).endswith(path_end)]


async def _recovery_pass(h: Harness, *, after_seconds: float) -> None:
    h.clock.advance(seconds=after_seconds)
    await h.services.recovery.run_once()


async def test_a_cancel_the_ecard_refuses_is_not_canceled_while_it_holds_the_money(h: Harness) -> None:
    async with h.client() as client:
        paid = (await client.create_payment(**h.payment(amount=730))).body
        assert paid["status"] == "succeeded"
        await _ecard_clock(h, 301)  # the e-card's clock drifted: it refuses every request, signed
        canceled = await client.cancel_payment(paid["id"])
        # not "canceled": the e-card still holds the money (it said so much of our request only)
        assert canceled.status_code == 202, canceled.body
        assert canceled.body["status"] == "succeeded"
        assert await h.balance("31000001") == 100_000 - 730
        assert "ecard.reverse" not in await _kinds(h)
        assert (await _queue(h))["data"] == []  # refused for less than the recovery deadline yet

        await _recovery_pass(h, after_seconds=10)  # refused past the deadline: needs attention
        (item,) = (await _queue(h))["data"]
        assert item["object"] == "payment" and item["id"] == paid["id"]
        assert item["status"] == "succeeded" and item["reversal_requested"] is True
        assert item["refusal"] == {"kind": "timestamp", "code": "TIMESTAMP_EXPIRED"}
        assert item["adapter"] == "ecard" and item["amount"] == 730
        assert (await client.get_payment(paid["id"]))["status"] == "succeeded"

        await _ecard_clock(h, 0)  # school IT had the e-card's clock fixed
        await _recovery_pass(h, after_seconds=h.settings.refusal_retry_seconds + 1)
        final = await client.get_payment(paid["id"])
    assert final["status"] == "canceled" and final["refunded_amount"] == 730
    assert await h.balance("31000001") == 100_000
    assert (await _kinds(h)).count("ecard.reverse") == 1
    assert (await _queue(h))["data"] == []


async def test_a_consume_whose_answer_was_lost_stays_processing_while_queries_are_refused(
    h: Harness,
) -> None:
    await h.fault(operation="consume", action="error_500_after_apply")  # charged, answer lost
    await h.fault(operation="query", action="auth_refusal", times=-1)
    await h.fault(operation="reverse", action="auth_refusal", times=-1)
    async with h.client() as client:
        result = await client.create_payment(**h.payment(amount=560))
        # not "failed": the money is taken, and a refused query says nothing about it
        assert result.status_code == 202, result.body
        assert result.body["status"] == "processing" and result.body["failure_code"] is None
        assert await h.balance("31000001") == 100_000 - 560

        await _recovery_pass(h, after_seconds=10)  # past the deadline: reversal asked, refused
        assert (await client.get_payment(result.body["id"]))["status"] == "processing"
        (item,) = (await _queue(h))["data"]
        assert item["id"] == result.body["id"] and item["status"] == "processing"
        assert item["reversal_requested"] is True
        assert item["refusal"] == {"kind": "signature", "code": "SIGNATURE_INVALID"}
        assert item["next_attempt_at"] is not None
        # in the queue it is tried every refusal_retry_seconds, not every few seconds
        reversals = len(await _requests(h, "/v1/reverse"))
        await _recovery_pass(h, after_seconds=15)
        assert len(await _requests(h, "/v1/reverse")) == reversals
        assert (await client.get_payment(result.body["id"]))["status"] == "processing"

        await h.sandbox.delete("/_control/faults")
        await _recovery_pass(h, after_seconds=h.settings.refusal_retry_seconds + 1)
        final = await client.get_payment(result.body["id"])
    assert final["status"] == "failed" and final["failure_code"] == "outcome_unknown_reversed"
    assert await h.balance("31000001") == 100_000  # given back by the reversal, once
    assert (await _kinds(h)).count("ecard.reverse") == 1
    assert (await _queue(h))["data"] == []
    audit = await h.admin("GET", f"/v1/schools/{h.school_id}/audit?limit=1000")
    actions = [e["action"] for e in audit.json()["data"] if e["object_id"] == result.body["id"]]
    assert actions.count("payment.needs_attention") == 1


async def test_a_pay_the_ecard_refuses_fails_with_nothing_charged(h: Harness) -> None:
    await _ecard_clock(h, -400)
    async with h.client() as client:
        result = await client.create_payment(**h.payment(amount=410))
    assert result.status_code == 201
    assert result.body["status"] == "failed" and result.body["failure_code"] == "provider_refused"
    assert await h.debits() == []


async def test_a_refused_pay_fails_over_to_the_next_merchant(h: Harness) -> None:
    """A signed refusal of the pay applied nothing, so another provider may take the payment."""
    backup = await configure_ecard(h, "ecard.backup")
    r = await put_rules(h, {"method": "card", "adapters": ["ecard", "ecard.backup"]})
    assert r.status_code == 200, r.text
    await h.fault(operation="consume", action="auth_refusal")  # the first consume: the main merchant's
    async with h.client() as client:
        paid = (await client.create_payment(**h.payment(amount=640))).body
    assert paid["status"] == "succeeded" and paid["adapter"] == "ecard.backup"
    assert await attempts(h, paid["id"]) == [
        ("ecard", f"{paid['id']}-1", "refused"),
        ("ecard.backup", f"{paid['id']}-2", "succeeded"),
    ]
    assert await h.debits() == []
    assert [d["amount"] for d in await debits(h, backup["merchant_id"])] == [640]


async def test_a_refused_refund_is_not_failed_and_joins_the_queue(h: Harness) -> None:
    async with h.client() as client:
        paid = (await client.create_payment(**h.payment(amount=900))).body
        await h.fault(operation="refund", action="auth_refusal", times=-1)
        refund = await client.refund_payment(paid["id"], amount=300)
        assert refund.status_code == 202 and refund.body["status"] == "processing", refund.body
        # and one more payment, whose cancel is refused, so the queue has two kinds to page
        other = (await client.create_payment(**h.payment(amount=120))).body
        await h.fault(operation="reverse", action="auth_refusal", times=-1)
        assert (await client.cancel_payment(other["id"])).status_code == 202

        await _recovery_pass(h, after_seconds=10)
        first = await _queue(h, limit=1)
        assert len(first["data"]) == 1 and first["next_cursor"] is not None
        second = await _queue(h, limit=1, cursor=first["next_cursor"])
        assert second["next_cursor"] is None
        items = first["data"] + second["data"]
        assert {(i["object"], i["id"]) for i in items} == {
            ("refund", refund.body["id"]),
            ("payment", other["id"]),
        }
        (queued_refund,) = [i for i in items if i["object"] == "refund"]
        assert queued_refund["payment_id"] == paid["id"] and queued_refund["amount"] == 300
        assert queued_refund["refusal"]["kind"] == "signature"
        assert (await client.get_refund(refund.body["id"]))["status"] == "processing"

        await h.sandbox.delete("/_control/faults")
        await _recovery_pass(h, after_seconds=h.settings.refusal_retry_seconds + 1)
        assert (await client.get_refund(refund.body["id"]))["status"] == "succeeded"
        assert (await client.get_payment(other["id"]))["status"] == "canceled"
    assert await h.balance("31000001") == 100_000 - 900 + 300
    assert (await _queue(h))["data"] == []


async def test_the_queue_is_the_school_admins_alone(h: Harness) -> None:
    path = QUEUE.format(h.school_id)
    assert (await h.gateway.get(path)).status_code == 401
    r = await h.admin("POST", "/v1/schools", {"name": "Other School"}, token=h.platform_token)
    other_key = r.json()["api_key"]
    assert (await h.gateway.get(path, headers=h.admin_headers(other_key))).status_code == 404
    bad = await h.gateway.get(path, params={"cursor": "not-a-cursor"}, headers=h.admin_headers())
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"


async def test_the_provider_check_says_what_the_provider_refuses(h: Harness) -> None:
    await _ecard_clock(h, 301)
    r = await h.admin("POST", f"/v1/schools/{h.school_id}/providers/ecard/check")
    assert r.status_code == 502 and r.json()["code"] == "provider_check_failed"
    assert r.json()["detail"] == "ecard refused the request (timestamp): TIMESTAMP_EXPIRED"
