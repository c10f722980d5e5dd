"""The bench's path (c): the face share paid the way a POS vendor would without CampusPay.

The till calls ``alipay.trade.pay`` itself with the official Alipay Python SDK
(``alipay-sdk-python``), which signs with its own RSA code and verifies the answer. Run as a
process of its own (``python -m gateway.bench.sdk SPEC OUT``) so that its CPU time is the SDK's.
The SDK cannot use a server URL with a port (docs/alipay-sandbox.md), so this path needs the
sandbox on port 80; the bench skips it, and says why, when it is not there.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

__all__ = ["run"]


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
    from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
    from alipay.aop.api.domain.AlipayTradePayModel import AlipayTradePayModel
    from alipay.aop.api.request.AlipayTradePayRequest import AlipayTradePayRequest
    from alipay.aop.api.response.AlipayTradePayResponse import AlipayTradePayResponse

    config = AlipayClientConfig()
    config.server_url = spec["server_url"]
    config.app_id = spec["app_id"]
    config.app_private_key = spec["app_private_key"]
    config.alipay_public_key = spec["alipay_public_key"]
    client = DefaultAlipayClient(alipay_client_config=config)
    mint = spec["mint"]
    queue = spec["queue"]
    with httpx.Client(timeout=30) as http:
        tokens = {}
        for item in queue:
            r = http.post(mint["url"], json={**mint.get("body", {}), "student": item["face_student"]})
            r.raise_for_status()
            tokens[item["n"]] = r.json()["face_token"]

    def pay(item: dict[str, Any]) -> tuple[float, str]:
        model = AlipayTradePayModel()
        model.out_trade_no = f"{spec['run_id']}-{item['n']:05d}"
        model.scene = "security_code"
        model.auth_code = tokens[item["n"]]
        model.product_code = "FACE_TO_FACE_PAYMENT"
        model.subject = "lunch"
        model.total_amount = f"{item['amount'] // 100}.{item['amount'] % 100:02d}"
        model.store_id = "canteen"
        model.terminal_id = "till-1"
        started = time.perf_counter()
        try:
            response = AlipayTradePayResponse()
            response.parse_response_content(client.execute(AlipayTradePayRequest(biz_model=model)))
            outcome = "succeeded" if response.code == "10000" else f"failed: {response.sub_code}"
        except Exception as exc:  # the SDK raises on a sign it cannot verify
            outcome = f"error: {type(exc).__name__}"
        return time.perf_counter() - started, outcome

    cpu_before, wall_before = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=spec["concurrency"]) as pool:
        results = list(pool.map(pay, queue))
    cpu, elapsed = time.process_time() - cpu_before, time.perf_counter() - wall_before
    outcomes: dict[str, int] = {}
    for _, outcome in results:
        outcomes[f"face {outcome}"] = outcomes.get(f"face {outcome}", 0) + 1
    return {
        "payments": len(queue),
        "elapsed_seconds": elapsed,
        "cpu_seconds": {"caller": cpu},
        "latencies": {"face": [seconds for seconds, _ in results]},
        "outcomes": outcomes,
        "errors": sum(n for key, n in outcomes.items() if key.startswith("face error")),
    }


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[1]).read_text())
    Path(argv[2]).write_text(json.dumps(run(spec)))


if __name__ == "__main__":
    main(sys.argv)
