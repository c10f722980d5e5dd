"""A co-branded campus card paid through the bank: gateway -> bank adapter -> sandbox bank, with
signMethod 01 (merchant certificate; the bank's answers verified through its certificate chain).
Only the guardian's agreement token crosses to the bank."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select

from gateway.store.models import ProviderNotification
from tests.bank_helpers import CARD, bind_co_branded_card
from tests.harness import GATEWAY, Harness

pytestmark = pytest.mark.integration


async def _bank_events(h: Harness, kind: str) -> list[dict[str, object]]:
    r = await h.sandbox.get("/_control/events", params={"provider": "bank", "kind": kind})
    return list(r.json()["events"])


async def test_co_branded_card_pays_refunds_and_cancels_through_the_bank(harness: Harness) -> None:
    student = await bind_co_branded_card(harness)
    async with harness.client() as client:
        paid = await client.create_payment(**harness.payment(amount=2300, credential={"card_no": CARD}))
        assert paid.status_code == 201
        assert paid.body["status"] == "succeeded" and paid.body["adapter"] == "bank"
        assert paid.body["student"] == student
        refund = await client.refund_payment(paid.body["id"], amount=300)
        assert refund.body["status"] == "succeeded"
        # partly refunded: the void is refused, so the cancel refunds exactly the rest, once
        canceled = await client.cancel_payment(paid.body["id"])
        assert canceled.body["status"] == "canceled" and canceled.body["refunded_amount"] == 2300
        again = await client.cancel_payment(paid.body["id"])
        assert again.body["status"] == "canceled"
    debits = await _bank_events(harness, "bank.debit")
    assert [d["amount"] if "amount" in d else d.get("txnAmt") for d in debits] in ([2300], ["2300"])
    refunds = await _bank_events(harness, "bank.refund")
    assert [int(str(r["amount"])) for r in refunds] == [300, 2000]
    assert await _bank_events(harness, "bank.void") == []
    assert await harness.debits() == []  # the e-card account was not touched


async def test_a_bank_answer_signed_by_an_untrusted_certificate_is_never_a_success(harness: Harness) -> None:
    await bind_co_branded_card(harness)
    async with harness.client() as client:
        # 76: the bank debits, then signs its answer with a certificate from another root. The
        # gateway cannot trust that answer; it learns the truth by a (correctly signed) query.
        result = await client.create_payment(**harness.payment(amount=1076, credential={"card_no": CARD}))
        final = await harness.wait_settled(client, result.body["id"])
    assert final["status"] == "succeeded"
    assert len(await _bank_events(harness, "bank.debit")) == 1


async def test_a_lost_bank_funded_card_is_blocked_here_without_the_ecard(harness: Harness) -> None:
    """The e-card system does not know a bank co-branded card: its loss is recorded by the
    gateway alone, at once, and its payments stop (COMPLIANCE 19)."""
    await bind_co_branded_card(harness)
    cards = f"/v1/schools/{harness.school_id}/cards"
    lost = await harness.admin("POST", f"{cards}/report-lost", {"card_no": CARD})
    assert lost.status_code == 200 and lost.json()["status"] == "lost", lost.text
    async with harness.client() as client:
        refused = await client.create_payment(**harness.payment(amount=900, credential={"card_no": CARD}))
        assert refused.body["failure_code"] == "card_reported_lost"
        swap = {"old_card_no": CARD, "new_card_no": "6228480099990099"}
        replaced = await harness.admin("POST", f"{cards}/replace", swap)
        assert replaced.status_code == 422 and replaced.json()["code"] == "funding_source_required"
        found = await harness.admin("POST", f"{cards}/cancel-loss", {"card_no": CARD})
        assert found.status_code == 200 and found.json()["status"] == "active"
        paid = await client.create_payment(**harness.payment(amount=900, credential={"card_no": CARD}))
        assert paid.body["status"] == "succeeded" and paid.body["adapter"] == "bank"
    debits = await _bank_events(harness, "bank.debit")
    assert [int(str(d["amount"])) for d in debits] == [900]


async def test_the_banks_notifications_reach_the_gateway_verified_and_once(harness: Harness) -> None:
    await bind_co_branded_card(harness)
    harness.sandbox_app.state.bank.notify_client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=harness.app), base_url=GATEWAY
    )
    async with harness.client() as client:
        order = harness.payment(amount=1300, credential={"card_no": CARD})
        paid = (await client.create_payment(**order)).body
    assert paid["status"] == "succeeded"
    for _ in range(50):
        if not harness.sandbox_app.state.bank.notifier.pending:
            break
        await asyncio.sleep(0.1)
    async with harness.services.db.transaction() as session:
        query = select(ProviderNotification).where(ProviderNotification.adapter == "bank")
        rows = (await session.execute(query)).scalars().all()
    assert [(r.reference, r.outcome) for r in rows] == [(paid["provider_reference"], "succeeded")]
    sent = await _bank_events(harness, "bank.notify")
    assert sent and all(str(e.get("status")) == "200" for e in sent), sent
    # the same form with one byte changed is refused, and nothing is recorded for it
    forged = await harness.gateway.post(
        f"/v1/notify/bank/{harness.school_id}",
        content=b"respCode=00&txnAmt=1&reqReserved=" + paid["provider_reference"].encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert forged.status_code == 422 and forged.json()["code"] == "notification_rejected"
