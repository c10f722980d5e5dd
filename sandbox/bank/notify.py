"""Asynchronous notifications to a transaction's ``backUrl`` (docs/bank-protocol.md).

A form POST signed like a response in the merchant's mode; delivered when the answer is HTTP 200
(any body). The first attempt goes at once, retries after 60, 120, 240 and 480 s (5 attempts),
each wait multiplied by ``scale`` (``POST /_control/bank/notify-schedule``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from sandbox.bank.wire import FORM_TYPE, encode_form
from sandbox.control import ControlPlane

PROVIDER = "bank"
RETRY_SCHEDULE_S = (60, 120, 240, 480)
ATTEMPT_TIMEOUT_S = 10.0
LOGGED_ANSWER_LIMIT = 200


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scale: float = Field(gt=0, le=1000, description="multiplies every wait of the retry schedule")


class Notifier:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.client: httpx.AsyncClient | None = None  # None: a fresh client per attempt
        self.scale = 1.0
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "first_attempt_s": 0,
            "retry_waits_s": [wait * self.scale for wait in RETRY_SCHEDULE_S],
            "attempts": 1 + len(RETRY_SCHEDULE_S),
            "pending_deliveries": self.pending,
        }

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def reset(self) -> None:
        await self.aclose()
        self.scale = 1.0

    async def aclose(self) -> None:
        """Stop every pending delivery (the client, if given, stays the caller's to close)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def send(self, mer_id: str, url: str, build: Callable[[], dict[str, str]]) -> None:
        """Deliver the signed fields ``build`` returns (built once) to ``url``."""
        self._spawn(self._deliver(mer_id, url, build()))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, mer_id: str, url: str, fields: dict[str, str]) -> None:
        for attempt in range(1, len(RETRY_SCHEDULE_S) + 2):
            if attempt > 1:
                await asyncio.sleep(RETRY_SCHEDULE_S[attempt - 2] * self.scale)
            if await self._attempt(mer_id, url, fields, attempt):
                return
        self.control.record(
            PROVIDER,
            "bank.notify_gave_up",
            mer_id,
            url=url,
            order_id=fields.get("orderId"),
            query_id=fields.get("queryId"),
        )

    async def _attempt(self, mer_id: str, url: str, fields: dict[str, str], attempt: int) -> bool:
        body = encode_form(fields)
        headers = {"content-type": FORM_TYPE}
        status: int | None = None
        answer = ""
        error: str | None = None
        try:
            if self.client is not None:
                response = await self.client.post(
                    url, content=body, headers=headers, timeout=ATTEMPT_TIMEOUT_S
                )
            else:
                async with httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT_S) as client:
                    response = await client.post(url, content=body, headers=headers)
            status = response.status_code
            answer = response.text[:LOGGED_ANSWER_LIMIT]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a refused connection, a timeout, an app that raised over ASGI
            error = f"{type(exc).__name__}: {exc}"[:LOGGED_ANSWER_LIMIT]
        delivered = status == 200
        self.control.record(
            PROVIDER,
            "bank.notify",
            mer_id,
            url=url,
            attempt=attempt,
            order_id=fields.get("orderId"),
            query_id=fields.get("queryId"),
            txn_type=fields.get("txnType"),
            status=status,
            answer=answer,
            error=error,
            delivered=delivered,
        )
        return delivered
