"""Money moves at most once when processes die and connections break.

Real processes on real sockets: a sandbox process, and a gateway process that is killed with
SIGKILL at the worst moments and started again on the same database.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.client import CampusPayClient, CampusPayError, DeviceCredentials, generate_ed25519_keypair
from tests.harness import TEST_MASTER_KEY
from tests.procs import free_port, kill_hard, running

pytestmark = pytest.mark.e2e

CARD = "31000001"


@dataclass
class World:
    tmp: Path
    database_url: str
    sandbox_url: str
    gateway_port: int
    token: str
    merchant_id: str = ""
    store_id: str = ""
    device: DeviceCredentials | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def gateway(self, **settings: str) -> AbstractContextManager[subprocess.Popen[bytes]]:
        env = {
            "CAMPUSPAY_DATABASE_URL": self.database_url,
            "CAMPUSPAY_MASTER_KEY": TEST_MASTER_KEY,
            "CAMPUSPAY_BOOTSTRAP_TOKEN": self.token,
            "CAMPUSPAY_PUBLIC_BASE_URL": self.gateway_url,
            "CAMPUSPAY_SYNC_BUDGET_SECONDS": "2",
            "CAMPUSPAY_RECOVERY_DEADLINE_SECONDS": "6",
            "CAMPUSPAY_RECOVERY_INTERVAL_SECONDS": "0.1",
            "CAMPUSPAY_RECOVERY_MAX_BACKOFF_SECONDS": "0.5",
            "CAMPUSPAY_PROVIDER_TIMEOUT_SECONDS": "30",
            **{f"CAMPUSPAY_{name.upper()}": value for name, value in settings.items()},
        }
        args = ["serve", "--port", str(self.gateway_port), "--data-dir", str(self.tmp / "gw")]
        return running(args, health=f"{self.gateway_url}/healthz", log=self.tmp / "gateway.log", env=env)

    def client(self) -> CampusPayClient:
        assert self.device is not None
        return CampusPayClient(self.gateway_url, self.device, max_retries=0, timeout=60)

    async def events(self, kind: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.sandbox_url) as sb:
            r = await sb.get("/_control/events", params={"merchant_id": self.merchant_id, "kind": kind})
            return list(r.json()["events"])

    async def fault(self, **rule: Any) -> None:
        async with httpx.AsyncClient(base_url=self.sandbox_url) as sb:
            r = await sb.post("/_control/faults", json={"provider": "ecard", **rule})
            r.raise_for_status()

    async def balance(self) -> int:
        async with httpx.AsyncClient(base_url=self.sandbox_url) as sb:
            r = await sb.get(f"/_control/ecard/merchants/{self.merchant_id}/cards/{CARD}")
            return int(r.json()["balance"])


async def seed(w: World) -> None:
    auth = {"Authorization": f"Bearer {w.token}"}
    async with (
        httpx.AsyncClient(base_url=w.gateway_url) as gw,
        httpx.AsyncClient(base_url=w.sandbox_url) as sb,
    ):
        school = (await gw.post("/v1/schools", json={"name": "Chaos School"}, headers=auth)).json()
        admin = {"Authorization": f"Bearer {school['api_key']}"}
        base = f"/v1/schools/{school['id']}"
        w.store_id = (
            await gw.post(
                f"{base}/stores", json={"name": "Canteen", "merchant_category": "canteen"}, headers=admin
            )
        ).json()["id"]
        merchant = (await sb.post("/ecard/merchants", json={})).json()
        w.merchant_id = merchant["merchant_id"]
        r = await gw.put(
            f"{base}/providers/ecard",
            headers=admin,
            json={
                "endpoint": f"{w.sandbox_url}/ecard",
                "credentials": {"merchant_id": merchant["merchant_id"], "secret": merchant["secret"]},
            },
        )
        assert r.status_code == 200, r.text
        student = (
            await gw.post(
                f"{base}/students", json={"external_ref": "s1", "age_band": "under_14"}, headers=admin
            )
        ).json()
        r = await gw.post(f"{base}/cards", json={"student_id": student["id"], "card_no": CARD}, headers=admin)
        assert r.status_code == 201, r.text
        private, public = generate_ed25519_keypair()
        device = (
            await gw.post(
                f"{base}/devices",
                json={"name": "till", "alg": "ed25519", "public_key": public},
                headers=admin,
            )
        ).json()
        w.device = DeviceCredentials(key_id=device["key_id"], alg="ed25519", private_key_pem=private)


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    backend = getattr(request, "param", "sqlite")
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    port = free_port()
    with running(
        ["sandbox", "--port", str(port)],
        health=f"http://127.0.0.1:{port}/_control/test-values",
        log=tmp_path / "sandbox.log",
    ):
        yield World(
            tmp_path, url, f"http://127.0.0.1:{port}", free_port(), "cp_platform_" + secrets.token_hex(8)
        )


async def _wait_for(predicate: Any, within: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def _settled(w: World, body: dict[str, Any], key: str) -> dict[str, Any]:
    """Ask again with the same Idempotency-Key until the payment's state is final."""
    async with w.client() as client:
        for _ in range(400):
            try:
                again = await client.create_payment(**body, idempotency_key=key)
            except CampusPayError as exc:
                # the dead process's claim still counts as executing until its lock expires
                assert exc.code == "idempotency_key_in_use", exc
                await asyncio.sleep(0.25)
                continue
            if again.body["status"] != "processing":
                return again.body
            await asyncio.sleep(0.1)
    raise AssertionError("payment never settled")


async def _kill_while_paying(
    world: World, order: str, amount: int, fault: dict[str, Any], sign: str, **settings: str
) -> Any:
    """Start a gateway, pay with the e-card holding the consume as ``fault`` says, SIGKILL the
    gateway as soon as the sandbox logs ``sign``, then restart it on the same database and ask
    again (same Idempotency-Key) until the payment is final. Returns the final payment."""
    body = {
        "merchant_order_id": order,
        "amount": amount,
        "method": "card",
        "credential": {"card_no": CARD},
        "store_id": "",
    }
    key = "key-" + secrets.token_hex(8)
    with world.gateway(**settings) as gateway:
        await seed(world)
        body["store_id"] = world.store_id
        await world.fault(operation="consume", **fault)
        async with world.client() as client:
            pending = asyncio.create_task(client.create_payment(**body, idempotency_key=key))
            await _wait_for(lambda: _has(world, sign))
            kill_hard(gateway)
            with pytest.raises(httpx.HTTPError):
                await pending
    with world.gateway(**settings):  # restarted on the same database: the resumer finds the payment
        return await _settled(world, body, key)


@pytest.mark.parametrize(
    "world", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_gateway_killed_after_the_provider_charged(world: World) -> None:
    # The e-card applies the debit, then holds its answer: the gateway is killed while waiting.
    # A recovery deadline far beyond a restart, however slow the machine: the restarted gateway
    # must learn the charge by asking, not reverse it for want of an answer (which would also
    # be safe, but is not what this test is about).
    hold = {"action": "delay_after_apply", "delay_ms": 20_000}
    final = await _kill_while_paying(
        world, "kill-1", 1500, hold, "ecard.debit", recovery_deadline_seconds="120"
    )
    assert final["status"] == "succeeded"
    assert len(await world.events("ecard.debit")) == 1
    assert await world.balance() == 100_000 - 1500


async def test_gateway_killed_before_the_charge_landed(world: World) -> None:
    # The e-card holds the consume for 10 s before applying it: it lands long after the kill.
    hold = {"action": "delay", "delay_ms": 10_000}
    final = await _kill_while_paying(world, "kill-2", 900, hold, "fault")
    # Outlive the hold: should the held consume still be processed, it meets the reversal.
    await asyncio.sleep(6)
    assert final["status"] == "failed" and final["failure_code"] == "outcome_unknown_reversed"
    debits = await world.events("ecard.debit")
    if debits:
        # A slow restart (a busy machine) let the held consume land before the reversal: the
        # reversal then gave the money back, once.
        reversals = await world.events("ecard.reverse")
        assert len(debits) == 1 and [(r["prior_status"], r["amount"]) for r in reversals] == [
            ("SUCCESS", 900)
        ]
    else:
        assert [d.get("code") for d in await world.events("ecard.decline")] in ([], ["ORDER_REVERSED"])
    assert await world.balance() == 100_000


async def test_connection_dropped_after_the_charge(world: World) -> None:
    with world.gateway():
        await seed(world)
        await world.fault(operation="consume", action="drop_after_apply")
        async with world.client() as client:
            paid = await client.create_payment(
                merchant_order_id="drop-1",
                amount=700,
                method="card",
                credential={"card_no": CARD},
                store_id=world.store_id,
            )
    assert paid.status_code == 201 and paid.body["status"] == "succeeded"
    assert len(await world.events("ecard.debit")) == 1


async def _has(w: World, kind: str) -> bool:
    return bool(await w.events(kind))
