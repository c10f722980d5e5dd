"""The long run's world: a real gateway process (``campuspay serve``) and a standalone sandbox
process (``campuspay sandbox``) on real sockets. A crash is a SIGKILL of the gateway, whatever
it was doing, then a restart on the same SQLite database; nothing of the gateway is in this
process, and time is real time (its clock cannot be moved, so settling waits)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import subprocess
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from gateway.client import DeviceCredentials, generate_ed25519_keypair
from tests.face_helpers import ALICE, GROUP, NOTICE
from tests.harness import TEST_MASTER_KEY
from tests.procs import free_port, kill_hard, running
from tests.property.books import Payers
from tests.property.driver import Device
from tests.property.world import CARDS, mint_face_token

# The in-process run's timings (tests/property/world.py), in real seconds here.
ENV = {
    "CAMPUSPAY_SYNC_BUDGET_SECONDS": "1",
    "CAMPUSPAY_PROVIDER_TIMEOUT_SECONDS": "0.75",
    "CAMPUSPAY_RECOVERY_DEADLINE_SECONDS": "6",
    "CAMPUSPAY_RECOVERY_INTERVAL_SECONDS": "0.2",
    "CAMPUSPAY_RECOVERY_MAX_BACKOFF_SECONDS": "0.5",
    "CAMPUSPAY_REFUSAL_RETRY_SECONDS": "5",
    "CAMPUSPAY_DEVICE_RATE_LIMIT": "100000/minute",
    "CAMPUSPAY_LOG_LEVEL": "WARNING",
}


class ProcessWorld:
    cancel_window_may_close = True  # real time: a run across midnight in Asia/Shanghai sees it close
    settle_rounds = 120  # a second each: past a dead worker's 30 s lease and the recovery deadline
    waits_out_key_locks = True

    def __init__(self, folder: Path, *, crashes_per_run: int = 1_000) -> None:
        self.folder, self.crashes_per_run = folder, crashes_per_run
        self.db_file = folder / "gateway.db"
        self.token = "cp_platform_" + secrets.token_hex(8)
        self.gateway_port, sandbox_port = free_port(), free_port()
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        self.sandbox_stack, self.gateway_stack = ExitStack(), ExitStack()
        self.sandbox_stack.enter_context(
            running(
                ["sandbox", "--port", str(sandbox_port)],
                health=f"{self.sandbox_url}/_control/test-values",
                log=folder / "sandbox.log",
            )
        )
        self.sandbox = httpx.AsyncClient(base_url=self.sandbox_url, timeout=30)
        self.gateway: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def _start_gateway(self) -> None:
        env = {
            **ENV,
            "CAMPUSPAY_DATABASE_URL": f"sqlite+aiosqlite:///{self.db_file}",
            "CAMPUSPAY_MASTER_KEY": TEST_MASTER_KEY,
            "CAMPUSPAY_BOOTSTRAP_TOKEN": self.token,
            "CAMPUSPAY_PUBLIC_BASE_URL": self.gateway_url,
        }
        args = ["serve", "--port", str(self.gateway_port), "--data-dir", str(self.folder / "gw")]
        self.gateway_stack = ExitStack()
        log = self.folder / "gateway.log"
        self.gateway = self.gateway_stack.enter_context(
            running(args, health=f"{self.gateway_url}/healthz", log=log, env=env)
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._start_gateway)
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=30) as gw:
            await self._seed(gw)
        r = await self.sandbox.post("/_control/alipay/notify-schedule", json={"scale": 0.001})
        r.raise_for_status()

    async def _seed(self, gw: httpx.AsyncClient) -> None:
        """A school, a store, the e-card with three cards, Alipay with stu_alice's face, a device."""

        async def admin(method: str, path: str, body: Any, token: str) -> dict[str, Any]:
            r = await gw.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code in (200, 201), r.text
            return dict(r.json())

        school = await admin("POST", "/v1/schools", {"name": "Property School"}, self.token)
        key, base = school["api_key"], f"/v1/schools/{school['id']}"
        store = {"name": "Canteen", "merchant_category": "canteen", "timezone": "Asia/Shanghai"}
        self.store_id = (await admin("POST", f"{base}/stores", store, key))["id"]
        merchant = (await self.sandbox.post("/ecard/merchants", json={})).json()
        credentials = {"merchant_id": merchant["merchant_id"], "secret": merchant["secret"]}
        await admin(
            "PUT",
            f"{base}/providers/ecard",
            {"endpoint": f"{self.sandbox_url}/ecard", "credentials": credentials},
            key,
        )
        values = (await self.sandbox.get("/_control/test-values")).json()
        students = {}
        for card in values["cards"]:
            if card["card_no"] in CARDS:
                student = {"external_ref": card["student"], "age_band": "under_14"}
                sid = (await admin("POST", f"{base}/students", student, key))["id"]
                await admin("POST", f"{base}/cards", {"student_id": sid, "card_no": card["card_no"]}, key)
                students[card["student"]] = sid
        app_id = await self._alipay(admin, base, key, students["stu_alice"])
        private, public = generate_ed25519_keypair()
        device = await admin(
            "POST", f"{base}/devices", {"name": "till", "alg": "ed25519", "public_key": public}, key
        )
        creds = DeviceCredentials(key_id=device["key_id"], alg="ed25519", private_key_pem=private)
        self.device = Device(
            httpx.AsyncClient(base_url=self.gateway_url, timeout=30), creds, self.gateway_url
        )
        self.payers = Payers(merchant["merchant_id"], CARDS, app_id, (ALICE,))

    async def _alipay(self, admin: Any, base: str, key: str, student: str) -> str:
        """tests/face_helpers.py's set-up, over HTTP: the app, the notice, a consent, the enrolment."""
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
            PublicFormat,
        )

        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = rsa_key.private_bytes(
            Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption()
        ).decode()
        public = rsa_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        app = (await self.sandbox.post("/alipay/apps", json={"app_public_key": public})).json()
        school_id = base.rsplit("/", 1)[1]
        setting = {
            "endpoint": f"{self.sandbox_url}/alipay/gateway.do",
            "credentials": {
                "app_id": app["app_id"],
                "app_private_key": private,
                "alipay_public_key": app["alipay_public_key"],
            },
            "options": {
                "face_group": GROUP,
                "notify_url": f"{self.gateway_url}/v1/notify/alipay/{school_id}",
            },
        }
        await admin("PUT", f"{base}/providers/alipay", setting, key)
        notice = await admin("POST", f"{base}/consent-notices", NOTICE, key)
        guardian = {"student_id": student, "external_ref": "g-alice", "relation": "mother"}
        guardian_id = (await admin("POST", f"{base}/guardians", guardian, key))["id"]
        consent = {
            "student_id": student,
            "signer": {"type": "guardian", "guardian_id": guardian_id},
            "notice_id": notice["id"],
            "notice_version": notice["version"],
            "notice_hash": notice["content_hash"],
            "scope": "face_payment",
            "ends_at": (datetime.now(UTC) + timedelta(days=200)).isoformat(),
        }
        consent_id = (await admin("POST", f"{base}/consents", consent, key))["id"]
        enrolment = {
            "student_id": student,
            "provider": "alipay",
            "provider_user_id": ALICE,
            "agreement_no": "20221000000000000001",
            "consent_id": consent_id,
        }
        await admin("POST", f"{base}/enrollments", enrolment, key)
        return str(app["app_id"])

    async def face_token(self) -> str:
        return await mint_face_token(self.sandbox)

    async def crash(self, inflight: asyncio.Task[httpx.Response] | None) -> httpx.Response | None:
        assert self.gateway is not None
        kill_hard(self.gateway)  # SIGKILL: whatever it was doing, mid-transaction or mid-call
        self.kills += 1
        answer = None
        if inflight is not None:
            (answer,) = await asyncio.gather(inflight, return_exceptions=True)  # its connection is gone
        self.gateway_stack.close()
        await asyncio.to_thread(self._start_gateway)
        return answer if isinstance(answer, httpx.Response) else None

    async def recover(self, advance: float) -> None:
        await asyncio.sleep(min(advance, 1.0))  # real time: the gateway's own worker recovers

    async def pending(self) -> bool:
        """Read-only, beside the running gateway (WAL: it never blocks a writer)."""

        def count() -> int:
            with contextlib.closing(sqlite3.connect(f"file:{self.db_file}?mode=ro", uri=True)) as db:
                (payments,) = db.execute(
                    "SELECT count(*) FROM payments WHERE status = 'processing'"
                    " OR (status = 'succeeded' AND reversal_requested > 0)"
                ).fetchone()
                (refunds,) = db.execute("SELECT count(*) FROM refunds WHERE status = 'processing'").fetchone()
                return int(payments) + int(refunds)

        return bool(await asyncio.to_thread(count))

    async def drain(self) -> None:
        """A moment for notifications under way (their retries run for hours: not waited for)."""
        for _ in range(20):
            r = await self.sandbox.get("/_control/alipay/notify-faults")
            if not r.json()["pending_deliveries"]:
                return
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        with contextlib.suppress(AttributeError):
            await self.device.http.aclose()
        await self.sandbox.aclose()
        self.gateway_stack.close()
        self.sandbox_stack.close()
