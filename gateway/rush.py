"""``campuspay demo``: a simulated lunch rush against a running gateway (CONTRACT.md, "Running it").

It reads the demo.json that ``campuspay serve --demo`` wrote and sends a queue of canteen payments
from the demo's tills at once, the way a lunch queue looks: cards of the sandbox's test students
(one with PIN thresholds, one low on money, one reported lost) mixed with faces (a consented,
enrolled student, and one without consent, whose face payment is refused while their card works).
A card payment refused with ``pin_required`` is tried again as a till would: a new attempt on the
same order, with the PIN typed in. Every call goes through ``CampusPayClient``, so it is signed,
idempotent and retried exactly as a vendor's terminal would be.

Declines are outcomes, not errors: the exit status is non-zero only when a payment could not be
completed at all (transport failures, 5xx, a payment still ``processing`` at the end).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.client import CampusPayClient, CampusPayError

__all__ = ["Payer", "RushSummary", "load_demo", "payer_mix", "percentile", "run_rush", "rush_queue"]

# canteen prices, fen: a bowl of noodles to a full set meal
MEAL_PRICES = (600, 800, 1000, 1200, 1500)


@dataclass(frozen=True)
class Payer:
    """One kind of customer in the queue; ``weight`` is how often they turn up."""

    label: str
    method: str  # "card" | "face"
    weight: float
    card_no: str | None = None
    pin: str | None = None
    face_student: str | None = None


@dataclass
class RushSummary:
    payments: int
    concurrency: int
    elapsed: float = 0.0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, outcome) -> n
    latencies: dict[str, list[float]] = field(default_factory=dict)  # method -> seconds
    amounts: Counter[str] = field(default_factory=Counter)  # outcome -> fen

    @property
    def errors(self) -> int:
        return sum(n for (_, outcome), n in self.outcomes.items() if outcome.startswith("error"))

    def to_json(self) -> dict[str, Any]:
        everything = [s for values in self.latencies.values() for s in values]
        return {
            "payments": self.payments,
            "concurrency": self.concurrency,
            "elapsed_seconds": round(self.elapsed, 3),
            "payments_per_second": round(self.payments / self.elapsed, 2) if self.elapsed else None,
            "latency_ms": {
                method: _latency_figures(values)
                for method, values in sorted({**self.latencies, "all": everything}.items())
            },
            "outcomes": [
                {"method": method, "outcome": outcome, "count": n}
                for (method, outcome), n in sorted(self.outcomes.items())
            ],
            "fen": dict(sorted(self.amounts.items())),
            "errors": self.errors,
        }


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values`` (not empty)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def _latency_figures(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": round(percentile(values, 50) * 1000, 1),
        "p95": round(percentile(values, 95) * 1000, 1),
        "p99": round(percentile(values, 99) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def load_demo(path: Path) -> dict[str, Any]:
    """demo.json, or a ValueError that says how to get one."""
    if not path.is_file():
        raise ValueError(f"{path} does not exist: start the gateway with `campuspay serve --demo` first")
    try:
        demo: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc
    for key in ("base_url", "devices", "stores", "cards"):
        if key not in demo:
            raise ValueError(f"{path} has no {key!r}: write it again with `campuspay serve --demo`")
    return demo


def payer_mix(demo: dict[str, Any], face_share: float) -> list[Payer]:
    """Who queues up: the demo's cards and face users, ``face_share`` of the weight on faces."""
    cards: list[Payer] = []
    for card in demo["cards"]:
        status = str(card.get("status", "")).upper()
        if status not in ("ACTIVE", "LOST"):
            continue  # a frozen card would only repeat what the lost one shows
        # most of the queue pays with well-funded cards; the odd one is low on money or lost
        weight = 0.3 if status == "LOST" or int(card.get("balance", 0)) < 5_000 else 1.0
        cards.append(
            Payer(
                label=f"card {card['card_no']} ({card.get('student_external_ref', '?')})",
                method="card",
                weight=weight,
                card_no=str(card["card_no"]),
                pin=card.get("pin"),
            )
        )
    faces: list[Payer] = []
    for user in demo.get("face", {}).get("users", []):
        if not user.get("enrolled_at_provider"):
            continue
        faces.append(
            Payer(
                label=f"face {user['student']}",
                method="face",
                weight=1.0 if user.get("consent") else 0.15,  # most faces in the queue have consent
                face_student=str(user["student"]),
            )
        )
    if not cards:
        raise ValueError("demo.json lists no usable cards")
    if not faces or face_share <= 0:
        return cards
    card_total, face_total = sum(p.weight for p in cards), sum(p.weight for p in faces)
    scale_faces = face_share / (1 - face_share) * card_total / face_total if face_share < 1 else None
    if scale_faces is None:
        return faces
    scaled = [Payer(p.label, p.method, p.weight * scale_faces, face_student=p.face_student) for p in faces]
    return cards + scaled


def rush_queue(
    demo: dict[str, Any],
    *,
    payments: int,
    face_share: float,
    seed: int | None,
    mix: list[Payer] | None = None,
) -> list[tuple[int, Payer, int]]:
    """The queue of a rush: (number, payer, price in fen), the same for the same seed. ``mix``
    replaces the demo's payers (the bench pays with well-funded test payers only)."""
    mix = mix or payer_mix(demo, face_share)
    rng = random.Random(seed)
    weights = [p.weight for p in mix]
    return [(n, rng.choices(mix, weights=weights)[0], rng.choice(MEAL_PRICES)) for n in range(payments)]


async def run_rush(
    demo_path: Path,
    *,
    payments: int,
    concurrency: int,
    face_share: float = 0.3,
    seed: int | None = None,
    on_done: Callable[[str, str], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    mix: list[Payer] | None = None,
) -> RushSummary:
    """Send ``payments`` payments, ``concurrency`` at a time, spread over the demo's devices."""
    demo = load_demo(demo_path)
    queue: asyncio.Queue[tuple[int, Payer, int]] = asyncio.Queue()
    for item in rush_queue(demo, payments=payments, face_share=face_share, seed=seed, mix=mix):
        queue.put_nowait(item)
    canteen = next((s for s in demo["stores"] if s.get("merchant_category") == "canteen"), demo["stores"][0])
    mint = demo.get("face", {}).get("mint_token", {})
    run_id = uuid.uuid4().hex[:8]
    summary = RushSummary(payments=payments, concurrency=concurrency)
    clients = [
        CampusPayClient.from_demo(demo_path, alg=device["alg"], transport=transport)
        for device in demo["devices"]
    ]
    async with httpx.AsyncClient(transport=transport, timeout=30) as sandbox:

        async def face_token(student: str) -> str:
            body = {**mint.get("body", {}), "student": student}
            r = await sandbox.post(mint["url"], json=body)
            r.raise_for_status()
            return str(r.json()["face_token"])

        async def pay(client: CampusPayClient, n: int, payer: Payer, amount: int, token: str | None) -> str:
            order = f"rush-{run_id}-{n:05d}"
            common = {"merchant_order_id": order, "amount": amount, "store_id": canteen["store_id"]}
            if payer.method == "face":
                assert token is not None
                credential: dict[str, str] = {"face_token": token}
            else:
                assert payer.card_no is not None
                credential = {"card_no": payer.card_no}
            result = await client.create_payment(method=payer.method, credential=credential, **common)
            body = result.body
            if body.get("failure_code") == "pin_required" and payer.pin:
                # the till asks for the PIN: a new attempt on the same order
                credential = {"card_no": str(payer.card_no), "pin": payer.pin}
                body = (await client.create_payment(method="card", credential=credential, **common)).body
                if body["status"] == "succeeded":
                    return "succeeded after PIN"
            if body["status"] == "failed":
                return f"failed: {body.get('failure_code')}"
            if body["status"] == "processing":
                return "error: still processing"
            return str(body["status"])

        async def till(client: CampusPayClient) -> None:
            while True:
                try:
                    n, payer, amount = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    # The face terminal's SDK hands over a token before the payment starts: minting
                    # it (a sandbox shortcut for a camera) is not part of the payment's latency.
                    token = await face_token(payer.face_student) if payer.face_student else None
                except (httpx.HTTPError, OSError) as exc:
                    summary.outcomes[(payer.method, f"error: face token {type(exc).__name__}")] += 1
                    if on_done is not None:
                        on_done(payer.method, "error")
                    continue
                started = time.perf_counter()
                try:
                    outcome = await pay(client, n, payer, amount, token)
                except CampusPayError as exc:
                    outcome = f"error: {exc.code}"
                except (httpx.HTTPError, OSError) as exc:
                    outcome = f"error: {type(exc).__name__}"
                summary.latencies.setdefault(payer.method, []).append(time.perf_counter() - started)
                summary.outcomes[(payer.method, outcome)] += 1
                summary.amounts[outcome.split(":")[0].split(" after")[0]] += amount
                if on_done is not None:
                    on_done(payer.method, outcome)

        started = time.perf_counter()
        try:
            await asyncio.gather(*(till(clients[i % len(clients)]) for i in range(concurrency)))
        finally:
            summary.elapsed = time.perf_counter() - started
            for client in clients:
                await client.aclose()
    return summary
