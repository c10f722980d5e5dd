"""The gateway's Redis client, and one view per process of whether Redis can be used now.

Redis holds only what is hot and shared (nonces, rate-limit counters, breaker state); every one
of them has a database or in-process fallback, so an unreachable Redis makes the gateway slower,
never wrong (docs/decisions/0015). ``RedisLink.call`` is the single place where a Redis failure
becomes ``RedisDown``, which each caller answers with its fallback.

Connections: a pooled connection can be dead without the pool knowing (Redis restarted, a proxy
dropped an idle connection). A command that fails on one with ``ConnectionError`` never reached
Redis, so it is retried once on a fresh connection; a timeout is *not* retried, since the
command may have run (a repeated ``SET NX`` would then refuse its own nonce) and a hung server
should cost one timeout, not several. Connections idle for ``HEALTH_CHECK_SECONDS`` are pinged
before use.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

__all__ = ["HEALTH_CHECK_SECONDS", "RedisDown", "RedisLink", "connect"]

log = logging.getLogger(__name__)
T = TypeVar("T")

HEALTH_CHECK_SECONDS = 15


def connect(url: str, *, timeout: float) -> Redis:
    """A client whose pool retries dead connections and never waits long on a hung server."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_SECONDS,
        # once, on ConnectionError only (no retry_on_error additions, so no TimeoutError)
        retry=Retry(ExponentialWithJitterBackoff(cap=0.05, base=0.005), 1, (RedisConnectionError,)),
    )


class RedisDown(Exception):
    """Redis cannot be used for this call; the caller uses its fallback."""


class RedisLink:
    """The process's Redis client plus whether it is usable. After a failure, calls are not
    even tried for ``pause`` (so a hung Redis costs one timeout per pause, not one per request);
    the first call after that is the probe."""

    def __init__(self, client: Redis, *, clock: Callable[[], datetime], pause: timedelta) -> None:
        self.client, self.clock, self.pause = client, clock, pause
        self.down_since: datetime | None = None  # the gateway's clock, first failure of this outage
        self._next_try: datetime | None = None

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        if self._next_try is not None and self.clock() < self._next_try:
            raise RedisDown("Redis failed moments ago; not tried again yet")
        try:
            result = await operation()
        except (RedisError, OSError) as exc:
            now = self.clock()
            self._next_try = now + self.pause
            if self.down_since is None:
                self.down_since = now
                log.warning("Redis unreachable (%s: %s); using the fallbacks", type(exc).__name__, exc)
            raise RedisDown(f"{type(exc).__name__}: {exc}") from exc
        if self.down_since is not None:
            log.warning("Redis reachable again (down since %s)", self.down_since.isoformat())
            self.down_since, self._next_try = None, None
        return result

    async def aclose(self) -> None:
        await self.client.aclose()
