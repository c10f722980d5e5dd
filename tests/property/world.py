"""The world a run happens in: the real gateway app and the real sandbox app in one process
(tests/harness.py), one school with e-card cards and an Alipay face payer.

A crash here is in-process: the calls the app has in flight at a provider end with
``ProcessDied`` (the provider goes on with them, as over a real network), its recovery worker
stops, nothing reaches the app any more, and a new app is built on the same database, the same
sandbox and the same clock; then recovery runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import and_, func, or_, select

from gateway.store.models import Payment, Refund
from sandbox import create_sandbox_app
from tests.face_helpers import ALICE, GROUP, setup_face
from tests.harness import GATEWAY, SANDBOX, Clock, Harness, start_harness
from tests.property.books import Payers
from tests.property.driver import Device, Switch

log = logging.getLogger(__name__)
CARDS = ("31000001", "31000002", "31000006")  # no subsidies, no PINs: a fen is a fen
# The gateway's timings for a property run: short, so a fault costs a fraction of a second; the
# recovery deadline is in the gateway's (movable) clock, so crashes can be learned by query.
SETTINGS: dict[str, Any] = {
    "sync_budget_seconds": 1.0,
    "provider_timeout_seconds": 0.75,
    "recovery_deadline_seconds": 60.0,
    "recovery_interval_seconds": 0.2,
    "recovery_max_backoff_seconds": 0.5,
    "refusal_retry_seconds": 30.0,
    "device_rate_limit": None,
}
LONGEST_HOLD = 61.0  # past the recovery deadline, a worker's lease (30 s) and a refusal retry


class World(Protocol):
    device: Device
    sandbox: httpx.AsyncClient
    payers: Payers
    store_id: str
    cancel_window_may_close: bool
    settle_rounds: int
    waits_out_key_locks: bool  # whether a dead request's key is retried until it answers
    crashes_per_run: int

    async def start(self) -> None: ...
    async def face_token(self) -> str: ...
    async def crash(self, inflight: asyncio.Task[httpx.Response] | None) -> httpx.Response | None:
        """Kill the gateway and start it again; the answer ``inflight`` got before it died, if any."""

    async def recover(self, advance: float) -> None: ...
    async def pending(self) -> bool: ...
    async def drain(self) -> None:
        """Until what the providers were sent has landed and what they are notifying has arrived."""

    async def close(self) -> None: ...


async def heal(sandbox: httpx.AsyncClient) -> None:
    """The providers behave again: no fault rules, no notification faults, no clock skew."""
    (await sandbox.delete("/_control/faults")).raise_for_status()
    (await sandbox.delete("/_control/alipay/notify-faults")).raise_for_status()
    for provider in ("ecard", "alipay"):
        r = await sandbox.post(f"/_control/clock/{provider}", json={"offset_seconds": 0})
        r.raise_for_status()


async def mint_face_token(sandbox: httpx.AsyncClient) -> str:
    r = await sandbox.post("/face/test-tokens", json={"school": GROUP, "student": "stu_alice"})
    r.raise_for_status()
    return str(r.json()["face_token"])


def inside_the_day(clock: Clock) -> None:
    """Move the gateway's clock to the morning if the store's day (Asia/Shanghai) is about to
    end: cancels are allowed until midnight there, and a run must not depend on the hour."""
    local = clock().astimezone(ZoneInfo("Asia/Shanghai"))
    if 1 <= local.hour < 20:
        return
    morning = (local + timedelta(days=1 if local.hour >= 20 else 0)).replace(
        hour=8, minute=0, second=0, microsecond=0
    )
    clock.advance(seconds=(morning - local).total_seconds())


class ProcessDied(BaseException):
    """What a call to a provider ends with when the gateway process that made it dies: nothing
    in the gateway can catch it as an answer (it is no ``Exception``)."""


class Network(httpx.AsyncBaseTransport):
    """Between one gateway app and the providers. A provider goes on with a request whose
    caller gave up (a timeout) -- it lands late, or its answer goes nowhere -- as over a real
    network; when the app dies, every call it is still waiting on ends with ``ProcessDied``."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, at_providers: set[asyncio.Task[httpx.Response]]
    ) -> None:
        self.inner, self.at_providers = inner, at_providers
        self.died: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.died.done():
            raise ProcessDied("the gateway process died before it sent this request")
        await request.aread()
        delivery = asyncio.get_running_loop().create_task(self.inner.handle_async_request(request))
        self.at_providers.add(delivery)
        delivery.add_done_callback(self._forget)
        done, _ = await asyncio.wait({delivery, self.died}, return_when=asyncio.FIRST_COMPLETED)
        if delivery in done:
            return delivery.result()
        raise ProcessDied("the gateway process died while the provider had this request")

    def _forget(self, delivery: asyncio.Task[httpx.Response]) -> None:
        self.at_providers.discard(delivery)
        if not delivery.cancelled():  # its caller may have given up: the provider's business now
            delivery.exception()

    def kill(self) -> None:
        if not self.died.done():
            self.died.set_result(None)


class InProcessWorld:
    cancel_window_may_close = False
    settle_rounds = 30
    # A key whose request died stays "in use" for the sync budget + 10 s of real time; waiting
    # that out is the long run's job (real processes). Here what it made is found by listing.
    waits_out_key_locks = False

    def __init__(
        self, database_url: str, data_dir: Path, *, workers: bool = True, crashes_per_run: int = 3
    ) -> None:
        self.database_url, self.data_dir, self.workers = database_url, data_dir, workers
        self.crashes_per_run = crashes_per_run
        self.clock = Clock()
        self.sandbox_app = create_sandbox_app()
        transport = httpx.ASGITransport(app=self.sandbox_app)
        self.sandbox = httpx.AsyncClient(transport=transport, base_url=SANDBOX)
        self.to_gateway = Switch()
        self.stack = AsyncExitStack()
        self.h: Harness | None = None
        self.network: Network | None = None
        self.at_providers: set[asyncio.Task[httpx.Response]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def _wire(self, inner: httpx.AsyncBaseTransport) -> Network:
        self.network = Network(inner, self.at_providers)
        return self.network

    def _harness(self, *, seed: bool) -> Any:
        return start_harness(
            database_url=self.database_url,
            data_dir=self.data_dir,
            seed=seed,
            sandbox_app=self.sandbox_app,
            wrap_transport=self._wire,
            clock=self.clock,
            close_sandbox=False,
            run_workers=False,  # started once the world is set up (seeding beside it is slow)
            **SETTINGS,
        )

    async def start(self) -> None:
        inside_the_day(self.clock)
        h = self.h = await self.stack.enter_async_context(self._harness(seed=True))
        face = await setup_face(h)
        consent = await face.consent("stu_alice")
        await face.enroll("stu_alice", ALICE, str(consent["id"]), agreement_no="20221000000000000001")
        alipay = self.sandbox_app.state.alipay
        await alipay.notify_client.aclose()  # setup_face's; notifications go to whichever app is alive
        alipay.notify_client = httpx.AsyncClient(transport=self.to_gateway, base_url=GATEWAY)
        # retries of a notification the gateway missed (a crash) come within seconds, not minutes
        r = await self.sandbox.post("/_control/alipay/notify-schedule", json={"scale": 0.001})
        r.raise_for_status()
        self.to_gateway.target = httpx.ASGITransport(app=h.app)
        assert h.device is not None
        self.device = Device(
            httpx.AsyncClient(transport=self.to_gateway, base_url=GATEWAY),
            h.device,
            GATEWAY,
            now=lambda: int(self.clock().timestamp()),
        )
        self.store_id = h.store_id
        self.payers = Payers(h.merchant_id, CARDS, face.app_id, (ALICE,))
        self._start_worker()

    async def face_token(self) -> str:
        return await mint_face_token(self.sandbox)

    def _start_worker(self) -> None:
        if self.workers:
            self._stopping = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        """The recovery worker's loop (``RecoveryWorker._loop``), run here so that a crash can
        stop it between two passes (cancelling it inside an aiosqlite call would leave a
        connection SQLAlchemy cannot close; a pass cut short by the crash at a provider call
        ends with ``ProcessDied`` like any other call in flight)."""
        assert self.h is not None
        recovery = self.h.services.recovery
        while not self._stopping.is_set():
            try:
                await recovery.run_once()
            except Exception:  # the worker logs and carries on; so does this one
                log.exception("recovery pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), SETTINGS["recovery_interval_seconds"])

    async def _stop_worker(self) -> None:
        if self._worker is not None:
            self._stopping.set()
            await asyncio.gather(self._worker, return_exceptions=True)  # ProcessDied, if it was calling
            self._worker = None

    async def crash(self, inflight: asyncio.Task[httpx.Response] | None) -> httpx.Response | None:
        old = self.h
        assert old is not None and self.network is not None
        self.to_gateway.target = None  # from now on nothing reaches the old app
        self.network.kill()
        await self._stop_worker()
        answer = None
        if inflight is not None:
            (answer,) = await asyncio.gather(inflight, return_exceptions=True)  # ProcessDied, or its answer
        await self.to_gateway.idle()  # notifications being delivered into it finish first
        await self.stack.aclose()
        self.stack = AsyncExitStack()
        new = self.h = await self.stack.enter_async_context(self._harness(seed=False))
        for name in ("school_id", "api_key", "store_id", "merchant_id", "merchant_secret", "device", "cards"):
            setattr(new, name, getattr(old, name))
        self.to_gateway.target = httpx.ASGITransport(app=new.app)
        await new.services.recovery.run_once(resume_all=True)  # what its start-up does
        self._start_worker()
        return answer if isinstance(answer, httpx.Response) else None

    async def recover(self, advance: float) -> None:
        assert self.h is not None
        self.clock.advance(seconds=advance)
        await self.h.services.recovery.run_once()

    async def pending(self) -> bool:
        assert self.h is not None
        school = self.h.school_id
        async with self.h.services.db.transaction() as session:
            payments = await session.scalar(
                select(func.count())
                .select_from(Payment)
                .where(
                    Payment.school_id == school,
                    or_(
                        Payment.status == "processing",
                        and_(Payment.status == "succeeded", Payment.reversal_requested > 0),
                    ),
                )
            )
            refunds = await session.scalar(
                select(func.count())
                .select_from(Refund)
                .where(Refund.school_id == school, Refund.status == "processing")
            )
        return bool(payments or refunds)

    async def drain(self) -> None:
        """Until the providers are done with what they were sent (late requests have landed)
        and no notification is being delivered. A notification waiting for its next retry is
        not waited for: its schedule runs for hours, and recovery does not need it."""
        if self.at_providers:  # (not what the worker sends meanwhile: it never stops sending)
            await asyncio.wait(set(self.at_providers), timeout=5)
        await self.to_gateway.idle(within=5)

    async def close(self) -> None:
        self.to_gateway.target = None
        await self._stop_worker()
        with contextlib.suppress(AttributeError):
            await self.device.http.aclose()
        await self.to_gateway.idle()
        await self.stack.aclose()
        for delivery in list(self.at_providers):
            delivery.cancel()
        await asyncio.gather(*self.at_providers, return_exceptions=True)
        for name in ("alipay", "bank"):
            provider = getattr(self.sandbox_app.state, name)
            await provider.aclose()
            if provider.notify_client is not None:
                await provider.notify_client.aclose()
        await self.sandbox.aclose()
