"""Every sandbox fault met by the gateway: the gateway's outcome, and the provider's books agree
with it, and money moves at most once (docs/reliability.md lists which test covers which fault).

The gateway and the sandbox are the real apps (tests/harness.py: 3 s synchronous budget, 6 s
recovery deadline, 1 s provider timeout); where a fault lives below HTTP, real sockets.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.client import CampusPayClient
from gateway.store.models import ProviderNotification
from sandbox import create_sandbox_app
from sandbox.server import sandbox_server
from tests.bank_helpers import CARD as BANK_CARD
from tests.bank_helpers import bind_co_branded_card
from tests.face_helpers import ALICE, Face, setup_face
from tests.harness import GATEWAY, Harness, seed_school, start_harness
from tests.procs import free_port, kill_hard, running

pytestmark = pytest.mark.integration

CARD, START = "31000001", 100_000


def sqlite(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'campuspay.db'}"


async def settled(h: Harness, client: CampusPayClient, body: dict[str, Any]) -> dict[str, Any]:
    return body if body["status"] != "processing" else await h.wait_settled(client, body["id"])


async def pay(h: Harness, **overrides: Any) -> dict[str, Any]:
    async with h.client() as client:
        result = await client.create_payment(**h.payment(**overrides))
        assert result.status_code in (201, 202), result.body
        return await settled(h, client, result.body)


async def assert_ecard_books_agree(
    h: Harness, *payments: dict[str, Any], card: str = CARD, start: int = START
) -> None:
    """The gateway's final word and the e-card's books say the same, and nothing moved twice."""
    debits, reversals = await h.debits(), [r for r in await h.events("ecard.reverse") if r["amount"]]
    spent = 0
    for payment in payments:
        reference = payment["provider_reference"]
        debited = [d for d in debits if d["order_ref"] == reference]
        reversed_ = [r for r in reversals if r["order_ref"] == reference]
        assert len(debited) <= 1 and len(reversed_) <= 1, (payment, debited, reversed_)
        if payment["status"] == "succeeded":
            assert len(debited) == 1 and not reversed_, payment
            spent += payment["amount"] - payment["refunded_amount"]
        else:
            assert len(debited) == len(reversed_), (payment, debited, reversed_)  # what moved came back
    assert await h.balance(card) == start - spent


# --- answers broken after the charge ---------------------------------------------------------


@pytest.mark.parametrize(
    "action",
    [
        "reset_after_apply",
        "truncate_after_apply",
        "html_200_after_apply",
        "error_500_after_apply",
        "bad_signature",
    ],
)
async def test_an_answer_broken_after_the_charge_is_resolved_by_query(
    sqlite_harness: Harness, action: str
) -> None:
    h = sqlite_harness
    await h.fault(operation="consume", action=action)
    payment = await pay(h, amount=1210)
    assert payment["status"] == "succeeded"
    await assert_ecard_books_agree(h, payment)


@asynccontextmanager
async def over_sockets(tmp_path: Path) -> AsyncIterator[Harness]:
    """A gateway whose provider calls go over real sockets to the harness's own sandbox, served
    by sandbox/server.py on a free port (so a reset is a real TCP RST)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sandbox_app = create_sandbox_app()
    server = sandbox_server(sandbox_app, log_level="warning", lifespan="off")
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        async with start_harness(
            database_url=sqlite(tmp_path),
            data_dir=tmp_path,
            sandbox_app=sandbox_app,
            real_network=True,
            provider_base=f"http://127.0.0.1:{sock.getsockname()[1]}",
        ) as h:
            yield h
    finally:
        server.should_exit = True
        await task
        sock.close()


# drop_after_apply is here too: in-process its SimulatedDrop would be raised out of the
# gateway's own HTTP client, which no real network does.
@pytest.mark.parametrize("action", ["reset_after_apply", "truncate_after_apply", "drop_after_apply"])
async def test_a_real_tcp_reset_or_cut_body_after_the_charge_is_resolved_by_query(
    tmp_path: Path, action: str
) -> None:
    async with over_sockets(tmp_path) as h:
        await h.fault(operation="consume", action=action)
        payment = await pay(h, amount=1220)
        assert payment["status"] == "succeeded"
        await assert_ecard_books_agree(h, payment)
        assert [e["action"] for e in await h.events("fault")] == [action]


# --- answers from in front of the provider -----------------------------------------------------


@pytest.mark.parametrize("action", ["html_200", "throttle_429", "unavailable_503", "error_500"])
async def test_an_answer_before_the_provider_moves_no_money(sqlite_harness: Harness, action: str) -> None:
    h = sqlite_harness
    await h.fault(operation="consume", action=action)
    payment = await pay(h, amount=1230)
    assert payment["status"] == "failed"
    await assert_ecard_books_agree(h, payment)
    assert [d for d in await h.debits()] == []


@pytest.mark.parametrize("action", ["throttle_429", "unavailable_503", "html_200", "truncate_after_apply"])
async def test_queries_answered_badly_for_a_while_still_find_the_charge(
    sqlite_harness: Harness, action: str
) -> None:
    h = sqlite_harness
    await h.fault(operation="consume", action="error_500_after_apply")
    await h.fault(operation="query", action=action, times=3)
    payment = await pay(h, amount=1240)
    assert payment["status"] == "succeeded"
    await assert_ecard_books_agree(h, payment)


# --- query lag ---------------------------------------------------------------------------------


async def test_a_charge_the_query_cannot_see_yet_is_found_once_it_can(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    await h.fault(operation="consume", action="error_500_after_apply")
    await h.fault(operation="query", action="query_lag", delay_ms=1500, times=-1)
    payment = await pay(h, amount=1250)
    assert payment["status"] == "succeeded"
    await assert_ecard_books_agree(h, payment)


async def test_a_charge_unseen_past_the_deadline_is_reversed_and_given_back(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    await h.fault(operation="consume", action="error_500_after_apply")
    await h.fault(operation="query", action="query_lag", delay_ms=600_000, times=-1)
    payment = await pay(h, amount=1260)
    assert payment["status"] == "failed" and payment["failure_code"] == "outcome_unknown_reversed"
    await assert_ecard_books_agree(h, payment)  # debited once, reversed once: the money is back


# --- refusals of the gateway's own credentials -------------------------------------------------


async def test_a_signed_refusal_of_the_pay_request_moves_nothing(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    await h.fault(operation="consume", action="auth_refusal")
    payment = await pay(h, amount=1270)
    assert payment["status"] == "failed"
    await assert_ecard_books_agree(h, payment)


async def test_a_provider_clock_ahead_of_the_window_refuses_the_pay_request(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    await h.sandbox.post("/_control/clock/ecard", json={"offset_seconds": 301})
    payment = await pay(h, amount=1280)
    assert payment["status"] == "failed"
    await assert_ecard_books_agree(h, payment)


# The two tests below failed before issue 7 A1 was fixed (48575ea, 110590e): a signed 401 on a
# query or a reverse was read as news about the payment, so a charged payment ended failed, or
# a terminal's cancel answered canceled, with the money still taken.


@pytest.mark.parametrize("how", ["auth_refusal", "clock_skew"])
async def test_refused_queries_never_settle_a_charged_payment(tmp_path: Path, how: str) -> None:
    """The consume is applied but its answer lost; every query is then refused (a signed 401).
    A refusal says nothing about the payment: past the deadline it must stay processing (for an
    operator), never failed while the money stays taken."""
    async with start_harness(database_url=sqlite(tmp_path), data_dir=tmp_path, run_workers=False) as h:
        await h.fault(operation="consume", action="error_500_after_apply")
        await h.fault(operation="query", action="error_500", times=-1)
        async with h.client() as client:
            held = (await client.create_payment(**h.payment(amount=1290))).body
            assert held["status"] == "processing"
            await h.sandbox.delete("/_control/faults")
            await refuse(h, "query", how)
            await refuse(h, "reverse", how)
            for _ in range(5):
                h.clock.advance(seconds=10)  # past the 6 s recovery deadline
                await h.services.recovery.run_once()
            payment = await client.get_payment(held["id"])
        assert len(await h.debits()) == 1 and await h.balance(CARD) == START - 1290
        assert payment["status"] == "processing", payment


@pytest.mark.parametrize("how", ["auth_refusal", "clock_skew"])
async def test_a_refused_reversal_never_answers_a_cancel_as_canceled(tmp_path: Path, how: str) -> None:
    """A terminal cancels a processing payment whose charge landed; the e-card refuses the
    reverse (and the queries). Answering `canceled` would tell the till the money is back."""
    async with start_harness(database_url=sqlite(tmp_path), data_dir=tmp_path, run_workers=False) as h:
        await h.fault(operation="consume", action="error_500_after_apply")
        await h.fault(operation="query", action="error_500", times=-1)
        async with h.client() as client:
            held = (await client.create_payment(**h.payment(amount=1300))).body
            assert held["status"] == "processing"
            await h.sandbox.delete("/_control/faults")
            await refuse(h, "query", how)
            await refuse(h, "reverse", how)
            canceled = (await client.cancel_payment(held["id"])).body
            for _ in range(3):
                h.clock.advance(seconds=10)
                await h.services.recovery.run_once()
            payment = await client.get_payment(held["id"])
        assert len(await h.debits()) == 1 and await h.balance(CARD) == START - 1300
        assert canceled["status"] != "canceled" and payment["status"] != "canceled", (canceled, payment)


async def refuse(h: Harness, operation: str, how: str) -> None:
    if how == "auth_refusal":
        await h.fault(operation=operation, action="auth_refusal", times=-1)
    else:
        await h.sandbox.post("/_control/clock/ecard", json={"offset_seconds": 301})


# --- storms ------------------------------------------------------------------------------------


async def test_a_storm_of_payments_meets_faults_every_nth_time_and_at_random(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    await h.fault(operation="consume", action="reset_after_apply", every=4, times=-1)
    await h.fault(operation="consume", action="error_500", probability=0.2, seed=7, times=-1)
    await h.fault(operation="consume", action="truncate_after_apply", probability=0.2, seed=8, times=-1)
    await h.fault(operation="query", action="throttle_429", probability=0.3, seed=11, times=-1)
    load_card, start = "31000006", 100_000_000
    async with h.client() as client:
        orders = [h.payment(amount=100 + i, credential={"card_no": load_card}) for i in range(24)]
        answers = await asyncio.gather(*(client.create_payment(**order) for order in orders))
        payments = await asyncio.gather(*(settled(h, client, a.body) for a in answers))
    fired = {e["action"] for e in await h.events("fault")}
    assert {"reset_after_apply", "error_500", "truncate_after_apply"} <= fired, fired
    assert {p["status"] for p in payments} <= {"succeeded", "failed"}
    await assert_ecard_books_agree(h, *payments, card=load_card, start=start)


# --- notifications -----------------------------------------------------------------------------


async def notifications(h: Harness, adapter: str) -> list[tuple[str, str]]:
    async with h.services.db.transaction() as session:
        rows = (
            await session.execute(select(ProviderNotification).where(ProviderNotification.adapter == adapter))
        ).scalars()
        return [(r.reference, r.outcome) for r in rows]


async def bank_events(h: Harness, kind: str) -> list[dict[str, Any]]:
    r = await h.sandbox.get("/_control/events", params={"provider": "bank", "kind": kind})
    return list(r.json()["events"])


async def drained(h: Harness, provider: str) -> None:
    notifier = getattr(h.sandbox_app.state, provider).notifier
    for _ in range(100):
        if not notifier.pending:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{provider} notifications still pending")


@pytest.mark.parametrize("mode", ["drop", "duplicate", "delay", "forged"])
async def test_bank_notifications_dropped_repeated_late_or_forged_charge_once(
    sqlite_harness: Harness, mode: str
) -> None:
    """Magic 72: the bank debits, answers HTTP 500 and notifies; the notification is faulted."""
    h = sqlite_harness
    await bind_co_branded_card(h)
    h.sandbox_app.state.bank.notify_client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=h.app), base_url=GATEWAY
    )
    await h.sandbox.post("/_control/bank/notify-faults", json={"mode": mode, "delay_ms": 300})
    payment = await pay(h, amount=1372, credential={"card_no": BANK_CARD})
    await drained(h, "bank")
    assert payment["status"] == "succeeded" and payment["adapter"] == "bank"
    assert len(await bank_events(h, "bank.debit")) == 1
    account = (await h.sandbox.get("/_control/bank/accounts/6216610200000000012")).json()
    assert account["balance"] == 1_000_000 - 1372
    expected = [] if mode == "drop" else [(payment["provider_reference"], "succeeded")]
    assert await notifications(h, "bank") == expected  # recorded once, however often it came
    sent = await bank_events(h, "bank.notify")
    if mode == "forged":
        assert (
            sent[0]["forged"] and sent[0]["status"] != 200 and sent[-1]["status"] == 200
        )  # the forgery was refused


async def test_a_bank_refund_notified_before_its_payment_changes_nothing_backwards(
    sqlite_harness: Harness,
) -> None:
    h = sqlite_harness
    await bind_co_branded_card(h)
    h.sandbox_app.state.bank.notify_client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=h.app), base_url=GATEWAY
    )
    rule = {"mode": "out_of_order", "txn_type": "01", "delay_ms": 10_000}
    await h.sandbox.post("/_control/bank/notify-faults", json=rule)
    async with h.client() as client:
        paid = (await client.create_payment(**h.payment(amount=1500, credential={"card_no": BANK_CARD}))).body
        refund = await client.refund_payment(paid["id"], amount=400)
        await drained(h, "bank")
        payment = await client.get_payment(paid["id"])
    assert refund.body["status"] == "succeeded"
    sent = [e["txn_type"] for e in await bank_events(h, "bank.notify")]
    assert sent == ["04", "01"]  # the refund's notification came first
    assert payment["status"] == "succeeded" and payment["refunded_amount"] == 400
    account = (await h.sandbox.get("/_control/bank/accounts/6216610200000000012")).json()
    assert account["balance"] == 1_000_000 - 1100


@pytest.mark.parametrize("mode", ["duplicate", "forged", "out_of_order"])
async def test_alipay_notifications_repeated_forged_or_late_charge_once(
    sqlite_harness: Harness, mode: str
) -> None:
    """Magic 82: Alipay takes the money, answers 20000 and notifies; the notification is faulted."""
    h = sqlite_harness
    face: Face = await setup_face(h)
    consent = await face.consent("stu_alice")
    await face.enroll("stu_alice", ALICE, str(consent["id"]), agreement_no="20221000000000000001")
    await h.sandbox.post("/_control/alipay/notify-faults", json={"mode": mode, "delay_ms": 300})
    async with h.client() as client:
        answer = await client.create_payment(**face.pay(await face.token("stu_alice"), amount=1282))
        payment = await settled(h, client, answer.body)
    await drained(h, "alipay")
    assert payment["status"] == "succeeded"
    assert await notifications(h, "alipay") == [(payment["provider_reference"], "succeeded")]
    r = await h.sandbox.get(f"/_control/alipay/buyers/{ALICE}")
    assert r.json()["balance"] == 100_000 - 1282
    sent = (await h.sandbox.get("/_control/events", params={"kind": "alipay.notify"})).json()["events"]
    if mode == "forged":
        assert sent[0]["forged"] and sent[0]["answer"] != "success" and sent[-1]["answer"] == "success"


# --- a provider that goes down and comes back --------------------------------------------------


async def test_a_provider_killed_after_the_charge_comes_back_with_its_books(tmp_path: Path) -> None:
    """The e-card applies the consume and holds its answer; its process is killed; the gateway
    knows nothing. Restarted on its state directory, the e-card still has the charge, and the
    gateway's recovery finds it: succeeded, charged once."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["sandbox", "--port", str(port), "--state-dir", str(tmp_path / "sandbox-state")]
    health, log = f"{base}/_control/test-values", tmp_path / "sandbox.log"
    async with (
        start_harness(
            database_url=sqlite(tmp_path),
            data_dir=tmp_path,
            real_network=True,
            seed=False,
            recovery_deadline_seconds=60.0,
        ) as h,
        httpx.AsyncClient(base_url=base) as provider,
    ):
        with running(args, health=health, log=log) as first:
            await seed_school(h, sandbox=provider, endpoint=f"{base}/ecard")
            rule = {
                "provider": "ecard",
                "operation": "consume",
                "action": "delay_after_apply",
                "delay_ms": 30_000,
            }
            assert (await provider.post("/_control/faults", json=rule)).status_code == 200
            async with h.client() as client:
                paying = asyncio.create_task(client.create_payment(**h.payment(amount=1310)))
                for _ in range(300):
                    r = await provider.get("/_control/events", params={"kind": "ecard.debit"})
                    if r.json()["events"]:
                        break
                    await asyncio.sleep(0.05)
                kill_hard(first)
                held = (await paying).body
        assert held["status"] == "processing", held  # the gateway cannot know: no answer, no provider
        with running(args, health=health, log=log):
            async with h.client() as client:
                payment = await h.wait_settled(client, held["id"], within=30)
            balance = (await provider.get(f"/_control/ecard/merchants/{h.merchant_id}/cards/{CARD}")).json()
            query_log = (await provider.get("/_control/events", params={"kind": "ecard.reverse"})).json()
    assert payment["status"] == "succeeded"
    assert balance["balance"] == START - 1310 and query_log["events"] == []


@pytest.mark.parametrize("provider", ["alipay", "bank"])
async def test_refused_queries_at_alipay_or_the_bank_never_settle_a_charged_payment(
    tmp_path: Path, provider: str
) -> None:
    """The same refusal class at the other two providers (A1 asks for all three to be audited):
    the charge landed (magic 82 / 72), then every query and reversal is refused, signed."""
    async with start_harness(database_url=sqlite(tmp_path), data_dir=tmp_path, run_workers=False) as h:
        operations = {"alipay": ("alipay.trade.query", "alipay.trade.cancel"), "bank": ("query", "void")}
        for operation in operations[provider]:
            rule = {"provider": provider, "operation": operation, "action": "auth_refusal", "times": -1}
            assert (await h.sandbox.post("/_control/faults", json=rule)).status_code == 200
        if provider == "alipay":
            face = await setup_face(h)
            consent = await face.consent("stu_alice")
            await face.enroll("stu_alice", ALICE, str(consent["id"]), agreement_no="20221000000000000001")
            order = face.pay(await face.token("stu_alice"), amount=1282)
            # no notification either: the refused queries are all the gateway hears
            await h.sandbox.post("/_control/alipay/notify-faults", json={"mode": "drop", "times": -1})
        else:
            await bind_co_branded_card(h)
            order = h.payment(amount=1372, credential={"card_no": BANK_CARD})
        async with h.client() as client:
            held = (await client.create_payment(**order)).body
            for _ in range(5):
                h.clock.advance(seconds=10)  # past the 6 s recovery deadline
                await h.services.recovery.run_once()
            payment = await client.get_payment(held["id"])
        assert payment["status"] == "processing", payment
