"""GET /v1/schools/{school_id}/events (issue 9 item 3): relayed events in sequence order, no
gaps, paginated and filtered as CONTRACT "Lists" says; every event carries its resource's
version; payloads are thin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.webhooks.outbox import emit
from tests.harness import Harness, start_harness
from tests.webhook_receiver import forget_webhooks

pytestmark = pytest.mark.integration


async def _emit(h: Harness, event_type: str, **data: Any) -> str:
    async with h.services.db.transaction() as session:
        event = emit(session, school_id=h.school_id, event_type=event_type, data=data)
    return str(event.id)


async def _events(h: Harness, query: str = "", token: str | None = None) -> Any:
    r = await h.admin("GET", f"/v1/schools/{h.school_id}/events{query}", token=token)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
async def quiet(database_url: str, tmp_path: Path) -> Any:
    # no background worker: the test relays when it chooses, so it sees events before and after
    async with start_harness(database_url=database_url, data_dir=tmp_path, run_workers=False) as h:
        await forget_webhooks(h)  # number what earlier tests left, so this one's come next
        yield h
        await forget_webhooks(h)


async def test_only_relayed_events_are_listed_in_sequence_order_with_versions(quiet: Harness) -> None:
    h = quiet
    first = await _emit(h, "payment.processing", payment_id="pay_a1", status="processing", amount=500)
    assert (await _events(h))["data"] == []  # not numbered yet: a receiver could not rely on it
    await h.services.webhooks.relay()
    second = await _emit(h, "payment.succeeded", payment_id="pay_a1", status="succeeded", amount=500)
    other = await _emit(h, "refund.succeeded", refund_id="ref_b1", payment_id="pay_a1", amount=100)
    await h.services.webhooks.relay()
    listed = (await _events(h))["data"]
    assert [e["id"] for e in listed] == [first, second, other]
    assert [e["sequence"] for e in listed] == [1, 2, 3]
    assert [e["data"]["version"] for e in listed] == [1, 2, 1]  # per resource: the payment twice
    assert listed[1]["type"] == "payment.succeeded" and listed[1]["school_id"] == h.school_id
    assert listed[1]["data"]["payment_id"] == "pay_a1" and listed[1]["data"]["amount"] == 500
    after = (await _events(h, "?after_sequence=1"))["data"]
    assert [e["sequence"] for e in after] == [2, 3]


async def test_pages_follow_the_cursor_without_gaps_and_filters_narrow(quiet: Harness) -> None:
    h = quiet
    ids = []
    for i in range(7):
        kind = "payment.succeeded" if i % 2 == 0 else "payment.failed"
        ids.append(await _emit(h, kind, payment_id=f"pay_p{i}", status=kind.split(".")[1], amount=i))
    await h.services.webhooks.relay()
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await _events(h, "?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        seen += [e["id"] for e in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
    failed = (await _events(h, "?type=payment.failed"))["data"]
    assert [e["id"] for e in failed] == ids[1::2]
    both = (await _events(h, "?type=payment.failed&type=payment.succeeded&after_sequence=5"))["data"]
    assert [e["sequence"] for e in both] == [6, 7]
    listed = (await _events(h))["data"]
    middle = listed[3]["created_at"]
    # both bounds exclude the time itself: what is strictly after and before it, around it
    newer = (await _events(h, "?created_after=" + middle.replace("+", "%2B")))["data"]
    older = (await _events(h, "?created_before=" + middle.replace("+", "%2B")))["data"]
    assert all(e["created_at"] > middle for e in newer) and all(e["created_at"] < middle for e in older)
    assert listed[3]["id"] not in {e["id"] for e in newer + older}
    assert {e["id"] for e in newer + older} == {e["id"] for e in listed if e["created_at"] != middle}


async def test_bad_filters_and_other_schools(quiet: Harness) -> None:
    h = quiet
    await _emit(h, "payment.succeeded", payment_id="pay_x", status="succeeded", amount=1)
    await h.services.webhooks.relay()
    base = f"/v1/schools/{h.school_id}/events"
    for query in ("?type=payment.exploded", "?cursor=abc", "?after_sequence=-1", "?limit=101"):
        r = await h.admin("GET", base + query)
        assert r.status_code == 422, (query, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await h.admin("POST", "/v1/schools", {"name": "Other School"}, token=h.platform_token)
    other_id, other_key = r.json()["id"], r.json()["api_key"]
    r = await h.admin("GET", base, token=other_key)  # another school's key sees nothing here
    assert r.status_code in (403, 404), r.text
    r = await h.admin("GET", f"/v1/schools/{other_id}/events", token=other_key)
    assert r.status_code == 200 and r.json() == {"data": [], "next_cursor": None}


async def test_a_real_payment_and_refund_event_are_thin_and_versioned(harness: Harness) -> None:
    h = harness
    async with h.client() as client:
        paid = await client.create_payment(**h.payment(amount=1250))
        assert paid.status_code == 201, paid.body
        refunded = await client.refund_payment(paid.body["id"], amount=250)
        assert refunded.status_code == 201, refunded.body
    events: list[dict[str, Any]] = []
    for _ in range(200):  # the app's own worker relays within its interval
        events = (await _events(h))["data"]
        if {"payment.succeeded", "refund.succeeded"} <= {e["type"] for e in events}:
            break
        await h.services.webhooks.relay()
    by_type = {e["type"]: e for e in events}
    payment = by_type["payment.succeeded"]["data"]
    assert payment["payment_id"] == paid.body["id"] and payment["version"] >= 1
    assert by_type["refund.succeeded"]["data"]["version"] == 1
    allowed = {
        "payment_id", "refund_id", "status", "amount", "currency", "merchant_order_id", "store_id",
        "failure_code", "refunded_amount", "offline", "version",
    }  # fmt: skip
    for event in events:
        assert set(event["data"]) <= allowed, event
    text = str(events)
    for card_no in h.cards:
        assert card_no not in text


async def test_versions_continue_across_relay_batches(quiet: Harness) -> None:
    h = quiet
    worker = h.services.webhooks
    worker.batch = 2  # the highest version so far is read from the database, not the batch
    for status in ("processing", "succeeded"):
        await _emit(h, f"payment.{status}", payment_id="pay_v", status=status, amount=9)
    await _emit(h, "payment.canceled", payment_id="pay_v", status="canceled", amount=9)
    await worker.relay()
    await worker.relay()
    versions = [e["data"]["version"] for e in (await _events(h))["data"]]
    assert versions == [1, 2, 3]
