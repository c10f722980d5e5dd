"""The control plane every sandbox provider shares: event log, fault rules, movable clocks, reset.

Providers register themselves (see `Provider`); the control plane knows nothing of their wire
protocols. `control_router` is its HTTP face under /_control (JSON, unsigned: sandbox only).
Fault rules themselves (what fires when, and what each action does) are in sandbox/faults.py.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict
from starlette.types import ASGIApp

from sandbox.faults import (
    BILL_ACTIONS,
    ConnectionBreaker,
    FaultEffect,
    FaultRule,
    FaultRuleIn,
    SimulatedDrop,
    SimulatedReset,
    fault_effect,
)
from sandbox.testvalues import fixed_values

# Re-exported: providers and testers import these from here.
__all__ = [
    "ControlPlane",
    "FaultEffect",
    "FaultRule",
    "FaultRuleIn",
    "Provider",
    "SimulatedDrop",
    "SimulatedReset",
    "control_router",
    "fault_effect",
    "iso_utc",
    "mask",
]

EVENT_LOG_LIMIT = 100_000  # oldest events are dropped first; load tests must not exhaust memory
SENSITIVE_KEYS = frozenset({"pin", "secret", "password"})


def mask(value: Any) -> Any:
    """A copy of a JSON-like value with PINs and secrets replaced, for the event log."""
    if isinstance(value, Mapping):
        return {k: ("****" if k in SENSITIVE_KEYS and v is not None else mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value


def iso_utc(unix: float, *, millis: bool = False) -> str:
    moment = datetime.fromtimestamp(unix, UTC)
    return moment.isoformat(timespec="milliseconds" if millis else "seconds").replace("+00:00", "Z")


class Provider(Protocol):
    """What a provider subpackage gives the sandbox app and the control plane."""

    name: str
    operations: frozenset[str]  # names fault rules may target, besides "*"
    actions: frozenset[str]  # the fault actions its rules may take (sandbox.faults.FaultAction)
    query_operations: frozenset[str]  # the operations a query_lag rule may target
    bill_operations: frozenset[str]  # the operations a bill_* rule may target (its bills)
    app: ASGIApp  # mounted at /{name}

    def control_router(self) -> APIRouter | None: ...

    async def reset(self) -> None: ...


class ControlPlane:
    def __init__(self) -> None:
        self.providers: dict[str, Provider] = {}
        self.offset_seconds = 0  # moves every provider's clock
        self.provider_offsets: dict[str, int] = {}  # one provider's clock skew, on top of that
        # The server's side of client connections, when the sandbox runs on real sockets
        # (sandbox/server.py): resets and truncations then happen on the wire.
        self.breaker: ConnectionBreaker | None = None
        self.on_commit: Callable[[], None] | None = None  # set when state is kept on disk
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENT_LOG_LIMIT)
        self._seq = 0
        self._faults: dict[str, FaultRule] = {}

    def register(self, provider: Provider) -> None:
        self.providers[provider.name] = provider

    # --- kept across restarts (sandbox/persist.py) ---------------------------------------------
    def commit(self) -> None:
        """Keep the providers' books now (with --state-dir): called right after a faulted
        operation is applied, before its answer is held or broken."""
        if self.on_commit is not None:
            self.on_commit()

    def snapshot(self) -> object:
        return {
            "seq": self._seq,
            "offset_seconds": self.offset_seconds,
            "provider_offsets": dict(self.provider_offsets),
        }

    def restore(self, snapshot: object) -> None:
        assert isinstance(snapshot, dict)
        # The sequence goes on from where it was, so a reader's since_seq cursor stays valid.
        self._seq = int(snapshot["seq"])
        self.offset_seconds = int(snapshot["offset_seconds"])
        self.provider_offsets = dict(snapshot["provider_offsets"])

    # --- clock -------------------------------------------------------------------------------
    def now(self, provider: str | None = None) -> float:
        """What a provider considers "now" (Unix seconds): real time plus the tester's offset and
        that provider's own skew."""
        skew = self.provider_offsets.get(provider, 0) if provider is not None else 0
        return time.time() + self.offset_seconds + skew

    # --- event log ---------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return self._seq

    def record(self, provider: str, kind: str, merchant_id: str | None, **fields: Any) -> dict[str, Any]:
        # seq never restarts, not even on reset, so a reader's since_seq cursor stays valid.
        self._seq += 1
        event = {
            "seq": self._seq,
            "time": iso_utc(self.now(provider), millis=True),
            "provider": provider,
            "kind": kind,
            "merchant_id": merchant_id,
            **mask(fields),
        }
        self._events.append(event)
        return event

    def events(
        self,
        provider: str | None = None,
        kind: str | None = None,
        merchant_id: str | None = None,
        since_seq: int = 0,
    ) -> list[dict[str, Any]]:
        return [
            e
            for e in self._events
            if e["seq"] > since_seq
            and (provider is None or e["provider"] == provider)
            and (kind is None or e["kind"] == kind)
            and (merchant_id is None or e["merchant_id"] == merchant_id)
        ]

    # --- faults ------------------------------------------------------------------------------
    def add_fault(self, spec: FaultRuleIn) -> FaultRule:
        rule = FaultRule(id=f"flt_{secrets.token_hex(6)}", **spec.model_dump())
        self._faults[rule.id] = rule
        return rule

    def faults(self) -> list[FaultRule]:
        return list(self._faults.values())

    def delete_fault(self, fault_id: str) -> bool:
        return self._faults.pop(fault_id, None) is not None

    def clear_faults(self) -> int:
        count = len(self._faults)
        self._faults.clear()
        return count

    def take_fault(self, provider: str, operation: str, fields: Mapping[str, Any]) -> FaultRule | None:
        """The first rule (oldest first) hitting this request, with one use of it consumed.

        A rule that matches but does not fire this time (every / probability) lets the next
        matching rule have a go."""
        for rule in list(self._faults.values()):
            if rule.provider != provider or rule.operation not in ("*", operation):
                continue
            if rule.action in BILL_ACTIONS:
                continue  # taken by take_bill_faults when the bill is made
            if rule.action == "query_lag" and operation not in self.providers[provider].query_operations:
                continue
            wanted = rule.match.model_dump(exclude_none=True) if rule.match else {}
            if any(fields.get(key) != value for key, value in wanted.items()):
                continue
            if not rule.fires():
                continue
            if rule.used_up:
                del self._faults[rule.id]
            return rule
        return None

    def take_bill_faults(self, provider: str, operation: str) -> list[FaultRule]:
        """Every bill_* rule hitting this bill (oldest first), one use of each consumed: a bill
        can be wrong in several ways at once."""
        taken = []
        for rule in list(self._faults.values()):
            if rule.provider != provider or rule.action not in BILL_ACTIONS or rule.operation != operation:
                continue
            if not rule.fires():
                continue
            if rule.used_up:
                del self._faults[rule.id]
            taken.append(rule)
        return taken

    # --- reset -------------------------------------------------------------------------------
    async def reset(self) -> None:
        self._events.clear()
        self._faults.clear()
        self.offset_seconds = 0
        self.provider_offsets.clear()
        for provider in self.providers.values():
            await provider.reset()


class ClockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offset_seconds: int


def control_router(control: ControlPlane) -> APIRouter:
    """The /_control endpoints; build it after every provider has registered."""
    router = APIRouter(tags=["control"])

    @router.post("/reset")
    async def reset() -> dict[str, Any]:
        await control.reset()
        return {"reset": True}

    @router.get("/events")
    async def events(
        provider: str | None = None,
        kind: str | None = None,
        merchant_id: str | None = None,
        since_seq: int = 0,
    ) -> dict[str, Any]:
        found = control.events(provider=provider, kind=kind, merchant_id=merchant_id, since_seq=since_seq)
        return {"events": found, "last_seq": control.last_seq}

    @router.post("/faults")
    async def add_fault(spec: FaultRuleIn) -> dict[str, Any]:
        provider = control.providers.get(spec.provider)
        if provider is None:
            known = sorted(control.providers)
            raise HTTPException(422, f"unknown provider {spec.provider!r}; known: {known}")
        if spec.operation != "*" and spec.operation not in provider.operations:
            known = ["*", *sorted(provider.operations)]
            raise HTTPException(422, f"unknown operation {spec.operation!r}; known: {known}")
        if spec.action not in provider.actions:
            known = sorted(provider.actions)
            raise HTTPException(422, f"{spec.provider} has no action {spec.action!r}; known: {known}")
        if spec.action in BILL_ACTIONS and spec.operation not in provider.bill_operations:
            known = sorted(provider.bill_operations)
            raise HTTPException(422, f"{spec.action} targets a bill operation: one of {known}")
        if spec.action == "query_lag" and spec.operation not in provider.query_operations:
            known = sorted(provider.query_operations)
            raise HTTPException(422, f"query_lag targets a query operation: one of {known}")
        rule = control.add_fault(spec)
        return {"id": rule.id, "rule": rule.listing()}

    @router.get("/faults")
    async def list_faults() -> dict[str, Any]:
        return {"faults": [rule.listing() for rule in control.faults()]}

    @router.delete("/faults")
    async def clear_faults() -> dict[str, Any]:
        return {"deleted": control.clear_faults()}

    @router.delete("/faults/{fault_id}")
    async def delete_fault(fault_id: str) -> dict[str, Any]:
        if not control.delete_fault(fault_id):
            raise HTTPException(404, f"no fault rule {fault_id!r}")
        return {"deleted": 1}

    @router.get("/clock")
    async def get_clock() -> dict[str, Any]:
        return _clock(control)

    @router.post("/clock")
    async def set_clock(body: ClockIn) -> dict[str, Any]:
        control.offset_seconds = body.offset_seconds
        return _clock(control)

    @router.post("/clock/{provider}")
    async def set_provider_clock(provider: str, body: ClockIn) -> dict[str, Any]:
        if provider not in control.providers:
            raise HTTPException(404, f"unknown provider {provider!r}; known: {sorted(control.providers)}")
        control.provider_offsets[provider] = body.offset_seconds
        return _clock(control)

    @router.get("/test-values")
    async def test_values() -> dict[str, Any]:
        return fixed_values()

    for name, provider in control.providers.items():
        extra = provider.control_router()
        if extra is not None:
            router.include_router(extra, prefix=f"/{name}")
    return router


def _clock(control: ControlPlane) -> dict[str, Any]:
    def face(now: float) -> dict[str, Any]:
        return {"now": iso_utc(now), "unix": int(now)}

    providers = {
        name: {"offset_seconds": control.provider_offsets.get(name, 0), **face(control.now(name))}
        for name in control.providers
    }
    return {"offset_seconds": control.offset_seconds, **face(control.now()), "providers": providers}
