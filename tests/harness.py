"""One line to a working gateway: a school, a store, a device, cards, the e-card sandbox.

The gateway and the sandbox are the real apps, connected over ``httpx.ASGITransport``: the
gateway's adapters reach the sandbox as ``http://sandbox.test``, tests reach the gateway as
``http://gateway.test`` (its public base URL, so signatures are checked against it).
"""

from __future__ import annotations

import asyncio
import atexit
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from gateway.app import create_app
from gateway.client import CampusPayClient, DeviceCredentials, generate_ed25519_keypair
from gateway.settings import Settings
from gateway.store.db import run_migrations
from sandbox import create_sandbox_app

GATEWAY = "http://gateway.test"
SANDBOX = "http://sandbox.test"
TEST_MASTER_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes, tests only


class Clock:
    """The gateway's clock, movable by tests (cancel windows, recovery deadlines)."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        return (self.frozen or datetime.now(UTC)) + self.offset

    def freeze(self) -> None:
        """Stop the clock on a whole second, so a boundary test (a signature 301 s ahead of a
        300 s window) cannot pass or fail by how long a busy machine takes between signing and
        checking."""
        self.frozen = datetime.now(UTC).replace(microsecond=0)

    def advance(self, **kwargs: float) -> None:
        self.offset += timedelta(**kwargs)


@dataclass
class Harness:
    app: FastAPI
    sandbox_app: FastAPI
    settings: Settings
    clock: Clock
    gateway: httpx.AsyncClient  # unsigned, for admin calls
    sandbox: httpx.AsyncClient
    platform_token: str
    provider_base: str = SANDBOX
    school_id: str = ""
    api_key: str = ""
    store_id: str = ""
    merchant_id: str = ""
    merchant_secret: str = ""
    device: DeviceCredentials | None = None
    cards: dict[str, str] = field(default_factory=dict)  # card_no -> student id
    _clients: list[CampusPayClient] = field(default_factory=list)

    @property
    def services(self) -> Any:
        return self.app.state.services

    def admin_headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.api_key}"}

    async def admin(
        self, method: str, path: str, json: Any = None, *, token: str | None = None
    ) -> httpx.Response:
        return await self.gateway.request(method, path, json=json, headers=self.admin_headers(token))

    def client(self, creds: DeviceCredentials | None = None, **kw: Any) -> CampusPayClient:
        c = CampusPayClient(
            GATEWAY,
            creds or self.device,
            transport=httpx.ASGITransport(app=self.app),  # type: ignore[arg-type]
            backoff_initial=0.01,
            backoff_max=0.05,
            **kw,
        )
        self._clients.append(c)
        return c

    async def new_device(
        self, alg: str = "ed25519", school_id: str | None = None, token: str | None = None
    ) -> DeviceCredentials:
        if alg == "ed25519":
            private, public = generate_ed25519_keypair()
            r = await self.admin(
                "POST",
                f"/v1/schools/{school_id or self.school_id}/devices",
                {"name": "till", "alg": alg, "public_key": public},
                token=token,
            )
            assert r.status_code == 201, r.text
            body = r.json()
            return DeviceCredentials(
                key_id=body["key_id"], alg=alg, private_key_pem=private, device_id=body["device_id"]
            )
        r = await self.admin(
            "POST",
            f"/v1/schools/{school_id or self.school_id}/devices",
            {"name": "vending", "alg": alg},
            token=token,
        )
        assert r.status_code == 201, r.text
        body = r.json()
        return DeviceCredentials(
            key_id=body["key_id"], alg=alg, secret=body["secret"], device_id=body["device_id"]
        )

    async def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        params = {"provider": "ecard", "merchant_id": self.merchant_id}
        if kind:
            params["kind"] = kind
        r = await self.sandbox.get("/_control/events", params=params)
        r.raise_for_status()
        data = r.json()
        return list(data["events"] if isinstance(data, dict) else data)

    async def wait_settled(
        self, client: CampusPayClient, payment_id: str, within: float = 20.0
    ) -> dict[str, Any]:
        """Poll until the payment is no longer being resolved (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            payment: dict[str, Any] = await client.get_payment(payment_id)
            if payment["status"] != "processing":
                return payment
            if loop.time() > deadline:
                raise AssertionError(f"payment {payment_id} still processing after {within} s")
            await asyncio.sleep(0.1)

    async def debits(self) -> list[dict[str, Any]]:
        return await self.events("ecard.debit")

    async def balance(self, card_no: str) -> int:
        r = await self.sandbox.get(f"/_control/ecard/merchants/{self.merchant_id}/cards/{card_no}")
        r.raise_for_status()
        return int(r.json()["balance"])

    async def fault(self, **rule: Any) -> None:
        r = await self.sandbox.post("/_control/faults", json={"provider": "ecard", **rule})
        assert r.status_code in (200, 201), r.text

    def payment(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "merchant_order_id": "ord-" + secrets.token_hex(6),
            "amount": 1250,
            "method": "card",
            "credential": {"card_no": "31000001"},
            "store_id": self.store_id,
        }
        body.update(overrides)
        return body


_SQLITE_PREFIX = "sqlite+aiosqlite:///"
_sqlite_template: Path | None = None


def _sqlite_from_template(database_url: str) -> None:
    """Start a new SQLite test database as a copy of one migrated once per process.

    Migrating an empty SQLite file costs ~0.2 s, a third of a harness start, and ~700 tests start
    one; the gateway still runs its migrations at start-up, which find the copy at head (~10 ms),
    so what is tested is the same. A file that exists already (a restarted gateway) is left alone.
    """
    global _sqlite_template
    if not database_url.startswith(_SQLITE_PREFIX):
        return
    target = Path(database_url.removeprefix(_SQLITE_PREFIX))
    if target.exists():
        return
    if _sqlite_template is None:
        folder = Path(tempfile.mkdtemp(prefix="campuspay-sqlite-template-"))
        atexit.register(shutil.rmtree, folder, True)
        template = folder / "head.db"
        run_migrations(_SQLITE_PREFIX + str(template))
        _sqlite_template = template
    # The backup API copies a consistent database whatever journal mode the template was left in.
    with closing(sqlite3.connect(_sqlite_template)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "public_base_url": GATEWAY,
        "master_key": TEST_MASTER_KEY,
        "bootstrap_token": "cp_platform_test_" + secrets.token_hex(8),
        "sync_budget_seconds": 3.0,
        "recovery_deadline_seconds": 6.0,
        "recovery_interval_seconds": 0.05,
        "recovery_max_backoff_seconds": 0.5,
        "provider_timeout_seconds": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def start_harness(
    *,
    database_url: str,
    data_dir: Path,
    seed: bool = True,
    run_workers: bool = True,
    sandbox_app: FastAPI | None = None,
    real_network: bool = False,
    wrap_transport: Any = None,
    resolver: Any = None,
    provider_base: str = SANDBOX,
    clock: Clock | None = None,
    close_sandbox: bool = True,
    **settings_overrides: Any,
) -> AsyncIterator[Harness]:
    """``sandbox_app`` lets a restarted gateway keep talking to the same provider state;
    ``real_network`` sends provider calls over real sockets instead of ASGI; ``resolver``
    answers the gateway's name lookups, and ``provider_base`` is the sandbox's URL the school
    is configured with (a production gateway refuses ``http://sandbox.test``). ``clock`` lets a
    restarted gateway go on with the time of the one before it; ``close_sandbox=False`` leaves
    the sandbox's pending notifications running (the providers outlive a gateway's crash)."""
    settings = make_settings(database_url, data_dir, **settings_overrides)
    await asyncio.to_thread(_sqlite_from_template, database_url)  # migrations run their own loop
    clock = clock or Clock()
    sandbox_app = sandbox_app or create_sandbox_app()
    transport: httpx.AsyncBaseTransport | None = None
    if not real_network:
        transport = httpx.ASGITransport(app=sandbox_app)
        if wrap_transport is not None:
            transport = wrap_transport(transport)
    app = create_app(
        settings, provider_transport=transport, resolver=resolver, clock=clock, run_workers=run_workers
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=GATEWAY) as gw,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox_app), base_url=SANDBOX) as sb,
    ):
        assert settings.bootstrap_token is not None
        h = Harness(
            app=app,
            sandbox_app=sandbox_app,
            settings=settings,
            clock=clock,
            gateway=gw,
            sandbox=sb,
            platform_token=settings.bootstrap_token,
            provider_base=provider_base,
        )
        if seed:
            await seed_school(h)
        try:
            yield h
        finally:
            for c in h._clients:
                await c.aclose()
            # pending provider notifications must not reach the gateway after it has stopped
            for name in ("alipay", "bank") if close_sandbox else ():
                provider = getattr(sandbox_app.state, name, None)
                if provider is None:
                    continue
                notify_client = provider.notify_client
                for _ in range(50):  # let deliveries in flight finish rather than cut them mid-request
                    if not provider.notifier.pending:
                        break
                    await asyncio.sleep(0.1)
                await provider.aclose()
                if notify_client is not None:
                    await notify_client.aclose()


async def seed_school(
    h: Harness, sandbox: httpx.AsyncClient | None = None, endpoint: str | None = None
) -> None:
    """A school, a store, an e-card merchant (at `sandbox`, the harness's own by default, reached
    by the gateway at `endpoint`), students with the test cards, and a device."""
    provider = sandbox or h.sandbox
    r = await h.admin("POST", "/v1/schools", {"name": "Test School"}, token=h.platform_token)
    assert r.status_code == 201, r.text
    h.school_id, h.api_key = r.json()["id"], r.json()["api_key"]
    r = await h.admin(
        "POST",
        f"/v1/schools/{h.school_id}/stores",
        {"name": "Canteen", "merchant_category": "canteen", "timezone": "Asia/Shanghai"},
    )
    assert r.status_code == 201, r.text
    h.store_id = r.json()["id"]
    r = await provider.post("/ecard/merchants", json={})
    assert r.status_code in (200, 201), r.text
    h.merchant_id, h.merchant_secret = r.json()["merchant_id"], r.json()["secret"]
    r = await h.admin(
        "PUT",
        f"/v1/schools/{h.school_id}/providers/ecard",
        {
            "endpoint": endpoint or f"{h.provider_base}/ecard",
            "credentials": {"merchant_id": h.merchant_id, "secret": h.merchant_secret},
        },
    )
    assert r.status_code == 200, r.text
    values = (await provider.get("/_control/test-values")).json()
    for card in values["cards"]:
        r = await h.admin(
            "POST",
            f"/v1/schools/{h.school_id}/students",
            {"external_ref": card["student"], "age_band": "under_14"},
        )
        assert r.status_code == 201, r.text
        student_id = r.json()["id"]
        r = await h.admin(
            "POST", f"/v1/schools/{h.school_id}/cards", {"student_id": student_id, "card_no": card["card_no"]}
        )
        assert r.status_code == 201, r.text
        h.cards[card["card_no"]] = student_id
    h.device = await h.new_device("ed25519")
