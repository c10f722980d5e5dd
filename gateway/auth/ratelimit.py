"""Per-device request rate limits (CONTRACT.md, "Errors": 429 with ``Retry-After``).

Counted with the ``limits`` library's sliding-window counter: in process memory by default, in
Redis when ``CAMPUSPAY_REDIS_URL`` is set, so that every gateway process draws on one budget per
device. The check runs right after the device is authenticated and before idempotency, so a
refused request stores nothing and its key can be used again (CONTRACT.md's idempotency table).

While Redis cannot be reached, each process counts in its own memory instead (decision 0015):
a device is still held to its rate per process, so with N processes to at most N times it, and
the database, already taking the nonces then, takes nothing more.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.util import WindowStats

from gateway.errors import TooManyRequests
from gateway.store.redis import RedisDown, RedisLink

__all__ = ["DeviceRateLimiter", "parse_rate"]


def parse_rate(value: str) -> RateLimitItem:
    """``"600/minute"``, ``"20 per second"`` ... (the ``limits`` notation); ValueError if not."""
    return parse(value)


class DeviceRateLimiter:
    def __init__(self, rate: str | None, *, redis: RedisLink | None, prefix: str) -> None:
        self.item = parse_rate(rate) if rate else None
        self.redis = redis
        self.local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self.shared: SlidingWindowCounterRateLimiter | None = None
        if redis is not None:
            # the gateway's own connection pool: one set of connections (and one retry policy),
            # closed with the app
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=f"{prefix}ratelimit",
                # documented by limits ("connection_pool"), though its stub types only scalars
                connection_pool=redis.client.connection_pool,  # type: ignore[arg-type]
            )
            self.shared = SlidingWindowCounterRateLimiter(storage)

    async def check(self, device_id: str) -> None:
        """Count one request of this device; TooManyRequests when it is over its rate."""
        if self.item is None:
            return
        refused = await self._count(self.item, device_id)
        if refused is None:
            return
        retry_after = max(1, math.ceil(refused.reset_time - time.time()))
        raise TooManyRequests(
            "rate_limited",
            f"this device may send at most {self.item.amount} requests per "
            f"{self.item.multiples} {self.item.GRANULARITY.name}; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    async def _count(self, item: RateLimitItem, device_id: str) -> WindowStats | None:
        shared = self.shared
        if shared is not None and self.redis is not None:
            try:
                return await self.redis.call(lambda: _hit(shared, item, device_id))
            except RedisDown:
                pass  # counted in this process's memory until Redis answers again
        return await _hit(self.local, item, device_id)


async def _hit(
    limiter: SlidingWindowCounterRateLimiter, item: RateLimitItem, device_id: str
) -> WindowStats | None:
    """None if the request is within the rate, else the window it is over."""
    if await limiter.hit(item, "device", device_id):
        return None
    return await limiter.get_window_stats(item, "device", device_id)
