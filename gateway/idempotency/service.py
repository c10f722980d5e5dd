"""Idempotency-Key handling, durable in the database.

A key is claimed before a money-moving request executes. Semantics (CONTRACT.md):

* same key + same fingerprint, finished            -> the stored status and bytes, replayed
* same key + same fingerprint, answered 202         -> the resource's *current* state
* same key while the first request still executes   -> 409 ``idempotency_key_in_use``
* same key + different fingerprint                  -> 422 ``idempotency_key_reused``
* a request refused before it changed anything      -> the claim is released: nothing stored

The claim and the resource it creates are linked in the same transaction (``attach``), so a
crash at any point leaves either nothing (the claim expires and a retry runs) or a record that
points at the payment (a retry answers with the payment's current state, never a second one).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.errors import BadRequest, Conflict, Unprocessable
from gateway.protection.crypto import Keyring
from gateway.store.db import Database
from gateway.store.dialect import insert_ignore
from gateway.store.models import IdempotencyRecord, utcnow

__all__ = ["Answer", "Claim", "IdempotencyService", "validate_key"]


def validate_key(key: str | None) -> str:
    if key is None:
        raise BadRequest("idempotency_key_missing")
    if not (1 <= len(key) <= 255) or not all(33 <= ord(c) <= 126 for c in key):
        raise BadRequest("idempotency_key_invalid")
    return key


@dataclass(frozen=True)
class Claim:
    """What to do with a request: ``execute`` it, ``replay`` stored bytes, or show ``resource``."""

    action: str  # execute | replay | resource
    device_id: str
    key: str
    status: int | None = None
    body: bytes | None = None
    resource_type: str | None = None
    resource_id: str | None = None


@dataclass(frozen=True)
class Answer:
    """A final response stored in the transaction that made the change it reports, so the
    request needs no transaction of its own to store it (``IdempotencyService.answer``)."""

    status: int
    body: bytes


class IdempotencyService:
    def __init__(self, db: Database, keyring: Keyring, retention: timedelta, lock: timedelta) -> None:
        """``lock``: how long a claim counts as "still executing". Longer than the synchronous
        budget, so a live request never loses its claim; short enough that after a crash the
        key answers with the payment's state again within seconds."""
        self.db, self.keyring, self.retention, self.lock = db, keyring, retention, lock

    def fingerprint(self, method: str, path: str, body: bytes) -> str:
        # Keyed, so a stored fingerprint reveals nothing about the request it came from.
        key = self.keyring.derive("idempotency-fingerprint")
        return hmac.new(
            key, method.upper().encode() + b"\n" + path.encode() + b"\n" + body, hashlib.sha256
        ).hexdigest()

    async def claim(self, device_id: str, key: str, fingerprint: str) -> Claim:
        # On PostgreSQL the record that made the INSERT conflict can be released (deleted) by a
        # refused request before the SELECT sees it; the key is then free again: claim afresh.
        for _ in range(3):
            claim = await self._claim_once(device_id, key, fingerprint)
            if claim is not None:
                return claim
        raise Conflict("idempotency_key_in_use", headers={"Retry-After": "1"})

    async def _claim_once(self, device_id: str, key: str, fingerprint: str) -> Claim | None:
        now = utcnow()
        async with self.db.transaction() as session:
            values = {
                "device_id": device_id,
                "key": key,
                "fingerprint": fingerprint,
                "state": "executing",
                "locked_until": now + self.lock,
                "created_at": now,
                "expires_at": now + self.retention,
            }
            inserted = await session.execute(insert_ignore(session, IdempotencyRecord.__table__, values))  # type: ignore[arg-type]
            if inserted.rowcount:  # type: ignore[attr-defined]
                return Claim("execute", device_id, key)
            record = (
                await session.execute(
                    select(IdempotencyRecord)
                    .where(IdempotencyRecord.device_id == device_id, IdempotencyRecord.key == key)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if record is None:
                return None
            if not hmac.compare_digest(record.fingerprint, fingerprint):
                raise Unprocessable("idempotency_key_reused")
            if record.state == "done":
                return Claim(
                    "replay", device_id, key, status=record.response_status, body=record.response_body
                )
            # The lock is checked before the resource: ``attach`` links the resource while the
            # first request is still executing, and until it answers (``finish`` or
            # ``mark_processing`` clear the lock) another request with the key is "in use".
            if record.locked_until is not None and record.locked_until > now:
                retry_after = max(1, int((record.locked_until - now).total_seconds()) // 10 or 1)
                raise Conflict("idempotency_key_in_use", headers={"Retry-After": str(min(retry_after, 5))})
            if record.resource_id is not None:
                return Claim(
                    "resource",
                    device_id,
                    key,
                    resource_type=record.resource_type,
                    resource_id=record.resource_id,
                )
            # The first execution died before changing anything; this request takes it over.
            record.locked_until = now + self.lock
            return Claim("execute", device_id, key)

    @staticmethod
    async def attach(session: AsyncSession, claim: Claim, resource_type: str, resource_id: str) -> None:
        """Link the claim to the resource created in the same transaction."""
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.device_id == claim.device_id, IdempotencyRecord.key == claim.key)
            .values(resource_type=resource_type, resource_id=resource_id, state="processing")
        )

    @staticmethod
    async def answer(
        session: AsyncSession, claim: Claim, resource_type: str, resource_id: str, answer: Answer
    ) -> None:
        """Link the claim to its resource and store the final response, in the caller's
        transaction: what ``attach`` and ``finish`` do, in one statement."""
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.device_id == claim.device_id, IdempotencyRecord.key == claim.key)
            .values(
                resource_type=resource_type,
                resource_id=resource_id,
                state="done",
                response_status=answer.status,
                response_body=answer.body,
                locked_until=None,
            )
        )

    async def finish(self, claim: Claim, status: int, body: bytes) -> None:
        """Store a final response for byte-for-byte replay."""
        async with self.db.transaction() as session:
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.device_id == claim.device_id, IdempotencyRecord.key == claim.key)
                .values(state="done", response_status=status, response_body=body, locked_until=None)
            )

    async def mark_processing(self, claim: Claim) -> None:
        """The request answered 202; later retries see the resource's current state."""
        async with self.db.transaction() as session:
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.device_id == claim.device_id, IdempotencyRecord.key == claim.key)
                .values(state="processing", locked_until=None)
            )

    async def release(self, claim: Claim) -> None:
        """The request ended without an answer to store (refused, or it raised).

        Refused before it changed anything: forget the claim, so a corrected retry runs. If it
        had already created its resource, keep the link but drop the execution lock: nothing is
        executing any more, so a retry answers with the resource's current state at once instead
        of 409 ``idempotency_key_in_use`` until the lock runs out.
        """
        async with self.db.transaction() as session:
            mine = (
                IdempotencyRecord.device_id == claim.device_id,
                IdempotencyRecord.key == claim.key,
            )
            await session.execute(
                delete(IdempotencyRecord).where(
                    *mine,
                    IdempotencyRecord.resource_id.is_(None),
                    IdempotencyRecord.state == "executing",
                )
            )
            await session.execute(
                update(IdempotencyRecord)
                .where(*mine, IdempotencyRecord.resource_id.is_not(None), IdempotencyRecord.state != "done")
                .values(state="processing", locked_until=None)
            )

    async def purge(self, now: datetime) -> int:
        async with self.db.transaction() as session:
            result = await session.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]
