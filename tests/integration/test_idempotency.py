"""Idempotency, exactly as CONTRACT.md's table says -- against the real gateway and sandbox.

Tests run on SQLite and PostgreSQL (the ``harness`` fixture) unless noted. Requests go through the
real signed client with ``max_retries=0`` so that 409s, 400s and 422s stay visible instead of
being retried away. The sandbox's event log is the ground truth for "money moved".

"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.client import CampusPayClient, DeviceCredentials, generate_ed25519_keypair, sign_request
from gateway.store.models import IdempotencyRecord, Payment, new_id
from tests.harness import GATEWAY, Harness, start_harness

pytestmark = pytest.mark.integration

PAYMENTS = "/v1/payments"
FINAL = ("succeeded", "failed", "canceled")


# -- helpers ---------------------------------------------------------------------------------------


def new_key(prefix: str = "k") -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def pay_body(h: Harness, **overrides: Any) -> dict[str, Any]:
    """A complete ``POST /v1/payments`` body (the harness builder leaves ``currency`` to the client)."""
    body = h.payment(**overrides)
    body.setdefault("currency", "CNY")
    return body


def code(response: httpx.Response) -> Any:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.json()["code"]


def device_id(h: Harness) -> str:
    assert h.device is not None and h.device.device_id is not None
    return h.device.device_id


async def pay(client: CampusPayClient, key: str, body: dict[str, Any]) -> httpx.Response:
    return await client.request("POST", PAYMENTS, json=body, idempotency_key=key)


async def record(h: Harness, device: str, key: str) -> IdempotencyRecord | None:
    async with h.services.db.transaction() as session:
        found: IdempotencyRecord | None = await session.get(IdempotencyRecord, (device, key))
        return found


async def payments_for_order(h: Harness, order_id: str) -> list[Payment]:
    async with h.services.db.transaction() as session:
        rows = await session.execute(select(Payment).where(Payment.merchant_order_id == order_id))
        return list(rows.scalars())


async def debits_for(h: Harness, provider_reference: str) -> list[dict[str, Any]]:
    return [d for d in await h.debits() if d["order_ref"] == provider_reference]


async def refunds_for(h: Harness, provider_reference: str) -> list[dict[str, Any]]:
    return [e for e in await h.events("ecard.refund") if e["order_ref"] == provider_reference]


async def clear_faults(h: Harness) -> None:
    r = await h.sandbox.delete("/_control/faults")
    assert r.status_code == 200, r.text


async def wait_until_final(client: CampusPayClient, payment_id: str, within: float = 15.0) -> dict[str, Any]:
    """Poll GET until the payment is final; bounded, so a stuck payment fails the test."""
    deadline = time.monotonic() + within
    while True:
        payment = await client.get_payment(payment_id)
        if payment["status"] in FINAL:
            return payment
        assert time.monotonic() < deadline, f"payment {payment_id} still {payment['status']}"
        await asyncio.sleep(0.05)


async def wait_for_order_row(h: Harness, order_id: str, within: float = 5.0) -> Payment:
    deadline = time.monotonic() + within
    while True:
        rows = await payments_for_order(h, order_id)
        if rows:
            return rows[0]
        assert time.monotonic() < deadline, f"no payment row for {order_id}"
        await asyncio.sleep(0.01)


async def send_non_ascii_key(h: Harness, body: bytes) -> httpx.Response:
    """The best a terminal can do with a non-ASCII key: sign everything else, then add the header
    (raw Latin-1 bytes, which is how the server decodes them)."""
    assert h.device is not None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url=GATEWAY) as http:
        request = http.build_request(
            "POST", PAYMENTS, content=body, headers={"Content-Type": "application/json"}
        )
        sign_request(request, h.device)
        request.headers = httpx.Headers(
            [*request.headers.raw, (b"idempotency-key", "clé-1".encode("latin-1"))]
        )
        return await http.send(request)


# -- 1. concurrency: one execution per key ---------------------------------------------------------


async def test_fifty_concurrent_same_key_execute_once(harness: Harness) -> None:
    # Hold the first consume in the provider so the other 49 arrive while it executes.
    await harness.fault(operation="consume", action="delay", delay_ms=300)
    client = harness.client(max_retries=0)
    body, key = pay_body(harness), new_key("conc")

    responses = await asyncio.gather(*(pay(client, key, body) for _ in range(50)))

    created = [r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    assert len(created) == 1, [(r.status_code, r.text) for r in responses]
    original = created[0]
    assert original.json()["status"] == "succeeded"
    in_use = replayed = 0
    for r in responses:
        if r is original:
            continue
        if r.status_code == 409:
            assert code(r) == "idempotency_key_in_use", r.text
            assert int(r.headers["retry-after"]) >= 1
            in_use += 1
        else:
            assert r.status_code == 201, r.text
            assert r.headers["idempotent-replayed"] == "true"
            assert r.content == original.content
            replayed += 1
    assert in_use + replayed == 49
    assert in_use >= 1, "no request overlapped the first one: the contention was not real"

    payment = original.json()
    debits = await harness.debits()
    assert [(d["order_ref"], d["amount"]) for d in debits] == [(payment["provider_reference"], 1250)]
    rows = await payments_for_order(harness, body["merchant_order_id"])
    assert [p.id for p in rows] == [payment["id"]]
    stored = await record(harness, device_id(harness), key)
    assert stored is not None and stored.state == "done" and stored.response_body == original.content


# -- 2. replay after completion --------------------------------------------------------------------


async def test_replay_after_completion_is_byte_for_byte(harness: Harness) -> None:
    client = harness.client(max_retries=0)
    ok_body = pay_body(harness)
    failed_body = pay_body(harness, amount=50_000, credential={"card_no": "31000002"})
    answers: dict[str, tuple[str, httpx.Response]] = {}
    for name, body in (("ok", ok_body), ("failed", failed_body)):
        key = new_key(name)
        first = await pay(client, key, body)
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        for _ in range(2):
            again = await pay(client, key, body)
            assert again.status_code == first.status_code
            assert again.headers["idempotent-replayed"] == "true"
            assert again.headers["content-type"] == first.headers["content-type"]
            assert again.content == first.content
        answers[name] = key, first

    ok_key, ok = answers["ok"]
    assert ok.json()["status"] == "succeeded"
    failed = answers["failed"][1].json()
    assert (failed["status"], failed["failure_code"]) == ("failed", "insufficient_balance")
    assert len(await harness.debits()) == 1  # the replays moved nothing
    assert await harness.balance("31000002") == 500

    # The stored answer is replayed even after the payment changed: stored bytes, not current state.
    paid = ok.json()
    refund = await client.request(
        "POST", f"{PAYMENTS}/{paid['id']}/refunds", json={"amount": 100}, idempotency_key=new_key("re")
    )
    assert refund.status_code == 201, refund.text
    assert (await client.get_payment(paid["id"]))["refunded_amount"] == 100
    replay = await pay(client, ok_key, ok_body)
    assert replay.status_code == 201 and replay.content == ok.content
    assert replay.headers["idempotent-replayed"] == "true"


# -- 3. same key, different request ----------------------------------------------------------------


async def test_same_key_different_request_is_refused_and_keys_are_device_scoped(harness: Harness) -> None:
    client = harness.client(max_retries=0)
    body, key = pay_body(harness), new_key("scope")
    first = await pay(client, key, body)
    assert first.status_code == 201, first.text
    payment = first.json()

    changed = await pay(client, key, {**body, "amount": body["amount"] + 1})
    assert changed.status_code == 422 and code(changed) == "idempotency_key_reused"
    other_path = await client.request(
        "POST", f"{PAYMENTS}/{payment['id']}/refunds", json={"amount": 100}, idempotency_key=key
    )
    assert other_path.status_code == 422 and code(other_path) == "idempotency_key_reused"
    cancel = await client.request("POST", f"{PAYMENTS}/{payment['id']}/cancel", idempotency_key=key)
    assert cancel.status_code == 422 and code(cancel) == "idempotency_key_reused"
    assert await harness.events("ecard.refund") == []
    assert await harness.events("ecard.reverse") == []

    # Another device: the same key and the same bytes are an independent request.
    other = harness.client(await harness.new_device(), max_retries=0)
    theirs = await pay(other, key, body)
    assert theirs.status_code == 201, theirs.text
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != payment["id"] and theirs.json()["status"] == "succeeded"
    assert len(await harness.debits()) == 2

    # ... and it did not disturb the first device's record.
    mine = await pay(client, key, body)
    assert mine.headers["idempotent-replayed"] == "true" and mine.content == first.content


# -- 4. missing or invalid key ---------------------------------------------------------------------


async def test_missing_and_invalid_keys(harness: Harness) -> None:
    client = harness.client(max_retries=0)
    body = pay_body(harness)
    ok = await pay(client, new_key(), body)
    assert ok.status_code == 201
    paid = ok.json()["id"]

    for path, payload in (
        (PAYMENTS, pay_body(harness)),
        (f"{PAYMENTS}/{paid}/refunds", {"amount": 100}),
        (f"{PAYMENTS}/{paid}/cancel", None),
    ):
        missing = await client.request("POST", path, json=payload)
        assert missing.status_code == 400, missing.text
        assert code(missing) == "idempotency_key_missing"

    body = pay_body(harness)
    for bad in ("k" * 256, "has space", "", "tab\tkey"):
        r = await pay(client, bad, body)
        assert r.status_code == 400, (bad, r.text)
        assert code(r) == "idempotency_key_invalid"

    # A non-ASCII key cannot even be covered by an RFC 9421 signature (the signature base must
    # be ASCII): the key's shape is judged before the signature, so the answer is still precise.
    raw = httpx.Request("POST", GATEWAY, json=body).read()
    r = await send_non_ascii_key(harness, raw)
    assert r.status_code == 400, r.text
    assert code(r) == "idempotency_key_invalid"

    # The longest allowed key (255 visible ASCII characters, every one of them) works.
    visible = "".join(chr(c) for c in range(33, 127))
    longest = (visible * 3)[:255]
    r = await pay(client, longest, body)
    assert r.status_code == 201, r.text

    assert len(await harness.debits()) == 2  # the refused requests moved nothing
    async with harness.services.db.transaction() as session:
        keys = (
            (
                await session.execute(
                    select(IdempotencyRecord.key).where(IdempotencyRecord.device_id == device_id(harness))
                )
            )
            .scalars()
            .all()
        )
    assert len(keys) == 2 and longest in keys


# -- 5. refused before execution: nothing stored ---------------------------------------------------


async def test_refused_before_execution_stores_nothing(harness: Harness) -> None:
    client = harness.client(max_retries=0)
    dev = device_id(harness)

    async def refused_then_retried(key: str, refused: httpx.Response, status: int, problem: str) -> None:
        assert refused.status_code == status, refused.text
        assert code(refused) == problem
        assert await record(harness, dev, key) is None, f"{problem}: a record was stored"

    # 422 validation error, then the corrected body under the same key runs.
    key = new_key("val")
    good = pay_body(harness)
    await refused_then_retried(key, await pay(client, key, {**good, "amount": 0}), 422, "validation_error")
    first = await pay(client, key, good)
    assert first.status_code == 201 and first.json()["status"] == "succeeded"

    # 401: a signature by the wrong key for this key id.
    forged = DeviceCredentials(
        key_id=harness.device.key_id if harness.device else "",
        alg="ed25519",
        private_key_pem=generate_ed25519_keypair()[0],
    )
    key, body = new_key("sig"), pay_body(harness)
    bad_sig = await pay(harness.client(forged, max_retries=0), key, body)
    await refused_then_retried(key, bad_sig, 401, "signature_invalid")
    r = await pay(client, key, body)
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers

    # 413: over the body limit.
    key, body = new_key("big"), pay_body(harness)
    huge = {**body, "description": "x" * (harness.settings.max_body_bytes + 1)}
    await refused_then_retried(key, await pay(client, key, huge), 413, "payload_too_large")
    r = await pay(client, key, body)
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers

    # 409 duplicate_order: the order already has a payment; the key stays free.
    key = new_key("dup")
    dup = await pay(client, key, {**pay_body(harness), "merchant_order_id": good["merchant_order_id"]})
    await refused_then_retried(key, dup, 409, "duplicate_order")
    assert dup.json()["payment_id"] == first.json()["id"]
    r = await pay(client, key, pay_body(harness))
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers

    # 422 store_unknown: refused by the service before anything was created.
    key, body = new_key("store"), pay_body(harness)
    unknown = await pay(client, key, {**body, "store_id": "sto_doesnotexist"})
    await refused_then_retried(key, unknown, 422, "store_unknown")
    r = await pay(client, key, body)
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers

    # 422 biometric_data_not_accepted: refused before validation, and the body goes nowhere.
    key, body = new_key("bio"), pay_body(harness)
    face = {**body, "method": "face", "credential": {"face_token": "fp12345678", "image": "/9j/4AAQ"}}
    await refused_then_retried(key, await pay(client, key, face), 422, "biometric_data_not_accepted")
    r = await pay(client, key, body)
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers

    assert len(await harness.debits()) == 6  # one per corrected retry, none for a refusal


# -- 6. 202 processing, then the current state -----------------------------------------------------


async def test_processing_then_current_state(harness: Harness) -> None:
    # The consume lands but its answer is an error, and every query fails: the outcome stays
    # unknown past the 3 s synchronous budget.
    await harness.fault(operation="consume", action="error_500_after_apply")
    await harness.fault(operation="query", action="error_500", times=-1)
    client = harness.client(max_retries=0)
    body, key = pay_body(harness), new_key("slow")

    first = await pay(client, key, body)
    assert first.status_code == 202, first.text
    payment = first.json()
    assert payment["status"] == "processing"

    while_processing = await pay(client, key, body)
    assert while_processing.status_code == 202, while_processing.text
    assert "idempotent-replayed" not in while_processing.headers
    assert while_processing.json()["id"] == payment["id"]
    assert while_processing.json()["status"] == "processing"

    # Another key for the same sale is refused: the terminal must not start a new order.
    dup = await pay(client, new_key(), body)
    assert dup.status_code == 409 and code(dup) == "duplicate_order"
    assert dup.json()["payment_id"] == payment["id"]

    await clear_faults(harness)
    final = await wait_until_final(client, payment["id"])
    assert final["status"] == "succeeded"

    after = await pay(client, key, body)
    assert after.status_code == 200, after.text
    assert "idempotent-replayed" not in after.headers
    assert after.json() == final
    assert len(await debits_for(harness, payment["provider_reference"])) == 1
    assert len(await harness.debits()) == 1


# -- 7. orders and attempts ------------------------------------------------------------------------


async def test_duplicate_order_while_processing_and_after_success(harness: Harness) -> None:
    await harness.fault(operation="consume", action="delay", delay_ms=500)
    client = harness.client(max_retries=0)
    body = pay_body(harness)
    order = body["merchant_order_id"]

    first_task = asyncio.create_task(pay(client, new_key("a"), body))
    in_flight = await wait_for_order_row(harness, order)
    assert in_flight.status == "processing"
    dup = await pay(client, new_key("b"), body)
    assert dup.status_code == 409 and code(dup) == "duplicate_order"
    assert dup.json()["payment_id"] == in_flight.id

    first = await first_task
    assert first.status_code == 201 and first.json()["status"] == "succeeded"
    again = await pay(client, new_key("c"), body)
    assert again.status_code == 409 and code(again) == "duplicate_order"
    assert again.json()["payment_id"] == first.json()["id"]
    assert len(await harness.debits()) == 1


async def test_failed_payment_allows_a_new_attempt(harness: Harness) -> None:
    client = harness.client(max_retries=0)
    order = "ord-" + secrets.token_hex(6)
    wrong_pin = pay_body(
        harness, merchant_order_id=order, credential={"card_no": "31000004", "pin": "9999"}, amount=300
    )
    first = await pay(client, new_key("pin1"), wrong_pin)
    assert first.status_code == 201, first.text
    assert (first.json()["status"], first.json()["failure_code"]) == ("failed", "pin_invalid")

    right_pin = {**wrong_pin, "credential": {"card_no": "31000004", "pin": "1234"}}
    second = await pay(client, new_key("pin2"), right_pin)
    assert second.status_code == 201, second.text
    assert second.json()["status"] == "succeeded"
    assert second.json()["id"] != first.json()["id"]

    listed = await client.list_payments(order)
    assert [(p["id"], p["status"]) for p in listed["data"]] == [
        (first.json()["id"], "failed"),
        (second.json()["id"], "succeeded"),
    ]
    third = await pay(client, new_key("pin3"), right_pin)
    assert third.status_code == 409 and third.json()["payment_id"] == second.json()["id"]
    assert [d["amount"] for d in await harness.debits()] == [300]
    assert await harness.balance("31000004") == 20_000 - 300


async def test_twenty_concurrent_keys_for_one_order(harness: Harness) -> None:
    await harness.fault(operation="consume", action="delay", delay_ms=200)
    client = harness.client(max_retries=0)
    body = pay_body(harness)
    keys = [new_key(f"race{i}") for i in range(20)]

    responses = await asyncio.gather(*(pay(client, k, body) for k in keys))

    won = [r for r in responses if r.status_code == 201]
    assert len(won) == 1, [(r.status_code, r.text) for r in responses]
    winner = won[0].json()
    assert winner["status"] == "succeeded"
    for r in responses:
        if r is not won[0]:
            assert r.status_code == 409 and code(r) == "duplicate_order", r.text
            assert r.json()["payment_id"] == winner["id"]
    rows = await payments_for_order(harness, body["merchant_order_id"])
    assert [p.id for p in rows] == [winner["id"]]
    assert len(await harness.debits()) == 1
    # Every refused key was released: a later request under it would run afresh.
    for k, r in zip(keys, responses, strict=True):
        if r is not won[0]:
            assert await record(harness, device_id(harness), k) is None

    # The last line of defence: the database itself refuses a second live payment for the order.
    live = rows[0]
    with pytest.raises(IntegrityError):
        async with harness.services.db.transaction() as session:
            session.add(
                Payment(
                    id=new_id("pay"),
                    school_id=live.school_id,
                    device_id=live.device_id,
                    store_id=live.store_id,
                    merchant_order_id=live.merchant_order_id,
                    amount=1,
                    currency="CNY",
                    method="card",
                    status="processing",
                )
            )


# -- 8. retention ----------------------------------------------------------------------------------


async def test_keys_are_kept_at_least_24_hours(harness: Harness) -> None:
    hours = harness.settings.idempotency_retention_hours
    assert hours >= 24
    description = harness.app.openapi()["info"]["description"]
    assert "Idempotency-Key" in description and f"{hours} hours" in description

    client = harness.client(max_retries=0)
    body, key = pay_body(harness), new_key("keep")
    first = await pay(client, key, body)
    assert first.status_code == 201
    stored = await record(harness, device_id(harness), key)
    assert stored is not None
    assert stored.expires_at - stored.created_at == timedelta(hours=hours)

    # Housekeeping (on the gateway's clock) just short of the retention keeps the key: it still
    # replays. The clock goes back before signing again: signatures are checked against it.
    harness.clock.advance(hours=hours - 1)
    await harness.services.recovery.housekeeping()
    harness.clock.offset = timedelta()
    replay = await pay(client, key, body)
    assert replay.status_code == 201, replay.text
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == first.content
    # Past it, the record is purged.
    harness.clock.advance(hours=hours + 1)
    await harness.services.recovery.housekeeping()
    harness.clock.offset = timedelta()
    assert await record(harness, device_id(harness), key) is None


async def test_configured_retention_is_applied_and_documented(tmp_path: Path) -> None:
    # SQLite only: this is about configuration, not the database.
    async with start_harness(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'campuspay.db'}",
        data_dir=tmp_path,
        idempotency_retention_hours=72,
    ) as h:
        assert "72 hours" in h.app.openapi()["info"]["description"]
        key = new_key("keep72")
        assert (await pay(h.client(max_retries=0), key, pay_body(h))).status_code == 201
        stored = await record(h, device_id(h), key)
        assert stored is not None
        assert stored.expires_at - stored.created_at == timedelta(hours=72)


# -- 9. refunds and cancels ------------------------------------------------------------------------


async def test_refund_replay_refunds_once(harness: Harness) -> None:
    client = harness.client(max_retries=0)
    paid = (await pay(client, new_key(), pay_body(harness))).json()
    path, key = f"{PAYMENTS}/{paid['id']}/refunds", new_key("refund")

    first = await client.request("POST", path, json={"amount": 400}, idempotency_key=key)
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "succeeded"
    again = await client.request("POST", path, json={"amount": 400}, idempotency_key=key)
    assert again.status_code == 201 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    other_amount = await client.request("POST", path, json={"amount": 300}, idempotency_key=key)
    assert other_amount.status_code == 422 and code(other_amount) == "idempotency_key_reused"

    assert [e["amount"] for e in await refunds_for(harness, paid["provider_reference"])] == [400]
    assert (await client.get_payment(paid["id"]))["refunded_amount"] == 400


async def test_concurrent_refunds_never_exceed_the_amount(harness: Harness) -> None:
    client = harness.client(max_retries=0)
    paid = (await pay(client, new_key(), pay_body(harness, amount=1250))).json()
    assert paid["status"] == "succeeded"
    path = f"{PAYMENTS}/{paid['id']}/refunds"

    responses = await asyncio.gather(
        *(client.request("POST", path, json={"amount": 400}, idempotency_key=new_key()) for _ in range(10))
    )

    ok = [r for r in responses if r.status_code == 201]
    assert all(r.json()["status"] == "succeeded" for r in ok)
    for r in responses:
        if r.status_code != 201:
            assert r.status_code == 409 and code(r) == "refund_exceeds_amount", r.text
    assert len(ok) == 3  # 3 x 400 <= 1250 < 4 x 400
    refunded = sum(r.json()["amount"] for r in ok)
    assert (await client.get_payment(paid["id"]))["refunded_amount"] == refunded == 1200
    sandbox = await refunds_for(harness, paid["provider_reference"])
    assert sorted(e["refund_ref"] for e in sandbox) == sorted(r.json()["id"] for r in ok)
    assert sum(e["amount"] for e in sandbox) == refunded
    assert await harness.balance("31000001") == 100_000 - 1250 + refunded


async def test_cancel_replay_reverses_once(harness: Harness) -> None:
    client = harness.client(max_retries=0)
    paid = (await pay(client, new_key(), pay_body(harness))).json()
    path, key = f"{PAYMENTS}/{paid['id']}/cancel", new_key("cancel")

    first = await client.request("POST", path, idempotency_key=key)
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["refunded_amount"]) == ("canceled", 1250)
    again = await client.request("POST", path, idempotency_key=key)
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    # A different key on the canceled payment answers its state and reverses nothing more.
    other = await client.request("POST", path, idempotency_key=new_key())
    assert other.status_code == 200 and other.json()["status"] == "canceled"

    reversals = [
        e for e in await harness.events("ecard.reverse") if e["order_ref"] == paid["provider_reference"]
    ]
    assert len(reversals) == 1
    assert await harness.balance("31000001") == 100_000


# -- crashes and races inside the idempotency machinery --------------------------------------------


async def test_error_after_the_payment_exists_lets_a_retry_see_it(harness: Harness) -> None:
    # The provider applies the debit, then its app blows up: the request handler dies with an
    # exception after the payment (and its link to the key) was committed.
    await harness.fault(operation="consume", action="drop_after_apply")
    assert harness.device is not None
    # The gateway answers 500 and re-raises; see the answer like a terminal would.
    transport = httpx.ASGITransport(app=harness.app, raise_app_exceptions=False)
    client = CampusPayClient(GATEWAY, harness.device, transport=transport, max_retries=0)
    harness._clients.append(client)
    body, key = pay_body(harness), new_key("drop")

    first = await pay(client, key, body)
    assert first.status_code == 500, first.text
    stored = await record(harness, device_id(harness), key)
    assert stored is not None and stored.resource_id is not None
    payment_id = stored.resource_id

    # The retry must not wait out the 90 s execution lock of a request that is no longer running:
    # it sees the payment (202 while processing, 200 once resolved), never a second execution.
    retry = await pay(client, key, body)
    assert retry.status_code == 202, retry.text
    assert "idempotent-replayed" not in retry.headers
    assert retry.json()["id"] == payment_id and retry.json()["status"] == "processing"

    # The worker leaves the payment alone for sync budget + 5 s, by which time (in the harness's
    # 6 s recovery deadline) it is reversed. Move the gateway clock there instead of sleeping.
    harness.clock.advance(seconds=10)
    final = await wait_until_final(client, payment_id)
    assert (final["status"], final["failure_code"]) == ("failed", "outcome_unknown_reversed")
    after = await pay(client, key, body)
    assert after.status_code == 200 and after.json() == final
    assert "idempotent-replayed" not in after.headers
    assert len(await harness.debits()) == 1
    assert len(await harness.events("ecard.reverse")) == 1
    assert await harness.balance("31000001") == 100_000


async def test_concurrent_same_key_refused_requests(harness: Harness) -> None:
    # Each execution is refused (store_unknown) and releases the key while the others race for
    # it; on PostgreSQL a released record can vanish between a racer's INSERT and its SELECT.
    # Every answer is that refusal or "in use" -- never an internal error -- and nothing is kept.
    client = harness.client(max_retries=0)
    body = pay_body(harness, store_id="sto_doesnotexist")
    for _ in range(3):
        key = new_key("refused")
        responses = await asyncio.gather(*(pay(client, key, body) for _ in range(60)))
        codes = {(r.status_code, code(r)) for r in responses}
        assert codes <= {(422, "store_unknown"), (409, "idempotency_key_in_use")}, codes
        assert (422, "store_unknown") in codes
        assert await record(harness, device_id(harness), key) is None
    assert await harness.debits() == []


async def test_cancel_answered_202_then_current_state(sqlite_harness: Harness) -> None:
    # Database-independent bug: SQLite only, to keep the suite fast.
    harness = sqlite_harness
    client = harness.client(max_retries=0)
    paid = (await pay(client, new_key(), pay_body(harness))).json()
    assert paid["status"] == "succeeded"
    await harness.fault(operation="reverse", action="error_500", times=-1)
    path, key = f"{PAYMENTS}/{paid['id']}/cancel", new_key("cancel202")

    first = await client.request("POST", path, idempotency_key=key)
    assert first.status_code == 202, first.text
    again = await client.request("POST", path, idempotency_key=key)
    assert again.status_code == 202 and "idempotent-replayed" not in again.headers
    assert again.json()["id"] == paid["id"]

    await clear_faults(harness)
    deadline = time.monotonic() + 3  # the worker polls every 0.05 s, backing off to 0.5 s at most
    while (current := await client.get_payment(paid["id"]))["status"] != "canceled":
        assert time.monotonic() < deadline, f"cancel never completed: {current}"
        await asyncio.sleep(0.05)
    after = await client.request("POST", path, idempotency_key=key)
    assert after.status_code == 200 and after.json() == current
    assert "idempotent-replayed" not in after.headers
    assert len(await harness.events("ecard.reverse")) == 1
    assert await harness.balance("31000001") == 100_000


async def test_refund_answered_202_then_current_state(harness: Harness) -> None:
    client = harness.client(max_retries=0)
    paid = (await pay(client, new_key(), pay_body(harness))).json()
    await harness.fault(operation="refund", action="error_500", times=-1)
    path, key = f"{PAYMENTS}/{paid['id']}/refunds", new_key("refund202")

    first = await client.request("POST", path, json={"amount": 500}, idempotency_key=key)
    assert first.status_code == 202, first.text
    refund = first.json()
    assert refund["status"] == "processing"
    again = await client.request("POST", path, json={"amount": 500}, idempotency_key=key)
    assert again.status_code == 202 and "idempotent-replayed" not in again.headers
    assert again.json()["id"] == refund["id"] and again.json()["status"] == "processing"

    await clear_faults(harness)
    deadline = time.monotonic() + 3
    while (current := await client.get_refund(refund["id"]))["status"] == "processing":
        assert time.monotonic() < deadline, f"refund never completed: {current}"
        await asyncio.sleep(0.05)
    assert current["status"] == "succeeded"
    after = await client.request("POST", path, json={"amount": 500}, idempotency_key=key)
    assert after.status_code == 200 and after.json() == current
    assert "idempotent-replayed" not in after.headers
    assert [e["amount"] for e in await refunds_for(harness, paid["provider_reference"])] == [500]
    assert (await client.get_payment(paid["id"]))["refunded_amount"] == 500
