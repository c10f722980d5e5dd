"""A bank co-branded campus card bound to a guardian's agreement at the sandbox bank, for tests."""

from __future__ import annotations

from pathlib import Path

from tests.harness import SANDBOX, Harness

PKI = Path(__file__).parents[1] / "sandbox" / "bank" / "pki"
MERCHANT, TR_ID, TOKEN = "777290058110001", "62000000001", "6299990000000000101"  # stu_alice, account 0012
CARD = "6228480099990012"  # the co-branded campus card (BIN 622848)


async def bind_co_branded_card(h: Harness) -> str:
    """Configure the bank (signMethod 01), the co-branded BIN and bind CARD to stu_alice's
    bank agreement; returns her student id."""
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
