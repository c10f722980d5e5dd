"""Start-up respects the holds of live processes (issue 7, A10).

Two gateway instances share one database and one provider. The first is still working on a
payment (its request holds it while the provider has not answered); the second starts. Its
start-up resumer must leave that payment alone until the hold runs out, and take it after.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.store.models import Payment
from tests.harness import Harness, start_harness

pytestmark = pytest.mark.integration

# Long enough that the first instance's request is certainly still waiting on the provider
# while the second one starts, however slow the machine; the test cancels it long before.
SLOW = {"sync_budget_seconds": 100.0, "recovery_deadline_seconds": 200.0, "provider_timeout_seconds": 100.0}


async def _ecard_requests(h: Harness, path_end: str) -> list[dict[str, Any]]:
    return [e for e in await h.events("request") if str(e.get("path", "")).endswith(path_end)]


async def _until(check: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


async def test_a_starting_gateway_leaves_alone_a_payment_a_live_one_holds(
    database_url: str, tmp_path: Path
) -> None:
    async with start_harness(
        database_url=database_url, data_dir=tmp_path, run_workers=False, **SLOW
    ) as first:
        # the consume reaches the provider and waits there; the first instance's request holds
        # the payment meanwhile (next_recovery_at = its sync budget + 2 s ahead)
        await first.fault(operation="consume", action="hang", delay_ms=60_000)
        client = first.client()
        paying = asyncio.create_task(client.create_payment(**first.payment(amount=510)))

        async def first_dies() -> None:
            paying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await paying

        async def consume_arrived() -> bool:
            return any(e.get("operation") == "consume" for e in await first.events("fault"))

        try:
            await _until(consume_arrived, "the consume never reached the sandbox")
            async with first.services.db.transaction() as session:
                # (the PostgreSQL database is shared by the session's tests: this school's only)
                found = await session.execute(select(Payment).where(Payment.school_id == first.school_id))
                held = found.scalar_one()
            assert held.status == "processing" and held.next_recovery_at is not None
        except BaseException:
            await first_dies()
            raise

        async with start_harness(
            database_url=database_url, data_dir=tmp_path, seed=False, sandbox_app=first.sandbox_app
        ) as second:
            try:
                # second's start-up resumer has run (the lifespan awaits it), and so may its loop;
                # another start-up pass, to be sure (other tests' leftovers it may well take)
                await second.services.recovery.run_once(resume_all=True)
                assert await _ecard_requests(first, "/v1/query") == []
                assert await _ecard_requests(first, "/v1/reverse") == []
                async with second.services.db.transaction() as session:
                    untouched = await session.get(Payment, held.id)
                assert untouched is not None
                assert untouched.next_recovery_at == held.next_recovery_at
                assert untouched.recovery_attempts == 0
            finally:
                await first_dies()  # (on a failure too: a request left hanging would outlive the test)

            # the first instance is gone; once its hold has run out the second takes over
            second.clock.advance(seconds=SLOW["sync_budget_seconds"] + 10)
            await second.services.recovery.run_once()

            async def queried() -> bool:
                return bool(await _ecard_requests(first, "/v1/query"))

            await _until(queried, "the payment was never taken over after the hold ran out")
