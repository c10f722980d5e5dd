"""The bench's path (a): the same payments as bare adapter calls against the sandbox, no gateway.

Run as a process of its own (``python -m gateway.bench.bare SPEC OUT``) so that its CPU time is
the adapters' alone: building the request, signing, the HTTP round trip, verifying the answer.
A card payment is one ``pay`` (again with the PIN when the card system asks for it, as a till
would); a face payment is ``identify`` then ``pay``, as the gateway does. Face tokens are minted
before the clock starts: a terminal's face SDK hands one over before any payment begins.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from adapters.base import CardCredential, FaceCredential, Outcome, PaymentRequest, ProviderConfig
from adapters.registry import default_registry

__all__ = ["run"]


async def _mint(sandbox: httpx.AsyncClient, mint: dict[str, Any], student: str) -> str:
    r = await sandbox.post(mint["url"], json={**mint.get("body", {}), "student": student})
    r.raise_for_status()
    return str(r.json()["face_token"])


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    registry = default_registry(plugins=False)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        adapters = {
            name: registry.create(name, ProviderConfig(**config), http)
            for name, config in spec["providers"].items()
        }
        queue = spec["queue"]
        tokens = {
            item["n"]: await _mint(http, spec["mint"], item["face_student"])
            for item in queue
            if item["method"] == "face"
        }
        latencies: dict[str, list[float]] = {"card": [], "face": []}
        outcomes: dict[str, int] = {}
        errors = 0
        work: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for item in queue:
            work.put_nowait(item)

        async def pay_once(item: dict[str, Any]) -> str:
            reference = f"{spec['run_id']}-{item['n']:05d}"
            common = {
                "amount": item["amount"],
                "currency": "CNY",
                "method": item["method"],
                "store_ref": spec["store_ref"],
                "terminal_ref": spec["terminal_ref"],
            }
            if item["method"] == "face":
                face = adapters["alipay"]
                token = tokens[item["n"]]
                await face.identify(token)
                result = await face.pay(
                    PaymentRequest(
                        reference=f"{reference}-1",
                        credential=FaceCredential(token),
                        agreement_no=item.get("agreement_no"),
                        **common,
                    )
                )
                return result.outcome.value
            card = adapters["ecard"]
            result = await card.pay(
                PaymentRequest(
                    reference=f"{reference}-1", credential=CardCredential(item["card_no"]), **common
                )
            )
            if result.outcome is Outcome.FAILED and result.code == "PIN_REQUIRED" and item.get("pin"):
                result = await card.pay(
                    PaymentRequest(
                        reference=f"{reference}-2",
                        credential=CardCredential(item["card_no"], item["pin"]),
                        **common,
                    )
                )
            return result.outcome.value

        async def till() -> None:
            nonlocal errors
            while True:
                try:
                    item = work.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                try:
                    outcome = await pay_once(item)
                except Exception as exc:  # counted and shown, as the gateway path's errors are
                    outcome = f"error: {type(exc).__name__}"
                    errors += 1
                latencies[item["method"]].append(time.perf_counter() - started)
                outcomes[f"{item['method']} {outcome}"] = outcomes.get(f"{item['method']} {outcome}", 0) + 1

        cpu_before, wall_before = time.process_time(), time.perf_counter()
        await asyncio.gather(*(till() for _ in range(spec["concurrency"])))
        cpu, elapsed = time.process_time() - cpu_before, time.perf_counter() - wall_before
    return {
        "payments": len(queue),
        "elapsed_seconds": elapsed,
        "cpu_seconds": {"caller": cpu},
        "latencies": latencies,
        "outcomes": outcomes,
        "errors": errors,
    }


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[1]).read_text())
    Path(argv[2]).write_text(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main(sys.argv)
