"""Replay protection: a nonce may be used once per key within the signature window.

The database is the default store. With Redis configured, nonces go to Redis (``SET NX PX``:
hot, shared between gateway processes, no durability needed beyond the window), and to the
database as well whenever Redis cannot vouch for the whole window (docs/decisions/0015).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, select, update

from gateway.store.db import Database
from gateway.store.dialect import insert_ignore
from gateway.store.models import Nonce, NonceFallback
from gateway.store.redis import RedisDown, RedisLink

__all__ = ["NonceClaim", "NonceFallbacks", "NonceStore", "RedisNonceStore", "SqlNonceStore"]

log = logging.getLogger(__name__)


class NonceClaim(enum.Enum):
    FRESH = "fresh"  # unused until now, and now used
    REUSED = "reused"  # seen before within the window
    UNVERIFIABLE = "unverifiable"  # the store cannot tell: the signature is older than its memory


class NonceStore(Protocol):
    async def claim(
        self, key_id: str, nonce: str, ttl: timedelta, *, now: datetime, created: int
    ) -> NonceClaim:
        """Use the nonce of a signature made at ``created`` (unix seconds).

        ``now`` is the gateway's clock: expiry must be on the clock ``purge`` runs with, or
        a moved clock would purge nonces whose signatures are still fresh."""
        ...

    async def purge(self, now: datetime) -> int: ...


class SqlNonceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(
        self, key_id: str, nonce: str, ttl: timedelta, *, now: datetime, created: int
    ) -> NonceClaim:
        async with self.db.transaction() as session:
            values = {"key_id": key_id, "nonce": nonce, "expires_at": now + ttl}
            result = await session.execute(insert_ignore(session, Nonce.__table__, values))  # type: ignore[arg-type]
            return NonceClaim.FRESH if result.rowcount else NonceClaim.REUSED  # type: ignore[attr-defined]

    async def purge(self, now: datetime) -> int:
        async with self.db.transaction() as session:
            result = await session.execute(delete(Nonce).where(Nonce.expires_at < now))
            return int(result.rowcount)  # type: ignore[attr-defined]


class NonceFallbacks:
    """Per Redis prefix, shared by every process through the database (the one place a process
    without Redis can still tell the others): "until T, claim nonces in the database as well".
    A prefix's row also records that Redis has been used with it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def first_use(self, prefix: str, until: datetime) -> bool:
        """Record that this prefix uses Redis; True if it never had before (nothing to forget)."""
        async with self.db.transaction() as session:
            values = {"prefix": prefix, "until": until}
            result = await session.execute(insert_ignore(session, NonceFallback.__table__, values))  # type: ignore[arg-type]
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def extend(self, prefix: str, until: datetime) -> None:
        async with self.db.transaction() as session:
            values = {"prefix": prefix, "until": until}
            await session.execute(insert_ignore(session, NonceFallback.__table__, values))  # type: ignore[arg-type]
            await session.execute(
                update(NonceFallback)
                .where(NonceFallback.prefix == prefix, NonceFallback.until < until)
                .values(until=until)
            )

    async def active(self, prefix: str, now: datetime) -> bool:
        async with self.db.transaction() as session:
            until = await session.scalar(select(NonceFallback.until).where(NonceFallback.prefix == prefix))
        return until is not None and now < until


# While this process cannot reach Redis, it renews the shared fallback window this often, so the
# window outlasts the outage by a whole nonce lifetime even if the process dies in the middle.
RENEW_FALLBACK = timedelta(seconds=60)


class RedisNonceStore:
    """Nonces in Redis; in the database as well wherever Redis may be missing some.

    - Redis unreachable from this process: nonces are claimed in the database. Those claimed in
      Redis before cannot be seen, so signatures created up to the second this process lost
      Redis are refused as unverifiable (the terminal signs again; its new one passes).
    - Redis forgot (restart without persistence, flush, failover to an empty replica): the
      marker key ``<prefix>memory-since``, the time since which Redis holds every nonce of the
      prefix, is gone. It is set again to now; signatures created up to then are unverifiable.
      (On the prefix's very first use there is nothing to forget: the marker says "always".)
    - For a nonce lifetime after Redis began remembering, after this process got it back, and
      while any process of this prefix says so in the database (``NonceFallbacks``; it says so
      while it cannot reach Redis and for a nonce lifetime after), a nonce Redis has not seen is
      claimed in the database too: it may have been used while Redis was not asked.
    """

    def __init__(self, link: RedisLink, prefix: str, db: Database, clock: Callable[[], datetime]) -> None:
        self.link, self.prefix, self.clock = link, prefix, clock
        self.marker = f"{prefix}memory-since"
        self.sql = SqlNonceStore(db)
        self.fallbacks = NonceFallbacks(db)
        self._lost_at: datetime | None = None  # when this process last lost Redis, while it is lost
        self._renewed_at: datetime | None = None

    async def claim(
        self, key_id: str, nonce: str, ttl: timedelta, *, now: datetime, created: int
    ) -> NonceClaim:
        key = f"{self.prefix}nonce:{key_id}:{nonce}"
        try:
            fresh, since = await self.link.call(lambda: self._claim_in_redis(key, ttl))
            if since is None:
                since = await self._remember_from(now, ttl)
        except RedisDown:
            return await self._claim_without_redis(key_id, nonce, ttl, now=now, created=created)
        if self._lost_at is not None:
            await self.fallbacks.extend(self.prefix, now + ttl)
            self._lost_at = None
        if created <= int(since.timestamp()):
            return NonceClaim.UNVERIFIABLE
        if not fresh:
            return NonceClaim.REUSED
        if now < since + ttl or await self.fallbacks.active(self.prefix, now):
            return await self.sql.claim(key_id, nonce, ttl, now=now, created=created)
        return NonceClaim.FRESH

    async def _claim_in_redis(self, key: str, ttl: timedelta) -> tuple[bool, datetime | None]:
        """One round trip: claim the nonce and read since when Redis holds every nonce."""
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.set(key, b"1", nx=True, px=int(ttl.total_seconds() * 1000))
            pipe.get(self.marker)
            fresh, since = await pipe.execute()
        return bool(fresh), None if since is None else datetime.fromtimestamp(float(since), UTC)

    async def _remember_from(self, now: datetime, ttl: timedelta) -> datetime:
        """The marker is missing: set it, to "always" on the prefix's first use (the database
        keeps nonces claimed before a switch to Redis: claimed there too for a while), else to
        now (Redis forgot). Another process may set it first; its value counts."""
        first = await self.fallbacks.first_use(self.prefix, now + ttl)
        value = "0" if first else str(now.timestamp())
        if not first:
            log.warning("Redis has lost its memory (no %s): nonces go to the database as well", self.marker)

        async def set_marker() -> datetime:
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.set(self.marker, value, nx=True)
                pipe.get(self.marker)
                _, since = await pipe.execute()
            return datetime.fromtimestamp(float(since), UTC)

        return await self.link.call(set_marker)

    async def _claim_without_redis(
        self, key_id: str, nonce: str, ttl: timedelta, *, now: datetime, created: int
    ) -> NonceClaim:
        lost_at = self._lost_at
        if lost_at is None or self._renewed_at is None or now >= self._renewed_at + RENEW_FALLBACK:
            # every other process must hear it before this one trusts the database alone
            await self.fallbacks.extend(self.prefix, now + ttl)
            self._renewed_at = now
            if lost_at is None:
                lost_at = self._lost_at = self.clock()
        if created <= int(lost_at.timestamp()):
            return NonceClaim.UNVERIFIABLE
        return await self.sql.claim(key_id, nonce, ttl, now=now, created=created)

    async def purge(self, now: datetime) -> int:
        return await self.sql.purge(now)  # Redis keys expire by themselves
