"""The gateway's link to PostgreSQL breaks: clients get a retryable 503, and money moves once.

The PostgreSQL server is shared by the test run, so the gateway reaches it through a TCP proxy
(tests/tcp_proxy.py) that the test cuts and restores (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from gateway.client import CampusPayError
from tests.harness import Harness, start_harness
from tests.tcp_proxy import TcpProxy, tcp_proxy

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

CARD, START = "31000001", 100_000


@asynccontextmanager
async def behind_a_proxy(
    postgres_url: str, tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[Harness, TcpProxy]]:
    parts = urlsplit(postgres_url)
    async with tcp_proxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        url = urlunsplit(parts._replace(netloc=f"{parts.username or ''}@127.0.0.1:{proxy.port}".lstrip("@")))
        async with start_harness(database_url=url, data_dir=tmp_path, run_workers=False, **settings) as h:
            yield h, proxy


async def test_a_payment_while_the_database_is_unreachable_gets_a_retryable_503(
    postgres_url: str, tmp_path: Path
) -> None:
    async with behind_a_proxy(postgres_url, tmp_path) as (h, proxy):
        order = h.payment(amount=1410)
        proxy.cut()
        async with h.client(max_retries=0) as client:
            body = {**order, "currency": "CNY"}
            key = "key-db-outage-1"
            refused = await client.request("POST", "/v1/payments", json=body, idempotency_key=key)
        assert refused.status_code == 503 and refused.json()["code"] == "database_unavailable", refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/problem+json"
        assert await h.debits() == []  # nothing reached the provider

        proxy.restore()
        async with h.client() as client:  # the terminal's retry, same key
            paid = await client.create_payment(**order, idempotency_key="key-db-outage-1")
        assert paid.status_code == 201 and paid.body["status"] == "succeeded", paid.body
        assert len(await h.debits()) == 1 and await h.balance(CARD) == START - 1410


async def test_the_database_lost_while_the_provider_charges_is_settled_once_it_returns(
    postgres_url: str, tmp_path: Path
) -> None:
    """The payment is committed `processing` before the call out; the link dies while the
    e-card applies the consume, so the answer cannot be written. Once the database is back,
    recovery finds the charge: succeeded, charged once, and the terminal's retry sees it."""
    # A deadline beyond the clock moves below: recovery must learn the charge by query (at the
    # deadline it would reverse it instead, which is right too, but not what this test is about).
    async with behind_a_proxy(postgres_url, tmp_path, recovery_deadline_seconds=60.0) as (h, proxy):
        await h.fault(operation="consume", action="delay_after_apply", delay_ms=400)
        order = h.payment(amount=1420)
        async with h.client(max_retries=0) as client:
            paying = asyncio.create_task(client.create_payment(**order, idempotency_key="key-db-outage-2"))
            for _ in range(500):
                if await h.debits():
                    break
                await asyncio.sleep(0.01)
            assert len(await h.debits()) == 1
            proxy.cut()
            with pytest.raises(CampusPayError) as lost:
                await paying
        assert lost.value.status == 503 and lost.value.code == "database_unavailable"

        proxy.restore()
        for _ in range(5):
            h.clock.advance(seconds=3)
            await h.services.recovery.run_once()
        async with h.client(max_retries=0) as client:
            found = (await client.list_payments(order["merchant_order_id"]))["data"]
            assert [p["status"] for p in found] == ["succeeded"], found
            # The terminal's retry with the key: the claim the lost request could not release
            # stays "in use" until its lock runs out (sync budget + 10 s), then answers with
            # this payment. Either way, never a second charge.
            with pytest.raises(CampusPayError) as in_use:
                await client.create_payment(**order, idempotency_key="key-db-outage-2")
        assert (in_use.value.status, in_use.value.code) == (409, "idempotency_key_in_use")
        assert len(await h.debits()) == 1 and await h.balance(CARD) == START - 1420
