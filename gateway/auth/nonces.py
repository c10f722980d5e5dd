"""Replay protection: a nonce may be used once per key within the signature window.

The database is the default store; Redis (``SET NX EX``) when configured, since nonces are hot,
shared between gateway processes, and need no durability beyond the window.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from redis.asyncio import Redis
from sqlalchemy import delete

from gateway.store.db import Database
from gateway.store.dialect import insert_ignore
from gateway.store.models import Nonce

__all__ = ["NonceStore", "RedisNonceStore", "SqlNonceStore"]


class NonceStore(Protocol):
    async def claim(self, key_id: str, nonce: str, ttl: timedelta, *, now: datetime) -> bool:
        """True if the nonce was unused (and is now used); False if seen before.

        ``now`` is the gateway's clock: expiry must be on the clock ``purge`` runs with, or
        a moved clock would purge nonces whose signatures are still fresh."""
        ...

    async def purge(self, now: datetime) -> int: ...


class SqlNonceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, key_id: str, nonce: str, ttl: timedelta, *, now: datetime) -> bool:
        async with self.db.transaction() as session:
            values = {"key_id": key_id, "nonce": nonce, "expires_at": now + ttl}
            result = await session.execute(insert_ignore(session, Nonce.__table__, values))  # type: ignore[arg-type]
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def purge(self, now: datetime) -> int:
        async with self.db.transaction() as session:
            result = await session.execute(delete(Nonce).where(Nonce.expires_at < now))
            return int(result.rowcount)  # type: ignore[attr-defined]


class RedisNonceStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    async def claim(self, key_id: str, nonce: str, ttl: timedelta, *, now: datetime) -> bool:
        ok = await self.redis.set(
            f"{self.prefix}nonce:{key_id}:{nonce}", b"1", nx=True, px=int(ttl.total_seconds() * 1000)
        )
        return bool(ok)

    async def purge(self, now: datetime) -> int:
        return 0  # keys expire by themselves
