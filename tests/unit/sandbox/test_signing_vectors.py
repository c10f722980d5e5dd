"""The sandbox's signing against the committed vectors (tests/contract/vectors/ecard.json)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.ecard import signing

pytestmark = pytest.mark.unit
VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "contract" / "vectors" / "ecard.json").read_text(encoding="utf-8")
)


def test_request_vector() -> None:
    v, secret = VECTORS["request"], VECTORS["secret"]
    body = v["body"].encode()
    assert signing.body_sha256(body) == v["body_sha256"]
    to_sign = signing.request_string_to_sign(v["method"], v["path"], v["timestamp"], v["nonce"], body)
    assert to_sign == v["string_to_sign"]
    assert (
        signing.sign_request(secret, v["method"], v["path"], v["timestamp"], v["nonce"], body)
        == v["signature"]
    )
    assert signing.signature_matches(v["signature"], v["signature"])
    assert not signing.signature_matches(v["signature"], signing.corrupt(v["signature"]))
    assert not signing.signature_matches(v["signature"], v["signature"].rstrip("="))  # padding required


def test_response_vector() -> None:
    v, secret = VECTORS["response"], VECTORS["secret"]
    body = v["body"].encode()
    assert signing.body_sha256(body) == v["body_sha256"]
    args = (v["status"], v["request_nonce"], v["timestamp"], v["nonce"], body)
    assert signing.response_string_to_sign(*args) == v["string_to_sign"]
    assert signing.sign_response(secret, *args) == v["signature"]


async def test_the_sandbox_accepts_the_vector_request_verbatim(client: httpx.AsyncClient) -> None:
    v = VECTORS["request"]
    # Move the sandbox clock to the vector's timestamp so the fixed request is fresh.
    offset = int(v["timestamp"]) - int(time.time())
    await client.post("/_control/clock", json={"offset_seconds": offset})
    headers = {
        "X-Ecard-Merchant": VECTORS["merchant_id"],
        "X-Ecard-Timestamp": v["timestamp"],
        "X-Ecard-Nonce": v["nonce"],
        "X-Ecard-Signature": v["signature"],
        "Content-Type": "application/json",
    }
    response = await client.post(v["path"], content=v["body"].encode(), headers=headers)
    assert response.status_code == 200, response.text
    expected = json.loads(VECTORS["response"]["body"])
    got = response.json()
    for key in ("result", "order_ref", "status", "amount", "balance_after", "account_no"):
        assert got[key] == expected[key]
    assert got["paid_at"].startswith("2026-01-01T00:0")
