"""Redis outages (docs/operations.md "Redis outages", decision 0015): correct, if slower, from
the database; no replay after Redis forgets; dead pooled connections retried; a provider's
answer kept whatever happens to the breaker's bookkeeping.

Each test runs its own ``redis-server`` (tests/redis_server.py) and stops, kills, pauses,
restarts or flushes only that one. A signature's ``created`` and the gateway's clock are the
harness clock, which the tests move instead of sleeping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.client import DeviceCredentials
from gateway.store.models import Nonce
from tests.harness import Harness, start_harness
from tests.redis_server import Hop, RedisServer, redis_server_binary
from tests.signing_helpers import Attempt, assert_problem, signed

pytestmark = [pytest.mark.integration, pytest.mark.redis]

LIST = "/v1/payments?merchant_order_id=none"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = redis_server_binary()
    if binary is None:
        message = "redis-server is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; under CI=true this must run", pytrace=False)
        pytest.skip(message)
    server = RedisServer(binary, tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.close()


@asynccontextmanager
async def gateway(
    database_url: str, data_dir: Path, redis_url: str, prefix: str | None = None, **kw: Any
) -> AsyncIterator[Harness]:
    # a prefix of the test's own: the PostgreSQL database is shared by the whole session
    prefix = prefix or f"cp-{uuid.uuid4().hex[:12]}:"
    async with start_harness(
        database_url=database_url, data_dir=data_dir, redis_url=redis_url, redis_prefix=prefix, **kw
    ) as h:
        yield h


def get(h: Harness, creds: DeviceCredentials | None = None) -> httpx.Request:
    creds = creds or h.device
    assert creds is not None
    return signed(h, creds, "GET", LIST)


def pay(h: Harness) -> Attempt:
    return Attempt(h, h.payment(currency="CNY"), str(uuid.uuid4()))


async def send(h: Harness, request: httpx.Request) -> httpx.Response:
    return await h.gateway.send(request)


def assert_unverifiable(response: httpx.Response) -> None:
    assert_problem(response, 401, "nonce_unverifiable")
    assert response.headers["retry-after"] == "1"  # a request signed a second later passes


async def nonce_rows(h: Harness) -> set[str]:
    async with h.services.db.transaction() as session:
        return set((await session.execute(select(Nonce.nonce))).scalars())


def nonce_of(request: httpx.Request) -> str:
    value = request.headers["signature-input"]
    return value.split('nonce="', 1)[1].split('"', 1)[0]


async def test_while_redis_is_down_device_requests_are_answered_from_the_database(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with gateway(database_url, tmp_path, redis_server.url) as h:
        assert h.device is not None
        first = await send(h, pay(h).request(h.device))
        assert first.status_code == 201, first.text
        redis_server.kill()

        # the request that finds Redis gone was signed before the gateway knew: Redis alone held
        # the nonces of that time, so it cannot be checked; a fresh signature can
        assert_unverifiable(await send(h, get(h)))
        h.clock.advance(seconds=1)
        attempt = pay(h)
        request = attempt.request(h.device)
        paid = await send(h, request)
        assert paid.status_code == 201, paid.text
        assert paid.json()["status"] == "succeeded"
        assert nonce_of(request) in await nonce_rows(h)  # claimed in the database
        looked_up = await send(h, signed(h, h.device, "GET", f"/v1/payments/{paid.json()['id']}"))
        assert looked_up.status_code == 200 and looked_up.json()["status"] == "succeeded"
        assert_problem(await send(h, request), 401, "nonce_reused")  # the database remembers it
        assert len(await h.debits()) == 2

        # one gateway's Redis trouble must not take it out of the load balancer
        ready = await h.gateway.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "redis": "degraded"}
        assert (await h.gateway.get("/healthz")).status_code == 200


async def test_while_redis_is_down_each_process_still_limits_each_device(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with gateway(database_url, tmp_path, redis_server.url, device_rate_limit="2/minute") as h:
        assert (await send(h, get(h))).status_code == 200  # counted in Redis
        redis_server.kill()
        assert_unverifiable(await send(h, get(h)))  # refused before it is counted
        h.clock.advance(seconds=1)
        # the per-process count starts afresh: two requests, then the third is over the rate
        assert [(await send(h, get(h))).status_code for _ in range(2)] == [200, 200]
        refused = await send(h, get(h))
        assert_problem(refused, 429, "rate_limited")
        assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize("forget", ["restart", "flushall"])
async def test_a_nonce_used_before_redis_forgot_everything_is_not_accepted_again(
    database_url: str, tmp_path: Path, redis_server: RedisServer, forget: str
) -> None:
    async with gateway(database_url, tmp_path, redis_server.url) as h:
        request = get(h)
        assert (await send(h, request)).status_code == 200
        if forget == "restart":
            redis_server.restart()
        else:
            redis_server.flushall()

        assert_unverifiable(await send(h, request))  # the replay is not let through
        h.clock.advance(seconds=1)
        fresh = get(h)
        assert (await send(h, fresh)).status_code == 200
        # kept in Redis (it is reachable) and, for a while after it forgot, in the database too
        assert redis_server.keys(f"*nonce:*{nonce_of(fresh)}")
        assert nonce_of(fresh) in await nonce_rows(h)
        assert_problem(await send(h, fresh), 401, "nonce_reused")
        assert_unverifiable(await send(h, request))


async def test_nonces_used_while_redis_was_unreachable_are_refused_after_it_returns(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with gateway(database_url, tmp_path, redis_server.url) as h:
        before = get(h)
        assert (await send(h, before)).status_code == 200
        redis_server.pause()  # hung: the gateway's calls time out, Redis keeps its memory

        assert_unverifiable(await send(h, get(h)))
        h.clock.advance(seconds=1)
        during = get(h)
        assert (await send(h, during)).status_code == 200
        assert nonce_of(during) in await nonce_rows(h)

        redis_server.resume()
        h.clock.advance(seconds=2)  # past the gateway's pause between tries of an unreachable Redis
        after = get(h)
        assert (await send(h, after)).status_code == 200
        assert redis_server.keys(f"*nonce:*{nonce_of(after)}")  # Redis is used again
        # Redis never saw the outage's nonce: the database, still consulted, refuses its replay
        assert_problem(await send(h, during), 401, "nonce_reused")
        assert_problem(await send(h, before), 401, "nonce_reused")  # Redis kept its memory
        ready = await h.gateway.get("/readyz")
        assert ready.json()["checks"]["redis"] == "ok"


async def test_the_first_request_after_redis_drops_its_connections_uses_redis(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with gateway(database_url, tmp_path, redis_server.url, device_rate_limit="100/minute") as h:
        assert h.device is not None
        assert (await send(h, get(h))).status_code == 200
        assert (await send(h, pay(h).request(h.device))).status_code == 201  # breaker keys too
        # past the first use's window, in which nonces go to the database as well
        h.clock.advance(seconds=h.settings.signature_max_skew_seconds * 2 + 61)
        redis_server.kill_clients()  # every pooled connection is now dead

        request = pay(h).request(h.device)
        paid = await send(h, request)
        assert paid.status_code == 201, paid.text
        assert paid.json()["status"] == "succeeded"
        # retried on a new connection, not taken for an outage: Redis has it, the database not
        assert redis_server.keys(f"*nonce:*{nonce_of(request)}")
        assert nonce_of(request) not in await nonce_rows(h)


async def test_after_a_redis_restart_the_gateway_is_back_on_redis_within_a_second(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with gateway(database_url, tmp_path, redis_server.url) as h:
        assert h.device is not None
        assert (await send(h, get(h))).status_code == 200
        redis_server.restart()
        # not a 500 on a dead connection: Redis answers, and says it has forgotten everything
        assert_unverifiable(await send(h, get(h)))
        h.clock.advance(seconds=1)
        request = pay(h).request(h.device)
        paid = await send(h, request)
        assert paid.status_code == 201, paid.text
        assert redis_server.keys(f"*nonce:*{nonce_of(request)}")
        assert (await h.gateway.get("/readyz")).json()["checks"]["redis"] == "ok"


class RedisDiesDuringTheCharge(httpx.AsyncBaseTransport):
    """Kills the gateway's Redis while the e-card is charging: after the breaker let the call
    through, before the breaker hears how it went."""

    def __init__(self, inner: httpx.AsyncBaseTransport, server: RedisServer) -> None:
        self.inner, self.server = inner, server

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/v1/consume") and self.server.process is not None:
            self.server.kill()
        return response


@pytest.mark.parametrize("breaker", ["as configured", "redis only"])
async def test_a_verified_provider_answer_stands_when_breaker_bookkeeping_fails(
    database_url: str, tmp_path: Path, redis_server: RedisServer, breaker: str
) -> None:
    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return RedisDiesDuringTheCharge(inner, redis_server)

    async with gateway(database_url, tmp_path, redis_server.url, wrap_transport=wrap) as h:
        assert h.device is not None
        if breaker == "redis only":
            # no database fallback: recording the success raises, and must not matter
            h.services.routing.breaker = h.services.routing.breaker.redis
        paid = await send(h, pay(h).request(h.device))
        assert paid.status_code == 201, paid.text
        assert paid.json()["status"] == "succeeded"
        assert redis_server.process is None  # Redis did die during the call
        assert len(await h.debits()) == 1


async def test_one_gateway_losing_redis_cannot_be_used_to_replay_another_gateways_nonces(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two gateways, one database, one Redis; only the first one's link to Redis breaks."""
    hop = Hop(redis_server.port)
    await hop.open()
    prefix = f"cp-{uuid.uuid4().hex[:12]}:"
    try:
        async with gateway(database_url, tmp_path / "a", hop.url, prefix) as a:
            async with gateway(
                database_url, tmp_path / "b", redis_server.url, prefix, seed=False, sandbox_app=a.sandbox_app
            ) as b:
                b.device = a.device
                seen_by_b = get(b)
                assert (await send(b, seen_by_b)).status_code == 200  # in Redis only
                await hop.cut()

                # a cannot ask Redis whether b saw it, so a refuses what was signed before
                assert_unverifiable(await send(a, seen_by_b))
                for h in (a, b):
                    h.clock.advance(seconds=1)
                seen_by_a = get(a)
                assert (await send(a, seen_by_a)).status_code == 200  # in the database only
                # b still reaches Redis, which never saw it; b must ask the database as well
                assert_problem(await send(b, seen_by_a), 401, "nonce_reused")
                fresh_at_b = get(b)
                assert (await send(b, fresh_at_b)).status_code == 200
                assert_problem(await send(a, fresh_at_b), 401, "nonce_reused")
                assert (await a.gateway.get("/readyz")).json()["checks"]["redis"] == "degraded"
                assert (await b.gateway.get("/readyz")).json()["checks"]["redis"] == "ok"
    finally:
        await hop.close()
