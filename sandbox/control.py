"""The control plane every sandbox provider shares: event log, fault rules, movable clock, reset.

Providers register themselves (see `Provider`); the control plane knows nothing of their wire
protocols. `control_router` is its HTTP face under /_control (JSON, unsigned: sandbox only).
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp

from sandbox.testvalues import fixed_values

FaultAction = Literal[
    "error_500",
    "error_500_after_apply",
    "delay",
    "hang",
    "bad_signature",
    "drop_after_apply",
    "delay_after_apply",
]

# Defaults when a rule gives no delay_ms: "hang" is long enough that any sane client times out.
DEFAULT_DELAY_MS: dict[str, int] = {"delay": 1_000, "hang": 60_000, "delay_after_apply": 30_000}
EVENT_LOG_LIMIT = 100_000  # oldest events are dropped first; load tests must not exhaust memory
SENSITIVE_KEYS = frozenset({"pin", "secret", "password"})


class SimulatedDrop(RuntimeError):
    """Raised by a provider after applying an operation, so the response never arrives intact."""


class FaultMatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_ref: str | None = None
    card_no: str | None = None


class FaultRuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str
    operation: str = "*"
    action: FaultAction
    delay_ms: int | None = Field(default=None, ge=0)
    times: int = Field(default=1, description="how many matching requests it hits; -1 = until cleared")
    match: FaultMatch | None = None

    @field_validator("times")
    @classmethod
    def _times_positive_or_forever(cls, times: int) -> int:
        if times != -1 and times < 1:
            raise ValueError("times must be >= 1, or -1 for until cleared")
        return times


class FaultRule(FaultRuleIn):
    id: str


@dataclass(frozen=True)
class FaultEffect:
    """What a provider does around applying an operation; the same for fault rules and magic values."""

    sleep_before_s: float = 0.0
    error_before: bool = False
    error_after: bool = False
    drop_after: bool = False
    bad_signature: bool = False
    sleep_after_s: float = 0.0


def fault_effect(action: str, delay_ms: int | None) -> FaultEffect:
    seconds = (delay_ms if delay_ms is not None else DEFAULT_DELAY_MS.get(action, 0)) / 1000
    # delay/hang hold the request *before* it is applied: a client that gives up first leaves a
    # request that still lands later (the late-arrival case). delay_after_apply holds the answer.
    effects = {
        "error_500": FaultEffect(error_before=True),
        "error_500_after_apply": FaultEffect(error_after=True),
        "delay": FaultEffect(sleep_before_s=seconds),
        "hang": FaultEffect(sleep_before_s=seconds),
        "bad_signature": FaultEffect(bad_signature=True),
        "drop_after_apply": FaultEffect(drop_after=True),
        "delay_after_apply": FaultEffect(sleep_after_s=seconds),
    }
    return effects[action]


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
    app: ASGIApp  # mounted at /{name}

    def control_router(self) -> APIRouter | None: ...

    async def reset(self) -> None: ...


class ControlPlane:
    def __init__(self) -> None:
        self.providers: dict[str, Provider] = {}
        self.offset_seconds = 0
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENT_LOG_LIMIT)
        self._seq = 0
        self._faults: dict[str, FaultRule] = {}

    def register(self, provider: Provider) -> None:
        self.providers[provider.name] = provider

    # --- clock -------------------------------------------------------------------------------
    def now(self) -> float:
        """What every provider considers "now" (Unix seconds), after the tester's clock offset."""
        return time.time() + self.offset_seconds

    # --- event log ---------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return self._seq

    def record(self, provider: str, kind: str, merchant_id: str | None, **fields: Any) -> dict[str, Any]:
        # seq never restarts, not even on reset, so a reader's since_seq cursor stays valid.
        self._seq += 1
        event = {
            "seq": self._seq,
            "time": iso_utc(self.now(), millis=True),
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
        """The first rule (oldest first) hitting this request, with one use of it consumed."""
        for rule in list(self._faults.values()):
            if rule.provider != provider or rule.operation not in ("*", operation):
                continue
            wanted = rule.match.model_dump(exclude_none=True) if rule.match else {}
            if any(fields.get(key) != value for key, value in wanted.items()):
                continue
            if rule.times > 0:
                rule.times -= 1
                if rule.times == 0:
                    del self._faults[rule.id]
            return rule
        return None

    # --- reset -------------------------------------------------------------------------------
    async def reset(self) -> None:
        self._events.clear()
        self._faults.clear()
        self.offset_seconds = 0
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
        rule = control.add_fault(spec)
        return {"id": rule.id, "rule": rule.model_dump()}

    @router.get("/faults")
    async def list_faults() -> dict[str, Any]:
        return {"faults": [rule.model_dump() for rule in control.faults()]}

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

    @router.get("/test-values")
    async def test_values() -> dict[str, Any]:
        return fixed_values()

    for name, provider in control.providers.items():
        extra = provider.control_router()
        if extra is not None:
            router.include_router(extra, prefix=f"/{name}")
    return router


def _clock(control: ControlPlane) -> dict[str, Any]:
    now = control.now()
    return {"offset_seconds": control.offset_seconds, "now": iso_utc(now), "unix": int(now)}
