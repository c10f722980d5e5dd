"""Per-device request rate limits (CONTRACT.md, "Errors": 429 with ``Retry-After``).

Counted with the ``limits`` library's sliding-window counter: in process memory by default, in
Redis when ``CAMPUSPAY_REDIS_URL`` is set, so that every gateway process draws on one budget per
device. The check runs right after the device is authenticated and before idempotency, so a
refused request stores nothing and its key can be used again (CONTRACT.md's idempotency table).

A limiter whose store fails lets requests through and logs it: throttling a till is worth less
than taking a school's lunch payments.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import Redis

from gateway.errors import TooManyRequests

__all__ = ["DeviceRateLimiter", "parse_rate"]

log = logging.getLogger(__name__)


def parse_rate(value: str) -> RateLimitItem:
    """``"600/minute"``, ``"20 per second"`` ... (the ``limits`` notation); ValueError if not."""
    return parse(value)


class DeviceRateLimiter:
    def __init__(self, rate: str | None, *, redis: Redis | None, prefix: str) -> None:
        self.item = parse_rate(rate) if rate else None
        storage: Storage
        if redis is not None:
            # the gateway's own connection pool: one set of connections, closed with the app
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=f"{prefix}ratelimit",
                # documented by limits ("connection_pool"), though its stub types only scalars
                connection_pool=redis.connection_pool,  # type: ignore[arg-type]
                wrap_exceptions=True,
            )
        else:
            storage = MemoryStorage(wrap_exceptions=True)
        self.limiter = SlidingWindowCounterRateLimiter(storage)

    async def check(self, device_id: str) -> None:
        """Count one request of this device; TooManyRequests when it is over its rate."""
        if self.item is None:
            return
        try:
            if await self.limiter.hit(self.item, "device", device_id):
                return
            stats = await self.limiter.get_window_stats(self.item, "device", device_id)
        except Exception as exc:
            log.warning("rate limit store failed (%s); request let through", type(exc).__name__)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequests(
            "rate_limited",
            f"this device may send at most {self.item.amount} requests per "
            f"{self.item.multiples} {self.item.GRANULARITY.name}; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
