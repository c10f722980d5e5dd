"""A co-branded campus card paid through the bank: gateway -> bank adapter -> sandbox bank, with
signMethod 01 (merchant certificate; the bank's answers verified through its certificate chain).
Only the guardian's agreement token crosses to the bank."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import SANDBOX, Harness

pytestmark = pytest.mark.integration

PKI = Path(__file__).parents[2] / "sandbox" / "bank" / "pki"
MERCHANT, TR_ID, TOKEN = "777290058110001", "62000000001", "6299990000000000101"  # stu_alice, account 0012
CARD = "6228480099990012"  # the co-branded campus card (BIN 622848)


async def _set_up(h: Harness) -> str:
    r = await h.admin(
        "PUT",
        f"/v1/schools/{h.school_id}/providers/bank",
        {
            "endpoint": f"{SANDBOX}/bank",
            "credentials": {
                "mer_id": MERCHANT,
                "sign_method": "01",
                "tr_id": TR_ID,
                "merchant_private_key": (PKI / "merchant.key.pem").read_text(),
                "merchant_cert": (PKI / "merchant.pem").read_text(),
                "bank_root_ca": (PKI / "root-ca.pem").read_text(),
                "bank_intermediate_ca": (PKI / "intermediate-ca.pem").read_text(),
                "bank_subject_cn": "CampusPay Sandbox Bank Signing",
                "bank_subject_o": "CampusPay Sandbox Bank",
            },
            "options": {"back_url": f"http://gateway.test/v1/notify/bank/{h.school_id}"},
        },
    )
    assert r.status_code == 200, r.text
    r = await h.admin("PUT", f"/v1/schools/{h.school_id}/card-bins", {"co_branded_prefixes": ["622848"]})
    assert r.status_code == 200, r.text
    student = h.cards["31000001"]
    source = await h.admin(
        "POST",
        f"/v1/schools/{h.school_id}/funding-sources",
        {"student_id": student, "adapter": "bank", "agreement_token": TOKEN, "card_last4": "0012"},
    )
    assert source.status_code == 201, source.text
    card = await h.admin(
        "POST",
        f"/v1/schools/{h.school_id}/cards",
        {"student_id": student, "card_no": CARD, "funding_source_id": source.json()["id"]},
    )
    assert card.status_code == 201, card.text
    return student


async def _bank_events(h: Harness, kind: str) -> list[dict[str, object]]:
    r = await h.sandbox.get("/_control/events", params={"provider": "bank", "kind": kind})
    return list(r.json()["events"])


async def test_co_branded_card_pays_refunds_and_cancels_through_the_bank(harness: Harness) -> None:
    student = await _set_up(harness)
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
    await _set_up(harness)
    async with harness.client() as client:
        # 76: the bank debits, then signs its answer with a certificate from another root. The
        # gateway cannot trust that answer; it learns the truth by a (correctly signed) query.
        result = await client.create_payment(**harness.payment(amount=1076, credential={"card_no": CARD}))
        final = await harness.wait_settled(client, result.body["id"])
    assert final["status"] == "succeeded"
    assert len(await _bank_events(harness, "bank.debit")) == 1
