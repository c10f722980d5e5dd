"""Reading and verifying a school's audit chain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from gateway.protection.audit import verify_chain
from gateway.protection.crypto import Keyring
from gateway.store.db import Database
from gateway.store.models import AuditEntry

__all__ = ["read_entries", "verify_school"]


async def read_entries(db: Database, chain: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(AuditEntry)
                .where(AuditEntry.chain == chain, AuditEntry.seq > after_seq)
                .order_by(AuditEntry.seq)
                .limit(limit)
            )
        ).scalars()
        return [
            {
                "seq": e.seq,
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "object_type": e.object_type,
                "object_id": e.object_id,
                "data": e.data,
                "hash": e.hash,
            }
            for e in rows
        ]


async def verify_school(db: Database, keyring: Keyring, chain: str) -> dict[str, Any]:
    async with db.transaction() as session:
        broken = await verify_chain(session, keyring, chain)
    if broken is None:
        return {"intact": True, "first_break": None}
    return {"intact": False, "first_break": {"seq": broken.seq, "reason": broken.reason}}
