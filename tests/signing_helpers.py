"""Crafting device requests by hand: sign with the real client code, then tamper.

Every helper builds an ``httpx.Request`` for the harness's gateway client (``http://gateway.test``,
the gateway's public base URL), signs it with ``gateway.client.sign_request`` and returns it,
so a test can change one thing and send it with ``harness.gateway.send(request)``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms
from sqlalchemy import func, select

from gateway.client import DeviceCredentials, generate_ed25519_keypair, new_nonce, sign_request
from gateway.store.models import IdempotencyRecord, Payment
from tests.harness import GATEWAY, Harness

__all__ = [
    "PROBLEM_FIELDS",
    "Attempt",
    "assert_problem",
    "assert_standard_headers",
    "build",
    "dump",
    "gateway_now",
    "idempotency_rows",
    "other_ed25519_key",
    "payment_rows",
    "sign_with_library",
    "sign_without_nonce",
    "signed",
    "unsigned_copy",
    "with_signature_bytes_flipped",
]

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "request_id"}


def dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def gateway_now(h: Harness) -> int:
    """Unix seconds on the gateway's (movable) clock."""
    return int(h.clock().timestamp())


def build(
    method: str,
    path: str,
    *,
    body: bytes | Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Request:
    content = dump(body) if isinstance(body, Mapping) else body
    hdrs: dict[str, str] = {"Accept": "application/json"}
    if content:
        hdrs["Content-Type"] = "application/json"
    if idempotency_key is not None:
        hdrs["Idempotency-Key"] = idempotency_key
    hdrs.update(headers or {})
    return httpx.Request(method, GATEWAY + path, content=content or None, headers=hdrs)


def signed(
    h: Harness,
    creds: DeviceCredentials,
    method: str,
    path: str,
    *,
    body: bytes | Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    created: int | None = None,
    nonce: str | None = None,
    public_base_url: str | None = None,
) -> httpx.Request:
    """A correctly signed request; ``created`` defaults to the gateway's clock, not the host's."""
    request = build(method, path, body=body, idempotency_key=idempotency_key)
    sign_request(
        request,
        creds,
        public_base_url=public_base_url,
        created=gateway_now(h) if created is None else created,
        nonce=nonce,
    )
    return request


def unsigned_copy(
    request: httpx.Request,
    *,
    method: str | None = None,
    body: bytes | None = None,
    drop: tuple[str, ...] = (),
    set_headers: Mapping[str, str] | None = None,
) -> httpx.Request:
    """The same request with its signature headers kept but method/body/headers changed."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", *drop)}
    # replaced, not added beside: the original names are lower-case, ``set_headers``' may not be
    headers.update({k.lower(): v for k, v in (set_headers or {}).items()})
    content = request.content if body is None else body
    return httpx.Request(method or request.method, request.url, content=content or None, headers=headers)


def with_signature_bytes_flipped(request: httpx.Request) -> httpx.Request:
    label, _, value = request.headers["signature"].partition("=")
    raw = bytearray(base64.b64decode(value.strip(":")))
    raw[len(raw) // 2] ^= 0x01
    forged = f"{label}=:{base64.b64encode(bytes(raw)).decode()}:"
    return unsigned_copy(request, set_headers={"Signature": forged})


def other_ed25519_key(creds: DeviceCredentials) -> DeviceCredentials:
    """A fresh key pair claiming ``creds``' key id (an attacker without the device's key)."""
    private, _ = generate_ed25519_keypair()
    return DeviceCredentials(key_id=creds.key_id, alg="ed25519", private_key_pem=private)


@dataclass
class _Signable:
    method: str
    url: str
    headers: httpx.Headers


def sign_without_nonce(h: Harness, creds: DeviceCredentials, request: httpx.Request) -> None:
    """A valid signature by ``creds`` that simply has no ``nonce`` parameter (library signer)."""
    sign_with_library(h, creds, request)


def sign_with_library(
    h: Harness,
    creds: DeviceCredentials,
    request: httpx.Request,
    *,
    nonce: str | None = None,
    expires: int | None = None,
    extra: tuple[str, ...] = (),
) -> None:
    """A valid signature by ``creds`` made with the library's own signer, for what the client
    never sends (no ``nonce``; an ``expires``; ``extra`` covered components after those the
    contract requires)."""
    assert creds.alg == "ed25519" and creds.private_key_pem
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(creds.private_key_pem.encode(), password=None)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={creds.key_id: key}),
    )
    body = request.read()
    covered = ["@method", "@target-uri"]
    if body:
        covered.append("content-digest")
    if "idempotency-key" in request.headers:
        covered.append("idempotency-key")
    covered.extend(extra)
    signer.sign(
        _Signable(request.method, str(request.url), request.headers),
        key_id=creds.key_id,
        created=dt.datetime.fromtimestamp(gateway_now(h), tz=dt.UTC),
        expires=None if expires is None else dt.datetime.fromtimestamp(expires, tz=dt.UTC),
        nonce=nonce,
        label="sig1",
        covered_component_ids=tuple(covered),
        body=body or None,
    )


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 answer with exactly this status and code, carrying the request id."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert PROBLEM_FIELDS <= body.keys(), body
    assert (body["status"], body["code"]) == (status, code), body
    assert body["type"] and body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def assert_standard_headers(response: httpx.Response, now: dt.datetime | None = None) -> None:
    """``Date`` (RFC 9110 IMF-fixdate, near ``now``) and ``X-Request-Id`` on every answer."""
    date = parsedate_to_datetime(response.headers["date"])
    assert response.headers["date"].endswith(" GMT")
    if now is not None:
        assert abs((date - now).total_seconds()) <= 5, (response.headers["date"], now)
    assert response.headers["x-request-id"].startswith("req_")


async def payment_rows(h: Harness, merchant_order_id: str) -> int:
    async with h.services.db.transaction() as session:
        count = await session.scalar(
            select(func.count()).select_from(Payment).where(Payment.merchant_order_id == merchant_order_id)
        )
    return int(count or 0)


async def idempotency_rows(h: Harness, key: str) -> int:
    async with h.services.db.transaction() as session:
        count = await session.scalar(
            select(func.count()).select_from(IdempotencyRecord).where(IdempotencyRecord.key == key)
        )
    return int(count or 0)


@dataclass
class Attempt:
    """One payment (order id + Idempotency-Key) that tests first get refused, then retry."""

    h: Harness
    body: dict[str, Any]
    key: str

    @property
    def order(self) -> str:
        return str(self.body["merchant_order_id"])

    def request(self, creds: DeviceCredentials, **kw: Any) -> httpx.Request:
        return signed(self.h, creds, "POST", "/v1/payments", body=self.body, idempotency_key=self.key, **kw)

    async def assert_nothing_written(self, debits_before: int) -> None:
        assert await payment_rows(self.h, self.order) == 0
        assert await idempotency_rows(self.h, self.key) == 0
        assert len(await self.h.debits()) == debits_before

    async def retry_succeeds(self, creds: DeviceCredentials) -> dict[str, Any]:
        response = await self.h.gateway.send(self.request(creds, nonce=new_nonce()))
        assert response.status_code == 201, response.text
        assert "idempotent-replayed" not in response.headers
        payment: dict[str, Any] = response.json()
        assert payment["status"] == "succeeded", payment
        assert await payment_rows(self.h, self.order) == 1
        return payment
