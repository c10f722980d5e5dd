"""Sandbox state kept in a state directory (sandbox/persist.py): a sandbox started again on the
same directory has the providers' books as they were; without one nothing is written."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from sandbox import create_sandbox_app
from sandbox.persist import StateDirError
from tests.procs import free_port, kill_hard, running
from tests.sdk.alipay_kit import AlipayTestClient, face_token, load_public

from .ecard_client import Ecard, balance
from .test_bank import BankClient
from .test_bank import balance as bank_balance

pytestmark = pytest.mark.unit


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@asynccontextmanager
async def sandbox(state_dir: Path | None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_sandbox_app(state_dir)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as c:
        yield c
    await app.state.alipay.aclose()
    await app.state.bank.aclose()


async def test_every_providers_books_survive_a_new_sandbox_on_the_same_directory(tmp_path: Path) -> None:
    async with sandbox(tmp_path) as client:
        ecard = Ecard(client)
        assert (await ecard.consume("ord_1", 700)).json()["result"] == "SUCCESS"
        await ecard.post("refund", {"order_ref": "ord_1", "refund_ref": "rf_1", "amount": 200})
        values = (await client.get("/_control/test-values")).json()
        alipay = AlipayTestClient(client, load_public(values["alipay"]["alipay_public_key"]))
        assert (await alipay.pay("T1", 1250, await face_token(client))).code == "10000"
        bank = BankClient(client)
        paid = await bank.consume(300)
        await client.post("/_control/clock/bank", json={"offset_seconds": 30})
        replayed_nonce = "replayed-nonce-0001"
        await ecard.post("ping", {}, nonce=replayed_nonce)
        last_seq = (await client.get("/_control/events")).json()["last_seq"]
    assert files(tmp_path) == [
        "alipay.pickle",
        "bank.pickle",
        "control.pickle",
        "ecard.pickle",
    ]

    async with sandbox(tmp_path) as client:
        ecard = Ecard(client)
        assert await balance(client, "31000001") == 100_000 - 500
        query = (await ecard.post("query", {"order_ref": "ord_1"})).json()
        assert (query["status"], query["refunded_amount"]) == ("SUCCESS", 200)
        again = await ecard.consume("ord_1", 700)  # idempotent across the restart: nothing moves
        assert again.json()["result"] == "SUCCESS" and await balance(client, "31000001") == 99_500
        replay = await ecard.post("ping", {}, nonce=replayed_nonce)
        assert replay.status_code == 401 and replay.json()["code"] == "NONCE_REUSED"
        values = (await client.get("/_control/test-values")).json()
        alipay = AlipayTestClient(client, load_public(values["alipay"]["alipay_public_key"]))
        trade = await alipay.call("alipay.trade.query", {"out_trade_no": "T1"})
        assert trade.verified and trade.node["trade_status"] == "TRADE_SUCCESS"
        bank = BankClient(client)
        found = await bank.query(paid["orderId"], paid["txnTime"])
        assert found["origRespCode"] == "00" and await bank_balance(client) == 1_000_000 - 300
        clock = (await client.get("/_control/clock")).json()
        assert clock["providers"]["bank"]["offset_seconds"] == 30
        after = (await client.get("/_control/events")).json()
        assert after["events"][0]["seq"] == last_seq + 1  # the sequence goes on; the old log is gone

        await client.post("/_control/reset")  # a reset is kept too
    async with sandbox(tmp_path) as client:
        assert await balance(client, "31000001") == 100_000


async def test_a_charge_held_by_a_fault_is_kept_before_its_answer(tmp_path: Path) -> None:
    """delay_after_apply holds the answer; a sandbox stopped meanwhile must still have the debit."""
    app = create_sandbox_app(tmp_path)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
        await client.post(
            "/_control/faults",
            json={"provider": "ecard", "operation": "consume", "action": "delay_after_apply"},
        )
        pending = asyncio.create_task(Ecard(client).consume("ord_1", 700))
        for _ in range(500):  # watched in memory: no other request may write the books meanwhile
            if app.state.control.events(kind="ecard.debit"):
                break
            await asyncio.sleep(0.01)
        async with sandbox(tmp_path) as restarted:  # read while the answer is still held
            assert await balance(restarted, "31000001") == 99_300
        pending.cancel()


async def test_without_a_state_directory_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with sandbox(None) as client:
        assert (await Ecard(client).consume("ord_1", 100)).status_code == 200
    assert files(tmp_path) == []


def test_state_from_another_version_or_foreign_code_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ecard.pickle").write_bytes(pickle.dumps((1, {"not": "an EcardState"})))
    with pytest.raises(StateDirError, match=r"ecard\.pickle"):
        create_sandbox_app(tmp_path)
    (tmp_path / "ecard.pickle").write_bytes(pickle.dumps((1, subprocess.Popen)))  # names code elsewhere
    with pytest.raises(StateDirError, match="not sandbox state"):
        create_sandbox_app(tmp_path)
    (tmp_path / "ecard.pickle").write_bytes(pickle.dumps((999, None)))
    with pytest.raises(StateDirError, match="format 999"):
        create_sandbox_app(tmp_path)


@pytest.mark.e2e
async def test_a_killed_sandbox_process_restarted_with_its_state_dir_keeps_its_books(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["sandbox", "--port", str(port), "--state-dir", str(tmp_path / "state")]
    health = f"{base}/_control/test-values"
    with running(args, health=health, log=tmp_path / "sandbox.log") as first:
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await Ecard(client).consume("ord_1", 700)).json()["result"] == "SUCCESS"
        kill_hard(first)  # SIGKILL: nothing is flushed at exit
    with running(args, health=health, log=tmp_path / "sandbox.log"):
        async with httpx.AsyncClient(base_url=base) as client:
            assert await balance(client, "31000001") == 99_300
            query = (await Ecard(client).post("query", {"order_ref": "ord_1"})).json()
    assert query["status"] == "SUCCESS"
    assert "restored control, ecard, alipay, bank" in (tmp_path / "sandbox.log").read_text()
