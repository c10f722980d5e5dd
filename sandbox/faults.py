"""Fault rules: what a tester scripts, when a rule fires, and what a provider does around applying.

Every provider runs an operation hit by a rule (or a magic amount) through `faulted`, so the
order of events -- hold, refuse, apply, answer, break the answer -- is written once. What the
wire shows for each action is in docs/test-values.md ("Fault rules").

Answers that come from *in front of* the provider (an HTML page from a proxy, a 429 or 503 from
a load balancer) are the same for every provider and never signed; answers from the provider
itself (its own 500, its auth refusal) are built by the provider in its own wire format.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

FaultAction = Literal[
    "error_500",
    "error_500_after_apply",
    "delay",
    "hang",
    "bad_signature",
    "drop_after_apply",
    "delay_after_apply",
    "reset_after_apply",
    "truncate_after_apply",
    "html_200",
    "html_200_after_apply",
    "auth_refusal",
    "throttle_429",
    "unavailable_503",
    "query_lag",
    "bill_late",
    "bill_partial",
    "bill_row_missing",
    "bill_amount_changed",
    "bill_extra_row",
]
ALL_ACTIONS: frozenset[str] = frozenset(FaultAction.__args__)  # type: ignore[attr-defined]
# Rules with these actions change a day's bill, not a request: they target a provider's bill
# operation only, are never taken by take_fault, and are applied together by sandbox/bills.py.
BILL_ACTIONS: frozenset[str] = frozenset(a for a in ALL_ACTIONS if a.startswith("bill_"))

# Defaults when a rule gives no delay_ms: "hang" is long enough that any sane client times out;
# for 429/503 it is the Retry-After; for query_lag how long an applied operation stays unseen.
DEFAULT_DELAY_MS: dict[str, int] = {
    "delay": 1_000,
    "hang": 60_000,
    "delay_after_apply": 30_000,
    "throttle_429": 1_000,
    "unavailable_503": 1_000,
    "query_lag": 5_000,
}
PROXY_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
)


class SimulatedDrop(RuntimeError):
    """Raised by a provider after applying an operation, so the response never arrives intact."""


class SimulatedReset(httpx.ReadError):
    """What a client sees when the sandbox resets its connection and no socket is there to reset.

    Over a real socket (sandbox/server.py) the connection is aborted with a TCP RST and nothing
    is raised. In-process (``httpx.ASGITransport``) there is no socket, so this is raised out of
    the app: an ``httpx.ReadError``, which is what httpx raises when a peer resets a connection.
    """


class Trigger(BaseModel):
    """When a matching request is hit: every time (default), every Nth time, or at random."""

    model_config = ConfigDict(extra="forbid")

    times: int = Field(default=1, description="how many requests it hits; -1 = until cleared")
    every: int | None = Field(default=None, ge=1, description="hit only every Nth matching request")
    probability: float | None = Field(default=None, gt=0, le=1, description="hit each match with this chance")
    seed: int | None = Field(default=None, description="seeds `probability`; chosen and shown when omitted")
    _seen: int = PrivateAttr(default=0)
    _rng: random.Random | None = PrivateAttr(default=None)

    @field_validator("times")
    @classmethod
    def _times_positive_or_forever(cls, times: int) -> int:
        if times != -1 and times < 1:
            raise ValueError("times must be >= 1, or -1 for until cleared")
        return times

    @model_validator(mode="after")
    def _one_way_to_fire(self) -> Trigger:
        if self.every is not None and self.probability is not None:
            raise ValueError("give every or probability, not both")
        if self.probability is not None and self.seed is None:
            self.seed = secrets.randbelow(2**31)  # shown in the rule, so the run can be repeated
        return self

    @property
    def matched(self) -> int:
        """Matching requests seen so far, hit or not."""
        return self._seen

    def fires(self) -> bool:
        """Called once per matching request: whether this one is hit (a hit uses one of `times`)."""
        self._seen += 1
        if self.every is not None and self._seen % self.every:
            return False
        if self.probability is not None:
            if self._rng is None:
                self._rng = random.Random(self.seed)
            if self._rng.random() >= self.probability:
                return False
        if self.times > 0:
            self.times -= 1
        return True

    @property
    def used_up(self) -> bool:
        return self.times == 0


class FaultMatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_ref: str | None = None
    card_no: str | None = None


class FaultRuleIn(Trigger):
    provider: str
    operation: str = "*"
    action: FaultAction
    delay_ms: int | None = Field(default=None, ge=0)
    match: FaultMatch | None = None


class FaultRule(FaultRuleIn):
    id: str

    def listing(self) -> dict[str, Any]:
        return {**self.model_dump(), "matched": self.matched}


@dataclass(frozen=True)
class FrontAnswer:
    """An answer from in front of the provider (a proxy or load balancer), never signed."""

    status: int
    body: bytes
    content_type: str
    retry_after_s: int | None = None

    def response(self) -> Response:
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else None
        return Response(self.body, status_code=self.status, media_type=self.content_type, headers=headers)


@dataclass(frozen=True)
class FaultEffect:
    """What a provider does around applying an operation; the same for fault rules and magic values."""

    sleep_before_s: float = 0.0
    front_before: FrontAnswer | None = None
    refuse: bool = False  # answer the provider's own (signed) refusal of the caller's credentials
    error_before: bool = False
    error_after: bool = False
    front_after: FrontAnswer | None = None
    drop_after: bool = False
    reset_after: bool = False
    truncate_after: bool = False
    bad_signature: bool = False
    sleep_after_s: float = 0.0
    lag_s: float = 0.0  # query_lag: applied operations younger than this are not found


def _retry_after(seconds: float) -> int:
    return max(1, round(seconds))


def fault_effect(action: str, delay_ms: int | None) -> FaultEffect:
    seconds = (delay_ms if delay_ms is not None else DEFAULT_DELAY_MS.get(action, 0)) / 1000
    html = FrontAnswer(200, PROXY_ERROR_PAGE, "text/html")
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
        "reset_after_apply": FaultEffect(reset_after=True),
        "truncate_after_apply": FaultEffect(truncate_after=True),
        "html_200": FaultEffect(front_before=html),
        "html_200_after_apply": FaultEffect(front_after=html),
        "auth_refusal": FaultEffect(refuse=True),
        "throttle_429": FaultEffect(
            front_before=FrontAnswer(429, b"Too Many Requests", "text/plain", _retry_after(seconds))
        ),
        "unavailable_503": FaultEffect(
            front_before=FrontAnswer(503, b"Service Unavailable", "text/plain", _retry_after(seconds))
        ),
        "query_lag": FaultEffect(lag_s=seconds),
    }
    return effects.get(action, FaultEffect())  # bill actions change no request


class ConnectionBreaker(Protocol):
    """The server side of a client's connection (sandbox/server.py), for faults below HTTP."""

    async def reset(self, client: tuple[str, int] | None) -> bool:
        """Abort the connection with a TCP RST; False when there is no such socket."""

    async def close(self, client: tuple[str, int] | None) -> bool:
        """Close the connection after what was written; False when there is no such socket."""


class ResetResponse(Response):
    """No answer: the connection it came on is reset (see SimulatedReset)."""

    def __init__(self, breaker: ConnectionBreaker | None, what: str) -> None:
        super().__init__()
        self.breaker, self.what = breaker, what

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.breaker is not None and await self.breaker.reset(scope.get("client")):
            return
        raise SimulatedReset(f"connection reset after {self.what} (sandbox fault)")


class TruncatedResponse(Response):
    """The provider's answer with its full Content-Length, cut off half-way through the body.

    Over a real socket the connection is closed after the first half; in-process the half is
    all the body there is."""

    def __init__(self, whole: Response, breaker: ConnectionBreaker | None) -> None:
        super().__init__(status_code=whole.status_code)
        self.whole, self.breaker = whole, breaker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytes(self.whole.body)
        await send(
            {
                "type": "http.response.start",
                "status": self.whole.status_code,
                "headers": self.whole.raw_headers,
            }
        )
        part = body[: len(body) // 2]
        if self.breaker is not None:
            await send({"type": "http.response.body", "body": part, "more_body": True})
            if not await self.breaker.close(scope.get("client")):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send({"type": "http.response.body", "body": part, "more_body": False})


T = TypeVar("T")


async def faulted(
    effect: FaultEffect,
    *,
    apply: Callable[[], Awaitable[T]],
    answer: Callable[[T, bool], Response],
    error: Callable[[], Response],
    refusal: Callable[[], Response] | None,
    breaker: ConnectionBreaker | None,
    commit: Callable[[], None],
    what: str,
) -> Response:
    """Run one operation inside a fault: `apply` moves the money, `answer(result, corrupt)` is the
    provider's signed answer, `error()` its own error answer, `refusal()` its auth refusal,
    `commit()` keeps the books (a sandbox killed while the answer is held still has them)."""
    if effect.sleep_before_s:
        await asyncio.sleep(effect.sleep_before_s)
    if effect.front_before is not None:
        return effect.front_before.response()
    if effect.refuse:
        if refusal is None:
            raise ValueError(f"{what}: this provider has no refusal to answer with")
        return refusal()
    if effect.error_before:
        return error()
    result = await apply()
    commit()
    if effect.error_after:
        return error()
    if effect.front_after is not None:
        return effect.front_after.response()
    if effect.drop_after:
        raise SimulatedDrop(f"{what} applied; response dropped on purpose")
    if effect.reset_after:
        return ResetResponse(breaker, what)
    if effect.sleep_after_s:
        await asyncio.sleep(effect.sleep_after_s)
    whole = answer(result, effect.bad_signature)
    if effect.truncate_after:
        return TruncatedResponse(whole, breaker)
    return whole
