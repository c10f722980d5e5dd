"""Asynchronous notifications (trade_status_sync) to the merchant's notify_url, as Alipay sends them.

A form POST signed with the Alipay key over every parameter except ``sign`` and ``sign_type``.
Delivered until the answer is HTTP 200 with the body exactly ``success``: the first attempt at
once, then retries after 4 m, 10 m, 10 m, 1 h, 2 h, 6 h and 15 h (8 attempts over about 25 h).
``scale`` multiplies that schedule (``POST /_control/alipay/notify-schedule {"scale": 0.001}``).
Retries repeat the same parameters (same ``notify_id``), so merchants can de-duplicate on it.

Faults (``/_control/alipay/notify-faults``): ``drop`` (never sent), ``duplicate`` (sent twice),
``delay`` (the first attempt waits ``delay_ms``), ``out_of_order`` (held until the next
notification of the same trade has been attempted, or ``delay_ms``, default 5000, has passed).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandbox.alipay import wire
from sandbox.alipay.trades import Notice
from sandbox.control import ControlPlane

PROVIDER = "alipay"
RETRY_SCHEDULE_S = (240, 600, 600, 3600, 7200, 21600, 54000)
DEFAULT_HOLD_MS = 5_000
ATTEMPT_TIMEOUT_S = 10.0
LOGGED_ANSWER_LIMIT = 200

NotifyFaultMode = Literal["drop", "duplicate", "delay", "out_of_order"]


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scale: float = Field(gt=0, le=1000, description="multiplies every wait of the retry schedule")


class NotifyFaultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: NotifyFaultMode
    times: int = Field(default=1, description="how many notifications it hits; -1 = until cleared")
    delay_ms: int | None = Field(default=None, ge=0)
    out_trade_no: str | None = None
    trade_status: str | None = None

    @field_validator("times")
    @classmethod
    def _times_positive_or_forever(cls, times: int) -> int:
        if times != -1 and times < 1:
            raise ValueError("times must be >= 1, or -1 for until cleared")
        return times


class NotifyFault(NotifyFaultIn):
    id: str


class Notifier:
    def __init__(self, control: ControlPlane, sign: Callable[[bytes], str]) -> None:
        self.control = control
        self.sign = sign
        self.client: httpx.AsyncClient | None = None  # None: a fresh client per attempt
        self.scale = 1.0
        self._faults: dict[str, NotifyFault] = {}
        self._held: dict[str, list[tuple[Notice, dict[str, str]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- control ---------------------------------------------------------------------------
    def schedule(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "first_attempt_s": 0,
            "retry_waits_s": [wait * self.scale for wait in RETRY_SCHEDULE_S],
            "attempts": 1 + len(RETRY_SCHEDULE_S),
        }

    def add_fault(self, spec: NotifyFaultIn) -> NotifyFault:
        fault = NotifyFault(id=f"nflt_{secrets.token_hex(6)}", **spec.model_dump())
        self._faults[fault.id] = fault
        return fault

    def faults(self) -> list[NotifyFault]:
        return list(self._faults.values())

    def clear_faults(self) -> int:
        count = len(self._faults)
        self._faults.clear()
        return count

    @property
    def pending(self) -> int:
        """Deliveries still running or waiting for a retry (0 when everything settled)."""
        return len(self._tasks)

    async def reset(self) -> None:
        await self.aclose()
        self.scale = 1.0
        self._faults.clear()
        self._held.clear()

    async def aclose(self) -> None:
        """Stop every pending delivery (the client, if given, stays the caller's to close)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # --- sending -----------------------------------------------------------------------------
    def send(self, notice: Notice) -> None:
        params = dict(notice.params)
        params["sign"] = self.sign(wire.notification_string(params).encode("utf-8"))
        key = f"{notice.app_id}:{notice.out_trade_no}"
        fault = self._take_fault(notice)
        fields = {
            "out_trade_no": notice.out_trade_no,
            "notify_id": params["notify_id"],
            "trade_status": params.get("trade_status"),
        }
        if fault is not None:
            self.control.record(PROVIDER, "alipay.notify_fault", notice.app_id, mode=fault.mode, **fields)
        if fault is not None and fault.mode == "drop":
            return
        if fault is not None and fault.mode == "out_of_order":
            self._held.setdefault(key, []).append((notice, params))
            hold_s = (fault.delay_ms if fault.delay_ms is not None else DEFAULT_HOLD_MS) / 1000
            self._spawn(self._release_later(key, hold_s))
            return
        first_wait = (fault.delay_ms or 0) / 1000 if fault is not None and fault.mode == "delay" else 0.0
        duplicate = fault is not None and fault.mode == "duplicate"
        self._spawn(self._deliver(notice, params, key, first_wait, duplicate=duplicate))

    def _take_fault(self, notice: Notice) -> NotifyFault | None:
        for fault in list(self._faults.values()):
            if fault.out_trade_no is not None and fault.out_trade_no != notice.out_trade_no:
                continue
            if fault.trade_status is not None and fault.trade_status != notice.params.get("trade_status"):
                continue
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    del self._faults[fault.id]
            return fault
        return None

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, key: str) -> None:
        for notice, params in self._held.pop(key, []):
            self._spawn(self._deliver(notice, params, key, 0.0))

    async def _release_later(self, key: str, hold_s: float) -> None:
        await asyncio.sleep(hold_s)
        self._release(key)

    async def _deliver(
        self, notice: Notice, params: dict[str, str], key: str, first_wait: float, *, duplicate: bool = False
    ) -> None:
        if first_wait:
            await asyncio.sleep(first_wait)
        for attempt in range(1, len(RETRY_SCHEDULE_S) + 2):
            if attempt > 1:
                await asyncio.sleep(RETRY_SCHEDULE_S[attempt - 2] * self.scale)
            delivered = await self._attempt(notice, params, attempt)
            if attempt == 1:
                if duplicate:  # the same notification once more, right after the first
                    await self._attempt(notice, params, attempt, duplicate=True)
                self._release(key)  # anything held back to arrive after this one
            if delivered:
                return
        self.control.record(
            PROVIDER,
            "alipay.notify_gave_up",
            notice.app_id,
            out_trade_no=notice.out_trade_no,
            notify_id=params["notify_id"],
        )

    async def _attempt(
        self, notice: Notice, params: dict[str, str], attempt: int, *, duplicate: bool = False
    ) -> bool:
        body = urlencode(params).encode("ascii")
        headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
        status: int | None = None
        full_answer = answer = ""
        error: str | None = None
        try:
            if self.client is not None:
                response = await self.client.post(
                    notice.url, content=body, headers=headers, timeout=ATTEMPT_TIMEOUT_S
                )
            else:
                async with httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT_S) as client:
                    response = await client.post(notice.url, content=body, headers=headers)
            status = response.status_code
            full_answer = response.text
            answer = full_answer[:LOGGED_ANSWER_LIMIT]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a refused connection, a timeout, an app that raised over ASGI
            error = f"{type(exc).__name__}: {exc}"[:LOGGED_ANSWER_LIMIT]
        delivered = status == 200 and full_answer == "success"
        self.control.record(
            PROVIDER,
            "alipay.notify",
            notice.app_id,
            url=notice.url,
            attempt=attempt,
            duplicate=duplicate,
            out_trade_no=notice.out_trade_no,
            notify_id=params["notify_id"],
            trade_status=params.get("trade_status"),
            params={k: v for k, v in params.items() if k != "sign"},
            status=status,
            answer=answer,
            error=error,
            delivered=delivered,
        )
        return delivered
