"""The append-only, hash-chained audit log.

Each school has its own chain (platform events use the chain ``platform``). Entry ``n`` stores
``HMAC(audit_key, canonical(entry n) || hash(n-1))``; the key is derived from the master key,
so someone who can edit the database but does not hold the key cannot recompute a consistent
chain after changing or deleting an entry. The chain head row is locked while appending, so
concurrent transactions serialise and the chain never forks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.protection.crypto import Keyring
from gateway.store.dialect import insert_ignore
from gateway.store.models import AuditEntry, AuditHead, utcnow

__all__ = ["GENESIS", "ChainBreak", "append", "verify_chain"]

GENESIS = "0" * 64


def _entry_hash(key: bytes, fields: dict[str, Any], prev_hash: str) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hmac.new(key, canonical.encode() + prev_hash.encode(), hashlib.sha256).hexdigest()


def _fields(entry: AuditEntry) -> dict[str, Any]:
    return {
        "chain": entry.chain,
        "seq": entry.seq,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "data": entry.data,
    }


async def append(
    session: AsyncSession,
    keyring: Keyring,
    *,
    chain: str,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    await session.execute(
        insert_ignore(session, AuditHead.__table__, {"chain": chain, "seq": 0, "hash": GENESIS})  # type: ignore[arg-type]
    )
    head = (
        await session.execute(select(AuditHead).where(AuditHead.chain == chain).with_for_update())
    ).scalar_one()
    entry = AuditEntry(
        chain=chain,
        seq=head.seq + 1,
        at=utcnow(),
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        data=data or {},
        prev_hash=head.hash,
    )
    entry.hash = _entry_hash(keyring.derive("audit-chain"), _fields(entry), head.hash)
    head.seq, head.hash = entry.seq, entry.hash
    session.add(entry)
    return entry


@dataclass(frozen=True)
class ChainBreak:
    chain: str
    seq: int  # the first entry that is missing, edited, or does not follow its predecessor
    reason: str


async def verify_chain(session: AsyncSession, keyring: Keyring, chain: str) -> ChainBreak | None:
    """Walk the chain from the start; the first inconsistency, or None if the chain is intact."""
    key = keyring.derive("audit-chain")
    prev_hash, expected_seq = GENESIS, 1
    result = await session.stream_scalars(
        select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.seq)
    )
    async for entry in result:
        if entry.seq != expected_seq:
            return ChainBreak(chain, expected_seq, "entry deleted")
        if entry.prev_hash != prev_hash:
            return ChainBreak(chain, entry.seq, "does not follow the previous entry")
        if not hmac.compare_digest(_entry_hash(key, _fields(entry), prev_hash), entry.hash):
            return ChainBreak(chain, entry.seq, "entry edited")
        prev_hash, expected_seq = entry.hash, expected_seq + 1
    head = (await session.execute(select(AuditHead).where(AuditHead.chain == chain))).scalar_one_or_none()
    if head is not None and (head.seq != expected_seq - 1 or head.hash != prev_hash):
        return ChainBreak(chain, expected_seq, "newest entries deleted")
    return None
