"""Face payment set-up for tests: the school's Alipay app at the sandbox, a notice, consents."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tests.harness import GATEWAY, SANDBOX, Harness

GROUP = "school-demo"
ALICE, BOB, ZED = "2088101000000001", "2088101000000002", "2088101000000003"
NOTICE: dict[str, Any] = {
    "version": "face-1",
    "content": "Stand-alone notice: face payment at this school.",
    "standalone": True,
    "controller": "Test School",
    "contact": "privacy@school.test",
    "purpose": "Canteen payments by face",
    "method": "Provider-side matching; the school sees only a token",
    "retention": "Until withdrawal, end of consent, or leaving school",
    "rights": "See, copy, correct, delete; withdraw in one step",
    "necessity_impact": "Optional; cards always work",
}


@dataclass
class Face:
    h: Harness
    notice: dict[str, Any]
    app_id: str
    students: dict[str, str]  # sandbox student ref -> gateway student id

    async def token(self, student: str, school: str = GROUP) -> str:
        r = await self.h.sandbox.post("/face/test-tokens", json={"school": school, "student": student})
        assert r.status_code == 200, r.text
        return str(r.json()["face_token"])

    async def consent(self, student: str) -> dict[str, Any]:
        gid = self.students[student]
        guardian = await self.h.admin(
            "POST",
            f"/v1/schools/{self.h.school_id}/guardians",
            {"student_id": gid, "external_ref": f"g-{student}", "relation": "mother"},
        )
        body = {
            "student_id": gid,
            "signer": {"type": "guardian", "guardian_id": guardian.json()["id"]},
            "notice_id": self.notice["id"],
            "notice_version": self.notice["version"],
            "notice_hash": self.notice["content_hash"],
            "scope": "face_payment",
            "ends_at": (datetime.now(UTC) + timedelta(days=200)).isoformat(),
        }
        r = await self.h.admin("POST", f"/v1/schools/{self.h.school_id}/consents", body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def enroll(
        self, student: str, user_id: str, consent_id: str, agreement_no: str | None = None
    ) -> dict[str, Any]:
        body = {
            "student_id": self.students[student],
            "provider": "alipay",
            "provider_user_id": user_id,
            "agreement_no": agreement_no,
            "consent_id": consent_id,
        }
        r = await self.h.admin("POST", f"/v1/schools/{self.h.school_id}/enrollments", body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def pay(self, token: str, **overrides: Any) -> dict[str, Any]:
        return self.h.payment(method="face", credential={"face_token": token}, **overrides)


async def setup_face(h: Harness) -> Face:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption()).decode()
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    app = (await h.sandbox.post("/alipay/apps", json={"app_public_key": public})).json()
    r = await h.admin(
        "PUT",
        f"/v1/schools/{h.school_id}/providers/alipay",
        {
            "endpoint": f"{SANDBOX}/alipay/gateway.do",
            "credentials": {
                "app_id": app["app_id"],
                "app_private_key": private,
                "alipay_public_key": app["alipay_public_key"],
            },
            "options": {"face_group": GROUP, "notify_url": f"{GATEWAY}/v1/notify/alipay/{h.school_id}"},
        },
    )
    assert r.status_code == 200, r.text
    # the sandbox's notifications reach this gateway in-process
    h.sandbox_app.state.alipay.notify_client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=h.app), base_url=GATEWAY
    )
    notice = (await h.admin("POST", f"/v1/schools/{h.school_id}/consent-notices", NOTICE)).json()
    assert notice["content_hash"] == hashlib.sha256(NOTICE["content"].encode()).hexdigest()
    # the same students whose cards the harness bound, so "the card keeps working" is the same child
    students = {"stu_alice": h.cards["31000001"], "stu_bob": h.cards["31000002"]}
    return Face(h, notice, app["app_id"], students)
