"""A tiny e-card client written from docs/ecard-protocol.md, plus control-plane shortcuts.

The signing here is deliberately independent of sandbox/ecard/signing.py (and of gateway/ and
adapters/): stdlib hmac from the spec, so the sandbox is checked against the protocol, not itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from typing import Any

import httpx

SECRET = "ecard-test-secret-0123456789abcdef0123"
MERCHANT = "m_test"
_nonces = itertools.count(1)


def hmac_b64(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fresh_nonce() -> str:
    return f"test-nonce-{next(_nonces):08d}"


class Ecard:
    """Signed calls to one e-card base path as one merchant."""

    def __init__(
        self, client: httpx.AsyncClient, base: str = "/ecard", merchant: str = MERCHANT, secret: str = SECRET
    ) -> None:
        self.client, self.base, self.merchant, self.secret = client, base, merchant, secret

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timestamp: int | None = None,
        nonce: str | None = None,
        secret: str | None = None,
        signed_path: str | None = None,
    ) -> httpx.Response:
        raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        full_path = self.base + path
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce or fresh_nonce()
        to_sign = "\n".join([method, signed_path or full_path, ts, nonce, sha256_hex(raw)])
        headers = {
            "X-Ecard-Merchant": self.merchant,
            "X-Ecard-Timestamp": ts,
            "X-Ecard-Nonce": nonce,
            "X-Ecard-Signature": hmac_b64(secret or self.secret, to_sign),
        }
        if raw:
            headers["Content-Type"] = "application/json"
        return await self.client.request(method, full_path, content=raw, headers=headers)

    async def post(self, op: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
        return await self.call("POST", f"/v1/{op}", body, **kw)

    async def consume(
        self, order_ref: str, amount: int, card_no: str = "31000001", **extra: Any
    ) -> httpx.Response:
        body = {"order_ref": order_ref, "card_no": card_no, "amount": amount, "currency": "CNY", **extra}
        return await self.post("consume", body)

    def response_verifies(self, response: httpx.Response) -> bool:
        h = response.headers
        if "X-Ecard-Signature" not in h:
            return False
        parts = [
            str(response.status_code),
            response.request.headers["X-Ecard-Nonce"],
            h["X-Ecard-Timestamp"],
            h["X-Ecard-Nonce"],
            sha256_hex(response.content),
        ]
        return hmac.compare_digest(hmac_b64(self.secret, "\n".join(parts)), h["X-Ecard-Signature"])


async def balance(client: httpx.AsyncClient, card_no: str, merchant: str = MERCHANT) -> int:
    response = await client.get(f"/_control/ecard/merchants/{merchant}/cards/{card_no}")
    assert response.status_code == 200, response.text
    value: int = response.json()["balance"]
    return value


async def events(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/_control/events", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found
