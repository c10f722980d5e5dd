"""The contract every adapter must pass, run against each adapter and its sandbox.

Only a verified success or failure is final; an unknown is never reported as either; a
tampered answer is never a success; nothing secret reaches a log line or a result.
"""

from __future__ import annotations

import logging
import secrets

import httpx
import pytest

from adapters.base import CardCredential, Outcome, PaymentRequest, RefundRequest
from tests.contract.cases import CASES

pytestmark = pytest.mark.contract
ADAPTERS = sorted(CASES)


@pytest.mark.parametrize("name", ADAPTERS)
async def test_pay_query_refund_cancel(name: str) -> None:
    async with CASES[name]() as case:
        request = case.pay(1000)
        paid = await case.adapter.pay(request)
        assert paid.outcome is Outcome.SUCCEEDED and paid.amount == 1000
        assert (await case.adapter.pay(request)).outcome is Outcome.SUCCEEDED  # a retry is not a 2nd charge
        queried = await case.adapter.query(request.reference)
        assert queried.outcome is Outcome.SUCCEEDED
        refund = RefundRequest(
            reference=request.reference, refund_reference="rf_" + secrets.token_hex(6), amount=300
        )
        assert (await case.adapter.refund(refund)).outcome is Outcome.SUCCEEDED
        assert (await case.adapter.refund(refund)).outcome is Outcome.SUCCEEDED  # idempotent on its reference
        too_much = RefundRequest(
            reference=request.reference, refund_reference="rf_" + secrets.token_hex(6), amount=800
        )
        assert (await case.adapter.refund(too_much)).outcome is Outcome.FAILED
        # how the gateway cancels a partly refunded payment: it refunds exactly the rest
        rest = RefundRequest(
            reference=request.reference, refund_reference=request.reference + "-cancel", amount=700
        )
        assert (await case.adapter.refund(rest)).outcome is Outcome.SUCCEEDED
        assert (await case.adapter.refund(rest)).outcome is Outcome.SUCCEEDED
        one_more = RefundRequest(
            reference=request.reference, refund_reference="rf_" + secrets.token_hex(6), amount=1
        )
        assert (await case.adapter.refund(one_more)).outcome is Outcome.FAILED
        # an untouched payment is reversed by cancel, and stays reversed
        other = case.pay(600)
        assert (await case.adapter.pay(other)).outcome is Outcome.SUCCEEDED
        canceled = await case.adapter.cancel(other.reference)
        assert canceled.outcome is Outcome.REVERSED
        assert (await case.adapter.query(other.reference)).outcome is Outcome.REVERSED
        assert (await case.adapter.cancel(other.reference)).outcome is Outcome.REVERSED
        assert (await case.adapter.check()).outcome is Outcome.SUCCEEDED


@pytest.mark.parametrize("name", ADAPTERS)
async def test_decline_is_final_and_moves_nothing(name: str) -> None:
    async with CASES[name]() as case:
        result = await case.adapter.pay(case.decline)
        assert result.outcome is Outcome.FAILED and result.code
        assert not await case.money_moved(case.decline.reference)  # type: ignore[misc]
        assert (await case.adapter.query(case.decline.reference)).outcome in case.decline_query


@pytest.mark.parametrize("name", ADAPTERS)
async def test_unknown_outcome_is_never_final(name: str) -> None:
    async with CASES[name]() as case:
        result = await case.adapter.pay(case.unknown)
        assert result.outcome is Outcome.UNKNOWN
        assert (await case.adapter.query(case.unknown.reference)).outcome is Outcome.NOT_FOUND
        # a reversal blocks the order for good: a late arrival can never charge
        assert (await case.adapter.cancel(case.unknown.reference)).outcome in (
            Outcome.REVERSED,
            Outcome.FAILED,
        )
        assert (await case.adapter.query(case.unknown.reference)).outcome is Outcome.REVERSED


@pytest.mark.parametrize("name", ADAPTERS)
async def test_tampered_answer_is_unknown_never_success(name: str) -> None:
    async with CASES[name]() as case:
        result = await case.adapter.pay(case.tampered)
        assert result.outcome is Outcome.UNKNOWN
        assert (await case.adapter.query(case.tampered.reference)).outcome is Outcome.SUCCEEDED


class FlipOneByte(httpx.AsyncBaseTransport):
    """A man in the middle that changes one byte of every answer body."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = bytearray(await response.aread())
        if body:
            body[len(body) // 2] ^= 0x01
        return httpx.Response(response.status_code, headers=response.headers, content=bytes(body))


@pytest.mark.parametrize("name", ADAPTERS)
async def test_any_altered_byte_makes_every_operation_unknown(name: str) -> None:
    async with CASES[name](FlipOneByte) as case:
        request = case.pay(700)
        assert (await case.adapter.pay(request)).outcome is Outcome.UNKNOWN
        assert (await case.adapter.query(request.reference)).outcome is Outcome.UNKNOWN
        assert (await case.adapter.cancel(request.reference)).outcome is Outcome.UNKNOWN
        assert (await case.adapter.check()).outcome is Outcome.UNKNOWN


@pytest.mark.parametrize("name", ADAPTERS)
async def test_secrets_never_reach_logs_or_results(name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with CASES[name]() as case:
        with_pin = (
            case.secret_pay()
            if case.secret_pay is not None
            else PaymentRequest(
                reference="ref_" + secrets.token_hex(6),
                amount=500,
                currency="CNY",
                method="card",
                credential=CardCredential("31000004", "1234"),
                store_ref="s",
                terminal_ref="t",
            )
        )
        results = [
            await case.adapter.pay(with_pin),
            await case.adapter.pay(case.unknown),
            await case.adapter.pay(case.tampered),
            await case.adapter.query(with_pin.reference),
        ]
        assert results[0].outcome is Outcome.SUCCEEDED
    logged = "\n".join(r.getMessage() for r in caplog.records)
    shown = repr(results) + repr(with_pin)
    for secret in case.secrets:
        assert secret not in logged, f"{secret!r} logged"
        assert secret not in shown, f"{secret!r} in a result or repr"
