"""Tenancy: schools, admin keys, stores, devices and their keys, students and cards.

Every method that takes a ``school_id`` scopes its queries to it; a row of another school is
indistinguishable from a missing one (404).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.auth.tokens import hash_token, new_token
from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.protection.limits import check_meal_periods
from gateway.protection.published import refuse_published
from gateway.settings import Environment
from gateway.store.cache import SettingsCache
from gateway.store.db import Database
from gateway.store.models import ApiKey, Card, Device, DeviceKey, School, Store, Student, new_id, utcnow
from gateway.tenancy.funding import FundingService

__all__ = ["CreatedDevice", "TenancyService", "card_fingerprint"]

MAX_ACTIVE_KEYS = 2


def card_fingerprint(keyring: Keyring, school_id: str, card_no: str) -> str:
    return keyring.keyed_hash("card", f"{school_id}:{card_no}")


@dataclass(frozen=True)
class CreatedDevice:
    device_id: str
    key_id: str
    alg: str
    secret: str | None


def _check_public_key(pem: str | None, env: Environment) -> str:
    if not pem:
        raise Unprocessable("validation_error", "public_key (PEM) is required for ed25519")
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise Unprocessable("validation_error", "public_key is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise Unprocessable("validation_error", "public_key must be an Ed25519 key")
    refuse_published(env, {"public_key": pem}, "device")  # the signing test vectors' key
    return pem


class TenancyService:
    def __init__(self, db: Database, keyring: Keyring, env: Environment = Environment.SANDBOX) -> None:
        self.db, self.keyring, self.env = db, keyring, env
        self._stores: SettingsCache[tuple[str, str], Store] = SettingsCache()

    async def startup_violations(self) -> list[str]:
        """Active device keys production refuses (published test keys registered before)."""
        if self.env is not Environment.PRODUCTION:
            return []
        async with self.db.transaction(readonly=True) as session:
            keys = (
                await session.execute(
                    select(DeviceKey).where(
                        DeviceKey.status == "active", DeviceKey.public_key_pem.is_not(None)
                    )
                )
            ).scalars()
            bad = []
            for key in keys:
                try:
                    refuse_published(self.env, {"public_key": key.public_key_pem or ""}, "device")
                except Unprocessable as exc:
                    bad.append(
                        f"school {key.school_id} device {key.device_id} key {key.key_id}: {exc.detail}"
                    )
        return bad

    async def ensure_platform_token(self, token: str) -> None:
        async with self.db.transaction() as session:
            digest = hash_token(token)
            exists = (
                await session.execute(select(ApiKey).where(ApiKey.token_hash == digest))
            ).scalar_one_or_none()
            if exists is None:
                session.add(ApiKey(id=new_id("key"), school_id=None, token_hash=digest, role="platform"))

    async def has_platform_token(self) -> bool:
        async with self.db.transaction(readonly=True) as session:
            count = await session.scalar(
                select(func.count()).select_from(ApiKey).where(ApiKey.role == "platform")
            )
            return bool(count)

    async def create_school(self, name: str, actor: str) -> tuple[School, str]:
        token = new_token("sk")
        async with self.db.transaction() as session:
            school = School(id=new_id("sch"), name=name)
            session.add(school)
            await session.flush()
            key = ApiKey(
                id=new_id("key"), school_id=school.id, token_hash=hash_token(token), role="school_admin"
            )
            session.add(key)
            await audit.append(
                session,
                self.keyring,
                chain=school.id,
                actor=actor,
                action="school.created",
                object_type="school",
                object_id=school.id,
                data={"api_key_id": key.id},
            )
        return school, token

    async def create_store(
        self,
        school_id: str,
        *,
        name: str,
        merchant_category: str,
        timezone: str,
        actor: str,
        meal_periods: list[dict[str, str]] | None = None,
    ) -> Store:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise Unprocessable("validation_error", f"unknown time zone {timezone!r}") from exc
        if meal_periods is not None:
            check_meal_periods(meal_periods)
        async with self.db.transaction() as session:
            store = Store(
                id=new_id("sto"),
                school_id=school_id,
                name=name,
                merchant_category=merchant_category,
                timezone=timezone,
                meal_periods=meal_periods,
            )
            session.add(store)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="store.created",
                object_type="store",
                object_id=store.id,
                data={"merchant_category": merchant_category},
            )
        return store

    async def set_meal_periods(
        self, school_id: str, store_id: str, periods: list[dict[str, str]], actor: str
    ) -> Store:
        """The store's meal periods (what a guardian's per-meal-period limit counts in)."""
        check_meal_periods(periods)
        async with self.db.transaction() as session:
            store = (
                await session.execute(
                    select(Store).where(Store.id == store_id, Store.school_id == school_id).with_for_update()
                )
            ).scalar_one_or_none()
            if store is None:
                raise NotFound("no such store")
            store.meal_periods = periods or None
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="store.meal_periods_set",
                object_type="store",
                object_id=store.id,
                data={"meal_periods": periods},
            )
        self._stores.drop(lambda key: key == (school_id, store_id))
        return store

    async def get_store(self, school_id: str, store_id: str) -> Store | None:
        """A store of the school (cached up to 5 s: its name, category and time zone route and
        describe a payment, they never refuse one by themselves)."""
        fresh, store = self._stores.fresh((school_id, store_id))
        if fresh:
            return store
        async with self.db.transaction(readonly=True) as session:
            store = (
                await session.execute(select(Store).where(Store.id == store_id, Store.school_id == school_id))
            ).scalar_one_or_none()
        if store is None:
            return None  # not cached: a store created in another process is found at once
        return self._stores.put((school_id, store_id), store)

    async def list_stores(self, school_id: str) -> list[Store]:
        async with self.db.transaction(readonly=True) as session:
            return list((await session.execute(select(Store).where(Store.school_id == school_id))).scalars())

    def _new_key(self, device: Device, alg: str, public_key: str | None) -> tuple[DeviceKey, str | None]:
        key_id = new_id("key")
        if alg == "ed25519":
            return DeviceKey(
                key_id=key_id,
                device_id=device.id,
                school_id=device.school_id,
                alg=alg,
                public_key_pem=_check_public_key(public_key, self.env),
            ), None
        secret = "hsk_" + secrets.token_urlsafe(32)
        enc = self.keyring.encrypt(secret, aad=f"device_key/{key_id}")
        return DeviceKey(
            key_id=key_id, device_id=device.id, school_id=device.school_id, alg=alg, secret_enc=enc
        ), secret

    async def create_device(
        self, school_id: str, *, name: str, alg: str, public_key: str | None, actor: str
    ) -> CreatedDevice:
        async with self.db.transaction() as session:
            device = Device(id=new_id("dev"), school_id=school_id, name=name)
            session.add(device)
            key, secret = self._new_key(device, alg, public_key)
            session.add(key)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="device.created",
                object_type="device",
                object_id=device.id,
                data={"key_id": key.key_id, "alg": alg},
            )
        return CreatedDevice(device.id, key.key_id, alg, secret)

    async def _device(self, session: Any, school_id: str, device_id: str) -> Device:
        device = (
            await session.execute(
                select(Device).where(Device.id == device_id, Device.school_id == school_id).with_for_update()
            )
        ).scalar_one_or_none()
        if device is None:
            raise NotFound("no such device")
        return device  # type: ignore[no-any-return]

    async def add_key(
        self, school_id: str, device_id: str, *, alg: str, public_key: str | None, actor: str
    ) -> CreatedDevice:
        async with self.db.transaction() as session:
            device = await self._device(session, school_id, device_id)
            if device.status != "active":
                raise NotFound("no such device")
            active = await session.scalar(
                select(func.count())
                .select_from(DeviceKey)
                .where(DeviceKey.device_id == device.id, DeviceKey.status == "active")
            )
            if (active or 0) >= MAX_ACTIVE_KEYS:
                raise Conflict("key_limit_reached")
            key, secret = self._new_key(device, alg, public_key)
            session.add(key)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="device.key_added",
                object_type="device",
                object_id=device.id,
                data={"key_id": key.key_id, "alg": alg},
            )
        return CreatedDevice(device.id, key.key_id, alg, secret)

    async def retire_key(self, school_id: str, device_id: str, key_id: str, actor: str) -> None:
        async with self.db.transaction() as session:
            device = await self._device(session, school_id, device_id)
            key = (
                await session.execute(
                    select(DeviceKey).where(DeviceKey.key_id == key_id, DeviceKey.device_id == device.id)
                )
            ).scalar_one_or_none()
            if key is None:
                raise NotFound("no such key")
            if key.status == "retired":
                return
            active = await session.scalar(
                select(func.count())
                .select_from(DeviceKey)
                .where(DeviceKey.device_id == device.id, DeviceKey.status == "active")
            )
            if (active or 0) <= 1:
                raise Conflict("last_active_key")
            key.status, key.retired_at = "retired", utcnow()
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="device.key_retired",
                object_type="device",
                object_id=device.id,
                data={"key_id": key_id},
            )

    async def revoke_device(self, school_id: str, device_id: str, actor: str) -> None:
        async with self.db.transaction() as session:
            device = await self._device(session, school_id, device_id)
            if device.status == "revoked":
                return
            device.status, device.revoked_at = "revoked", utcnow()
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="device.revoked",
                object_type="device",
                object_id=device.id,
                data={},
            )

    async def list_devices(self, school_id: str) -> list[tuple[Device, list[DeviceKey]]]:
        async with self.db.transaction(readonly=True) as session:
            devices = list(
                (await session.execute(select(Device).where(Device.school_id == school_id))).scalars()
            )
            keys = list(
                (await session.execute(select(DeviceKey).where(DeviceKey.school_id == school_id))).scalars()
            )
        return [(d, [k for k in keys if k.device_id == d.id]) for d in devices]

    async def create_student(
        self, school_id: str, *, external_ref: str, age_band: str, name: str | None, actor: str
    ) -> Student:
        async with self.db.transaction() as session:
            exists = await session.scalar(
                select(Student.id).where(Student.school_id == school_id, Student.external_ref == external_ref)
            )
            if exists:
                raise Conflict("already_exists", f"student {external_ref!r} already exists as {exists}")
            student = Student(
                id=new_id("stu"), school_id=school_id, external_ref=external_ref, age_band=age_band
            )
            if name:
                student.name_enc = self.keyring.encrypt(name, aad=f"student_name/{student.id}")
            session.add(student)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="student.created",
                object_type="student",
                object_id=student.id,
                data={"age_band": age_band},
            )
        return student

    async def bind_card(
        self,
        school_id: str,
        *,
        student_id: str,
        card_no: str,
        funding_adapter: str,
        actor: str,
        funding_source_id: str | None = None,
    ) -> Card:
        digest = card_fingerprint(self.keyring, school_id, card_no)
        async with self.db.transaction() as session:
            student = (
                await session.execute(
                    select(Student).where(Student.id == student_id, Student.school_id == school_id)
                )
            ).scalar_one_or_none()
            if student is None:
                raise Unprocessable("validation_error", "no such student in this school")
            if await session.scalar(
                select(Card.id).where(Card.school_id == school_id, Card.card_hash == digest)
            ):
                raise Conflict("already_exists", "card is already bound")
            source = await FundingService.for_card(
                session,
                school_id,
                student_id=student.id,
                card_no=card_no,
                funding_source_id=funding_source_id,
                default_adapter=funding_adapter,
            )
            card = Card(
                id=new_id("crd"),
                school_id=school_id,
                student_id=student.id,
                card_hash=digest,
                last4=card_no[-4:],
                funding_adapter=source.adapter,
                funding_source_id=source.id,
            )
            session.add(card)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="card.bound",
                object_type="card",
                object_id=card.id,
                data={
                    "student_id": student.id,
                    "last4": card.last4,
                    "funding_adapter": card.funding_adapter,
                    "funding_source_id": source.id,
                    "funding_kind": source.kind,
                },
            )
        return card

    async def find_card(
        self, school_id: str, card_no: str, *, session: AsyncSession | None = None
    ) -> Card | None:
        """``session``: read in the caller's transaction (a payment reads its card and payer in one)."""
        digest = card_fingerprint(self.keyring, school_id, card_no)
        stmt = select(Card).where(Card.school_id == school_id, Card.card_hash == digest)
        if session is not None:
            return (await session.execute(stmt)).scalar_one_or_none()
        async with self.db.transaction(readonly=True) as own:
            return (await own.execute(stmt)).scalar_one_or_none()
