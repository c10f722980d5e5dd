"""Guardians' limits (COMPLIANCE rules 6, 15): hard caps over every method together, exact under
concurrency, processing payments reserve, refunds and cancels give back; school defaults and
ceilings; precise problems for bad input, nothing half-written."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.client import CampusPayClient
from gateway.store.models import AuditEntry, OutboxEvent, StudentControls
from tests.face_helpers import ALICE, setup_face
from tests.harness import Harness, start_harness

pytestmark = pytest.mark.integration

ALICE_CARD = "31000001"  # stu_alice: the same child pays by card and (enrolled) by face


async def guardian(h: Harness, student_id: str, ref: str = "g-1") -> str:
    r = await h.admin(
        "POST",
        f"/v1/schools/{h.school_id}/guardians",
        {"student_id": student_id, "external_ref": ref, "relation": "mother"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def put_limits(
    h: Harness, student_id: str, on_behalf_of: str | None, token: str | None = None, **limits: Any
) -> Any:
    headers = h.admin_headers(token)
    if on_behalf_of is not None:
        headers["CampusPay-On-Behalf-Of"] = on_behalf_of
    return await h.gateway.put(
        f"/v1/schools/{h.school_id}/students/{student_id}/limits", json=limits, headers=headers
    )


async def set_limits(h: Harness, card: str = ALICE_CARD, **limits: Any) -> str:
    student = h.cards[card]
    r = await put_limits(h, student, await guardian(h, student), **limits)
    assert r.status_code == 200, r.text
    return student


async def pay(client: CampusPayClient, h: Harness, amount: int, card: str = ALICE_CARD) -> dict[str, Any]:
    result = await client.create_payment(**h.payment(amount=amount, credential={"card_no": card}))
    return dict(result.body)


async def test_no_limits_set_none_apply(harness: Harness) -> None:
    h = harness
    async with h.client() as client:
        assert (await pay(client, h, 60_000))["status"] == "succeeded"
        assert (await pay(client, h, 30_000))["status"] == "succeeded"


async def test_per_payment_limit_refuses_before_any_provider_is_asked(harness: Harness) -> None:
    h = harness
    student = await set_limits(h, per_payment=3000)
    async with h.client() as client:
        over = await pay(client, h, 3001)
        assert over["status"] == "failed" and over["failure_code"] == "limit_exceeded"
        assert over["failure_message"]
        # a PIN card: the guardian's limit refuses first, whatever the PIN (no PIN overrides it)
        assert (await pay(client, h, 3000))["status"] == "succeeded"
    assert [d["amount"] for d in await h.debits()] == [3000]
    async with h.services.db.transaction() as session:
        events = (
            await session.execute(
                select(OutboxEvent).where(
                    OutboxEvent.school_id == h.school_id, OutboxEvent.event_type == "limit.exceeded"
                )
            )
        ).scalars()
        [event] = list(events)
    assert event.payload["data"] == {
        "payment_id": over["id"],
        "student_id": student,
        "limit": "per_payment",
        "amount": 3001,
        "currency": "CNY",
    }


async def test_per_day_counts_every_payment_refunds_and_cancels_give_back(harness: Harness) -> None:
    h = harness
    await set_limits(h, per_day=2000)
    async with h.client() as client:
        first = await pay(client, h, 1500)
        assert first["status"] == "succeeded"
        refused = await pay(client, h, 800)
        assert refused["failure_code"] == "limit_exceeded"
        refund = await client.refund_payment(first["id"], amount=1000)
        assert refund.body["status"] == "succeeded"
        second = await pay(client, h, 800)  # 500 + 800 of 2000
        assert second["status"] == "succeeded"
        assert (await pay(client, h, 800))["failure_code"] == "limit_exceeded"  # 1300 + 800
        canceled = await client.cancel_payment(second["id"])
        assert canceled.body["status"] == "canceled"
        assert (await pay(client, h, 1500))["status"] == "succeeded"  # 500 + 1500: exactly the limit
        assert (await pay(client, h, 1))["failure_code"] == "limit_exceeded"


async def test_limits_count_face_and_card_together(harness: Harness) -> None:
    h = harness
    face = await setup_face(h)
    consent = await face.consent("stu_alice")
    await face.enroll("stu_alice", ALICE, str(consent["id"]), agreement_no="20221000000000000001")
    await set_limits(h, per_day=2000, per_payment=1500)
    async with h.client() as client:
        assert (await pay(client, h, 1200))["status"] == "succeeded"
        by_face = await client.create_payment(**face.pay(await face.token("stu_alice"), amount=900))
        assert by_face.body["status"] == "failed" and by_face.body["failure_code"] == "limit_exceeded"
        too_big = await client.create_payment(**face.pay(await face.token("stu_alice"), amount=1600))
        assert too_big.body["failure_code"] == "limit_exceeded"
        ok = await client.create_payment(**face.pay(await face.token("stu_alice"), amount=800))
        assert ok.body["status"] == "succeeded"
    trades = (await h.sandbox.get("/_control/events", params={"provider": "alipay"})).json()["events"]
    refs = {e.get("out_trade_no") for e in trades}
    assert ok.body["provider_reference"] in refs
    assert by_face.body["provider_reference"] is None  # never sent


async def test_two_tills_one_budget_exactly_the_budget_is_spent(harness: Harness) -> None:
    """Six payments at once from three tills, a budget for two: exactly two succeed."""
    h = harness
    await set_limits(h, per_day=2000)
    tills = [h.client(await h.new_device()) for _ in range(3)]
    results = await asyncio.gather(*(pay(tills[i % 3], h, 1000) for i in range(6)))
    statuses = sorted(r["status"] for r in results)
    assert statuses == ["failed"] * 4 + ["succeeded"] * 2, results
    assert {r["failure_code"] for r in results if r["status"] == "failed"} == {"limit_exceeded"}
    assert sum(d["amount"] for d in await h.debits()) == 2000


async def test_a_processing_payment_reserves_its_amount(database_url: str, tmp_path: Path) -> None:
    async with start_harness(
        database_url=database_url, data_dir=tmp_path, run_workers=False, sync_budget_seconds=0.5
    ) as h:
        await set_limits(h, per_week=2000)
        await h.fault(operation="consume", action="error_500_after_apply")
        await h.fault(operation="query", action="query_lag", delay_ms=600_000, times=-1)
        async with h.client() as client:
            pending = await client.create_payment(**h.payment(amount=1500))
            assert pending.status_code == 202 and pending.body["status"] == "processing"
            refused = await pay(client, h, 600)
            assert refused["failure_code"] == "limit_exceeded"
            assert (await pay(client, h, 500))["status"] == "succeeded"


async def test_school_default_and_ceiling(harness: Harness) -> None:
    h = harness
    student = h.cards[ALICE_CARD]
    grd = await guardian(h, student)
    r = await h.admin(
        "PUT",
        f"/v1/schools/{h.school_id}/limit-policy",
        {"defaults": {"per_payment": 2000}, "ceilings": {"per_payment": 5000, "per_day": 8000}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["ceilings"]["per_day"] == 8000
    async with h.client() as client:
        assert (await pay(client, h, 2001))["failure_code"] == "limit_exceeded"  # the default
        r = await put_limits(h, student, grd, per_payment=4000)
        assert r.status_code == 200, r.text
        assert r.json()["effective"] == {
            "per_payment": 4000,
            "per_meal_period": None,
            "per_day": 8000,
            "per_week": None,
        }
        assert (await pay(client, h, 4000))["status"] == "succeeded"
        # above the ceiling: refused, and nothing written
        r = await put_limits(h, student, grd, per_payment=5001, per_day=100)
        assert r.status_code == 422 and r.json()["code"] == "limit_above_ceiling"
        got = await h.gateway.get(
            f"/v1/schools/{h.school_id}/students/{student}/limits",
            headers={**h.admin_headers(), "CampusPay-On-Behalf-Of": grd},
        )
        assert got.json()["per_payment"] == 4000 and got.json()["per_day"] is None
        # a lowered ceiling caps a guardian's earlier, higher limit
        r = await h.admin(
            "PUT", f"/v1/schools/{h.school_id}/limit-policy", {"ceilings": {"per_payment": 3000}}
        )
        assert r.status_code == 200
        assert (await pay(client, h, 3500))["failure_code"] == "limit_exceeded"
    r = await h.admin(
        "PUT",
        f"/v1/schools/{h.school_id}/limit-policy",
        {"defaults": {"per_day": 9000}, "ceilings": {"per_day": 8000}},
    )
    assert r.status_code == 422 and r.json()["code"] == "limit_above_ceiling"
    assert (await h.admin("GET", f"/v1/schools/{h.school_id}/limit-policy")).json()["ceilings"][
        "per_payment"
    ] == 3000


async def test_bad_guardian_input_is_refused_precisely_and_nothing_is_written(harness: Harness) -> None:
    h = harness
    alice, bob = h.cards[ALICE_CARD], h.cards["31000002"]
    bobs_guardian = await guardian(h, bob, "g-bob")
    r = await put_limits(h, alice, bobs_guardian, per_day=100)
    assert r.status_code == 403 and r.json()["code"] == "not_guardian"
    r = await put_limits(h, alice, None, per_day=100)
    assert r.status_code == 400 and r.json()["code"] == "on_behalf_of_required"
    r = await put_limits(h, alice, alice, per_day=100)  # an under-14 does not act for herself
    assert r.status_code == 403 and r.json()["code"] == "not_guardian"
    alices_guardian = await guardian(h, alice)
    r = await put_limits(h, alice, alices_guardian, per_day=-1)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = await put_limits(h, alice, alices_guardian, per_day=100, per_month=5)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = await put_limits(h, "stu_nobody", bobs_guardian, per_day=100)
    assert r.status_code == 404
    # another school's key does not reach this school's students
    other = await h.admin("POST", "/v1/schools", {"name": "Other"}, token=h.platform_token)
    r = await put_limits(h, alice, bobs_guardian, token=other.json()["api_key"], per_day=100)
    assert r.status_code == 404
    async with h.services.db.transaction() as session:
        controls = select(StudentControls).where(StudentControls.school_id == h.school_id)
        assert list((await session.execute(controls)).scalars()) == []
        entries = select(AuditEntry).where(AuditEntry.chain == h.school_id)
        actions = {e.action for e in (await session.execute(entries)).scalars()}
    assert "limits.updated" not in actions


async def test_the_audit_entry_names_the_key_and_the_guardian(harness: Harness) -> None:
    h = harness
    student = h.cards[ALICE_CARD]
    grd = await guardian(h, student)
    assert (await put_limits(h, student, grd, per_day=700)).status_code == 200
    async with h.services.db.transaction() as session:
        entry = (
            await session.execute(
                select(AuditEntry).where(
                    AuditEntry.chain == h.school_id, AuditEntry.action == "limits.updated"
                )
            )
        ).scalar_one()
    assert entry.actor.startswith("school_admin:key_") and entry.object_id == student
    assert entry.data["on_behalf_of"] == grd and entry.data["limits"]["per_day"] == 700


async def test_meal_periods_are_the_stores_and_bound_the_per_meal_limit(harness: Harness) -> None:
    h = harness
    await set_limits(h, per_meal_period=1000)
    path = f"/v1/schools/{h.school_id}/stores/{h.store_id}/meal-periods"
    r = await h.admin("PUT", path, {"meal_periods": [{"name": "all_day", "start": "00:00", "end": "24:00"}]})
    assert r.status_code == 200 and r.json()["meal_periods"][0]["end"] == "24:00"
    async with h.client() as client:
        assert (await pay(client, h, 800))["status"] == "succeeded"
        assert (await pay(client, h, 300))["failure_code"] == "limit_exceeded"
        assert (await h.admin("PUT", path, {"meal_periods": []})).json()["meal_periods"] is None
        # outside every meal period the per-meal-period limit does not apply
        assert (await pay(client, h, 300))["status"] == "succeeded"
    overlapping = [
        {"name": "lunch", "start": "11:00", "end": "13:00"},
        {"name": "late_lunch", "start": "12:30", "end": "14:00"},
    ]
    r = await h.admin("PUT", path, {"meal_periods": overlapping})
    assert r.status_code == 422 and "overlap" in r.json()["detail"]
    r = await h.admin("PUT", path, {"meal_periods": [{"name": "x", "start": "13:00", "end": "11:00"}]})
    assert r.status_code == 422


async def test_the_dry_run_shows_the_limits_of_the_payment_plan(harness: Harness) -> None:
    h = harness
    student = await set_limits(h, per_day=2000)
    async with h.client() as client:
        assert (await pay(client, h, 1500))["status"] == "succeeded"
    body = {"method": "card", "card_no": ALICE_CARD, "amount": 800, "store_id": h.store_id}
    r = await h.admin("POST", f"/v1/schools/{h.school_id}/routing/dry-run", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["would_fail_with"] == "limit_exceeded"
    assert out["limits"]["exceeded"] == "per_day" and out["limits"]["spent"]["per_day"] == 1500
    face = {"method": "face", "student_id": student, "amount": 400, "store_id": h.store_id}
    r = await h.admin("POST", f"/v1/schools/{h.school_id}/routing/dry-run", face)
    assert r.json()["limits"] == {
        "applied": {"per_payment": None, "per_meal_period": None, "per_day": 2000, "per_week": None},
        "spent": {"per_meal_period": 0, "per_day": 1500, "per_week": 1500},
        "exceeded": None,
    }
