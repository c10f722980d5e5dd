"""What the state machine runs on: one event loop per example, a switchable way into "the"
gateway (whichever process is alive), and signed device requests without client-side retries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from gateway.client import DeviceCredentials, sign_request

T = TypeVar("T")


class Loop:
    """Runs coroutines for a synchronous state machine. Every one of them runs inside one
    long-lived task, so an async context entered by one step (an app's lifespan) is left by a
    later step in the same task; background tasks (recovery workers, notifications) go on
    whenever a step runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]] | None]
        self._queue = asyncio.Queue()
        self._task = self.loop.create_task(self._serve())

    async def _serve(self) -> None:
        while (job := await self._queue.get()) is not None:
            work, done = job
            try:
                done.set_result(await work())
            except asyncio.CancelledError:
                done.cancel()
                raise
            except BaseException as exc:
                done.set_exception(exc)

    def run(self, work: Callable[[], Awaitable[T]]) -> T:
        done: asyncio.Future[T] = self.loop.create_future()
        self._queue.put_nowait((work, done))
        return self.loop.run_until_complete(done)

    def close(self) -> None:
        self._queue.put_nowait(None)
        self.loop.run_until_complete(self._task)
        rest = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in rest:
            task.cancel()

        async def gone() -> None:
            await asyncio.gather(*rest, return_exceptions=True)

        self.loop.run_until_complete(gone())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


class Switch(httpx.AsyncBaseTransport):
    """A way into whichever gateway is alive: ``target`` None while none is (a crash), so what
    is sent then is refused like a connection to a dead process."""

    def __init__(self, target: httpx.AsyncBaseTransport | None = None) -> None:
        self.target = target
        self.inside: set[asyncio.Future[None]] = set()  # requests still inside the app they went to

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.target is None:
            raise httpx.ConnectError("no gateway is running", request=request)
        done = asyncio.get_running_loop().create_future()
        self.inside.add(done)
        try:
            return await self.target.handle_async_request(request)
        finally:
            self.inside.discard(done)
            done.set_result(None)

    async def idle(self, within: float = 10.0) -> None:
        """Until the requests inside an app now have come out (before that app's database goes
        away: one still running would open connections nobody closes)."""
        if self.inside:
            await asyncio.wait(set(self.inside), timeout=within)


class Device:
    """Signed device requests, each sent once: the state machine sees every answer itself.
    ``now`` is the gateway's clock when it is movable (a terminal follows the ``Date`` header)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        creds: DeviceCredentials,
        public_base_url: str,
        now: Callable[[], int] | None = None,
    ) -> None:
        self.http, self.creds, self.public_base_url, self.now = http, creds, public_base_url, now

    async def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> httpx.Response:
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if content:
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers["Idempotency-Key"] = key
        request = self.http.build_request(method, path, content=content, headers=headers)
        created = self.now() if self.now is not None else None
        sign_request(request, self.creds, public_base_url=self.public_base_url, created=created)
        return await self.http.send(request)
