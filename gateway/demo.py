"""``campuspay serve --demo``: a demo school wired to the in-process sandbox, and demo.json.

demo.json holds everything a new user needs to sign a first payment: the base URL, the platform
token, the school and its admin key, devices of both key kinds with their private key or secret,
stores, and the test cards. Seeding is idempotent: an existing demo.json whose school still
exists is kept.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from sqlalchemy import select

from gateway.auth.tokens import new_token
from gateway.client import generate_ed25519_keypair
from gateway.services import Services
from gateway.store.models import School
from sandbox.testvalues import CARDS, ECARD_DEFAULT_MERCHANT_ID, ECARD_DEFAULT_SECRET, FACE_USERS

__all__ = ["seed_demo"]

ACTOR = "system:demo"
FACE_GROUP = "school-demo"
DEMO_NOTICE = "Demo Middle School face payment notice: a stand-alone notice for the sandbox demo."
DEMO_NOTICE_FIELDS = {
    "controller": "Demo Middle School, 1 Demo Road",
    "contact": "privacy@demo-school.test",
    "purpose": "Paying for canteen meals by face",
    "method": "The provider's face cloud matches a template; the school and CampusPay never see it",
    "retention": "Until consent is withdrawn, ends, or the student leaves; then deleted at the provider",
    "rights": "See, copy, correct and delete the data; withdraw consent at any time in one step",
    "necessity_impact": "Optional: the campus card always works. Impact assessment DEMO-IA-1",
}


def _read(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _write(path: Path, demo: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds keys: owner-only
    with os.fdopen(fd, "w") as fh:
        json.dump(demo, fh, indent=2)


async def _existing(services: Services, path: Path) -> dict[str, Any] | None:
    data = await asyncio.to_thread(_read, path)
    if data is None:
        return None
    async with services.db.transaction() as session:
        found = await session.scalar(select(School.id).where(School.id == data.get("school_id")))
    return data if found else None


def _rsa_app_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption()).decode()
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


async def _seed_face(
    services: Services,
    sandbox: httpx.AsyncClient,
    sandbox_base: str,
    school_id: str,
    students: dict[str, str],
) -> list[dict[str, Any]]:
    """Alipay face payment against the in-process sandbox: an app, a notice, consents, enrolments.

    Alice has her guardian's consent and is enrolled; Bob is enrolled at the provider but has no
    consent here (his face payments are refused, his card works); Carol is not enrolled at all."""
    settings, consents = services.settings, services.consents
    private_pem, public_pem = _rsa_app_key()
    registered = (await sandbox.post("/alipay/apps", json={"app_public_key": public_pem})).json()
    await services.providers.put(
        school_id,
        "alipay",
        endpoint=f"{sandbox_base}/alipay/gateway.do",
        credentials={
            "app_id": registered["app_id"],
            "app_private_key": private_pem,
            "alipay_public_key": registered["alipay_public_key"],
        },
        options={
            "face_group": FACE_GROUP,
            "notify_url": f"{settings.public_base_url}/v1/notify/alipay/{school_id}",
        },
        actor=ACTOR,
    )
    notice = await consents.add_notice(
        school_id,
        version="demo-1",
        content=DEMO_NOTICE,
        standalone=True,
        fields=DEMO_NOTICE_FIELDS,
        actor=ACTOR,
    )
    users = []
    for user in FACE_USERS:
        if user.school != FACE_GROUP or user.student not in students:
            continue
        entry: dict[str, Any] = {
            "school": user.school,
            "student": user.student,
            "gateway_student": students[user.student],
            "user_id": user.user_id,
            "enrolled_at_provider": user.user_id is not None,
            "consent": False,
        }
        if user.student == "stu_alice" and user.user_id:
            guardian = await consents.add_guardian(
                school_id,
                student_id=students[user.student],
                external_ref=f"guardian-of-{user.student}",
                relation="mother",
                name=None,
                actor=ACTOR,
            )
            consent = await consents.give_consent(
                school_id,
                student_id=students[user.student],
                signer_type="guardian",
                guardian_id=guardian.id,
                notice_id=notice.id,
                notice_version=notice.version,
                notice_hash=notice.content_hash,
                scope="face_payment",
                ends_at=services.clock() + timedelta(days=365),
                actor=ACTOR,
            )
            await consents.enroll(
                school_id,
                student_id=students[user.student],
                provider="alipay",
                provider_user_id=user.user_id,
                agreement_no=user.agreement_no,
                consent_id=consent.id,
                actor=ACTOR,
            )
            entry["consent"] = True
        users.append(entry)
    return users


async def seed_demo(
    services: Services,
    data_dir: Path,
    sandbox: httpx.AsyncClient | None = None,
    *,
    sandbox_base_url: str | None = None,
) -> Path:
    """Seed the demo school and write demo.json. The providers point at the sandbox mounted in
    this gateway (``<public_base_url>/sandbox``) unless ``sandbox_base_url`` names a standalone
    one (``campuspay bench`` runs the sandbox as a process of its own)."""
    path = data_dir / "demo.json"
    existing = await _existing(services, path)
    settings = services.settings
    sandbox_base = sandbox_base_url or f"{settings.public_base_url}/sandbox"
    if existing is not None:
        if existing.get("base_url") == settings.public_base_url:
            return path
    platform_token = settings.bootstrap_token or new_token("platform")
    await services.tenancy.ensure_platform_token(platform_token)
    tenancy = services.tenancy
    school, api_key = await tenancy.create_school("Demo Middle School", ACTOR)
    canteen = await tenancy.create_store(
        school.id, name="Canteen", merchant_category="canteen", timezone="Asia/Shanghai", actor=ACTOR
    )
    shop = await tenancy.create_store(
        school.id, name="School shop", merchant_category="shop", timezone="Asia/Shanghai", actor=ACTOR
    )
    private_pem, public_pem = generate_ed25519_keypair()
    till = await tenancy.create_device(
        school.id, name="Canteen till 1", alg="ed25519", public_key=public_pem, actor=ACTOR
    )
    vending = await tenancy.create_device(
        school.id, name="Vending machine 1", alg="hmac-sha256", public_key=None, actor=ACTOR
    )
    await services.providers.put(
        school.id,
        "ecard",
        endpoint=f"{sandbox_base}/ecard",
        credentials={"merchant_id": ECARD_DEFAULT_MERCHANT_ID, "secret": ECARD_DEFAULT_SECRET},
        options={},
        actor=ACTOR,
    )
    cards: list[dict[str, Any]] = []
    students: dict[str, str] = {}
    for card in CARDS:
        student = await tenancy.create_student(
            school.id, external_ref=card.student, age_band="under_14", name=None, actor=ACTOR
        )
        await tenancy.bind_card(
            school.id, student_id=student.id, card_no=card.card_no, funding_adapter="ecard", actor=ACTOR
        )
        students[card.student] = student.id
        cards.append(
            {
                "card_no": card.card_no,
                "pin": card.pin,
                "balance": card.balance,
                "status": card.status,
                "student": student.id,
                "student_external_ref": card.student,
            }
        )
    demo = {
        "base_url": settings.public_base_url,
        "platform_token": platform_token,
        "school_id": school.id,
        "school_api_key": api_key,
        "devices": [
            {
                "device_id": till.device_id,
                "key_id": till.key_id,
                "alg": "ed25519",
                "private_key_pem": private_pem,
            },
            {
                "device_id": vending.device_id,
                "key_id": vending.key_id,
                "alg": "hmac-sha256",
                "secret": vending.secret,
            },
        ],
        "stores": [
            {"store_id": canteen.id, "name": canteen.name, "merchant_category": "canteen"},
            {"store_id": shop.id, "name": shop.name, "merchant_category": "shop"},
        ],
        "cards": cards,
        "face": {
            "users": await _seed_face(services, sandbox, sandbox_base, school.id, students)
            if sandbox is not None
            else [],
            "mint_token": {
                "method": "POST",
                "url": f"{sandbox_base}/face/test-tokens",
                "body": {"school": FACE_GROUP, "student": "<student>"},
            },
        },
        "sandbox_control": f"{sandbox_base}/_control",
    }
    await asyncio.to_thread(_write, path, demo)
    return path
