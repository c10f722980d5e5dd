"""EcardAdapter's card-management and offline calls against the real sandbox over ASGI.

Every answer the adapter returns is one the provider verifiably gave; anything else raises an
AdapterError subclass (EcardRefused, EcardUnverified, EcardRequestInvalid, ProviderUnreachable).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

import adapters.ecard.adapter as ecard_adapter_module
from adapters.base import (
    AdapterError,
    BillKind,
    BillNotReady,
    BillUnavailable,
    CardCredential,
    Outcome,
    PaymentRequest,
    ProviderConfig,
    ProviderUnreachable,
    RefundRequest,
)
from adapters.ecard import (
    MAX_OFFLINE_RECORDS,
    EcardAdapter,
    EcardRefused,
    EcardRequestInvalid,
    EcardUnverified,
    OfflineRecord,
)
from sandbox import create_sandbox_app

pytestmark = pytest.mark.unit

Mutate = Callable[[dict[str, Any]], dict[str, Any]]


class Resigning(httpx.AsyncBaseTransport):
    """Rewrites the provider's answer and signs it again with the merchant's secret: a provider
    that verifiably says something malformed (or a test of a shape the sandbox never sends)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.secret = ""
        self.mutate: Mutate | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.mutate is None:
            return response
        await response.aread()
        raw = json.dumps(self.mutate(json.loads(response.content))).encode()
        ts, nonce = response.headers["X-Ecard-Timestamp"], "resigned-nonce-0001"
        text = "\n".join(
            [
                str(response.status_code),
                request.headers["X-Ecard-Nonce"],
                ts,
                nonce,
                hashlib.sha256(raw).hexdigest(),
            ]
        )
        signature = base64.b64encode(hmac.new(self.secret.encode(), text.encode(), hashlib.sha256).digest())
        headers = {"X-Ecard-Timestamp": ts, "X-Ecard-Nonce": nonce, "X-Ecard-Signature": signature.decode()}
        return httpx.Response(response.status_code, content=raw, headers=headers)


@dataclass
class Env:
    adapter: EcardAdapter
    sandbox: httpx.AsyncClient
    merchant_id: str
    transport: Resigning

    async def card(self, card_no: str) -> dict[str, Any]:
        response = await self.sandbox.get(f"/_control/ecard/merchants/{self.merchant_id}/cards/{card_no}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def fault(self, operation: str, action: str, **extra: Any) -> None:
        rule = {"provider": "ecard", "operation": operation, "action": action, **extra}
        assert (await self.sandbox.post("/_control/faults", json=rule)).status_code == 200


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    app = create_sandbox_app()
    transport = Resigning(httpx.ASGITransport(app=app))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as sandbox,
        httpx.AsyncClient(transport=transport) as http,
    ):
        merchant = (await sandbox.post("/ecard/merchants", json={})).json()
        transport.secret = merchant["secret"]
        config = ProviderConfig(
            endpoint="http://sandbox.test/ecard",
            credentials={"merchant_id": merchant["merchant_id"], "secret": merchant["secret"]},
            options={"timeout_seconds": 0.5},
        )
        yield Env(EcardAdapter(config, http), sandbox, merchant["merchant_id"], transport)


def rec(seq: int, card_no: str = "31000001", amount: int = 300, **extra: Any) -> OfflineRecord:
    moment = (
        datetime(2026, 1, 5, 4, 0, tzinfo=UTC) if "occurred_at" not in extra else extra.pop("occurred_at")
    )
    return OfflineRecord(
        terminal_seq=seq, order_ref=f"off_{seq}", card_no=card_no, amount=amount, occurred_at=moment, **extra
    )


def pay_request(card_no: str, amount: int, ref: str, pin: str | None = None) -> PaymentRequest:
    return PaymentRequest(
        reference=ref,
        amount=amount,
        currency="CNY",
        method="card",
        credential=CardCredential(card_no=card_no, pin=pin),
        store_ref="store_1",
        terminal_ref="dev_1",
    )


# --- card management ---------------------------------------------------------------------------


async def test_report_lost_cancel_and_blacklist(env: Env) -> None:
    version, changes = await env.adapter.blacklist(0)
    assert version == 1 and [(c.card_no, c.status, c.reason) for c in changes] == [
        ("31000003", "LOST", "initial")
    ]
    assert changes[0].at == datetime(2025, 9, 1, tzinfo=UTC)

    lost = await env.adapter.report_lost("31000001")
    assert (lost.card_no, lost.status, lost.version, lost.changed) == ("31000001", "LOST", 2, True)
    assert (await env.adapter.report_lost("31000001")).changed is False
    declined = await env.adapter.pay(pay_request("31000001", 100, "ref_lost"))
    assert (declined.outcome, declined.code) == (Outcome.FAILED, "CARD_LOST")
    status = await env.adapter.card_status("31000001")
    assert (status.status, status.account_no, status.balance) == ("LOST", "A1001", 100_000)

    active = await env.adapter.cancel_loss("31000001")
    assert (active.status, active.version, active.changed) == ("ACTIVE", 3, True)
    version, changes = await env.adapter.blacklist(1)
    assert version == 3 and [(c.version, c.status) for c in changes] == [(2, "LOST"), (3, "ACTIVE")]
    assert await env.adapter.blacklist(3) == (3, [])
    # Ahead of the provider (its list was reset): everything since 0, to rebuild from.
    version, changes = await env.adapter.blacklist(50)
    assert version == 3 and [c.version for c in changes] == [1, 2, 3]
    assert "31000001" not in repr(changes) and "31000001" not in repr(lost)


async def test_replace_card_moves_the_account(env: Env) -> None:
    paid = await env.adapter.pay(pay_request("31000007", 1000, "ref_before"))
    assert paid.outcome is Outcome.SUCCEEDED
    replaced = await env.adapter.replace_card("31000007", "31000107")
    assert (replaced.account_no, replaced.version, replaced.changed) == ("A1007", 3, True)
    assert (await env.adapter.replace_card("31000007", "31000107")).changed is False
    new = await env.adapter.card_status("31000107")
    assert (new.status, new.balance, new.student_ref) == ("ACTIVE", 10_000, "stu_grace")
    assert new.subsidy is not None and new.subsidy.amount == 2000
    assert str(new.subsidy.valid_to) == "2099-12-31"
    old = await env.adapter.card_status("31000007")
    assert (old.status, old.replaced_by) == ("LOST", "31000107")
    assert (await env.adapter.pay(pay_request("31000107", 500, "ref_after"))).outcome is Outcome.SUCCEEDED
    with pytest.raises(EcardRefused) as err:
        await env.adapter.replace_card("31000007", "31000108")
    assert err.value.code == "CARD_REPLACED"
    with pytest.raises(EcardRefused) as err:
        await env.adapter.cancel_loss("31000007")
    assert err.value.code == "CARD_REPLACED"
    with pytest.raises(EcardRefused) as err:
        await env.adapter.replace_card("31000001", "31000002")
    assert err.value.code == "CARD_EXISTS"


async def test_verified_refusals_raise_ecard_refused(env: Env) -> None:
    for call in (
        env.adapter.report_lost("39999999"),
        env.adapter.card_status("39999999"),
        env.adapter.cancel_loss("39999999"),
    ):
        with pytest.raises(EcardRefused) as err:
            await call
        assert err.value.code == "CARD_NOT_FOUND"


async def test_requests_that_cannot_be_sent_raise_before_sending(env: Env) -> None:
    for bad in ("123", "../v1/ping", "3100000a"):
        with pytest.raises(EcardRequestInvalid):
            await env.adapter.card_status(bad)
    with pytest.raises(EcardRequestInvalid):
        await env.adapter.blacklist(-1)
    with pytest.raises(EcardRequestInvalid):
        await env.adapter.upload_offline("pos-1", [])
    with pytest.raises(EcardRequestInvalid):
        await env.adapter.upload_offline(
            "pos-1", [rec(i, "31000006", 1) for i in range(MAX_OFFLINE_RECORDS + 1)]
        )
    with pytest.raises(EcardRequestInvalid):
        await env.adapter.upload_offline("pos-1", [rec(1, occurred_at=datetime(2026, 1, 1))])  # naive
    events = (await env.sandbox.get("/_control/events", params={"kind": "request"})).json()["events"]
    assert [e["path"] for e in events if "/v1/" in e["path"]] == []


# --- unverifiable answers ------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["error_500", "error_500_after_apply", "bad_signature"])
async def test_unverifiable_answers_raise_and_never_invent_a_result(env: Env, action: str) -> None:
    await env.fault("report_lost", action)
    with pytest.raises(EcardUnverified):
        await env.adapter.report_lost("31000001")
    # The call is idempotent: repeating it learns the truth.
    lost = await env.adapter.report_lost("31000001")
    assert lost.status == "LOST" and lost.changed is (action == "error_500")


async def test_a_timeout_is_unverified(env: Env) -> None:
    await env.fault("blacklist", "delay", delay_ms=2000)
    with pytest.raises(EcardUnverified) as err:
        await env.adapter.blacklist(0)
    assert err.value.code == "TIMEOUT"


async def test_no_connection_is_provider_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        config = ProviderConfig("http://sandbox.test/ecard", {"merchant_id": "m", "secret": "s" * 32})
        adapter = EcardAdapter(config, http)
        with pytest.raises(ProviderUnreachable):
            await adapter.report_lost("31000001")
        with pytest.raises(AdapterError):
            await adapter.upload_offline("pos-1", [rec(1)])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: {**b, "card_no": "31000002"},  # about another card
        lambda b: {**b, "status": "ACTIVE"},  # does not say LOST
        lambda b: {**b, "version": "2"},
        lambda b: {k: v for k, v in b.items() if k != "changed"},
        lambda b: {"result": "FAIL", "message": "no code"},
        lambda b: {"result": "WEIRD"},
    ],
)
async def test_signed_but_malformed_answers_are_unverified(env: Env, mutate: Mutate) -> None:
    env.transport.mutate = mutate
    with pytest.raises(EcardUnverified):
        await env.adapter.report_lost("31000001")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: {**b, "changes": b["changes"][1:]},  # a gap
        lambda b: {**b, "version": b["version"] + 1},  # changes do not reach the version
        lambda b: {**b, "changes": [{**b["changes"][0], "status": "STOLEN"}, *b["changes"][1:]]},
        lambda b: {**b, "changes": [{**b["changes"][0], "at": "yesterday"}, *b["changes"][1:]]},
        lambda b: {**b, "changes": None},
    ],
)
async def test_a_malformed_blacklist_is_unverified(env: Env, mutate: Mutate) -> None:
    await env.adapter.report_lost("31000001")
    env.transport.mutate = mutate
    with pytest.raises(EcardUnverified):
        await env.adapter.blacklist(0)


# --- offline records ------------------------------------------------------------------------------


async def test_upload_offline_answers_record_by_record(env: Env) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    await env.adapter.report_lost("31000004")
    records = [
        rec(1),
        rec(2, "31000009", 2001),  # over the PIN threshold: held
        rec(3, "39999999"),
        rec(4, "31000004", occurred_at=now + timedelta(seconds=30)),  # after the loss report
        rec(5, "31000007", 3500, store_ref="canteen-1"),
        rec(1),  # a duplicate inside the same upload
    ]
    results = await env.adapter.upload_offline("pos-1", records)
    assert [(r.index, r.terminal_seq, r.result, r.reason) for r in results] == [
        (0, 1, "posted", None),
        (1, 2, "held_for_review", "over_limit"),
        (2, 3, "rejected", "card_not_found"),
        (3, 4, "held_for_review", "card_lost_before_record"),
        (4, 5, "posted", None),
        (5, 1, "duplicate", None),
    ]
    assert results[0].txn_id and results[0].money_moved and results[5].money_moved
    assert results[5].original_result == "posted" and results[5].txn_id == results[0].txn_id
    assert (results[4].subsidy_used, results[4].balance_used) == (3000, 500)
    assert not results[1].money_moved and not results[2].money_moved
    assert "31000009" not in repr(records[1])

    again = await env.adapter.upload_offline("pos-1", records[:2])
    assert [(r.result, r.original_result) for r in again] == [
        ("duplicate", "posted"),
        ("duplicate", "held_for_review"),
    ]
    assert again[1].reason == "over_limit"
    assert (await env.card("31000001"))["balance"] == 100_000 - 300
    posted = await env.adapter.query("off_1")
    assert posted.outcome is Outcome.SUCCEEDED and posted.provider_txn_id == results[0].txn_id


async def test_upload_offline_unverifiable_then_retried_is_safe(env: Env) -> None:
    await env.fault("offline_upload", "error_500_after_apply")
    with pytest.raises(EcardUnverified):
        await env.adapter.upload_offline("pos-2", [rec(1), rec(2)])
    results = await env.adapter.upload_offline("pos-2", [rec(1), rec(2)])
    assert [(r.result, r.original_result) for r in results] == [("duplicate", "posted")] * 2
    assert (await env.card("31000001"))["balance"] == 100_000 - 600


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: {**b, "results": b["results"][:1]},  # not one result per record
        lambda b: {**b, "results": list(reversed(b["results"]))},  # out of order
        lambda b: {**b, "terminal_id": "pos-other"},
        lambda b: {**b, "results": [{**b["results"][0], "terminal_seq": 9}, b["results"][1]]},
        lambda b: {**b, "results": [{**b["results"][0], "result": "maybe"}, b["results"][1]]},
        lambda b: {
            **b,
            "results": [{k: v for k, v in b["results"][0].items() if k != "txn_id"}, b["results"][1]],
        },
        lambda b: {
            **b,
            "results": [b["results"][0], {k: v for k, v in b["results"][1].items() if k != "reason"}],
        },
        lambda b: {**b, "results": [{**b["results"][0], "result": "duplicate"}, b["results"][1]]},
        lambda b: {**b, "results": [{**b["results"][0], "amount": "300"}, b["results"][1]]},
    ],
)
async def test_a_malformed_upload_answer_is_unverified(env: Env, mutate: Mutate) -> None:
    env.transport.mutate = mutate
    with pytest.raises(EcardUnverified):
        await env.adapter.upload_offline("pos-3", [rec(1), rec(2, "39999999")])


# --- pay: the new refusals are final ----------------------------------------------------------


async def test_pin_thresholds_through_pay(env: Env) -> None:
    needs = await env.adapter.pay(pay_request("31000009", 2500, "ref_1"))
    assert (needs.outcome, needs.code) == (Outcome.FAILED, "PIN_REQUIRED")
    assert (
        await env.adapter.pay(pay_request("31000009", 2500, "ref_2", pin="8642"))
    ).outcome is Outcome.SUCCEEDED
    codes = [
        (await env.adapter.pay(pay_request("31000009", 2500, f"ref_w{i}", pin="0000"))).code for i in range(3)
    ]
    assert codes == ["PIN_INVALID", "PIN_INVALID", "PIN_LOCKED"]
    locked = await env.adapter.pay(pay_request("31000009", 2500, "ref_3", pin="8642"))
    assert (locked.outcome, locked.code) == (Outcome.FAILED, "PIN_LOCKED")
    assert (await env.adapter.card_status("31000009")).pin_locked is True


async def test_meal_rules_through_pay_are_final(env: Env) -> None:
    put = await env.sandbox.put(
        f"/_control/ecard/merchants/{env.merchant_id}/meal-periods",
        json={"periods": [{"name": "lunch", "start": "00:00", "end": "24:00"}]},
    )
    assert put.status_code == 200
    request = pay_request("31000001", 1200, "ref_meal")
    canteen = PaymentRequest(**{**request.__dict__, "store_ref": "canteen-1"})
    result = await env.adapter.pay(canteen)
    assert (result.outcome, result.code) == (Outcome.FAILED, "PRICE_MISMATCH")
    await env.sandbox.put(f"/_control/ecard/merchants/{env.merchant_id}/meal-periods", json={"periods": []})
    closed = await env.adapter.pay(PaymentRequest(**{**canteen.__dict__, "reference": "ref_meal2"}))
    assert (closed.outcome, closed.code) == (Outcome.FAILED, "OUTSIDE_MEAL_PERIOD")


async def test_records_as_mappings_and_answers_readable_as_mappings(env: Env) -> None:
    mapping = {
        "terminal_seq": 1,
        "order_ref": "off_m1",
        "card_no": "31000001",
        "amount": 300,
        "occurred_at": "2026-01-05T12:00:00+08:00",
    }
    (result,) = await env.adapter.upload_offline("pos-m", [mapping])
    assert result["result"] == "posted" and dict(result)["terminal_seq"] == 1
    assert result.status == result["status"] == dict(result)["status"] == "posted"
    assert result.get("reason") is None and result.get("nope", 7) == 7
    with pytest.raises(KeyError):
        result["nope"]
    _, changes = await env.adapter.blacklist(0)
    assert changes[0].get("card_no") == "31000003" and changes[0]["status"] == "LOST"
    for bad in (
        {**mapping, "occurred_at": "not a time"},
        {k: v for k, v in mapping.items() if k != "amount"},
    ):
        with pytest.raises(EcardRequestInvalid):
            await env.adapter.upload_offline("pos-m", [bad])


# --- daily statement -----------------------------------------------------------------------------


class _NextDay:
    """The adapter's host clock a day on, as the sandbox's will be (its timestamps are checked)."""

    @staticmethod
    def time() -> float:
        return time.time() + 86_400


async def _next_day(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await env.sandbox.post("/_control/clock", json={"offset_seconds": 86_400})).status_code == 200
    monkeypatch.setattr(ecard_adapter_module, "time", _NextDay)


async def test_the_daily_statement_is_signed_read_and_not_ready_until_the_day_ends(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await env.adapter.pay(pay_request("31000001", 300, "ref_st_1"))).outcome is Outcome.SUCCEEDED
    refund = RefundRequest(reference="ref_st_1", refund_reference="rfd_st_1", amount=100)
    assert (await env.adapter.refund(refund)).outcome is Outcome.SUCCEEDED
    today = datetime.now(UTC).astimezone(timezone(timedelta(hours=8))).date()  # the e-card's own day
    with pytest.raises(BillNotReady) as late:
        await env.adapter.download_bill(today)
    assert late.value.code == "STATEMENT_NOT_READY"
    await _next_day(env, monkeypatch)
    bill = await env.adapter.download_bill(today)
    rows = [r for r in env.adapter.parse_bill(bill) if r.reference == "ref_st_1"]
    assert [(r.kind, r.amount, r.refund_reference) for r in rows] == [
        (BillKind.PAYMENT, 300, None),
        (BillKind.REFUND, 100, "rfd_st_1"),
    ]


class _Tampering(httpx.AsyncBaseTransport):
    """A party on the path changes one amount of the signed statement and keeps the signature."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        raw = await response.aread()
        return httpx.Response(
            response.status_code, content=raw.replace(b",300,", b",30,"), headers=response.headers
        )


async def test_a_statement_changed_on_the_way_is_never_used(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await env.adapter.pay(pay_request("31000001", 300, "ref_st_2"))).outcome is Outcome.SUCCEEDED
    await _next_day(env, monkeypatch)
    today = datetime.now(UTC).astimezone(timezone(timedelta(hours=8))).date()
    intact = await env.adapter.download_bill(today)
    assert b",300," in intact
    env.transport.inner = _Tampering(env.transport.inner)
    with pytest.raises(BillUnavailable) as refusal:
        await env.adapter.download_bill(today)
    assert not isinstance(refusal.value, BillNotReady)
