"""The bank adapter against the sandbox bank over ASGI, in all three signing modes."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import httpx
import pytest

from adapters.bank import wire
from adapters.bank.adapter import (
    AgreementRefused,
    BankAdapter,
    NotificationRejected,
    order_id_for,
    txn_time_for,
)
from adapters.base import (
    AdapterConfigError,
    AgreementCredential,
    CardCredential,
    Outcome,
    PaymentRequest,
    ProviderConfig,
    ProviderUnreachable,
    RefundRequest,
)
from sandbox import create_sandbox_app
from tests.contract.cases import BANK_PKI, BANK_POOR_ACCOUNT, BANK_RICH_ACCOUNT, BANK_VECTORS, bank_config

pytestmark = pytest.mark.unit

FROZEN_TOKEN = "6299990000000000103"  # docs/test-values.md: account ...0038 is frozen


def keyed_config(mode: str) -> ProviderConfig:
    vector = BANK_VECTORS[f"sign_method_{mode}"]
    base = bank_config()
    return replace(
        base,
        credentials={
            "mer_id": vector["merId"],
            "sign_method": mode,
            "tr_id": "62000000001",
            "secure_key": vector["secure_key"],
        },
    )


@dataclass
class Bank:
    app: Any
    sb: httpx.AsyncClient
    http: httpx.AsyncClient
    notifications: list[bytes]

    def adapter(self, config: ProviderConfig) -> BankAdapter:
        return BankAdapter(config, self.http)

    async def balance(self, acc_no: str) -> int:
        return int((await self.sb.get(f"/_control/bank/accounts/{acc_no}")).json()["balance"])

    async def token(self, config: ProviderConfig, acc_no: str = BANK_RICH_ACCOUNT) -> str:
        opened = await self.adapter(config).open_agreement(acc_no, "stu_" + secrets.token_hex(6))
        return opened.token

    async def set_day_offset(self, days: int) -> None:
        (await self.sb.post("/_control/clock", json={"offset_seconds": days * 86400})).raise_for_status()

    async def fault(self, reference: str, action: str, operation: str = "consume", **extra: Any) -> None:
        rule = {
            "provider": "bank",
            "operation": operation,
            "action": action,
            "match": {"order_ref": order_id_for("P", reference)},
            **extra,
        }
        (await self.sb.post("/_control/faults", json=rule)).raise_for_status()


@pytest.fixture
async def bank() -> AsyncIterator[Bank]:
    app = create_sandbox_app()
    received: list[bytes] = []

    def receive(request: httpx.Request) -> httpx.Response:
        received.append(request.content)
        return httpx.Response(200)

    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as sb,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http,
        httpx.AsyncClient(transport=httpx.MockTransport(receive)) as notify,
    ):
        app.state.bank.notify_client = notify
        try:
            yield Bank(app, sb, http, received)
        finally:
            await app.state.bank.aclose()


def _request(token: str, amount: int) -> PaymentRequest:
    return PaymentRequest(
        reference="pay_" + secrets.token_hex(12) + "-1",  # the gateway's shape: not a valid orderId
        amount=amount,
        currency="CNY",
        method="card",
        credential=AgreementCredential(token=token, card_last4="0012"),
        store_ref="store_1",
        terminal_ref="dev_1",
    )


CONFIGS = {"01": bank_config, "11": lambda: keyed_config("11"), "12": lambda: keyed_config("12")}


# ----------------------------------------------------------------- derived references


def test_order_ids_and_txn_times_are_derived_deterministically() -> None:
    ref = "pay_0123456789abcdefghjkmnpq-1"
    order_id = order_id_for("P", ref)
    assert re.fullmatch(r"[0-9A-Za-z]{32}", order_id)
    assert order_id == order_id_for("P", ref) != order_id_for("V", ref) != order_id_for("P", ref + "x")
    assert re.fullmatch(r"[0-9A-Za-z]{32}", order_id_for("B12", ref))
    stamp = txn_time_for(order_id)
    assert stamp == txn_time_for(order_id) and len(stamp) == 14
    datetime.strptime(stamp, "%Y%m%d%H%M%S")  # a valid date


# ----------------------------------------------------------------- the three modes end to end


@pytest.mark.parametrize("mode", ["01", "11", "12"])
async def test_pay_query_void_in_every_mode(bank: Bank, mode: str) -> None:
    config = CONFIGS[mode]()
    adapter = bank.adapter(config)
    before = await bank.balance(BANK_RICH_ACCOUNT)
    request = _request(await bank.token(config), 1250)
    paid = await adapter.pay(request)
    assert paid.outcome is Outcome.SUCCEEDED and paid.amount == 1250 and paid.provider_txn_id
    assert (await adapter.pay(request)).provider_txn_id == paid.provider_txn_id  # a retry, not a 2nd charge
    assert await bank.balance(BANK_RICH_ACCOUNT) == before - 1250
    queried = await adapter.query(request.reference)
    assert queried.outcome is Outcome.SUCCEEDED and queried.amount == 1250
    assert (await adapter.check()).outcome is Outcome.SUCCEEDED
    canceled = await adapter.cancel(request.reference)
    assert canceled.outcome is Outcome.REVERSED and canceled.code == "VOIDED" and canceled.amount == 1250
    assert (await adapter.cancel(request.reference)).outcome is Outcome.REVERSED  # repeatable
    assert (await adapter.query(request.reference)).outcome is Outcome.REVERSED
    assert await bank.balance(BANK_RICH_ACCOUNT) == before


async def test_after_the_day_cancel_refunds_in_full(bank: Bank) -> None:
    adapter = bank.adapter(bank_config())
    before = await bank.balance(BANK_RICH_ACCOUNT)
    request = _request(await bank.token(bank_config()), 2000)
    assert (await adapter.pay(request)).outcome is Outcome.SUCCEEDED
    await bank.set_day_offset(2)
    canceled = await adapter.cancel(request.reference)
    assert canceled.outcome is Outcome.REVERSED and canceled.code == "REFUNDED" and canceled.amount == 2000
    assert (await adapter.query(request.reference)).outcome is Outcome.REVERSED
    assert await bank.balance(BANK_RICH_ACCOUNT) == before


async def test_cancel_of_a_partly_refunded_payment_moves_nothing_and_says_why(bank: Bank) -> None:
    """The bank refuses a full refund of a partly refunded payment without saying what remains.
    The gateway cancels such a payment by refunding exactly the rest; the adapter's own cancel
    must not guess at it (tests/integration/test_bank_payments.py has the gateway's side)."""
    adapter = bank.adapter(bank_config())
    before = await bank.balance(BANK_RICH_ACCOUNT)
    request = _request(await bank.token(bank_config()), 1234)
    assert (await adapter.pay(request)).outcome is Outcome.SUCCEEDED
    for amount in (100, 33):
        refund = RefundRequest(request.reference, "rf_" + secrets.token_hex(6), amount)
        assert (await adapter.refund(refund)).outcome is Outcome.SUCCEEDED
    assert await bank.balance(BANK_RICH_ACCOUNT) == before - 1234 + 133
    canceled = await adapter.cancel(request.reference)
    assert canceled.outcome is Outcome.UNKNOWN and canceled.code == "PARTLY_REFUNDED"
    assert canceled.retryable is False
    assert await bank.balance(BANK_RICH_ACCOUNT) == before - 1234 + 133
    rest = RefundRequest(request.reference, request.reference + "-cancel", 1234 - 133)
    assert (await adapter.refund(rest)).outcome is Outcome.SUCCEEDED
    assert (await adapter.refund(rest)).outcome is Outcome.SUCCEEDED  # a retry replays it
    assert await bank.balance(BANK_RICH_ACCOUNT) == before


async def test_refunds_are_idempotent_and_bounded(bank: Bank) -> None:
    adapter = bank.adapter(keyed_config("12"))
    request = _request(await bank.token(keyed_config("12")), 1000)
    assert (await adapter.pay(request)).outcome is Outcome.SUCCEEDED
    refund = RefundRequest(request.reference, "rf_" + secrets.token_hex(6), 600)
    first = await adapter.refund(refund)
    assert first.outcome is Outcome.SUCCEEDED
    assert (await adapter.refund(refund)).provider_txn_id == first.provider_txn_id
    over = await adapter.refund(RefundRequest(request.reference, "rf_" + secrets.token_hex(6), 401))
    assert over.outcome is Outcome.FAILED and over.code == "36"
    never = await adapter.refund(RefundRequest("pay_nope-1", "rf_" + secrets.token_hex(6), 1))
    assert never.outcome is Outcome.FAILED and never.code == "ORIGINAL_NOT_FOUND"


# ----------------------------------------------------------------- declines and unknowns


async def test_business_declines_are_failed_with_the_bank_code(bank: Bank) -> None:
    config = bank_config()
    adapter = bank.adapter(config)
    poor = await bank.token(config, BANK_POOR_ACCOUNT)
    cases = [(poor, 90_000, "64"), (FROZEN_TOKEN, 100, "63"), ("6299990000000009999", 100, "40")]
    for token, amount, code in cases:
        request = _request(token, amount)
        result = await adapter.pay(request)
        assert (result.outcome, result.code) == (Outcome.FAILED, code)
        queried = await adapter.query(request.reference)
        assert (queried.outcome, queried.code) == (Outcome.FAILED, code)
        assert (await adapter.cancel(request.reference)).outcome is Outcome.FAILED  # nothing ever moved


async def test_processing_is_unknown_until_the_bank_settles(bank: Bank) -> None:
    adapter = bank.adapter(bank_config())
    request = _request(await bank.token(bank_config()), 1071)  # magic 71
    paid = await adapter.pay(request)
    assert (paid.outcome, paid.code, paid.retryable) == (Outcome.UNKNOWN, "04", True)
    first = await adapter.query(request.reference)
    assert (first.outcome, first.code) == (Outcome.UNKNOWN, "05")
    assert (await adapter.query(request.reference)).outcome is Outcome.SUCCEEDED


@pytest.mark.parametrize("amount", [1072, 1073, 1074, 1075, 1076])
@pytest.mark.parametrize("mode", ["01", "11"])
async def test_untrusted_answers_are_unknown_never_success(bank: Bank, mode: str, amount: int) -> None:
    config = CONFIGS[mode]()
    adapter = bank.adapter(config)
    request = _request(await bank.token(config), amount)
    result = await adapter.pay(request)
    assert result.outcome is Outcome.UNKNOWN
    assert result.code == ("HTTP_500" if amount == 1072 else "UNVERIFIED_RESPONSE")
    assert (await adapter.query(request.reference)).outcome is Outcome.SUCCEEDED  # money did move


async def test_a_never_seen_order_is_blocked_for_good(bank: Bank) -> None:
    adapter = bank.adapter(bank_config())
    before = await bank.balance(BANK_RICH_ACCOUNT)
    request = _request(await bank.token(bank_config()), 500)
    await bank.fault(request.reference, "error_500")
    assert (await adapter.pay(request)).outcome is Outcome.UNKNOWN
    assert (await adapter.query(request.reference)).outcome is Outcome.NOT_FOUND
    blocked = await adapter.cancel(request.reference)
    assert (blocked.outcome, blocked.code) == (Outcome.REVERSED, "ORDER_BLOCKED")
    late = await adapter.pay(request)  # the same order arriving late: refused, moves nothing
    assert (late.outcome, late.code) == (Outcome.UNKNOWN, "12")
    assert (await adapter.query(request.reference)).outcome is Outcome.REVERSED
    assert (await adapter.cancel(request.reference)).outcome is Outcome.REVERSED
    refund = await adapter.refund(RefundRequest(request.reference, "rf_x1", 100))
    assert refund.outcome is Outcome.FAILED
    assert await bank.balance(BANK_RICH_ACCOUNT) == before


async def test_timeout_is_unknown_and_refused_connection_is_unreachable(bank: Bank) -> None:
    config = replace(bank_config(), options={**bank_config().options, "timeout_seconds": 0.2})
    adapter = bank.adapter(config)
    request = _request(await bank.token(config), 300)
    await bank.fault(request.reference, "hang", delay_ms=5000)
    result = await adapter.pay(request)
    assert (result.outcome, result.code, result.retryable) == (Outcome.UNKNOWN, "TIMEOUT", True)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as refused:
        with pytest.raises(ProviderUnreachable):
            await BankAdapter(bank_config(), refused).pay(_request("6299990000000000101", 100))


async def test_wrong_trust_or_key_makes_check_unknown(bank: Bank) -> None:
    config = bank_config()
    other_root = (BANK_PKI / BANK_VECTORS["pki"]["other_root"]).read_text()
    wrong_root = replace(config, credentials={**config.credentials, "bank_root_ca": other_root})
    assert (await bank.adapter(wrong_root).check()).outcome is Outcome.UNKNOWN
    wrong_bank = replace(config, credentials={**config.credentials, "bank_subject_cn": "Another Bank"})
    assert (await bank.adapter(wrong_bank).check()).outcome is Outcome.UNKNOWN
    keyed = keyed_config("11")
    wrong_key = replace(keyed, credentials={**keyed.credentials, "secure_key": "x" * 40})
    assert (await bank.adapter(wrong_key).check()).outcome is Outcome.UNKNOWN
    unknown_mer = replace(keyed, credentials={**keyed.credentials, "mer_id": "777290058119999"})
    result = await bank.adapter(unknown_mer).check()  # 31 is unsigned: never verified
    assert result.outcome is Outcome.UNKNOWN


# ----------------------------------------------------------------- notifications


async def _settle_notifications(bank: Bank, count: int) -> None:
    for _ in range(200):
        if len(bank.notifications) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} notifications, got {len(bank.notifications)}")


@pytest.mark.parametrize("mode", ["01", "12"])
async def test_notifications_verify_and_map(bank: Bank, mode: str) -> None:
    config = CONFIGS[mode]()
    adapter = bank.adapter(config)
    request = _request(await bank.token(config), 800)
    paid = await adapter.pay(request)
    assert (await adapter.cancel(request.reference)).outcome is Outcome.REVERSED
    await _settle_notifications(bank, 2)
    events = [await adapter.parse_notification(body, {}) for body in bank.notifications]
    by_outcome = {e.outcome: e for e in events}
    consume = by_outcome[Outcome.SUCCEEDED]
    assert consume.reference == request.reference and consume.amount == 800
    assert consume.dedupe_key == paid.provider_txn_id == consume.provider_txn_id
    void = by_outcome[Outcome.REVERSED]
    assert void.reference == request.reference and void.dedupe_key != consume.dedupe_key
    assert "tokenPayData" not in consume.raw and "signature" not in consume.raw
    form = wire.decode_form(bank.notifications[0])
    with pytest.raises(NotificationRejected):
        await adapter.parse_notification(wire.encode_form({**form, "txnAmt": "1"}).encode(), {})
    with pytest.raises(NotificationRejected):
        await adapter.parse_notification(b"not a form", {})
    other = bank.adapter(CONFIGS["11" if mode != "11" else "12"]())
    with pytest.raises(NotificationRejected):
        await other.parse_notification(bank.notifications[0], {})


# ----------------------------------------------------------------- agreements and configuration


async def test_open_agreement_never_returns_the_account_number(bank: Bank) -> None:
    adapter = bank.adapter(bank_config())
    opened = await adapter.open_agreement(BANK_RICH_ACCOUNT, "stu_zoe")
    assert opened.token and opened.token not in repr(opened)
    assert opened.acc_no_masked and BANK_RICH_ACCOUNT not in opened.acc_no_masked
    again = await adapter.open_agreement(BANK_RICH_ACCOUNT, "stu_zoe")
    assert again.token == opened.token
    with pytest.raises(AgreementRefused) as refused:
        await adapter.open_agreement("6216610299999999999", "stu_zoe")
    assert refused.value.code == "61"


async def test_configuration_is_checked_before_any_call() -> None:
    config = bank_config()
    async with httpx.AsyncClient() as http:
        for key in ("mer_id", "merchant_private_key", "bank_root_ca", "bank_subject_cn"):
            creds = {k: v for k, v in config.credentials.items() if k != key}
            with pytest.raises(AdapterConfigError, match=key):
                BankAdapter(replace(config, credentials=creds), http)
        with pytest.raises(AdapterConfigError):
            BankAdapter(replace(config, credentials={**config.credentials, "sign_method": "02"}), http)
        other_cert = (BANK_PKI / BANK_VECTORS["pki"]["bank_sign"]).read_text()
        mismatched = {**config.credentials, "merchant_cert": other_cert}
        with pytest.raises(AdapterConfigError, match="not for the merchant private key"):
            BankAdapter(replace(config, credentials=mismatched), http)
        with pytest.raises(AdapterConfigError, match="back_url"):
            BankAdapter(replace(config, options={}), http)
        with pytest.raises(AdapterConfigError):
            BankAdapter(replace(config, endpoint="bank.test"), http)
        adapter = BankAdapter(config, http)
        with pytest.raises(AdapterConfigError):
            await adapter.pay(replace(_request("t", 1), credential=CardCredential("6216610200000000012")))
