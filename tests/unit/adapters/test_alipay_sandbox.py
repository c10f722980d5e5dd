"""AlipayAdapter against the real sandbox Alipay + face cloud, in process over httpx.ASGITransport.

The sandbox is an independent implementation of Alipay's side (sandbox/alipay); its magic
amounts and control plane are documented in docs/test-values.md. The adapter is registered as
its own app with the TEST key pair of tests/contract/vectors/alipay.json.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.alipay import AlipayAdapter, wire
from adapters.base import (
    BillKind,
    BillNotReady,
    FaceCredential,
    IdentificationFailed,
    Outcome,
    PaymentRequest,
    ProviderConfig,
    ProviderIdentity,
    RefundRequest,
)
from sandbox import create_sandbox_app

pytestmark = pytest.mark.unit
V: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "contract" / "vectors" / "alipay.json").read_text(encoding="utf-8")
)
SCHOOL = "school-demo"
ALICE = "2088101000000001"  # docs/test-values.md: face users
ALICE_AGREEMENT = "20221000000000000001"
BOB = "2088101000000002"
NOTIFY_URL = "http://gateway.test/v1/notify/alipay/sch_1"


@dataclass
class Sandbox:
    sb: httpx.AsyncClient
    adapter: AlipayAdapter
    app_id: str
    notifications: list[bytes] = field(default_factory=list)

    async def token(self, student: str = "stu_alice", school: str = SCHOOL) -> str:
        minted = await self.sb.post("/face/test-tokens", json={"school": school, "student": student})
        minted.raise_for_status()
        token: str = minted.json()["face_token"]
        return token

    async def request(
        self, amount: int, *, student: str = "stu_alice", reference: str | None = None, **changes: Any
    ) -> PaymentRequest:
        fields: dict[str, Any] = {
            "reference": reference or "ref_" + secrets.token_hex(8),
            "amount": amount,
            "currency": "CNY",
            "method": "face",
            "credential": FaceCredential(await self.token(student)),
            "store_ref": "store_1",
            "terminal_ref": "dev_1",
            "description": "午餐",
        }
        fields.update(changes)
        return PaymentRequest(**fields)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    app = create_sandbox_app()
    received: list[bytes] = []

    def merchant(request: httpx.Request) -> httpx.Response:
        received.append(request.content)
        return httpx.Response(200, text="success")

    notify_client = httpx.AsyncClient(transport=httpx.MockTransport(merchant))
    app.state.alipay.notify_client = notify_client
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as sb,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http,
    ):
        registered = (await sb.post("/alipay/apps", json={"app_public_key": V["app_public_key"]})).json()
        config = ProviderConfig(
            endpoint="http://sandbox.test/alipay/gateway.do",
            credentials={
                "app_id": registered["app_id"],
                # the bare key bodies, as the Alipay console shows them
                "app_private_key": "".join(V["app_private_key"].strip().splitlines()[1:-1]),
                "alipay_public_key": registered["alipay_public_key"],
            },
            options={"timeout_seconds": 2.0, "face_group": SCHOOL, "notify_url": NOTIFY_URL},
        )
        adapter = AlipayAdapter(config, http)
        try:
            yield Sandbox(sb, adapter, registered["app_id"], received)
        finally:
            await app.state.alipay.aclose()
            await notify_client.aclose()


async def test_pay_query_refund_cancel(sandbox: Sandbox) -> None:
    a = sandbox.adapter
    request = await sandbox.request(1250)
    paid = await a.pay(request)
    assert paid.outcome is Outcome.SUCCEEDED and paid.amount == 1250 and paid.provider_txn_id
    assert paid.raw["buyer_user_id"] == ALICE
    assert (await a.pay(request)).outcome is Outcome.SUCCEEDED  # the same trade again, not a 2nd charge
    balance = (await sandbox.sb.get(f"/_control/alipay/buyers/{ALICE}")).json()["balance"]
    assert balance == 100_000 - 1250
    assert (await a.query(request.reference)).outcome is Outcome.SUCCEEDED
    refund = RefundRequest(request.reference, "rf_1", 250)
    assert (await a.refund(refund)).outcome is Outcome.SUCCEEDED
    # the retry answers fund_change=N and is confirmed by fastpay.refund.query
    again = await a.refund(refund)
    assert again.outcome is Outcome.SUCCEEDED and again.raw["refund_status"] == "REFUND_SUCCESS"
    assert (await a.refund_query(request.reference, "rf_1")).outcome is Outcome.SUCCEEDED
    assert (await a.refund_query(request.reference, "rf_never")).outcome is Outcome.UNKNOWN
    changed = await a.refund(RefundRequest(request.reference, "rf_1", 260))  # same reference, other amount
    assert changed.outcome is Outcome.UNKNOWN and not changed.retryable
    over = await a.refund(RefundRequest(request.reference, "rf_2", 1001))
    assert over.outcome is Outcome.FAILED and over.code == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    cancelled = await a.cancel(request.reference)
    assert cancelled.outcome is Outcome.REVERSED and cancelled.code == "refund"
    assert (await a.query(request.reference)).outcome is Outcome.REVERSED
    assert (await sandbox.sb.get(f"/_control/alipay/buyers/{ALICE}")).json()["balance"] == 100_000
    assert (await a.check()).outcome is Outcome.SUCCEEDED


async def test_k12_withholding(sandbox: Sandbox) -> None:
    a = sandbox.adapter
    paid = await a.pay(await sandbox.request(800, agreement_no=ALICE_AGREEMENT))
    assert paid.outcome is Outcome.SUCCEEDED
    wrong = await a.pay(await sandbox.request(800, agreement_no="20221000000000000002"))  # Bob's
    assert wrong.outcome is Outcome.FAILED and wrong.code == "ACQ.AGREEMENT_NOT_EXIST"
    await sandbox.sb.put(f"/_control/alipay/agreements/{ALICE_AGREEMENT}", json={"valid": False})
    void = await a.pay(await sandbox.request(800, agreement_no=ALICE_AGREEMENT))
    assert void.outcome is Outcome.FAILED and void.code == "ACQ.AGREEMENT_INVALID"


@pytest.mark.parametrize(
    ("credential", "code"),
    [("fp" + "0" * 33, "ACQ.PAYMENT_AUTH_CODE_INVALID"), (None, "ACQ.BUYER_BALANCE_NOT_ENOUGH")],
)
async def test_declines(sandbox: Sandbox, credential: str | None, code: str) -> None:
    changes = {"credential": FaceCredential(credential)} if credential else {}
    request = await sandbox.request(150_000, **changes)
    result = await sandbox.adapter.pay(request)
    assert result.outcome is Outcome.FAILED and result.code == code
    assert (await sandbox.adapter.query(request.reference)).outcome is Outcome.NOT_FOUND


async def test_a_used_token_and_a_second_token_for_a_paid_trade(sandbox: Sandbox) -> None:
    a = sandbox.adapter
    first = await sandbox.request(600)
    assert (await a.pay(first)).outcome is Outcome.SUCCEEDED
    # another trade with the token first used up: refused
    reused = await a.pay(await sandbox.request(600, credential=first.credential))
    assert reused.outcome is Outcome.FAILED and reused.code == "ACQ.PAYMENT_AUTH_CODE_INVALID"
    # the same trade with a fresh token: ACQ.TRADE_HAS_SUCCESS, believed after the query agrees
    retry = await sandbox.request(600, reference=first.reference)
    result = await a.pay(retry)
    assert result.outcome is Outcome.SUCCEEDED and result.amount == 600
    # the same reference with other details: never final
    other = await a.pay(await sandbox.request(700, reference=first.reference))
    assert other.outcome is Outcome.UNKNOWN and other.code == "ACQ.CONTEXT_INCONSISTENT"


async def test_magic_user_paying_then_paid(sandbox: Sandbox) -> None:
    a = sandbox.adapter
    request = await sandbox.request(1081)
    assert (await a.pay(request)).outcome is Outcome.PENDING_USER
    assert (await a.query(request.reference)).outcome is Outcome.PENDING_USER
    assert (await a.query(request.reference)).outcome is Outcome.SUCCEEDED


async def test_magic_unknown_after_apply(sandbox: Sandbox) -> None:
    request = await sandbox.request(1082)
    result = await sandbox.adapter.pay(request)
    assert result.outcome is Outcome.UNKNOWN and result.retryable
    assert (await sandbox.adapter.query(request.reference)).outcome is Outcome.SUCCEEDED


async def test_magic_system_error_then_cancel_closes(sandbox: Sandbox) -> None:
    a = sandbox.adapter
    request = await sandbox.request(1085)
    result = await a.pay(request)
    assert result.outcome is Outcome.UNKNOWN and result.code == "ACQ.SYSTEM_ERROR" and result.retryable
    assert (await a.query(request.reference)).outcome is Outcome.PENDING_USER
    cancelled = await a.cancel(request.reference)
    assert cancelled.outcome is Outcome.REVERSED and cancelled.code == "close"
    assert (await a.query(request.reference)).outcome is Outcome.REVERSED


async def test_magic_cancel_retry_flag(sandbox: Sandbox) -> None:
    a = sandbox.adapter
    request = await sandbox.request(1086)
    assert (await a.pay(request)).outcome is Outcome.SUCCEEDED
    first = await a.cancel(request.reference)
    assert first.outcome is Outcome.UNKNOWN and first.retryable
    assert (await a.cancel(request.reference)).outcome is Outcome.REVERSED


async def test_close(sandbox: Sandbox) -> None:
    a = sandbox.adapter
    waiting = await sandbox.request(1085)
    await a.pay(waiting)
    assert (await a.close(waiting.reference)).outcome is Outcome.REVERSED
    assert (await a.close("ref_never_seen")).outcome is Outcome.NOT_FOUND
    paid = await sandbox.request(300)
    await a.pay(paid)
    assert (await a.close(paid.reference)).outcome is Outcome.UNKNOWN  # paid: cancel or refund it


async def test_identify(sandbox: Sandbox) -> None:
    a = sandbox.adapter
    assert await a.identify(await sandbox.token()) == ProviderIdentity(ALICE, SCHOOL)
    other = await a.identify(await sandbox.token("stu_zed", "school-other"))
    assert other.group == "school-other"  # the gateway refuses it as enrollment_scope
    with pytest.raises(IdentificationFailed) as info:
        await a.identify("fp" + "1" * 33)
    assert info.value.code == "ZOLOZ.FTOKEN_INVALID"


async def test_delete_enrollment_then_the_student_can_no_longer_pay(sandbox: Sandbox) -> None:
    a = sandbox.adapter
    token = await sandbox.token("stu_bob")
    assert (await a.delete_enrollment(BOB)).outcome is Outcome.SUCCEEDED
    assert (await a.delete_enrollment(BOB)).outcome is Outcome.SUCCEEDED  # a retry
    with pytest.raises(IdentificationFailed):
        await a.identify(token)
    refused = await a.pay(await sandbox.request(300, credential=FaceCredential(token)))
    assert refused.outcome is Outcome.FAILED and refused.code == "ACQ.USER_FACE_PAYMENT_SWITCH_OFF"
    # a user the provider verifiably does not have: nothing to delete, so the deletion is done
    missing = await a.delete_enrollment("2088999999999999")
    assert missing.outcome is Outcome.SUCCEEDED and missing.code == "FACE_USER_NOT_EXIST"


async def test_download_bill(sandbox: Sandbox) -> None:
    a = sandbox.adapter
    request = await sandbox.request(990)
    assert (await a.pay(request)).outcome is Outcome.SUCCEEDED
    today = wire.beijing_timestamp()[:10]
    with pytest.raises(BillNotReady, match="bill_not_exist"):
        await a.download_bill(date.fromisoformat(today))
    await sandbox.sb.post("/_control/clock", json={"offset_seconds": 86_400})
    bill = await a.download_bill(date.fromisoformat(today))
    assert bill[:2] == b"PK"  # a zip, as Alipay serves it
    with zipfile.ZipFile(io.BytesIO(bill)) as archive:
        text = b"".join(archive.read(name) for name in archive.namelist()).decode("gbk", errors="replace")
    assert request.reference in text
    [row] = [r for r in a.parse_bill(bill) if r.reference == request.reference]
    assert (row.kind, row.amount, row.refund_reference) == (BillKind.PAYMENT, 990, None)
    assert row.provider_txn_id and row.at is not None and row.at.utcoffset() == timedelta(hours=8)


async def test_notifications_verify_and_map(sandbox: Sandbox) -> None:
    a = sandbox.adapter
    request = await sandbox.request(450)
    assert (await a.pay(request)).outcome is Outcome.SUCCEEDED
    for _ in range(100):
        if sandbox.notifications:
            break
        await asyncio.sleep(0.02)
    (body,) = sandbox.notifications
    event = await a.parse_notification(body, {"content-type": "application/x-www-form-urlencoded"})
    assert event.outcome is Outcome.SUCCEEDED and event.reference == request.reference
    assert event.amount == 450 and event.dedupe_key
    assert await a.parse_notification(body, {}) == event  # a repeat verifies the same: dedupe on notify_id


async def test_bad_signatures_from_the_sandbox_are_unknown(sandbox: Sandbox) -> None:
    request = await sandbox.request(1084)
    result = await sandbox.adapter.pay(request)
    assert result.outcome is Outcome.UNKNOWN and result.code == "UNVERIFIED_RESPONSE"
    assert (await sandbox.adapter.query(request.reference)).outcome is Outcome.SUCCEEDED


async def test_nothing_secret_is_logged(sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    request = await sandbox.request(350)
    token = request.credential.face_token  # type: ignore[union-attr]
    await sandbox.adapter.identify(token)
    result = await sandbox.adapter.pay(request)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("adapters"))
    assert token not in logged and token not in repr(result) and token not in repr(request)
    assert "".join(V["app_private_key"].strip().splitlines()[1:-1])[:64] not in logged
