"""Funding sources: e-card account by default, a guardian's bank agreement for co-branded cards
(by BIN). Only the agreement token reaches the bank; full bank card numbers are never stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.base import AgreementCredential
from gateway.store.models import Base, FundingSource
from tests.harness import Harness
from tests.routing_helpers import RecordingBank, configure_bank, put_rules, routed_harness

pytestmark = pytest.mark.integration

BANK_CARD = "6228480012345678"
TOKEN = "agr_tok_" + "Zq81" * 6


@pytest.fixture
async def h(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with routed_harness(database_url, tmp_path) as harness:
        await configure_bank(harness)
        r = await harness.admin(
            "PUT", f"/v1/schools/{harness.school_id}/card-bins", {"co_branded_prefixes": ["622848"]}
        )
        assert r.status_code == 200 and r.json() == {"co_branded_prefixes": ["622848"]}
        yield harness


async def _student(h: Harness, ref: str) -> str:
    r = await h.admin(
        "POST", f"/v1/schools/{h.school_id}/students", {"external_ref": ref, "age_band": "under_14"}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _agreement(h: Harness, student: str, **over: object) -> dict[str, object]:
    body = {
        "student_id": student,
        "adapter": "test-bank",
        "agreement_token": TOKEN,
        "card_last4": "5678",
        **over,
    }
    r = await h.admin("POST", f"/v1/schools/{h.school_id}/funding-sources", body)
    assert r.status_code == 201, r.text
    assert "agreement_token" not in r.json()
    return dict(r.json())


async def test_a_co_branded_card_pays_by_agreement_token_only(h: Harness) -> None:
    student = await _student(h, "s-bank")
    source = await _agreement(h, student)
    assert source["kind"] == "bank_agreement" and source["card_last4"] == "5678"
    # a co-branded BIN must name a bank agreement
    r = await h.admin(
        "POST", f"/v1/schools/{h.school_id}/cards", {"student_id": student, "card_no": BANK_CARD}
    )
    assert r.status_code == 422 and r.json()["code"] == "funding_source_required"
    r = await h.admin(
        "POST",
        f"/v1/schools/{h.school_id}/cards",
        {"student_id": student, "card_no": BANK_CARD, "funding_source_id": source["id"]},
    )
    assert r.status_code == 201, r.text
    assert r.json()["funding_adapter"] == "test-bank" and r.json()["funding_source_id"] == source["id"]
    async with h.client() as client:
        paid = (await client.create_payment(**h.payment(amount=2300, credential={"card_no": BANK_CARD}))).body
        assert paid["status"] == "succeeded" and paid["adapter"] == "test-bank"
        refund = await client.refund_payment(paid["id"], amount=300)
        assert refund.body["status"] == "succeeded"
    pay = RecordingBank.requests[0]
    assert pay.credential == AgreementCredential(token=TOKEN, card_last4="5678")
    assert BANK_CARD not in repr(pay) and TOKEN not in repr(pay)
    assert await h.debits() == []  # the e-card account was not touched
    # nothing anywhere holds the full bank card number or the token in clear
    async with h.services.db.transaction() as session:
        dump = []
        for table in Base.metadata.sorted_tables:
            dump.extend(repr(tuple(row)) for row in (await session.execute(table.select())).all())
    text = "\n".join(dump)
    assert BANK_CARD not in text and TOKEN not in text


async def test_a_guardian_can_end_the_agreement_and_its_card_stops_paying(h: Harness) -> None:
    student = await _student(h, "s-revoke")
    source = await _agreement(h, student)
    cards = f"/v1/schools/{h.school_id}/cards"
    bound = {"student_id": student, "card_no": BANK_CARD, "funding_source_id": source["id"]}
    assert (await h.admin("POST", cards, bound)).status_code == 201
    revoke = f"/v1/schools/{h.school_id}/funding-sources/{source['id']}/revoke"
    first = await h.admin("POST", revoke)
    assert first.status_code == 200 and first.json()["status"] == "revoked"
    again = await h.admin("POST", revoke)  # idempotent
    assert again.status_code == 200 and again.json()["status"] == "revoked"
    async with h.client() as client:
        order = h.payment(amount=700, credential={"card_no": BANK_CARD})
        refused = (await client.create_payment(**order)).body
    assert (refused["status"], refused["failure_code"]) == ("failed", "funding_source_inactive")
    assert RecordingBank.requests == []  # the bank was never asked
    async with h.services.db.transaction() as session:
        row = await session.get(FundingSource, source["id"])
    assert row is not None and row.agreement_token_enc is None  # the token is gone, not just disabled
    # the e-card account is not revocable: the card path always works
    plain = await _student(h, "s-plain-revoke")
    assert (await h.admin("POST", cards, {"student_id": plain, "card_no": "31000077"})).status_code == 201
    sources = f"/v1/schools/{h.school_id}/funding-sources"
    ecard_source = (await h.admin("GET", f"{sources}?student_id={plain}")).json()
    r = await h.admin("POST", f"{sources}/{ecard_source[0]['id']}/revoke")
    assert r.status_code == 422 and r.json()["code"] == "funding_source_invalid"
    missing = await h.admin("POST", f"/v1/schools/{h.school_id}/funding-sources/fs_nope/revoke")
    assert missing.status_code == 404


async def test_plain_cards_default_to_the_e_card_account(h: Harness) -> None:
    student = await _student(h, "s-plain")
    r = await h.admin(
        "POST", f"/v1/schools/{h.school_id}/cards", {"student_id": student, "card_no": "42000001"}
    )
    assert r.status_code == 201 and r.json()["funding_adapter"] == "ecard" and r.json()["funding_source_id"]
    sources = (await h.admin("GET", f"/v1/schools/{h.school_id}/funding-sources?student_id={student}")).json()
    assert [(s["kind"], s["adapter"]) for s in sources] == [("ecard_account", "ecard")]
    # a plain card cannot be bound to a bank agreement
    agreement = await _agreement(h, student, card_last4="0002")
    r = await h.admin(
        "POST",
        f"/v1/schools/{h.school_id}/cards",
        {"student_id": student, "card_no": "42000002", "funding_source_id": agreement["id"]},
    )
    assert r.status_code == 422 and r.json()["code"] == "funding_source_invalid"


async def test_bad_funding_sources_are_refused(h: Harness) -> None:
    student = await _student(h, "s-bad")
    other = await _student(h, "s-other")
    url = f"/v1/schools/{h.school_id}/funding-sources"
    r = await h.admin(
        "POST", url, {"student_id": student, "adapter": "ecard", "agreement_token": "t", "card_last4": "1111"}
    )
    assert r.status_code == 422 and r.json()["code"] == "funding_unsupported"
    r = await h.admin(
        "POST", url, {"student_id": student, "adapter": "nope", "agreement_token": "t", "card_last4": "1111"}
    )
    assert r.status_code == 422 and r.json()["code"] == "unknown_adapter"
    r = await h.admin("POST", url, {"student_id": student, "adapter": "test-bank"})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    # another student's agreement, or one for another bank card
    theirs = await _agreement(h, other)
    r = await h.admin(
        "POST",
        f"/v1/schools/{h.school_id}/cards",
        {"student_id": student, "card_no": BANK_CARD, "funding_source_id": theirs["id"]},
    )
    assert r.status_code == 422 and r.json()["code"] == "funding_source_invalid"
    mine = await _agreement(h, student, card_last4="9999")
    r = await h.admin(
        "POST",
        f"/v1/schools/{h.school_id}/cards",
        {"student_id": student, "card_no": BANK_CARD, "funding_source_id": mine["id"]},
    )
    assert r.status_code == 422 and r.json()["code"] == "funding_source_invalid"


async def test_routing_reaches_each_payer_through_an_adapter_that_can_fund_it(h: Harness) -> None:
    student = await _student(h, "s-route")
    source = await _agreement(h, student)
    r = await h.admin(
        "POST",
        f"/v1/schools/{h.school_id}/cards",
        {"student_id": student, "card_no": BANK_CARD, "funding_source_id": source["id"]},
    )
    assert r.status_code == 201
    # with co-branded cards about, a card route that only reaches e-card accounts is rejected
    r = await put_rules(h, {"method": "card", "adapters": ["ecard"]})
    assert r.status_code == 422 and [x["code"] for x in r.json()["reasons"]] == ["funding_unreachable"]
    r = await put_rules(h, {"method": "card", "adapters": ["ecard", "test-bank"]})
    assert r.status_code == 200, r.text
    dry = (
        await h.admin(
            "POST",
            f"/v1/schools/{h.school_id}/routing/dry-run",
            {"method": "card", "bin": "622848", "amount": 100, "store_id": h.store_id},
        )
    ).json()
    assert dry["adapter"] == "test-bank" and dry["funding"] == "bank_agreement"
    assert dry["skipped"] == [
        {"adapter": "ecard", "reason": "does not reach the payer's funding source (bank_agreement)"}
    ]
    async with h.client() as client:
        bank = (await client.create_payment(**h.payment(credential={"card_no": BANK_CARD}))).body
        ecard = (await client.create_payment(**h.payment())).body
    assert (bank["adapter"], ecard["adapter"]) == ("test-bank", "ecard")
    assert [type(r.credential).__name__ for r in RecordingBank.requests] == ["AgreementCredential"]
