"""`campuspay serve --demo` as a real process: a signed card payment from demo.json alone."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from gateway.client import CampusPayClient
from tests.procs import free_port, running

pytestmark = pytest.mark.e2e


async def test_first_payment_from_demo_json_over_a_real_socket(tmp_path: Path) -> None:
    port = free_port()
    env = {"CAMPUSPAY_ENV": "sandbox"}
    for name in ("CAMPUSPAY_DATABASE_URL", "CAMPUSPAY_PUBLIC_BASE_URL", "CAMPUSPAY_MASTER_KEY"):
        env[name] = ""
    args = ["serve", "--demo", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    with running(
        args,
        health=f"http://127.0.0.1:{port}/healthz",
        log=tmp_path / "serve.log",
        env={k: v for k, v in env.items() if v},
    ):
        demo_path = tmp_path / "data" / "demo.json"
        demo = json.loads(demo_path.read_text())
        assert demo["base_url"] == f"http://127.0.0.1:{port}"
        assert {d["alg"] for d in demo["devices"]} == {"ed25519", "hmac-sha256"}
        store = demo["stores"][0]["store_id"]
        for alg in ("ed25519", "hmac-sha256"):
            async with CampusPayClient.from_demo(demo_path, alg=alg) as client:
                paid = await client.create_payment(
                    merchant_order_id=f"e2e-{alg}",
                    amount=1250,
                    method="card",
                    credential={"card_no": "31000001"},
                    store_id=store,
                )
                assert paid.status_code == 201 and paid.body["status"] == "succeeded"
                refund = await client.refund_payment(paid.body["id"], amount=250)
                assert refund.body["status"] == "succeeded"
                again = await client.create_payment(
                    merchant_order_id=f"e2e-{alg}",
                    amount=1250,
                    method="card",
                    credential={"card_no": "31000001"},
                    store_id=store,
                    idempotency_key=paid.idempotency_key,
                )
                assert again.replayed and again.body == paid.body
        async with httpx.AsyncClient(base_url=demo["base_url"]) as raw:
            health = await raw.get("/healthz")
            assert health.headers["date"].endswith("GMT")
            ready = await raw.get("/readyz")
            assert ready.json()["checks"]["database"] == "ok"
            control = await raw.get("/sandbox/_control/events", params={"kind": "ecard.debit"})
            assert [e["amount"] for e in control.json()["events"]] == [1250, 1250]
            unsigned = await raw.post("/v1/payments", json={})
            assert unsigned.status_code == 401
            assert unsigned.headers["content-type"] == "application/problem+json"
            assert unsigned.json()["code"] == "signature_missing"
            docs = await raw.get("/openapi.json")
            assert "/v1/payments" in docs.json()["paths"]
