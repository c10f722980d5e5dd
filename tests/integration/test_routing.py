"""Routing: rules validated on write, dry runs that explain themselves, circuit breakers, and
failover only when the earlier attempt provably never reached its provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from gateway.payments.rules import BreakerPolicy
from gateway.store.models import Card, CircuitBreaker, Payment
from tests.face_helpers import setup_face
from tests.harness import Harness
from tests.routing_helpers import attempts, configure_ecard, debits, put_rules, routed_harness

pytestmark = pytest.mark.integration


@pytest.fixture
async def h(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with routed_harness(database_url, tmp_path) as harness:
        yield harness


async def _audit(h: Harness, action: str) -> list[dict[str, Any]]:
    r = await h.admin("GET", f"/v1/schools/{h.school_id}/audit", None)
    return [e for e in r.json()["data"] if e["action"] == action]


async def _routing(h: Harness, payment_id: str) -> dict[str, Any]:
    async with h.services.db.transaction() as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None and payment.routing is not None
        return payment.routing


# validation ---------------------------------------------------------------------------------


async def test_no_rules_is_the_default_route(h: Harness) -> None:
    r = await h.admin("GET", f"/v1/schools/{h.school_id}/routing")
    assert r.status_code == 200 and r.json()["configured"] is False and r.json()["version"] == 0
    async with h.client() as client:
        paid = (await client.create_payment(**h.payment())).body
    assert paid["status"] == "succeeded" and paid["adapter"] == "ecard"
    routing = await _routing(h, paid["id"])
    assert routing["chosen"] == "ecard" and routing["rule"] is None
    assert routing["reason"] == "default route (no rules configured)"
    created = await _audit(h, "payment.created")
    assert created[-1]["data"]["routing"]["chosen"] == "ecard"


async def test_invalid_rule_sets_are_rejected_with_every_reason(h: Harness) -> None:
    r = await put_rules(
        h,
        {"name": "big", "method": "card", "amount_min": 5000, "adapters": ["nope", "alipay"]},
        {"method": "card", "adapters": ["ecard"]},
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "routing_invalid"
    assert [x["code"] for x in body["reasons"]] == ["unknown_adapter", "method_unsupported", "no_adapter"]
    assert all(x["rule"] == 0 and x["message"] for x in body["reasons"])
    # an adapter the school has not configured
    r = await put_rules(h, {"method": "card", "adapters": ["ecard-b"]})
    assert r.status_code == 422 and r.json()["reasons"][0]["code"] == "adapter_not_configured"
    # nothing was stored
    assert (await h.admin("GET", f"/v1/schools/{h.school_id}/routing")).json()["version"] == 0


async def test_card_cannot_be_switched_off_while_face_is_on(h: Harness) -> None:
    await setup_face(h)
    rules = [{"method": "card", "adapters": []}, {"method": "face", "adapters": ["alipay"]}]
    r = await put_rules(h, *rules)
    assert r.status_code == 422 and r.json()["code"] == "non_face_required"
    assert [x["code"] for x in r.json()["reasons"]] == ["non_face_required"]
    v = await h.admin("POST", f"/v1/schools/{h.school_id}/routing/validate", {"rules": rules})
    assert v.status_code == 200 and v.json()["valid"] is False and v.json()["code"] == "non_face_required"
    # face configured but left without an adapter
    r = await put_rules(h, {"method": "card", "adapters": ["ecard"]}, {"method": "face", "adapters": []})
    assert r.status_code == 422 and r.json()["reasons"][0]["code"] == "no_adapter"


async def test_validate_does_not_save_and_put_versions(h: Harness) -> None:
    doc = {"rules": [{"method": "card", "adapters": ["ecard"]}]}
    v = await h.admin("POST", f"/v1/schools/{h.school_id}/routing/validate", doc)
    assert v.json() == {"valid": True, "code": None, "reasons": []}
    assert (await h.admin("GET", f"/v1/schools/{h.school_id}/routing")).json()["configured"] is False
    first = await h.admin("PUT", f"/v1/schools/{h.school_id}/routing", doc)
    second = await h.admin(
        "PUT", f"/v1/schools/{h.school_id}/routing", {**doc, "breaker": {"failure_threshold": 3}}
    )
    assert (first.json()["version"], second.json()["version"]) == (1, 2)
    got = (await h.admin("GET", f"/v1/schools/{h.school_id}/routing")).json()
    assert got["rules"] == doc["rules"] and got["breaker"]["failure_threshold"] == 3
    assert [e["data"]["version"] for e in await _audit(h, "routing.updated")] == [1, 2]
    assert (await h.admin("DELETE", f"/v1/schools/{h.school_id}/routing")).status_code == 204
    assert (await h.admin("GET", f"/v1/schools/{h.school_id}/routing")).json()["configured"] is False


# dry run ------------------------------------------------------------------------------------


async def test_dry_run_explains_the_choice(h: Harness) -> None:
    await configure_ecard(h, "ecard-b")
    r = await put_rules(
        h,
        {"name": "big", "method": "card", "amount_min": 5000, "adapters": ["ecard-b", "ecard"]},
        {
            "name": "lunch",
            "method": "card",
            "merchant_categories": ["canteen"],
            "time_window": {"start": "11:00", "end": "13:00"},
            "adapters": ["ecard", "ecard-b"],
        },
        {"name": "cards", "method": "card", "adapters": ["ecard"]},
    )
    assert r.status_code == 200, r.text
    path = f"/v1/schools/{h.school_id}/routing/dry-run"
    big = (
        await h.admin(
            "POST", path, {"method": "card", "card_no": "31000001", "amount": 6000, "store_id": h.store_id}
        )
    ).json()
    assert big["adapter"] == "ecard-b" and big["candidates"] == ["ecard-b", "ecard"]
    assert big["rule"] == 0 and big["rule_name"] == "big" and big["funding"] == "ecard_account"
    assert big["would_fail_with"] is None
    lunch = (
        await h.admin(
            "POST",
            path,
            {
                "method": "card",
                "bin": "3100",
                "amount": 100,
                "store_id": h.store_id,
                "at": "2026-03-02T04:30:00Z",
            },
        )
    ).json()  # 12:30 in Shanghai
    assert lunch["rule_name"] == "lunch" and lunch["candidates"] == ["ecard", "ecard-b"]
    assert "below amount_min 5000" in lunch["rules"][0]["reason"]
    evening = (
        await h.admin(
            "POST",
            path,
            {
                "method": "card",
                "bin": "3100",
                "amount": 100,
                "store_id": h.store_id,
                "at": "2026-03-02T12:00:00Z",
            },
        )
    ).json()
    assert evening["rule_name"] == "cards" and "outside the time window" in evening["rules"][1]["reason"]
    unknown = (
        await h.admin(
            "POST", path, {"method": "card", "card_no": "99999999", "amount": 100, "store_id": h.store_id}
        )
    ).json()
    assert unknown["would_fail_with"] == "card_unknown"
    face = (await h.admin("POST", path, {"method": "face", "amount": 100, "store_id": h.store_id})).json()
    assert face["adapter"] is None and face["default_route"] is True


# failover -----------------------------------------------------------------------------------


async def test_fails_over_only_when_the_first_provider_was_never_reached(h: Harness) -> None:
    await configure_ecard(h, "ecard-down", reachable=False)
    assert (await put_rules(h, {"method": "card", "adapters": ["ecard-down", "ecard"]})).status_code == 200
    async with h.client() as client:
        paid = (await client.create_payment(**h.payment(amount=900))).body
        assert paid["status"] == "succeeded" and paid["adapter"] == "ecard"
        assert paid["provider_reference"] == f"{paid['id']}-2"
        # the payment is refunded at the adapter that took it
        refund = await client.refund_payment(paid["id"], amount=100)
        assert refund.body["status"] == "succeeded"
    assert await attempts(h, paid["id"]) == [
        ("ecard-down", f"{paid['id']}-1", "unreachable"),
        ("ecard", f"{paid['id']}-2", "succeeded"),
    ]
    routing = await _routing(h, paid["id"])
    assert routing["chosen"] == "ecard"
    assert routing["attempts"] == [
        {"n": 1, "adapter": "ecard-down", "outcome": "unreachable"},
        {"n": 2, "adapter": "ecard"},
    ]
    failover = await _audit(h, "payment.failover")
    assert failover[0]["object_id"] == paid["id"] and failover[0]["data"]["to"] == "ecard"
    assert [d["amount"] for d in await h.debits()] == [900]


async def test_no_failover_after_an_unknown_outcome(h: Harness) -> None:
    second = await configure_ecard(h, "ecard-b")
    assert (await put_rules(h, {"method": "card", "adapters": ["ecard", "ecard-b"]})).status_code == 200
    async with h.client() as client:
        result = await client.create_payment(**h.payment(amount=1091))  # unknown, never applied
        assert result.status_code == 202
        final = await h.wait_settled(client, result.body["id"])
    assert final["status"] == "failed" and final["failure_code"] == "outcome_unknown_reversed"
    assert final["adapter"] == "ecard" and final["provider_reference"] == f"{final['id']}-1"
    assert [a[0] for a in await attempts(h, final["id"])] == ["ecard"]
    assert await debits(h, second["merchant_id"]) == []  # the second provider never charged


async def test_no_failover_after_a_fault_that_may_have_charged(h: Harness) -> None:
    second = await configure_ecard(h, "ecard-b")
    assert (await put_rules(h, {"method": "card", "adapters": ["ecard", "ecard-b"]})).status_code == 200
    await h.fault(operation="consume", action="error_500_after_apply")  # the first consume only
    async with h.client() as client:
        result = await client.create_payment(**h.payment(amount=650))
        final = await h.wait_settled(client, result.body["id"])
    assert final["status"] == "succeeded" and final["adapter"] == "ecard"  # resolved by query
    assert await debits(h, second["merchant_id"]) == []
    assert [d["amount"] for d in await h.debits()] == [650]


async def test_failover_skips_adapters_that_do_not_reach_the_payer(h: Harness) -> None:
    await configure_ecard(h, "ecard-down", reachable=False)
    from tests.routing_helpers import RecordingBank, configure_bank

    await configure_bank(h)
    r = await put_rules(h, {"method": "card", "adapters": ["ecard-down", "test-bank", "ecard"]})
    assert r.status_code == 200, r.text
    async with h.client() as client:
        paid = (await client.create_payment(**h.payment())).body
    assert paid["status"] == "succeeded" and paid["adapter"] == "ecard"
    routing = await _routing(h, paid["id"])
    assert {
        "adapter": "test-bank",
        "reason": "does not reach the payer's funding source (ecard_account)",
    } in routing["skipped"]
    assert RecordingBank.requests == []


async def test_unreachable_with_nowhere_to_go_fails_without_charging(h: Harness) -> None:
    await configure_ecard(h, "ecard-down", reachable=False)
    assert (await put_rules(h, {"method": "card", "adapters": ["ecard-down"]})).status_code == 200
    async with h.client() as client:
        paid = (await client.create_payment(**h.payment())).body
    assert paid["status"] == "failed" and paid["failure_code"] == "provider_unavailable"
    assert await h.debits() == []


# circuit breaker ----------------------------------------------------------------------------


async def test_breaker_opens_half_opens_and_closes(h: Harness) -> None:
    await _breaker_cycle(h)


@pytest.mark.redis
async def test_breaker_in_redis_opens_half_opens_and_closes(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with routed_harness(db, tmp_path, redis_url=redis_url, redis_prefix=redis_prefix) as h:
        await _breaker_cycle(h)
        async with h.services.db.transaction() as session:  # the state lived in Redis, not here
            rows = (await session.execute(select(CircuitBreaker))).scalars().all()
        assert rows == []


async def _breaker_cycle(h: Harness) -> None:
    merchant = await configure_ecard(h, "ecard-down", reachable=False)
    r = await put_rules(
        h,
        {"method": "card", "adapters": ["ecard-down", "ecard"]},
        breaker={"failure_threshold": 2, "cooldown_seconds": 30},
    )
    assert r.status_code == 200, r.text
    breakers = f"/v1/schools/{h.school_id}/routing/breakers"
    async with h.client() as client:
        for _ in range(2):
            paid = (await client.create_payment(**h.payment())).body
            assert paid["status"] == "succeeded" and paid["provider_reference"].endswith("-2")
        assert (await h.admin("GET", breakers)).json()["data"]["ecard-down"] == "open"
        # open: not called at all, the payment's first attempt is the next candidate
        paid = (await client.create_payment(**h.payment())).body
        assert paid["adapter"] == "ecard" and paid["provider_reference"].endswith("-1")
        assert await attempts(h, paid["id"]) == [("ecard", f"{paid['id']}-1", "succeeded")]
        routing = await _routing(h, paid["id"])
        assert {"adapter": "ecard-down", "reason": "breaker open: not called"} in routing["skipped"]
        dry = await h.admin(
            "POST",
            f"/v1/schools/{h.school_id}/routing/dry-run",
            {"method": "card", "card_no": "31000001", "amount": 100, "store_id": h.store_id},
        )
        assert dry.json()["adapter"] == "ecard" and dry.json()["breakers"]["ecard-down"] == "open"
        # after the cool-down one trial goes through; it fails, so the breaker opens again
        h.clock.advance(seconds=31)
        assert (await h.admin("GET", breakers)).json()["data"]["ecard-down"] == "half_open"
        paid = (await client.create_payment(**h.payment())).body
        assert [a[0] for a in await attempts(h, paid["id"])] == ["ecard-down", "ecard"]
        assert (await h.admin("GET", breakers)).json()["data"]["ecard-down"] == "open"
        # the provider is back: the next trial succeeds and closes the breaker
        await configure_ecard(h, "ecard-down", merchant=merchant)
        h.clock.advance(seconds=31)
        paid = (await client.create_payment(**h.payment())).body
        assert paid["adapter"] == "ecard-down" and paid["status"] == "succeeded"
        assert (await h.admin("GET", breakers)).json()["data"]["ecard-down"] == "closed"
        assert [d["amount"] for d in await debits(h, merchant["merchant_id"])] == [1250]


async def test_refunds_and_cancels_go_to_the_adapter_that_took_the_payment_even_with_its_breaker_open(
    h: Harness,
) -> None:
    async with h.client() as client:
        first = (await client.create_payment(**h.payment(amount=1000))).body
        second = (await client.create_payment(**h.payment(amount=500))).body
        breaker = h.services.routing.breaker
        for _ in range(5):
            await breaker.failure(h.school_id, "ecard", BreakerPolicy())
        assert await breaker.peek(h.school_id, "ecard", BreakerPolicy()) == "open"
        refund = await client.refund_payment(first["id"], amount=400)
        assert refund.body["status"] == "succeeded"
        canceled = await client.cancel_payment(second["id"])
        assert canceled.body["status"] == "canceled"
        # a NEW payment is stopped before any call
        blocked = (await client.create_payment(**h.payment(amount=77))).body
    assert blocked["status"] == "failed" and blocked["failure_code"] == "provider_unavailable"
    assert [d["amount"] for d in await h.debits()] == [1000, 500]
    assert await h.balance("31000001") == 100_000 - 600


# cards --------------------------------------------------------------------------------------


async def test_a_card_cached_as_lost_is_refused_without_asking_any_provider(h: Harness) -> None:
    async with h.services.db.transaction() as session:
        await session.execute(
            update(Card).where(Card.school_id == h.school_id, Card.last4 == "0001").values(status="lost")
        )
    async with h.client() as client:
        paid = (await client.create_payment(**h.payment())).body
    assert paid["status"] == "failed" and paid["failure_code"] == "card_reported_lost"
    assert paid["adapter"] is None
    assert await h.debits() == []
    assert not any(paid["id"] in str(e) for e in await h.events())  # no consume was sent


async def test_a_second_merchant_of_one_provider_is_an_instance_name(harness: Harness) -> None:
    """`ecard.backup` is the e-card adapter under its own name: its own settings, breaker and
    place in the rules, with the built-in registry (no plugin)."""
    backup = await configure_ecard(harness, "ecard.backup")
    for bad in ("ecard.Backup!", "nope.backup", "ecard."):
        r = await harness.admin(
            "PUT",
            f"/v1/schools/{harness.school_id}/providers/{bad}",
            {"endpoint": "http://sandbox.test/ecard", "credentials": backup},
        )
        assert r.status_code == 422 and r.json()["code"] == "unknown_adapter", (bad, r.text)
    r = await put_rules(harness, {"name": "cards", "method": "card", "adapters": ["ecard", "ecard.backup"]})
    assert r.status_code == 200, r.text
    for _ in range(5):
        await harness.services.routing.breaker.failure(harness.school_id, "ecard", BreakerPolicy())
    async with harness.client() as client:
        paid = (await client.create_payment(**harness.payment(amount=640))).body
    assert paid["status"] == "succeeded" and paid["adapter"] == "ecard.backup"
    assert [d["amount"] for d in await debits(harness, backup["merchant_id"])] == [640]
    assert await harness.debits() == []  # the main merchant was not called
