"""A provider refusing the gateway's *request* is never an answer about the payment (issue 7, A1).

Every adapter, against its own sandbox: a refusal of our credentials, signature, clock, merchant
or request rate is ``UNKNOWN`` with ``refused`` set, on every operation -- never ``FAILED``
(which the gateway would take for "nothing moved": a cancel that the provider refused would
end ``canceled`` with the money still held). Only a *signed* refusal says nothing of the request
was applied (``nothing_applied``), which on ``pay`` means "not accepted"; an unsigned one, or a
replayed nonce, does not.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

import pytest

from adapters.alipay.codes import request_refusal as alipay_refusal
from adapters.bank.adapter import order_id_for
from adapters.bank.codes import request_refusal as bank_refusal
from adapters.base import Adapter, Outcome, ProviderResult, RefundRequest, Refusal
from adapters.ecard.codes import request_refusal as ecard_refusal
from adapters.registry import default_registry
from tests.contract.cases import CASES, Case

pytestmark = pytest.mark.unit
ADAPTERS = sorted(CASES)

# the sandbox's name of each adapter operation, per provider (docs/test-values.md)
FAULT_OPERATIONS = {
    "ecard": {"pay": "consume", "query": "query", "cancel": "reverse", "refund": "refund"},
    "alipay": {
        "pay": "alipay.trade.pay",
        "query": "alipay.trade.query",
        "cancel": "alipay.trade.cancel",
        "refund": "alipay.trade.refund",
    },
    # the bank's cancel starts by querying the payment, its refund queries and then refunds
    "bank": {"pay": "consume", "query": "query", "cancel": "query", "refund": "refund"},
}


async def _fault(case: Case, operation: str, action: str, **extra: Any) -> None:
    rule = {"provider": case.name, "operation": FAULT_OPERATIONS[case.name][operation], "action": action}
    r = await case.sandbox.post("/_control/faults", json={**rule, **extra})
    assert r.status_code == 200, r.text


async def _call(adapter: Adapter, operation: str, reference: str) -> ProviderResult:
    if operation == "query":
        return await adapter.query(reference)
    if operation == "cancel":
        return await adapter.cancel(reference)
    refund = RefundRequest(reference=reference, refund_reference="rf_" + secrets.token_hex(6), amount=100)
    return await adapter.refund(refund)


def _refused(result: ProviderResult, kind: Refusal, *, nothing_applied: bool) -> None:
    assert result.outcome is Outcome.UNKNOWN, result
    assert result.refused is kind, result
    assert result.nothing_applied is nothing_applied, result
    assert result.retryable  # ask again later: what is refused may be fixed meanwhile


@pytest.mark.parametrize("name", ADAPTERS)
async def test_a_signed_refusal_of_a_pay_is_not_accepted_and_moved_nothing(name: str) -> None:
    async with CASES[name]() as case:
        await _fault(case, "pay", "auth_refusal")
        request = case.pay(700)
        _refused(await case.adapter.pay(request), Refusal.SIGNATURE, nothing_applied=True)
        assert not await case.money_moved(request.reference)


@pytest.mark.parametrize("operation", ["query", "cancel", "refund"])
@pytest.mark.parametrize("name", ADAPTERS)
async def test_a_signed_refusal_after_the_payment_is_no_news_about_it(name: str, operation: str) -> None:
    async with CASES[name]() as case:
        request = case.pay(800)
        assert (await case.adapter.pay(request)).outcome is Outcome.SUCCEEDED
        await _fault(case, operation, "auth_refusal")
        _refused(
            await _call(case.adapter, operation, request.reference), Refusal.SIGNATURE, nothing_applied=True
        )
        # the payment stands: the provider still holds the money, nothing was reversed or refunded
        assert (await case.adapter.query(request.reference)).outcome is Outcome.SUCCEEDED
        assert await case.money_moved(request.reference)


@pytest.mark.parametrize("name", ADAPTERS)
async def test_throttling_in_front_of_the_provider_is_a_refusal_that_proves_nothing(name: str) -> None:
    async with CASES[name]() as case:
        request = case.pay(900)
        assert (await case.adapter.pay(request)).outcome is Outcome.SUCCEEDED
        await _fault(case, "cancel", "throttle_429")
        _refused(await case.adapter.cancel(request.reference), Refusal.THROTTLED, nothing_applied=False)
        await _fault(case, "pay", "throttle_429")
        other = case.pay(300)
        _refused(await case.adapter.pay(other), Refusal.THROTTLED, nothing_applied=False)


@pytest.mark.parametrize("operation", ["query", "cancel", "refund"])
async def test_an_ecard_whose_clock_drifted_refuses_with_a_signed_401(operation: str) -> None:
    """The e-card's own clock more than 300 s off: every request is refused TIMESTAMP_EXPIRED."""
    async with CASES["ecard"]() as case:
        request = case.pay(650)
        assert (await case.adapter.pay(request)).outcome is Outcome.SUCCEEDED
        r = await case.sandbox.post("/_control/clock/ecard", json={"offset_seconds": 301})
        assert r.status_code == 200, r.text
        result = await _call(case.adapter, operation, request.reference)
        _refused(result, Refusal.TIMESTAMP, nothing_applied=True)
        assert result.code == "TIMESTAMP_EXPIRED"
        other = case.pay(120)
        _refused(await case.adapter.pay(other), Refusal.TIMESTAMP, nothing_applied=True)
        await case.sandbox.post("/_control/clock/ecard", json={"offset_seconds": 0})
        assert (await case.adapter.query(request.reference)).outcome is Outcome.SUCCEEDED
        assert (await case.adapter.query(other.reference)).outcome is Outcome.NOT_FOUND


async def _stranger(case: Case) -> Adapter:
    """The case's adapter with a merchant (app) id the provider does not know."""
    adapter: Any = case.adapter
    config = adapter.config
    field = {"ecard": "merchant_id", "alipay": "app_id", "bank": "mer_id"}[case.name]
    unknown = {"ecard": "m_nobody", "alipay": "2021009999999999", "bank": "777290058199999"}[case.name]
    stranger = replace(config, credentials={**config.credentials, field: unknown})
    return default_registry().create(case.name, stranger, adapter.http)


@pytest.mark.parametrize("name", ADAPTERS)
async def test_an_unknown_merchant_is_a_refusal_even_unsigned_but_proves_nothing(name: str) -> None:
    """No provider can sign for a merchant it does not know (e-card MERCHANT_UNKNOWN, Alipay
    isv.invalid-app-id, bank 31): sorted as what it most likely is, trusted for nothing."""
    async with CASES[name]() as case:
        request = case.pay(400)
        assert (await case.adapter.pay(request)).outcome is Outcome.SUCCEEDED
        stranger = await _stranger(case)
        for result in (await stranger.query(request.reference), await stranger.cancel(request.reference)):
            _refused(result, Refusal.MERCHANT, nothing_applied=False)
        assert (await case.adapter.query(request.reference)).outcome is Outcome.SUCCEEDED


async def test_the_bank_refund_refused_at_its_second_step_does_not_fail_the_refund() -> None:
    """The bank refunds in two steps (query the payment, then refund it); a refusal of the
    second must not end the refund as refused by the bank either: a retry of it may follow one
    that was applied."""
    async with CASES["bank"]() as case:
        request = case.pay(1000)
        assert (await case.adapter.pay(request)).outcome is Outcome.SUCCEEDED
        refund = RefundRequest(reference=request.reference, refund_reference="rf_once", amount=400)
        assert (await case.adapter.refund(refund)).outcome is Outcome.SUCCEEDED
        match = {"order_ref": order_id_for("R", refund.refund_reference)}
        await _fault(case, "refund", "auth_refusal", match=match)
        _refused(await case.adapter.refund(refund), Refusal.SIGNATURE, nothing_applied=True)
        assert (await case.adapter.refund(refund)).outcome is Outcome.SUCCEEDED  # and it was applied once


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "SIGNATURE_INVALID", (Refusal.SIGNATURE, True)),
        (401, "TIMESTAMP_EXPIRED", (Refusal.TIMESTAMP, True)),
        (401, "MERCHANT_UNKNOWN", (Refusal.MERCHANT, True)),
        # a nonce seen before: an earlier copy of these very bytes may have been applied
        (401, "NONCE_REUSED", (Refusal.REPLAY, False)),
        (401, "SOMETHING_NEW", (Refusal.AUTH, True)),
        (403, "MERCHANT_DISABLED", (Refusal.AUTH, True)),
        (422, "INVALID_REQUEST", (Refusal.MALFORMED, True)),
        (429, "", (Refusal.THROTTLED, True)),
        (200, "INSUFFICIENT_BALANCE", None),
        (409, "ORDER_CONFLICT", None),
        (500, "INTERNAL_ERROR", None),
    ],
)
def test_ecard_codes(status: int, code: str, expected: tuple[Refusal, bool] | None) -> None:
    assert ecard_refusal(status, code) == expected


@pytest.mark.parametrize(
    ("code", "sub_code", "expected"),
    [
        ("40002", "isv.invalid-signature", Refusal.SIGNATURE),
        ("40002", "isv.invalid-timestamp", Refusal.TIMESTAMP),
        ("40002", "isv.invalid-app-id", Refusal.MERCHANT),
        ("40002", "isv.invalid-format", Refusal.MALFORMED),
        ("40001", "isv.missing-version", Refusal.MALFORMED),
        ("20001", "aop.invalid-app-auth-token", Refusal.AUTH),
        ("40006", "isv.insufficient-isv-permissions", Refusal.AUTH),
        ("40004", "ACQ.INVALID_PARAMETER", Refusal.MALFORMED),
        ("40004", "ACQ.BUYER_BALANCE_NOT_ENOUGH", None),
        ("40004", "ACQ.TRADE_NOT_EXIST", None),
        ("20000", "isp.unknow-error", None),
        ("10000", "", None),
    ],
)
def test_alipay_codes(code: str, sub_code: str, expected: Refusal | None) -> None:
    assert alipay_refusal(code, sub_code) is expected


@pytest.mark.parametrize(
    ("resp_code", "expected"),
    [
        ("10", Refusal.MALFORMED),
        ("11", Refusal.SIGNATURE),
        ("13", Refusal.MALFORMED),
        ("31", Refusal.MERCHANT),
        ("12", None),
        ("35", None),
        ("64", None),
        ("03", None),
    ],
)
def test_bank_codes(resp_code: str, expected: Refusal | None) -> None:
    assert bank_refusal(resp_code) is expected
