"""Asynchronous notifications to a merchant's URL, and their faults: one deliverer for every
provider that notifies (the sandbox Alipay and bank; the e-card sends none).

A provider hands over an `Outgoing` (already signed, in its own wire format) and says what
counts as delivered; the notifier POSTs it at once, then retries on the provider's schedule
(multiplied by `scale`) until it is delivered or the schedule runs out.

Faults (per provider, ``/_control/<provider>/notify-faults``), each with `times`, `every`,
`probability`/`seed` as for fault rules (sandbox/faults.py) and provider-specific matchers:
``drop`` (never sent), ``duplicate`` (sent twice), ``delay`` (the first attempt waits
``delay_ms``), ``out_of_order`` (held until the next notification about the same payment has
been attempted, or ``delay_ms``, default 5000, has passed), ``forged`` (a copy signed by a key
that is not the provider's is sent once just before the genuine one).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from sandbox.control import ControlPlane
from sandbox.faults import Trigger

DEFAULT_HOLD_MS = 5_000
ATTEMPT_TIMEOUT_S = 10.0
LOGGED_ANSWER_LIMIT = 200

NotifyFaultMode = Literal["drop", "duplicate", "delay", "out_of_order", "forged"]


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scale: float = Field(gt=0, le=1000, description="multiplies every wait of the retry schedule")


class NotifyFaultSpec(Trigger):
    """A notification fault; providers add their own optional matchers (None matches anything)."""

    mode: NotifyFaultMode
    delay_ms: int | None = Field(default=None, ge=0)

    def matchers(self) -> dict[str, str]:
        """The matchers given, by field name: compared with `Outgoing.match`."""
        common = set(NotifyFaultSpec.model_fields)
        return {k: v for k, v in self.model_dump().items() if k not in common and v is not None}


@dataclass(frozen=True)
class NotifyFault:
    id: str
    spec: NotifyFaultSpec

    def listing(self) -> dict[str, Any]:
        return {"id": self.id, **self.spec.model_dump(), "matched": self.spec.matched}


@dataclass(frozen=True)
class Outgoing:
    """One signed notification, ready to go."""

    merchant_id: str
    url: str
    body: bytes
    content_type: str
    thread: str  # notifications about one payment share it (out_of_order holds within it)
    match: Mapping[str, str | None]  # what fault matchers compare
    fields: Mapping[str, Any]  # what the event log says about it
    forge: Callable[[], bytes]  # the same notification signed with a key that is not the provider's


class Notifier:
    def __init__(
        self,
        control: ControlPlane,
        provider: str,
        schedule_s: tuple[int, ...],
        delivered: Callable[[int, str], bool],
    ) -> None:
        self.control = control
        self.provider = provider
        self.schedule_s = schedule_s
        self.delivered = delivered  # (HTTP status, body text) -> whether the merchant took it
        self.client: httpx.AsyncClient | None = None  # None: the notifier's own, shared client
        # one client (one connection pool and TLS context) for every delivery of this event
        # loop: building one per notification cost the sandbox ~20 ms each (issue 8)
        self._own: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None
        self.scale = 1.0
        self._faults: dict[str, NotifyFault] = {}
        self._held: dict[str, list[Outgoing]] = {}
        self._hold_timers: dict[str, asyncio.Task[None]] = {}  # by thread
        self._tasks: set[asyncio.Task[None]] = set()

    # --- control ---------------------------------------------------------------------------
    def schedule(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "first_attempt_s": 0,
            "retry_waits_s": [wait * self.scale for wait in self.schedule_s],
            "attempts": 1 + len(self.schedule_s),
            "pending_deliveries": self.pending,
        }

    def add_fault(self, spec: NotifyFaultSpec) -> NotifyFault:
        fault = NotifyFault(f"nflt_{secrets.token_hex(6)}", spec)
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
        self._hold_timers.clear()

    async def aclose(self) -> None:
        """Stop every pending delivery (the client, if given, stays the caller's to close)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._own is not None:
            loop, own = self._own
            self._own = None
            if loop is asyncio.get_running_loop():
                await own.aclose()

    def _own_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._own is None or self._own[0] is not loop or self._own[1].is_closed:
            self._own = (loop, httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT_S))
        return self._own[1]

    # --- sending -----------------------------------------------------------------------------
    def send(self, outgoing: Outgoing) -> None:
        fault = self._take_fault(outgoing)
        mode = fault.mode if fault is not None else None
        if fault is not None:
            self.control.record(
                self.provider,
                f"{self.provider}.notify_fault",
                outgoing.merchant_id,
                mode=mode,
                **outgoing.fields,
            )
        if mode == "drop":
            return
        if fault is not None and mode == "out_of_order":
            self._held.setdefault(outgoing.thread, []).append(outgoing)
            hold_s = (fault.delay_ms if fault.delay_ms is not None else DEFAULT_HOLD_MS) / 1000
            if outgoing.thread not in self._hold_timers:
                self._hold_timers[outgoing.thread] = self._spawn(self._release_later(outgoing.thread, hold_s))
            return
        first_wait = (fault.delay_ms or 0) / 1000 if fault is not None and mode == "delay" else 0.0
        self._spawn(
            self._deliver(outgoing, first_wait, duplicate=mode == "duplicate", forged=mode == "forged")
        )

    def _take_fault(self, outgoing: Outgoing) -> NotifyFaultSpec | None:
        for fault in list(self._faults.values()):
            if any(outgoing.match.get(k) != v for k, v in fault.spec.matchers().items()):
                continue
            if not fault.spec.fires():
                continue
            if fault.spec.used_up:
                del self._faults[fault.id]
            return fault.spec
        return None

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _release(self, thread: str) -> None:
        timer = self._hold_timers.pop(thread, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()  # released early: nothing is left for it to wait for
        for outgoing in self._held.pop(thread, []):
            self._spawn(self._deliver(outgoing, 0.0))

    async def _release_later(self, thread: str, hold_s: float) -> None:
        await asyncio.sleep(hold_s)
        self._release(thread)

    async def _deliver(
        self, outgoing: Outgoing, first_wait: float, *, duplicate: bool = False, forged: bool = False
    ) -> None:
        if first_wait:
            await asyncio.sleep(first_wait)
        if forged:  # an attacker's copy goes first, once: a forger does not retry
            await self._attempt(outgoing, 1, body=outgoing.forge(), forged=True)
        for attempt in range(1, len(self.schedule_s) + 2):
            if attempt > 1:
                await asyncio.sleep(self.schedule_s[attempt - 2] * self.scale)
            delivered = await self._attempt(outgoing, attempt)
            if attempt == 1:
                if duplicate:  # the same notification once more, right after the first
                    await self._attempt(outgoing, attempt, duplicate=True)
                self._release(outgoing.thread)  # anything held back to arrive after this one
            if delivered:
                return
        self.control.record(
            self.provider,
            f"{self.provider}.notify_gave_up",
            outgoing.merchant_id,
            url=outgoing.url,
            **outgoing.fields,
        )

    async def _attempt(
        self,
        outgoing: Outgoing,
        attempt: int,
        *,
        body: bytes | None = None,
        duplicate: bool = False,
        forged: bool = False,
    ) -> bool:
        headers = {"content-type": outgoing.content_type}
        content = outgoing.body if body is None else body
        status: int | None = None
        full_answer = ""
        error: str | None = None
        try:
            client = self.client or self._own_client()
            response = await client.post(
                outgoing.url, content=content, headers=headers, timeout=ATTEMPT_TIMEOUT_S
            )
            status = response.status_code
            full_answer = response.text
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a refused connection, a timeout, an app that raised over ASGI
            error = f"{type(exc).__name__}: {exc}"[:LOGGED_ANSWER_LIMIT]
        delivered = status is not None and self.delivered(status, full_answer)
        self.control.record(
            self.provider,
            f"{self.provider}.notify",
            outgoing.merchant_id,
            url=outgoing.url,
            attempt=attempt,
            duplicate=duplicate,
            forged=forged,
            **outgoing.fields,
            status=status,
            answer=full_answer[:LOGGED_ANSWER_LIMIT],
            error=error,
            delivered=delivered,
        )
        return delivered
