"""The append-only, hash-chained audit log (decision 0021).

Each school has its own chain (platform events use the chain ``platform``). Writing an entry
and chaining it are two steps, so that no transaction waits on a chain's head:

- ``append`` is one INSERT in the caller's transaction: the entry commits or rolls back with
  the change it records. It carries ``mac = HMAC(entry key, content)``, so its content is
  authenticated from the start, but no place in the chain yet (``seq``, ``prev_hash`` and
  ``hash`` are NULL).
- ``seal`` (the sealer, a background task of every gateway process) takes committed unsealed
  entries in ``id`` order and chains them: entry ``n`` stores
  ``hash = HMAC(chain key, canonical(entry n with its seq and mac) || hash(n-1))``, and the
  head row stores ``(seq, hash)`` under ``HMAC(chain key, head)``. One sealer at a time holds
  a chain's head row (``FOR UPDATE``; the background passes ``SKIP LOCKED`` it), so the chain
  never forks.
- ``verify_chain`` walks the chain and reports the first entry that is missing, edited or out
  of place, a head that does not match, and any entry still unsealed past the sealing
  deadline.

Both keys are derived from the master key, so someone who can edit the database but does not
hold it cannot write an entry, repair the chain after changing or deleting one, or move the
head back over deleted entries. Entries sealed before migration 0009 have no ``mac``; their
chain hash covers them as it always did.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.protection.crypto import Keyring
from gateway.store.dialect import insert_ignore
from gateway.store.models import AuditEntry, AuditHead, utcnow

__all__ = [
    "GENESIS",
    "ChainBreak",
    "ChainState",
    "append",
    "pending_chains",
    "seal",
    "verify_chain",
]

GENESIS = "0" * 64
CHAIN_KEY = "audit-chain"  # entry hashes and heads
ENTRY_KEY = "audit-entry"  # entry macs, written at append

_entries = cast(Table, AuditEntry.__table__)
_heads = cast(Table, AuditHead.__table__)
_INSERT = insert(_entries)
_SEAL_ENTRY = (
    update(_entries)
    .where(_entries.c.id == bindparam("e_id"))
    .values(seq=bindparam("e_seq"), prev_hash=bindparam("e_prev"), hash=bindparam("e_hash"))
)
_MOVE_HEAD = (
    update(_heads)
    .where(_heads.c.chain == bindparam("h_chain"))
    .values(seq=bindparam("h_seq"), hash=bindparam("h_hash"), mac=bindparam("h_mac"))
)


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _content(
    chain: str, at: datetime, actor: str, action: str, object_type: str, object_id: str, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "chain": chain,
        "at": at.isoformat(),
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "data": data,
    }


def _entry_mac(key: bytes, content: dict[str, Any]) -> str:
    return hmac.new(key, _canonical(content), hashlib.sha256).hexdigest()


def _entry_hash(key: bytes, content: dict[str, Any], seq: int, mac: str | None, prev_hash: str) -> str:
    fields = {**content, "seq": seq}
    if mac is not None:
        # Entries sealed before migration 0009 have no mac and hash without the field; every
        # entry sealed since hashes with it, so a NULLed or forged mac breaks the hash as well.
        fields["mac"] = mac
    return hmac.new(key, _canonical(fields) + prev_hash.encode(), hashlib.sha256).hexdigest()


def _head_mac(key: bytes, chain: str, seq: int, hash_: str) -> str:
    return hmac.new(key, _canonical({"head": chain, "seq": seq, "hash": hash_}), hashlib.sha256).hexdigest()


def _content_of(entry: Any) -> dict[str, Any]:
    return _content(
        entry.chain, entry.at, entry.actor, entry.action, entry.object_type, entry.object_id, entry.data
    )


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
) -> None:
    """Write an audit entry in the caller's transaction: one INSERT, no reads, no locks. The
    sealer gives it its place in the chain within a second or so of the commit."""
    at, data = utcnow(), data or {}
    mac = _entry_mac(
        keyring.derive(ENTRY_KEY), _content(chain, at, actor, action, object_type, object_id, data)
    )
    await session.execute(
        _INSERT,
        {
            "chain": chain,
            "at": at,
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "data": data,
            "mac": mac,
        },
    )


async def pending_chains(session: AsyncSession, limit: int, chain: str | None = None) -> list[str]:
    """Chains (of ``chain`` alone, if given) with committed entries waiting to be sealed, read
    from the partial index."""
    query = select(_entries.c.chain).where(_entries.c.seq.is_(None))
    if chain is not None:
        query = query.where(_entries.c.chain == chain)
    rows = await session.execute(query.distinct().limit(limit))
    return sorted(rows.scalars())


async def seal(
    session: AsyncSession, keyring: Keyring, chains: Sequence[str], *, wait: bool, limit: int
) -> int:
    """Chain up to ``limit`` unsealed entries of ``chains``, in ``id`` order per chain, and
    move their heads; the number sealed. Runs in its own short transaction.

    A chain whose head another sealer holds is skipped (``wait=False``, the background
    passes) or waited for (``wait=True``: "seal what has committed, now"). Heads are locked in
    chain order, so waiting sealers cannot deadlock."""
    if not chains:
        return 0
    known = set((await session.execute(select(_heads.c.chain).where(_heads.c.chain.in_(chains)))).scalars())
    for chain in sorted(set(chains) - known):  # a chain's first entry ever
        await session.execute(insert_ignore(session, _heads, {"chain": chain, "seq": 0, "hash": GENESIS}))
    locked = (
        await session.execute(
            select(_heads.c.chain, _heads.c.seq, _heads.c.hash)
            .where(_heads.c.chain.in_(chains))
            .order_by(_heads.c.chain)
            .with_for_update(skip_locked=not wait)
        )
    ).all()
    if not locked:
        return 0
    heads = {row.chain: (row.seq, row.hash) for row in locked}
    # A statement after the lock: under READ COMMITTED it sees every seal committed before it.
    entries = (
        await session.execute(
            select(_entries)
            .where(_entries.c.chain.in_(list(heads)), _entries.c.seq.is_(None))
            .order_by(_entries.c.id)
            .limit(limit)
        )
    ).all()
    if not entries:
        return 0
    key = keyring.derive(CHAIN_KEY)
    sealed: list[dict[str, Any]] = []
    moved: set[str] = set()
    for entry in entries:
        seq, prev = heads[entry.chain]
        seq += 1
        digest = _entry_hash(key, _content_of(entry), seq, entry.mac or "", prev)
        sealed.append({"e_id": entry.id, "e_seq": seq, "e_prev": prev, "e_hash": digest})
        heads[entry.chain] = (seq, digest)
        moved.add(entry.chain)
    await session.execute(_SEAL_ENTRY, sealed)
    await session.execute(
        _MOVE_HEAD,
        [
            {"h_chain": chain, "h_seq": seq, "h_hash": digest, "h_mac": _head_mac(key, chain, seq, digest)}
            for chain, (seq, digest) in sorted(heads.items())
            if chain in moved
        ],
    )
    return len(sealed)


def _sealed_fault(
    entry: AuditEntry, seq: int, prev_hash: str, chain_key: bytes, entry_key: bytes
) -> str | None:
    """Why the sealed entry expected at ``seq`` after ``prev_hash`` breaks the chain, if it does."""
    if entry.seq != seq:
        return "entry deleted"
    if entry.prev_hash != prev_hash:
        return "does not follow the previous entry"
    content = _content_of(entry)
    if entry.hash is None or not hmac.compare_digest(
        _entry_hash(chain_key, content, seq, entry.mac, prev_hash), entry.hash
    ):
        return "entry edited"
    if entry.mac is not None and not hmac.compare_digest(_entry_mac(entry_key, content), entry.mac):
        return "entry edited"  # sealed, but not written by someone holding the key
    return None


@dataclass(frozen=True)
class ChainBreak:
    chain: str
    # The first entry that is missing, edited, or does not follow its predecessor; None for an
    # entry that has no place in the chain yet (unsealed).
    seq: int | None
    reason: str


@dataclass(frozen=True)
class ChainState:
    """What verify found: the first break (None: intact), the sealed head as the database has
    it, and how many committed entries are still waiting to be sealed (within the deadline)."""

    broken: ChainBreak | None
    head_seq: int
    head_hash: str
    unsealed: int


async def verify_chain(
    session: AsyncSession,
    keyring: Keyring,
    chain: str,
    *,
    now: datetime | None = None,
    seal_deadline: timedelta | None = None,
    known_head: tuple[int, str] | None = None,
) -> ChainState:
    """Walk the chain from the start. ``known_head`` is a head published earlier (a verify
    result someone kept): the chain must still hold that entry with that hash. An entry
    still unsealed ``seal_deadline`` after it was written is a break."""
    chain_key, entry_key = keyring.derive(CHAIN_KEY), keyring.derive(ENTRY_KEY)
    broken: ChainBreak | None = None
    prev_hash, expected_seq, signed_entries = GENESIS, 1, False
    result = await session.stream_scalars(
        select(AuditEntry)
        .where(AuditEntry.chain == chain, AuditEntry.seq.is_not(None))
        .order_by(AuditEntry.seq)
    )
    async for entry in result:
        reason = _sealed_fault(entry, expected_seq, prev_hash, chain_key, entry_key)
        if reason is None and known_head is not None and known_head[0] == expected_seq:
            if entry.hash != known_head[1]:
                reason = "does not match the published head"
        if reason is not None:
            broken = ChainBreak(chain, expected_seq, reason)
            break
        signed_entries = signed_entries or entry.mac is not None
        prev_hash, expected_seq = str(entry.hash), expected_seq + 1
    await result.close()
    head = (await session.execute(select(AuditHead).where(AuditHead.chain == chain))).scalar_one_or_none()
    head_seq, head_hash = (head.seq, head.hash) if head is not None else (0, GENESIS)
    if broken is None:
        last = expected_seq - 1
        if head is None:
            if last > 0:
                broken = ChainBreak(chain, expected_seq, "chain head edited")  # deleted
        elif (head_seq, head_hash) != (last, prev_hash):
            broken = ChainBreak(chain, expected_seq, "newest entries deleted")
        elif head.mac is not None:
            if not hmac.compare_digest(_head_mac(chain_key, chain, head_seq, head_hash), head.mac):
                broken = ChainBreak(chain, expected_seq, "chain head edited")
        elif signed_entries:
            # the sealer signs every head it moves; only a chain untouched since 0009 has none
            broken = ChainBreak(chain, expected_seq, "chain head edited")
        if broken is None and known_head is not None:
            if known_head[0] > last:
                broken = ChainBreak(chain, expected_seq, "newest entries deleted")
            elif known_head[0] == 0 and known_head[1] != GENESIS:
                broken = ChainBreak(chain, 0, "does not match the published head")
    unsealed = (
        await session.execute(
            select(AuditEntry)
            .where(AuditEntry.chain == chain, AuditEntry.seq.is_(None))
            .order_by(AuditEntry.id)
        )
    ).scalars()
    count = 0
    late = (now or utcnow()) - seal_deadline if seal_deadline is not None else None
    for entry in unsealed:
        count += 1
        if broken is not None:
            continue
        if entry.mac is None or not hmac.compare_digest(_entry_mac(entry_key, _content_of(entry)), entry.mac):
            broken = ChainBreak(chain, None, "entry edited")
        elif late is not None and entry.at < late:
            broken = ChainBreak(chain, None, "entry not sealed in time")
    return ChainState(broken, head_seq, head_hash, count)
