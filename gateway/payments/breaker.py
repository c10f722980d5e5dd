"""Circuit breakers per (school, adapter): stop *new* payments from going to an adapter that keeps
failing technically. Queries, cancels and refunds of existing payments never ask the breaker.

    closed ──N consecutive technical failures──► open ──cool-down──► half_open (one trial call)
      ▲                                            ▲                      │
      └──────────────── success ◄──────────────────┼──── failure ─────────┘

A technical failure is ``ProviderUnreachable``, a timeout or an unknown outcome on pay; any
answer the provider verifiably gave (success or decline) is a success for the breaker. State
lives in the database by default and in Redis when one is configured (docs/decisions/0010);
while that Redis cannot be reached, in the database again (``FallbackBreaker``, decision 0015).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from redis.asyncio import Redis
from sqlalchemy import update

from gateway.payments.rules import BreakerPolicy
from gateway.store.db import Database
from gateway.store.dialect import insert_ignore
from gateway.store.models import CircuitBreaker
from gateway.store.redis import RedisDown, RedisLink

__all__ = ["Breaker", "FallbackBreaker", "RedisBreaker", "SqlBreaker"]

_T = TypeVar("_T")


class Breaker(Protocol):
    async def allow(self, school_id: str, adapter: str, policy: BreakerPolicy) -> bool:
        """May a new payment be sent? In half-open, True for exactly one trial at a time."""
        ...

    async def peek(self, school_id: str, adapter: str, policy: BreakerPolicy) -> str:
        """closed | open | half_open (would admit a trial), without taking the trial."""
        ...

    async def success(self, school_id: str, adapter: str) -> None: ...

    async def failure(self, school_id: str, adapter: str, policy: BreakerPolicy) -> None: ...


# A breaker's state as this process last read it is reused for this long (monotonic seconds):
# a payment's peek, allow and success then cost one read instead of three, and a healthy
# provider's breaker is not rewritten after every payment. A breaker another process opened
# steers this one's new payments at most this much later; a half-open trial is always taken
# on a fresh read, so two processes never both hold it.
RECENT = 1.0

_R = TypeVar("_R")


class _Recent(Generic[_R]):
    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[float, _R]] = {}

    def get(self, key: tuple[str, str]) -> tuple[bool, _R | None]:
        hit = self._seen.get(key)
        if hit is None or time.monotonic() - hit[0] >= RECENT:
            return False, None
        return True, hit[1]

    def put(self, key: tuple[str, str], value: _R) -> _R:
        self._seen[key] = (time.monotonic(), value)
        return value

    def drop(self, key: tuple[str, str]) -> None:
        self._seen.pop(key, None)


class SqlBreaker:
    """One row per (school, adapter); every change is a compare-and-set, so several gateway
    processes agree on who holds the half-open trial."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.db, self.clock = db, clock
        self._recent: _Recent[CircuitBreaker | None] = _Recent()

    async def _row(self, school_id: str, adapter: str, *, fresh: bool = False) -> CircuitBreaker | None:
        key = (school_id, adapter)
        hit, row = self._recent.get(key)
        if hit and not fresh:
            return row
        async with self.db.transaction(readonly=True) as session:
            return self._recent.put(key, await session.get(CircuitBreaker, key))

    async def peek(self, school_id: str, adapter: str, policy: BreakerPolicy) -> str:
        row = await self._row(school_id, adapter)
        return _view(row, self.clock(), policy)

    async def allow(self, school_id: str, adapter: str, policy: BreakerPolicy) -> bool:
        row = await self._row(school_id, adapter)
        now = self.clock()
        if _view(row, now, policy) == "closed":
            return True
        row = await self._row(school_id, adapter, fresh=True)
        view = _view(row, now, policy)
        if view == "closed":
            return True
        if view == "open" or row is None:
            return False
        # half-open: take the trial with a CAS, holding it for one cool-down
        async with self.db.transaction() as session:
            result = await session.execute(
                update(CircuitBreaker)
                .where(
                    CircuitBreaker.school_id == school_id,
                    CircuitBreaker.adapter == adapter,
                    CircuitBreaker.state == row.state,
                    CircuitBreaker.opened_at == row.opened_at,
                    (CircuitBreaker.trial_until == row.trial_until)
                    if row.trial_until is not None
                    else CircuitBreaker.trial_until.is_(None),
                )
                .values(
                    state="half_open",
                    trial_until=now + timedelta(seconds=policy.cooldown_seconds),
                    updated_at=now,
                )
            )
            self._recent.drop((school_id, adapter))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def success(self, school_id: str, adapter: str) -> None:
        key = (school_id, adapter)
        hit, row = self._recent.get(key)
        if hit and (row is None or (row.state == "closed" and row.failures == 0)):
            return  # already closed with nothing counted: nothing to write
        self._recent.drop(key)
        async with self.db.transaction() as session:
            await session.execute(
                update(CircuitBreaker)
                .where(CircuitBreaker.school_id == school_id, CircuitBreaker.adapter == adapter)
                .values(state="closed", failures=0, opened_at=None, trial_until=None, updated_at=self.clock())
            )

    async def failure(self, school_id: str, adapter: str, policy: BreakerPolicy) -> None:
        now = self.clock()
        self._recent.drop((school_id, adapter))
        async with self.db.transaction() as session:
            values = {
                "school_id": school_id,
                "adapter": adapter,
                "state": "closed",
                "failures": 0,
                "updated_at": now,
            }
            await session.execute(insert_ignore(session, CircuitBreaker.__table__, values))  # type: ignore[arg-type]
            row = await session.get(CircuitBreaker, (school_id, adapter), with_for_update=True)
            assert row is not None
            row.failures += 1
            row.updated_at = now
            if row.state == "half_open" or (
                row.state == "closed" and row.failures >= policy.failure_threshold
            ):
                row.state, row.opened_at, row.trial_until = "open", now, None


def _view(row: CircuitBreaker | None, now: datetime, policy: BreakerPolicy) -> str:
    if row is None or row.state == "closed":
        return "closed"
    cooldown = timedelta(seconds=policy.cooldown_seconds)
    if row.state == "open":
        assert row.opened_at is not None
        return "half_open" if now >= row.opened_at + cooldown else "open"
    # half_open: a trial is out; another may start only once it has had a cool-down to finish
    return "half_open" if row.trial_until is None or now >= row.trial_until else "open"


# Redis: one hash per breaker; each transition is one Lua script, so it is atomic across processes.
_ALLOW = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return 1 end
local now, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2])
if state == 'open' then
  if now < tonumber(redis.call('HGET', KEYS[1], 'opened_at')) + cooldown then return 0 end
else
  local trial = tonumber(redis.call('HGET', KEYS[1], 'trial_until') or '0')
  if now < trial then return 0 end
end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'trial_until', now + cooldown)
return 1
"""
_FAILURE = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half_open' or (state == 'closed' and failures >= tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1], 'trial_until', '0')
end
redis.call('EXPIRE', KEYS[1], 86400)
return failures
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBreaker:
    def __init__(self, redis: Redis, prefix: str, clock: Callable[[], datetime]) -> None:
        self.redis, self.prefix, self.clock = redis, prefix, clock
        self._recent: _Recent[dict[str, str]] = _Recent()

    def _key(self, school_id: str, adapter: str) -> str:
        return f"{self.prefix}breaker:{school_id}:{adapter}"

    async def _data(self, school_id: str, adapter: str) -> dict[str, str]:
        hit, data = self._recent.get((school_id, adapter))
        if hit and data is not None:
            return data
        raw: dict[bytes | str, bytes | str] = await self.redis.hgetall(self._key(school_id, adapter))
        return self._recent.put((school_id, adapter), {_text(k): _text(v) for k, v in raw.items()})

    async def peek(self, school_id: str, adapter: str, policy: BreakerPolicy) -> str:
        data = await self._data(school_id, adapter)
        state = data.get("state", "closed")
        now = self.clock().timestamp()
        if state == "closed":
            return "closed"
        if state == "open":
            return "half_open" if now >= float(data["opened_at"]) + policy.cooldown_seconds else "open"
        return "half_open" if now >= float(data.get("trial_until", "0")) else "open"

    async def allow(self, school_id: str, adapter: str, policy: BreakerPolicy) -> bool:
        data = await self._data(school_id, adapter)
        if data.get("state", "closed") == "closed":
            return True
        self._recent.drop((school_id, adapter))  # the script decides on Redis's own state
        key = self._key(school_id, adapter)
        now = self.clock().timestamp()
        result = await self.redis.eval(_ALLOW, 1, key, str(now), str(policy.cooldown_seconds))
        return bool(result)

    async def success(self, school_id: str, adapter: str) -> None:
        hit, data = self._recent.get((school_id, adapter))
        if hit and not data:
            return  # no state kept for this breaker: nothing to reset
        self._recent.drop((school_id, adapter))
        await self.redis.delete(self._key(school_id, adapter))

    async def failure(self, school_id: str, adapter: str, policy: BreakerPolicy) -> None:
        self._recent.drop((school_id, adapter))
        key = self._key(school_id, adapter)
        now = self.clock().timestamp()
        await self.redis.eval(_FAILURE, 1, key, str(now), str(policy.failure_threshold))


class FallbackBreaker:
    """Redis while it answers, the database while it does not: correct-if-slower, like the
    gateway without Redis. The two states are not merged; during an outage the database's own
    count decides, and after it the Redis one again (either way only *new* attempts are
    affected, never a payment's outcome)."""

    def __init__(self, link: RedisLink, redis: RedisBreaker, sql: SqlBreaker) -> None:
        self.link, self.redis, self.sql = link, redis, sql

    async def _either(self, in_redis: Callable[[], Awaitable[_T]], in_sql: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await self.link.call(in_redis)
        except RedisDown:
            return await in_sql()

    async def peek(self, school_id: str, adapter: str, policy: BreakerPolicy) -> str:
        return await self._either(
            lambda: self.redis.peek(school_id, adapter, policy),
            lambda: self.sql.peek(school_id, adapter, policy),
        )

    async def allow(self, school_id: str, adapter: str, policy: BreakerPolicy) -> bool:
        return await self._either(
            lambda: self.redis.allow(school_id, adapter, policy),
            lambda: self.sql.allow(school_id, adapter, policy),
        )

    async def success(self, school_id: str, adapter: str) -> None:
        await self._either(
            lambda: self.redis.success(school_id, adapter), lambda: self.sql.success(school_id, adapter)
        )

    async def failure(self, school_id: str, adapter: str, policy: BreakerPolicy) -> None:
        await self._either(
            lambda: self.redis.failure(school_id, adapter, policy),
            lambda: self.sql.failure(school_id, adapter, policy),
        )
