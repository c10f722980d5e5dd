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
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gateway.auth.tokens import new_token
from gateway.client import generate_ed25519_keypair
from gateway.services import Services
from gateway.store.models import School
from sandbox.testvalues import CARDS, ECARD_DEFAULT_MERCHANT_ID, ECARD_DEFAULT_SECRET

__all__ = ["seed_demo"]

ACTOR = "system:demo"


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


async def seed_demo(services: Services, data_dir: Path) -> Path:
    path = data_dir / "demo.json"
    existing = await _existing(services, path)
    settings = services.settings
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
        endpoint=f"{settings.public_base_url}/sandbox/ecard",
        credentials={"merchant_id": ECARD_DEFAULT_MERCHANT_ID, "secret": ECARD_DEFAULT_SECRET},
        options={},
        actor=ACTOR,
    )
    cards = []
    for card in CARDS:
        student = await tenancy.create_student(
            school.id, external_ref=card.student, age_band="under_14", name=None, actor=ACTOR
        )
        await tenancy.bind_card(
            school.id, student_id=student.id, card_no=card.card_no, funding_adapter="ecard", actor=ACTOR
        )
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
            "users": [],
            "note": "face payments arrive with the face-payment release; pay by card for now",
        },
        "sandbox_control": f"{settings.public_base_url}/sandbox/_control",
    }
    await asyncio.to_thread(_write, path, demo)
    return path
