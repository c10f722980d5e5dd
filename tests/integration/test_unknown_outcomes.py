"""Outcomes the provider did not state: only a verified answer is final; money moves at most once.

The harness runs with a 3 s synchronous budget, a 6 s recovery deadline and a 1 s provider
timeout, so every path here finishes in seconds. Magic amounts and fault rules are the
sandbox's (docs/test-values.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from adapters.base import Outcome, ProviderEvent
from tests.harness import Harness, start_harness

pytestmark = pytest.mark.integration


async def _kinds(h: Harness) -> list[str]:
    return [e["kind"] for e in await h.events() if e["kind"].startswith("ecard.")]


@pytest.mark.parametrize(
    ("amount", "what"),
    [
        (1092, "applied, then HTTP 500"),
        (1093, "applied, answer held past the timeout"),
        (1094, "bad signature"),
    ],
)
async def test_applied_but_unconfirmed_is_resolved_by_query(harness: Harness, amount: int, what: str) -> None:
    async with harness.client() as client:
        result = await client.create_payment(**harness.payment(amount=amount))
    assert result.status_code == 201, what
    assert result.body["status"] == "succeeded", what
    assert [d["amount"] for d in await harness.debits()] == [amount]


async def test_not_applied_and_unknown_is_reversed_after_the_deadline(harness: Harness) -> None:
    async with harness.client() as client:
        result = await client.create_payment(**harness.payment(amount=1091))
        assert result.status_code == 202 and result.body["status"] == "processing"
        final = await harness.wait_settled(client, result.body["id"])
    assert final["status"] == "failed" and final["failure_code"] == "outcome_unknown_reversed"
    assert await harness.debits() == []
    assert "ecard.reverse" in await _kinds(harness)
    assert await harness.balance("31000001") == 100_000


async def test_money_moved_then_silence_is_given_back(harness: Harness) -> None:
    await harness.fault(operation="consume", action="error_500_after_apply")
    await harness.fault(operation="query", action="error_500", times=-1)
    await harness.fault(operation="reverse", action="error_500", times=3)  # the reversal is retried too
    async with harness.client() as client:
        result = await client.create_payment(**harness.payment(amount=700))
        assert result.status_code == 202
        final = await harness.wait_settled(client, result.body["id"])
    assert final["status"] == "failed" and final["failure_code"] == "outcome_unknown_reversed"
    kinds = await _kinds(harness)
    assert kinds.count("ecard.debit") == 1 and kinds.count("ecard.reverse") == 1
    assert await harness.balance("31000001") == 100_000


async def test_processing_payment_resolves_when_the_provider_answers_again(harness: Harness) -> None:
    await harness.fault(operation="consume", action="error_500_after_apply")
    await harness.fault(operation="query", action="error_500", times=-1)
    async with harness.client() as client:
        result = await client.create_payment(**harness.payment(amount=640))
        assert result.status_code == 202
        await harness.sandbox.delete("/_control/faults")
        final = await harness.wait_settled(client, result.body["id"])
    assert final["status"] == "succeeded"
    assert [d["amount"] for d in await harness.debits()] == [640]


async def test_cancel_of_a_processing_payment_ends_canceled(harness: Harness) -> None:
    await harness.fault(operation="consume", action="error_500_after_apply")
    await harness.fault(operation="query", action="error_500", times=-1)
    async with harness.client() as client:
        result = await client.create_payment(**harness.payment(amount=300))
        assert result.status_code == 202
        canceled = await client.cancel_payment(result.body["id"])
        assert canceled.status_code in (200, 202)
        final = await harness.wait_settled(client, result.body["id"])
    assert final["status"] == "canceled"
    assert await harness.balance("31000001") == 100_000


async def test_a_cancel_in_progress_is_not_taken_over_by_the_recovery_worker(
    database_url: str, tmp_path: Path
) -> None:
    """The cancel holds its payment while it drives the reversal. A worker pass in between used
    to lease it, so the request waited out the lease and answered "succeeded" to a cancel the
    provider was about to confirm (a flaky CI run found this)."""
    async with start_harness(database_url=database_url, data_dir=tmp_path, run_workers=False) as h:
        worker = h.services.recovery
        async with h.client() as client:
            paid = (await client.create_payment(**h.payment(amount=820))).body
            assert paid["status"] == "succeeded"
            await h.fault(operation="reverse", action="delay", delay_ms=600)
            cancel = asyncio.create_task(client.cancel_payment(paid["id"]))
            await asyncio.sleep(0.2)  # the reversal is requested and on its way to the provider
            assert await worker.run_once() == 0  # the worker leaves it to the request
            canceled = await cancel
        assert canceled.status_code == 200 and canceled.body["status"] == "canceled"
        assert (await _kinds(h)).count("ecard.reverse") == 1


async def test_a_cancel_refunding_the_rest_gives_it_back_once_when_the_answer_is_lost(
    harness: Harness,
) -> None:
    """A partly refunded payment is cancelled by refunding exactly the rest. The provider applies
    that refund but its answer is lost twice; the retries carry the same refund reference, so
    the rest goes back once."""
    async with harness.client() as client:
        paid = (await client.create_payment(**harness.payment(amount=900))).body
        await client.refund_payment(paid["id"], amount=200)
        await harness.fault(operation="refund", action="error_500_after_apply")
        await harness.fault(operation="refund", action="drop_after_apply")
        canceled = await client.cancel_payment(paid["id"])
        assert canceled.status_code in (200, 202)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while (payment := await client.get_payment(paid["id"]))["status"] != "canceled":
            assert loop.time() < deadline, payment
            await asyncio.sleep(0.1)
        faults = (await harness.sandbox.get("/_control/faults")).json()
    assert faults in ([], {"faults": []}, {"rules": []}), faults  # both answers were lost
    assert payment["refunded_amount"] == 900
    refunds = [e for e in await harness.events("ecard.refund")]
    assert [r["amount"] for r in refunds] == [200, 700]
    assert "ecard.reverse" not in await _kinds(harness)
    assert await harness.balance("31000001") == 100_000


async def test_a_verified_success_for_another_amount_is_never_taken(tmp_path: Path) -> None:
    """A provider's verified word that the payment succeeded, for an amount that is not the
    payment's, leaves it unknown; past the deadline it is reversed like any unknown."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with start_harness(database_url=url, data_dir=tmp_path, run_workers=False) as h:
        async with h.client() as client:
            held = await client.create_payment(**h.payment(amount=1091))  # never answered
            assert held.status_code == 202
            payment = held.body
            event = ProviderEvent(
                reference=payment["provider_reference"],
                outcome=Outcome.SUCCEEDED,
                provider_txn_id="T1",
                amount=1,
                dedupe_key="mismatch-1",
            )
            await h.services.payments.on_notification(h.school_id, "ecard", event)
            assert (await client.get_payment(payment["id"]))["status"] == "processing"
            h.clock.advance(seconds=60)
            await h.services.recovery.run_once()
            final = await client.get_payment(payment["id"])
    assert final["status"] == "failed" and final["failure_code"] == "outcome_unknown_reversed"


async def test_connection_refused_fails_without_charging(tmp_path: Path) -> None:
    # Real sockets: sandbox.test does not resolve, so no request byte can reach a provider.
    async with (
        start_harness(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", data_dir=tmp_path, real_network=True
        ) as h,
        h.client() as client,
    ):
        result = await client.create_payment(**h.payment())
        assert result.status_code == 201
        assert result.body["status"] == "failed" and result.body["failure_code"] == "provider_unavailable"
        assert await h.debits() == []


async def test_resumer_finishes_payments_left_processing_by_a_stopped_gateway(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with start_harness(database_url=url, data_dir=tmp_path, run_workers=False) as first:
        await first.fault(operation="consume", action="error_500_after_apply")
        await first.fault(operation="query", action="error_500", times=-1)
        async with first.client() as client:
            result = await client.create_payment(**first.payment(amount=450))
        assert result.status_code == 202
        payment_id, sandbox_app, device = result.body["id"], first.sandbox_app, first.device
        await first.sandbox.delete("/_control/faults")
    # A new gateway process on the same database and the same provider: the resumer takes over.
    async with start_harness(
        database_url=url, data_dir=tmp_path, seed=False, sandbox_app=sandbox_app
    ) as second:
        async with second.client(device) as client:
            final = await second.wait_settled(client, payment_id)
    assert final["status"] == "succeeded"


class DelayedPacket(httpx.AsyncBaseTransport):
    """The network between gateway and provider: holds the first consume instead of delivering
    it (the gateway sees a read timeout), so the test can deliver those exact bytes later."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.held: httpx.Request | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.held is None and request.url.path.endswith("/v1/consume"):
            await request.aread()
            self.held = request
            raise httpx.ReadTimeout("held in the network", request=request)
        return await self.inner.handle_async_request(request)

    async def deliver(self) -> httpx.Response:
        assert self.held is not None
        response = await self.inner.handle_async_request(self.held)
        await response.aread()
        return response


async def test_a_charge_arriving_after_the_reversal_moves_no_money(tmp_path: Path) -> None:
    network: list[DelayedPacket] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> DelayedPacket:
        network.append(DelayedPacket(inner))
        return network[0]

    async with (
        start_harness(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
            data_dir=tmp_path,
            wrap_transport=wrap,
        ) as h,
        h.client() as client,
    ):
        result = await client.create_payment(**h.payment(amount=880))
        assert result.status_code == 202
        final = await h.wait_settled(client, result.body["id"])
        assert final["failure_code"] == "outcome_unknown_reversed"
        late = await network[0].deliver()  # the original, correctly signed consume finally arrives
        assert late.json()["code"] == "ORDER_REVERSED"
        assert await h.debits() == []
        assert await h.balance("31000001") == 100_000
