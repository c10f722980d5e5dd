"""Per-device rate limits (CONTRACT.md "Errors": 429 with Retry-After; nothing stored)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Settings
from tests.harness import Harness, start_harness
from tests.signing_helpers import Attempt, assert_problem, signed

pytestmark = pytest.mark.integration

LIST = "/v1/payments?merchant_order_id=none"


async def _get(h: Harness, device: object = None) -> int:
    creds = device or h.device
    assert creds is not None
    return (await h.gateway.send(signed(h, creds, "GET", LIST))).status_code  # type: ignore[arg-type]


async def test_a_device_over_its_rate_gets_429_with_retry_after_and_nothing_is_stored(
    database_url: str, tmp_path: Path
) -> None:
    # an hour's window: the four requests fall into it however slow the machine is (a window of
    # seconds was missed at load 8); the budget is then renewed by emptying the counter instead
    # of waiting the window out (test_the_client_waits_out_a_429... waits a real one)
    rate = "3 per 1 hour"
    async with start_harness(database_url=database_url, data_dir=tmp_path, device_rate_limit=rate) as h:
        assert h.device is not None
        other = await h.new_device("hmac-sha256")
        assert [await _get(h) for _ in range(3)] == [200, 200, 200]
        attempt = Attempt(h, h.payment(currency="CNY"), str(uuid.uuid4()))
        refused = await h.gateway.send(attempt.request(h.device))
        body = assert_problem(refused, 429, "rate_limited")
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 3600, retry_after
        assert "3 requests per 1 hour" in body["detail"]
        await attempt.assert_nothing_written(0)
        assert await _get(h, other) == 200  # each device has its own budget
        await h.services.rate_limiter.local.storage.reset()  # the window is over
        await attempt.retry_succeeds(h.device)  # the same key runs: the 429 stored nothing


async def test_the_client_waits_out_a_429_and_its_payment_goes_through(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with start_harness(database_url=db, data_dir=tmp_path, device_rate_limit="2/second") as h:
        async with h.client() as client:
            results = [await client.create_payment(**h.payment(amount=100 + i)) for i in range(4)]
        assert [r.body["status"] for r in results] == ["succeeded"] * 4
        assert sorted(d["amount"] for d in await h.debits()) == [100, 101, 102, 103]


@pytest.mark.redis
async def test_gateway_processes_sharing_redis_share_one_budget_per_device(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    settings = {"redis_url": redis_url, "redis_prefix": redis_prefix, "device_rate_limit": "4/minute"}
    async with start_harness(database_url=db, data_dir=tmp_path / "a", **settings) as first:
        redis = first.services.redis
        assert redis is not None and first.device is not None
        assert [await _get(first) for _ in range(3)] == [200, 200, 200]
        sandbox = first.sandbox_app
        async with start_harness(
            database_url=db, data_dir=tmp_path / "b", seed=False, sandbox_app=sandbox, **settings
        ) as second:
            second.device = first.device
            assert await _get(second) == 200
            assert await _get(second) == 429
            assert await _get(first) == 429
        assert [k async for k in redis.scan_iter(match=f"{redis_prefix}ratelimit*")]


def test_rates_are_checked_at_start_up(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, device_rate_limit="off").device_rate_limit is None
    assert Settings(data_dir=tmp_path, device_rate_limit="20 per second").device_rate_limit == "20 per second"
    for bad in ("lots", "10/fortnight", "0/minute"):
        with pytest.raises(ValidationError, match="device_rate_limit"):
            Settings(data_dir=tmp_path, device_rate_limit=bad)


async def test_limiting_off_lets_every_request_through(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with start_harness(database_url=db, data_dir=tmp_path, device_rate_limit="off") as h:
        assert {await _get(h) for _ in range(30)} == {200}
