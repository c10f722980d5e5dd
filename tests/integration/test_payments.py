"""Card payments end to end: statuses, failures, orders and attempts, cancel, refunds."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from adapters.base import Outcome, ProviderConfig, RefundRequest
from adapters.ecard.adapter import EcardAdapter
from gateway.client import CampusPayError
from gateway.store.models import OutboxEvent, Payment
from tests.harness import SANDBOX, Harness
from tests.signing_helpers import signed

pytestmark = pytest.mark.integration


async def test_success_debits_once_and_records_everything(harness: Harness) -> None:
    async with harness.client() as client:
        result = await client.create_payment(**harness.payment(amount=1250, description="Lunch set A"))
        assert result.status_code == 201
        body = result.body
        assert body["status"] == "succeeded" and body["adapter"] == "ecard"
        assert body["student"] == harness.cards["31000001"]
        assert body["provider_reference"] == f"{body['id']}-1"
        assert body["refunded_amount"] == 0 and body["failure_code"] is None
        fetched = await client.get_payment(body["id"])
    assert fetched == body
    assert [d["amount"] for d in await harness.debits()] == [1250]
    assert await harness.balance("31000001") == 100_000 - 1250
    async with harness.services.db.transaction() as session:
        events = await session.execute(select(OutboxEvent).where(OutboxEvent.school_id == harness.school_id))
        types = [e.event_type for e in events.scalars()]
    assert types == ["payment.succeeded"]


@pytest.mark.parametrize(
    ("card", "extra", "code"),
    [
        ("31000002", {}, "insufficient_balance"),
        ("31000003", {}, "card_reported_lost"),
        ("31000005", {}, "card_frozen"),
        ("31000004", {"pin": "9999"}, "pin_invalid"),
        ("99999999", {}, "card_unknown"),  # not bound at this school: never reaches the provider
    ],
)
async def test_refusals_are_failed_payments_with_precise_codes(
    harness: Harness, card: str, extra: dict[str, str], code: str
) -> None:
    async with harness.client() as client:
        result = await client.create_payment(
            **harness.payment(amount=5000, credential={"card_no": card, **extra})
        )
    assert result.status_code == 201
    assert result.body["status"] == "failed"
    assert result.body["failure_code"] == code
    assert result.body["failure_message"]
    assert await harness.debits() == []


async def test_pin_card_pays_with_the_right_pin(harness: Harness) -> None:
    async with harness.client() as client:
        result = await client.create_payment(
            **harness.payment(credential={"card_no": "31000004", "pin": "1234"})
        )
    assert result.body["status"] == "succeeded"


async def test_duplicate_order_then_new_attempt_after_failure(harness: Harness) -> None:
    async with harness.client() as client:
        paid = await client.create_payment(**harness.payment(merchant_order_id="o-1"))
        with pytest.raises(CampusPayError) as err:
            await client.create_payment(**harness.payment(merchant_order_id="o-1", amount=99))
        assert err.value.status == 409 and err.value.code == "duplicate_order"
        assert err.value.body["payment_id"] == paid.body["id"]

        failed = await client.create_payment(
            **harness.payment(merchant_order_id="o-2", credential={"card_no": "31000004", "pin": "0000"})
        )
        assert failed.body["failure_code"] == "pin_invalid"
        retried = await client.create_payment(
            **harness.payment(merchant_order_id="o-2", credential={"card_no": "31000004", "pin": "1234"})
        )
        assert retried.body["status"] == "succeeded" and retried.body["id"] != failed.body["id"]
        listing = await client.list_payments("o-2")
    assert [p["status"] for p in listing["data"]] == ["failed", "succeeded"]


async def test_refunds_partial_full_and_never_more_than_paid(harness: Harness) -> None:
    async with harness.client() as client:
        paid = (await client.create_payment(**harness.payment(amount=1000))).body
        first = await client.refund_payment(paid["id"], amount=300, reason="cold soup")
        assert first.status_code == 201 and first.body["status"] == "succeeded"
        with pytest.raises(CampusPayError) as err:
            await client.refund_payment(paid["id"], amount=701)
        assert err.value.code == "refund_exceeds_amount" and err.value.body["refundable_amount"] == 700
        rest = await client.refund_payment(paid["id"], amount=700)
        assert rest.body["status"] == "succeeded"
        assert (await client.get_refund(rest.body["id"]))["amount"] == 700
        payment = await client.get_payment(paid["id"])
    assert payment["status"] == "succeeded" and payment["refunded_amount"] == 1000
    assert await harness.balance("31000001") == 100_000


async def test_failed_payment_is_neither_refundable_nor_cancelable(harness: Harness) -> None:
    async with harness.client() as client:
        failed = (await client.create_payment(**harness.payment(credential={"card_no": "31000003"}))).body
        with pytest.raises(CampusPayError) as refund_err:
            await client.refund_payment(failed["id"], amount=1)
        with pytest.raises(CampusPayError) as cancel_err:
            await client.cancel_payment(failed["id"])
    assert refund_err.value.code == "not_refundable"
    assert cancel_err.value.code == "not_cancelable"


async def test_cancel_reverses_in_full_until_midnight_in_store_time(harness: Harness) -> None:
    async with harness.client() as client:
        paid = (await client.create_payment(**harness.payment(amount=800))).body
        await client.refund_payment(paid["id"], amount=100)
        canceled = await client.cancel_payment(paid["id"])
        assert canceled.status_code == 200
        assert canceled.body["status"] == "canceled" and canceled.body["refunded_amount"] == 800
        with pytest.raises(CampusPayError) as err:
            await client.refund_payment(paid["id"], amount=1)
        assert err.value.code == "not_refundable"
        late = (await client.create_payment(**harness.payment(amount=500))).body
    harness.clock.advance(days=1)  # the gateway's day is over; the terminal's clock follows Date
    assert harness.device is not None
    request = signed(
        harness, harness.device, "POST", f"/v1/payments/{late['id']}/cancel", idempotency_key="k-late"
    )
    closed = await harness.gateway.send(request)
    assert closed.status_code == 409 and closed.json()["code"] == "cancel_window_closed"
    assert await harness.balance("31000001") == 100_000 - 500


async def test_card_numbers_and_pins_are_not_stored(harness: Harness) -> None:
    async with harness.client() as client:
        await client.create_payment(**harness.payment(credential={"card_no": "31000004", "pin": "1234"}))
    async with harness.services.db.transaction() as session:
        query = select(Payment).where(Payment.school_id == harness.school_id)
        payments = (await session.execute(query)).scalars().all()
        assert [p.card_last4 for p in payments] == ["0004"]
        dump = []  # every row of every table: the number and the PIN must be nowhere
        for table in Payment.metadata.sorted_tables:
            rows = (await session.execute(table.select())).all()
            dump.extend(repr(tuple(r)) for r in rows)
    text = "\n".join(dump)
    assert "31000004" not in text
    assert "'1234'" not in text


async def test_refund_of_unknown_payment_is_404(harness: Harness) -> None:
    async with harness.client() as client:
        with pytest.raises(CampusPayError) as err:
            await client.refund_payment("pay_doesnotexist", amount=1)
    assert err.value.status == 404 and err.value.code == "not_found"


async def _meal_periods(h: Harness, *periods: dict[str, str]) -> None:
    """The merchant's meal periods at the sandbox e-card (its clock stays the real one)."""
    path = f"/_control/ecard/merchants/{h.merchant_id}/meal-periods"
    r = await h.sandbox.put(path, json={"periods": list(periods)})
    assert r.status_code == 200, r.text


async def test_the_ecards_meal_rules_apply_to_the_store_it_knows(harness: Harness) -> None:
    """The e-card system keys meal periods and fixed prices by its own store refs; the school
    maps its store to one in the provider settings (options.store_refs)."""
    providers = f"/v1/schools/{harness.school_id}/providers/ecard"
    settings = {
        "endpoint": f"{SANDBOX}/ecard",
        "credentials": {"merchant_id": harness.merchant_id, "secret": harness.merchant_secret},
    }
    bad = {**settings, "options": {"store_refs": {"sto_nope": "x"}}}
    unknown = await harness.admin("PUT", providers, bad)
    assert unknown.status_code == 422 and "sto_nope" in unknown.json()["detail"]
    mapped = {**settings, "options": {"store_refs": {harness.store_id: "canteen-1"}}}
    assert (await harness.admin("PUT", providers, mapped)).status_code == 200
    async with harness.client() as client:
        await _meal_periods(harness)  # no meal period now: canteen-1 sells nothing
        closed = (await client.create_payment(**harness.payment(amount=1500))).body
        await _meal_periods(harness, {"name": "lunch", "start": "00:00", "end": "24:00"})  # 1500 fixed
        wrong_price = (await client.create_payment(**harness.payment(amount=1200))).body
        lunch = (await client.create_payment(**harness.payment(amount=1500))).body
    assert (closed["status"], closed["failure_code"]) == ("failed", "outside_meal_period")
    assert (wrong_price["status"], wrong_price["failure_code"]) == ("failed", "price_mismatch")
    assert lunch["status"] == "succeeded"
    assert [d["amount"] for d in await harness.debits()] == [1500]


async def test_over_the_pin_threshold_the_tills_next_attempt_with_the_pin_pays(harness: Harness) -> None:
    """Card 31000009 needs its PIN (8642) above 20.00 CNY a payment (docs/test-values.md)."""
    async with harness.client() as client:
        order = harness.payment(amount=2500, credential={"card_no": "31000009"})
        asked = (await client.create_payment(**order)).body
        assert (asked["status"], asked["failure_code"]) == ("failed", "pin_required")
        with_pin = {**order, "credential": {"card_no": "31000009", "pin": "8642"}}
        paid = (await client.create_payment(**with_pin)).body  # a new attempt on the same order
        assert paid["status"] == "succeeded" and paid["merchant_order_id"] == order["merchant_order_id"]
        # wrong PINs: refused, and locked after the third; then even the right one is refused
        codes = []
        for _ in range(3):
            wrong = harness.payment(amount=2500, credential={"card_no": "31000009", "pin": "0000"})
            codes.append((await client.create_payment(**wrong)).body["failure_code"])
        assert codes == ["pin_invalid", "pin_invalid", "pin_locked"]
        locked = harness.payment(amount=2500, credential={"card_no": "31000009", "pin": "8642"})
        assert (await client.create_payment(**locked)).body["failure_code"] == "pin_locked"
    assert [d["amount"] for d in await harness.debits()] == [2500]


async def test_the_state_machine_never_moves_a_payment_backwards(harness: Harness) -> None:
    resolver = harness.services.payments.resolver
    async with harness.client() as client:
        paid = (await client.create_payment(**harness.payment(amount=450))).body
        assert paid["status"] == "succeeded"
        for frm, to in (("succeeded", "processing"), ("canceled", "succeeded"), ("failed", "succeeded")):
            with pytest.raises(ValueError, match="not a payment transition"):
                await resolver.finish(paid["id"], to, actor="test", from_statuses=(frm,))
        # an allowed move from a state the payment is not in moves nothing (compare-and-set)
        assert await resolver.finish(paid["id"], "failed", actor="test") is False
        assert (await client.get_payment(paid["id"]))["status"] == "succeeded"


async def test_a_refund_the_provider_refuses_fails_with_a_stable_code(harness: Harness) -> None:
    """Money given back at the e-card's own counter is not known to the gateway; the provider
    then refuses the gateway's refund, and the terminal sees a stable code, not the provider's."""
    async with harness.client() as client:
        paid = (await client.create_payment(**harness.payment(amount=900))).body
        config = ProviderConfig(
            f"{SANDBOX}/ecard", {"merchant_id": harness.merchant_id, "secret": harness.merchant_secret}, {}
        )
        transport = httpx.ASGITransport(app=harness.sandbox_app)
        async with httpx.AsyncClient(transport=transport) as http:
            counter = EcardAdapter(config, http)
            outside = RefundRequest(paid["provider_reference"], "at-the-counter", 900)
            assert (await counter.refund(outside)).outcome is Outcome.SUCCEEDED
        refund = (await client.refund_payment(paid["id"], amount=100)).body
    assert refund["status"] == "failed" and refund["failure_code"] == "refund_exceeds_amount"
    assert "REFUND_EXCEEDS_AMOUNT" in refund["failure_message"]
