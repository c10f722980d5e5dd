"""The delivery worker: outbox -> per-school sequence -> one delivery per endpoint -> POST.

Every gateway process runs it (started with the app, like the recovery worker). Two stages:

- **relay**: one relay at a time (a transaction-scoped advisory lock on PostgreSQL; SQLite
  serves one process) takes committed events without a ``sequence`` and numbers them per
  school after the highest number given so far, then writes a ``webhook_deliveries`` row for
  each enabled endpoint that wants the type. Numbers are given after commit, so a transaction
  that commits late never gets a number below one a receiver has already listed
  (``GET …/events?after_sequence=`` has no gaps).
- **deliver**: a due delivery is leased by moving its ``next_attempt_at`` past the longest an
  attempt can take (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so processes never take the same
  row), then POSTed through ``gateway.outbound`` (the guard judges it again; no redirects)
  with Standard Webhooks headers signed afresh for this attempt. Attempts run side by side,
  at most ``per_endpoint`` at a time for one endpoint, so a slow or dead endpoint holds only
  its own slots. A process that dies mid-attempt leaves a lease that runs out within
  ``LEASE``; the delivery is then attempted again (at least once, never lost).

A failure is retried after the next delay of the schedule (jittered); past the last one the
delivery is ``failed``. An endpoint none of whose deliveries succeeded for
``disable_after`` is disabled (``disabled_reason: failing``), audited, and the school's
other endpoints get a ``webhook_endpoint.disabled`` event.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, text
from standardwebhooks.webhooks import Webhook

from gateway import __version__
from gateway.metrics import (
    WEBHOOK_BACKLOG,
    WEBHOOK_DELIVERIES,
    WEBHOOK_DISABLED,
    WEBHOOK_DISABLED_REASONS,
    WEBHOOK_OLDEST,
)
from gateway.outbound import Outbound, OutboundRefused
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.settings import Environment
from gateway.store.db import Database
from gateway.store.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_id
from gateway.webhooks.endpoints import WebhookEndpoints
from gateway.webhooks.outbox import emit

__all__ = ["LEASE", "TEST", "WebhookDeliverer", "event_body", "event_document"]

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=30)  # > the attempt's time limit: a lease never runs out mid-attempt
ACTOR = "system:webhooks"
MAX_ANSWER = 1024  # bytes of an endpoint's answer kept per attempt
JITTER = 0.1
TEST = "webhook_endpoint.test"  # POST …/webhook-endpoints/{id}/test: delivered to that endpoint only
_RELAY_LOCK = int.from_bytes(hashlib.sha256(b"campuspay-webhook-relay").digest()[:8], "big", signed=True)


def event_document(event: OutboxEvent) -> dict[str, Any]:
    """An event as endpoints receive it and ``GET …/events`` lists it (CONTRACT.md, "Events and
    webhooks"); ``data.version`` is the resource's version (see ``relay``)."""
    return {
        "id": event.id,
        "type": event.event_type,
        "created_at": event.created_at.isoformat(),
        "school_id": event.school_id,
        "sequence": event.sequence,
        "data": {**event.payload.get("data", {}), "version": event.resource_version},
    }


def event_body(event: OutboxEvent) -> str:
    """The JSON every endpoint receives for ``event``."""
    return json.dumps(event_document(event), separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class _Claim:
    delivery_id: str
    endpoint_id: str
    lease: datetime


@dataclass(frozen=True)
class _Result:
    status_code: int | None
    error: str | None
    duration_ms: int
    answer: str | None
    kind: str = "succeeded"  # one of metrics.WEBHOOK_DELIVERY_RESULTS

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookDeliverer:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        endpoints: WebhookEndpoints,
        outbound: Outbound,
        *,
        env: Environment,
        clock: Callable[[], datetime],
        schedule: Sequence[float],
        timeout: float,
        interval: float,
        disable_after: timedelta,
        per_endpoint: int = 4,
        max_in_flight: int = 64,
        batch: int = 500,
        rng: random.Random | None = None,
    ) -> None:
        self.db, self.keyring, self.endpoints, self.outbound = db, keyring, endpoints, outbound
        self.env, self.clock, self.schedule = env, clock, tuple(schedule)
        self.timeout, self.interval, self.disable_after = timeout, interval, disable_after
        self.per_endpoint, self.max_in_flight, self.batch = per_endpoint, max_in_flight, batch
        self.rng = rng or random.Random()
        self._busy: Counter[str] = Counter()  # endpoint id -> attempts in flight in this process
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._relay_lock = asyncio.Lock()

    # -- relay ----------------------------------------------------------------------------

    async def relay(self) -> int:
        """Number the committed events not numbered yet and fan them out; how many."""
        async with self._relay_lock, self.db.transaction() as session:
            if not self.db.is_sqlite:
                got = await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _RELAY_LOCK})
                if not got.scalar():
                    return 0  # another process is relaying; it takes these
            events = list(
                (
                    await session.execute(
                        select(OutboxEvent)
                        .where(OutboxEvent.sequence.is_(None))
                        .order_by(OutboxEvent.created_at, OutboxEvent.id)
                        .limit(self.batch)
                    )
                ).scalars()
            )
            if not events:
                return 0
            schools = sorted({e.school_id for e in events})
            highest = await session.execute(
                select(OutboxEvent.school_id, func.max(OutboxEvent.sequence))
                .where(OutboxEvent.school_id.in_(schools))
                .group_by(OutboxEvent.school_id)
            )
            last: dict[str, int | None] = {school: number for school, number in highest}
            resources = sorted({e.resource_id for e in events if e.resource_id is not None})
            versions: dict[str, int | None] = {}
            if resources:
                found = await session.execute(
                    select(OutboxEvent.resource_id, func.max(OutboxEvent.resource_version))
                    .where(OutboxEvent.resource_id.in_(resources))
                    .group_by(OutboxEvent.resource_id)
                )
                versions = {resource: version for resource, version in found if resource is not None}
            endpoints = list(
                (
                    await session.execute(
                        select(WebhookEndpoint).where(
                            WebhookEndpoint.school_id.in_(schools), WebhookEndpoint.status == "enabled"
                        )
                    )
                ).scalars()
            )
            now = self.clock()
            for event in events:
                number = (last.get(event.school_id) or 0) + 1
                last[event.school_id] = number
                event.sequence, event.relayed_at = number, now
                if event.resource_id is not None:
                    # A resource's changes lock its row, so they commit, and are relayed, in the
                    # order they were made: numbering here orders them for the receiver.
                    version = (versions.get(event.resource_id) or 0) + 1
                    versions[event.resource_id] = event.resource_version = version
                # a test event is for the one endpoint it was sent to, whatever the others want
                target = (
                    event.payload.get("data", {}).get("endpoint_id") if event.event_type == TEST else None
                )
                for endpoint in endpoints:
                    if endpoint.school_id != event.school_id:
                        continue
                    if target is not None:
                        if endpoint.id != target:
                            continue
                    elif endpoint.event_types is not None and event.event_type not in endpoint.event_types:
                        continue
                    session.add(
                        WebhookDelivery(
                            id=new_id("whd"),
                            school_id=event.school_id,
                            endpoint_id=endpoint.id,
                            event_id=event.id,
                            state="pending",
                            next_attempt_at=now,
                            created_at=now,
                            updated_at=now,
                        )
                    )
            return len(events)

    # -- deliver --------------------------------------------------------------------------

    async def _claim(self, room: int) -> list[_Claim]:
        now = self.clock()
        full = [e for e, n in self._busy.items() if n >= self.per_endpoint]
        query = (
            select(WebhookDelivery)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.state == "pending",
                WebhookDelivery.next_attempt_at <= now,
                WebhookEndpoint.status == "enabled",
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(room * 4)
        )
        if full:
            query = query.where(WebhookDelivery.endpoint_id.not_in(full))
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
        claims: list[_Claim] = []
        taken: Counter[str] = Counter()
        async with self.db.transaction() as session:
            for row in (await session.execute(query)).scalars():
                if len(claims) >= room:
                    break
                if self._busy[row.endpoint_id] + taken[row.endpoint_id] >= self.per_endpoint:
                    continue  # this endpoint's slots are full; the others go on
                lease = now + LEASE
                row.next_attempt_at = lease
                taken[row.endpoint_id] += 1
                claims.append(_Claim(row.id, row.endpoint_id, lease))
        return claims

    async def dispatch(self) -> int:
        """Lease what is due (as much as there is room for) and start its attempts."""
        room = self.max_in_flight - len(self._tasks)
        if room <= 0:
            return 0
        claims = await self._claim(room)
        for claim in claims:
            self._busy[claim.endpoint_id] += 1
            task = asyncio.create_task(self._run(claim), name=f"campuspay-webhook-{claim.delivery_id}")
            self._tasks.add(task)
        return len(claims)

    async def run_once(self) -> int:
        """Relay, then attempt everything due and wait for the attempts (tests, the CLI)."""
        await self.relay()
        started = await self.dispatch()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        return started

    async def _run(self, claim: _Claim) -> None:
        try:
            await self._attempt(claim)
        except Exception:
            log.exception(
                "webhook delivery %s failed unexpectedly; retried after its lease", claim.delivery_id
            )
        finally:
            self._busy[claim.endpoint_id] -= 1
            if self._busy[claim.endpoint_id] <= 0:
                del self._busy[claim.endpoint_id]
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)

    async def _attempt(self, claim: _Claim) -> None:
        async with self.db.transaction() as session:
            delivery = await session.get(WebhookDelivery, claim.delivery_id)
            endpoint = await session.get(WebhookEndpoint, claim.endpoint_id)
            event = await session.get(OutboxEvent, delivery.event_id) if delivery is not None else None
        if delivery is None or endpoint is None or event is None:
            return  # the endpoint was deleted meanwhile
        if endpoint.status != "enabled":
            await self._release(claim)
            return
        result = await self._post(endpoint, event)
        WEBHOOK_DELIVERIES.labels(result.kind).inc()
        await self._record(claim, result)

    async def _post(self, endpoint: WebhookEndpoint, event: OutboxEvent) -> _Result:
        body = event_body(event)
        # The timestamp the receiver checks against its own clock (5 min tolerance in the
        # Standard Webhooks libraries): the wall clock, whatever clock schedules retries.
        signed_at = datetime.now(UTC)
        signatures = " ".join(
            Webhook(secret).sign(event.id, signed_at, body)
            for secret in self.endpoints.secrets(endpoint, self.clock())
        )
        headers = {
            "content-type": "application/json",
            "user-agent": f"CampusPay-Webhooks/{__version__}",
            "webhook-id": event.id,
            "webhook-timestamp": str(int(signed_at.timestamp())),
            "webhook-signature": signatures,
        }
        started = time.perf_counter()

        def result(status: int | None, error: str | None, answer: bytes = b"", kind: str = "") -> _Result:
            elapsed = int((time.perf_counter() - started) * 1000)
            text_ = answer[:MAX_ANSWER].decode("utf-8", "replace") if answer else None
            if not kind:
                kind = "succeeded" if status is not None and 200 <= status < 300 else "rejected"
            return _Result(status, error[:200] if error else None, elapsed, text_, kind)

        if self.env is Environment.PRODUCTION and not endpoint.url.startswith("https://"):
            return result(None, "production delivers over https only", kind="not_allowed")
        client = self.outbound.client(endpoint.school_id)
        answer = b""
        try:
            async with asyncio.timeout(self.timeout):
                async with client.stream(
                    "POST", endpoint.url, content=body.encode(), headers=headers, timeout=self.timeout
                ) as response:
                    async for chunk in response.aiter_bytes():
                        answer += chunk
                        if len(answer) >= MAX_ANSWER:
                            break
                    return result(response.status_code, None, answer)
        except (TimeoutError, httpx.TimeoutException):
            return result(None, f"no answer within {self.timeout:g} s", kind="timeout")
        except httpx.HTTPError as exc:
            kind = "not_allowed" if isinstance(exc, OutboundRefused) else "connection_error"
            return result(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, kind=kind)

    async def _release(self, claim: _Claim) -> None:
        async with self.db.transaction() as session:
            row = await session.get(WebhookDelivery, claim.delivery_id, with_for_update=True)
            if row is not None and row.next_attempt_at == claim.lease:
                row.next_attempt_at = self.clock()

    def _delay(self, attempts: int) -> timedelta | None:
        """When to try again after ``attempts`` failed attempts; None: give up."""
        if attempts > len(self.schedule):
            return None
        base = self.schedule[attempts - 1]
        return timedelta(seconds=base * self.rng.uniform(1 - JITTER, 1 + JITTER))

    async def _record(self, claim: _Claim, result: _Result) -> None:
        now = self.clock()
        async with self.db.transaction() as session:
            row = await session.get(WebhookDelivery, claim.delivery_id, with_for_update=True)
            if row is None:
                return
            ours = row.next_attempt_at == claim.lease  # else our lease ran out and another took it
            row.attempts += 1
            session.add(
                WebhookAttempt(
                    delivery_id=row.id,
                    endpoint_id=row.endpoint_id,
                    event_id=row.event_id,
                    attempt=row.attempts,
                    status_code=result.status_code,
                    error=result.error,
                    duration_ms=result.duration_ms,
                    response_body=result.answer,
                    at=now,
                )
            )
            row.last_status_code, row.last_error, row.updated_at = result.status_code, result.error, now
            endpoint = await session.get(WebhookEndpoint, row.endpoint_id, with_for_update=True)
            if result.ok:
                row.state, row.next_attempt_at = "succeeded", None
                if endpoint is not None and endpoint.failing_since is not None:
                    endpoint.failing_since = None
                return
            if ours:
                delay = self._delay(row.attempts)
                if delay is None:
                    row.state, row.next_attempt_at = "failed", None
                else:
                    row.next_attempt_at = now + delay
            if endpoint is not None and endpoint.status == "enabled":
                await self._failing(session, endpoint, now)

    async def _failing(self, session: Any, endpoint: WebhookEndpoint, now: datetime) -> None:
        if endpoint.failing_since is None:
            endpoint.failing_since = now
            return
        if now - endpoint.failing_since < self.disable_after:
            return
        endpoint.status, endpoint.disabled_reason, endpoint.updated_at = "disabled", "failing", now
        await audit.append(
            session,
            self.keyring,
            chain=endpoint.school_id,
            actor=ACTOR,
            action="webhook_endpoint.disabled",
            object_type="webhook_endpoint",
            object_id=endpoint.id,
            data={"reason": "failing", "failing_since": endpoint.failing_since.isoformat()},
        )
        emit(
            session,
            school_id=endpoint.school_id,
            event_type="webhook_endpoint.disabled",
            data={
                "endpoint_id": endpoint.id,
                "status": "disabled",
                "disabled_reason": "failing",
                "failing_since": endpoint.failing_since.isoformat(),
            },
        )
        log.warning(
            "webhook endpoint %s disabled: every delivery failed since %s",
            endpoint.id,
            endpoint.failing_since,
        )

    # -- metrics --------------------------------------------------------------------------

    async def observe(self) -> None:
        """Set the backlog gauges from the database (at each scrape of /metrics): three
        aggregate reads on indexed columns, whatever the number of schools."""
        async with self.db.transaction(readonly=True) as session:
            unrelayed, oldest_event = (
                await session.execute(
                    select(func.count(), func.min(OutboxEvent.created_at)).where(
                        OutboxEvent.sequence.is_(None)
                    )
                )
            ).one()
            pending, oldest_delivery = (
                await session.execute(
                    select(func.count(), func.min(WebhookDelivery.created_at)).where(
                        WebhookDelivery.state == "pending"
                    )
                )
            ).one()
            found = await session.execute(
                select(WebhookEndpoint.disabled_reason, func.count())
                .where(WebhookEndpoint.status == "disabled")
                .group_by(WebhookEndpoint.disabled_reason)
            )
            disabled = {reason: count for reason, count in found}
        WEBHOOK_BACKLOG.labels("relay").set(unrelayed)
        WEBHOOK_BACKLOG.labels("delivery").set(pending)
        times = [t for t in (oldest_event, oldest_delivery) if t is not None]
        age = (self.clock() - min(times)).total_seconds() if times else 0.0
        WEBHOOK_OLDEST.set(max(age, 0.0))
        for reason in WEBHOOK_DISABLED_REASONS:
            WEBHOOK_DISABLED.labels(reason).set(disabled.get(reason, 0))

    # -- lifecycle ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self.relay()
                await self.dispatch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery pass failed; will retry")
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="campuspay-webhooks")

    async def stop(self) -> None:
        """Stop taking work and cut the attempts in flight: their leases run out and another
        pass (here after a restart, or in another process) attempts them again."""
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        self._tasks.clear()
