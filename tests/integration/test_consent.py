"""Consent and enrolment rules at the gateway (COMPLIANCE rules 2, 3, 4, 7, 9)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.harness import Harness

pytestmark = pytest.mark.integration

NOTICE_TEXT = "Face payment at Test School: what we do with your child's face, and your rights."
NOTICE: dict[str, Any] = {
    "version": "2026-09",
    "content": NOTICE_TEXT,
    "standalone": True,
    "controller": "Test School, 1 School Road",
    "contact": "privacy@school.example",
    "purpose": "Paying for school meals by face",
    "method": "The provider matches a face template; the school never sees it",
    "retention": "Until consent ends or the student leaves, then deleted at the provider",
    "rights": "See, copy, correct and delete data; withdraw at any time with one request",
    "necessity_impact": "Optional; the campus card always works. Impact assessment ref IA-2026-01",
}


async def _post(h: Harness, path: str, body: dict[str, Any]) -> Any:
    return await h.admin("POST", f"/v1/schools/{h.school_id}{path}", body)


async def _student(h: Harness, age_band: str = "under_14") -> str:
    r = await _post(
        h,
        "/students",
        {"external_ref": f"s-{age_band}-{datetime.now(UTC).timestamp()}", "age_band": age_band},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _notice(h: Harness, **overrides: Any) -> dict[str, Any]:
    r = await _post(h, "/consent-notices", {**NOTICE, **overrides})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _consent_body(
    student: str, notice: dict[str, Any], signer: dict[str, Any], **overrides: Any
) -> dict[str, Any]:
    body = {
        "student_id": student,
        "signer": signer,
        "notice_id": notice["id"],
        "notice_version": notice["version"],
        "notice_hash": notice["content_hash"],
        "scope": "face_payment",
        "ends_at": (datetime.now(UTC) + timedelta(days=300)).isoformat(),
    }
    body.update(overrides)
    return body


async def test_notice_must_stand_alone_and_state_everything(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    bundled = await _post(h, "/consent-notices", {**NOTICE, "standalone": False})
    assert bundled.status_code == 422 and bundled.json()["code"] == "consent_bundled"
    missing = await _post(h, "/consent-notices", {**NOTICE, "version": "v2", "retention": "  "})
    assert missing.status_code == 422 and missing.json()["code"] == "notice_incomplete"
    notice = await _notice(h)
    assert notice["content_hash"] == hashlib.sha256(NOTICE_TEXT.encode()).hexdigest()


async def test_signer_must_fit_the_age_band(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    notice = await _notice(h)
    child, teen = await _student(h, "under_14"), await _student(h, "14_17")
    by_child = await _post(h, "/consents", _consent_body(child, notice, {"type": "student"}))
    assert by_child.status_code == 422 and by_child.json()["code"] == "consent_signer_invalid"
    stranger = await _post(
        h, "/guardians", {"student_id": teen, "external_ref": "g-other", "relation": "mother"}
    )
    wrong_guardian = await _post(
        h,
        "/consents",
        _consent_body(child, notice, {"type": "guardian", "guardian_id": stranger.json()["id"]}),
    )
    assert wrong_guardian.json()["code"] == "consent_signer_invalid"
    mother = await _post(h, "/guardians", {"student_id": child, "external_ref": "g-1", "relation": "mother"})
    ok = await _post(
        h, "/consents", _consent_body(child, notice, {"type": "guardian", "guardian_id": mother.json()["id"]})
    )
    assert ok.status_code == 201 and ok.json()["status"] == "active"
    teen_by_guardian = await _post(
        h,
        "/consents",
        _consent_body(teen, notice, {"type": "guardian", "guardian_id": stranger.json()["id"]}),
    )
    assert teen_by_guardian.json()["code"] == "consent_signer_invalid"
    teen_self = await _post(h, "/consents", _consent_body(teen, notice, {"type": "student"}))
    assert teen_self.status_code == 201


@pytest.mark.parametrize("ends_at", [None, "past", "forever"])
async def test_every_consent_ends(sqlite_harness: Harness, ends_at: str | None) -> None:
    h = sqlite_harness
    notice, teen = await _notice(h), await _student(h, "14_17")
    value = {
        None: None,
        "past": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "forever": (datetime.now(UTC) + timedelta(days=365 * 50)).isoformat(),
    }[ends_at]
    r = await _post(h, "/consents", _consent_body(teen, notice, {"type": "student"}, ends_at=value))
    assert r.status_code == 422 and r.json()["code"] == "consent_term_required"


async def test_consent_must_name_the_exact_notice(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    notice, teen = await _notice(h), await _student(h, "14_17")
    r = await _post(h, "/consents", _consent_body(teen, notice, {"type": "student"}, notice_hash="0" * 64))
    assert r.status_code == 422 and r.json()["code"] == "notice_mismatch"


async def test_enrolment_needs_a_live_consent_and_withdrawal_is_one_call(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    notice, teen = await _notice(h), await _student(h, "14_17")
    consent = (await _post(h, "/consents", _consent_body(teen, notice, {"type": "student"}))).json()
    other = await _student(h, "14_17")
    wrong = await _post(
        h,
        "/enrollments",
        {
            "student_id": other,
            "provider": "alipay",
            "provider_user_id": "2088000000000001",
            "consent_id": consent["id"],
        },
    )
    assert wrong.status_code == 422 and wrong.json()["code"] == "consent_required"
    enrolled = await _post(
        h,
        "/enrollments",
        {
            "student_id": teen,
            "provider": "alipay",
            "provider_user_id": "2088000000000001",
            "consent_id": consent["id"],
        },
    )
    assert enrolled.status_code == 201 and enrolled.json()["status"] == "active"
    withdrawn = await _post(h, f"/consents/{consent['id']}/withdraw", {})
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    enrollment = (
        await h.admin("GET", f"/v1/schools/{h.school_id}/enrollments/{enrolled.json()['id']}")
    ).json()
    assert enrollment["status"] in ("deleting", "deleted")  # deletion started; the provider is not configured
    again = await _post(
        h,
        "/enrollments",
        {
            "student_id": teen,
            "provider": "alipay",
            "provider_user_id": "2088000000000002",
            "consent_id": consent["id"],
        },
    )
    assert again.json()["code"] == "consent_required"
    audit = (await h.admin("GET", f"/v1/schools/{h.school_id}/audit")).json()["data"]
    assert {"consent.given", "enrollment.created", "consent.withdrawn", "enrollment.deleting"} <= {
        e["action"] for e in audit
    }


async def test_face_payment_without_a_face_provider_is_refused_and_card_still_works(
    sqlite_harness: Harness,
) -> None:
    h = sqlite_harness
    async with h.client() as client:
        face = await client.create_payment(
            **h.payment(method="face", credential={"face_token": "fp" + "a" * 33})
        )
        card = await client.create_payment(**h.payment())
    assert face.body["status"] == "failed" and face.body["failure_code"] == "method_unavailable"
    assert card.body["status"] == "succeeded"
