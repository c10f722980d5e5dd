"""The e-card wire protocol: request signing and response verification.

Written from docs/ecard-protocol.md and checked against tests/contract/vectors/ecard.json,
independently of the sandbox's implementation of the same rules.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ResponseNotVerified",
    "SignedRequest",
    "request_string_to_sign",
    "response_string_to_sign",
    "sign",
    "sign_request",
    "verify_response",
    "verify_signature",
]


class ResponseNotVerified(Exception):
    """The response's signature is missing or wrong, or its body is not a JSON object."""


def _body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def request_string_to_sign(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return "\n".join([method.upper(), path, timestamp, nonce, _body_digest(body)])


def response_string_to_sign(status: int, request_nonce: str, timestamp: str, nonce: str, body: bytes) -> str:
    return "\n".join([str(status), request_nonce, timestamp, nonce, _body_digest(body)])


def sign(secret: str, string_to_sign: str) -> str:
    mac = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


@dataclass(frozen=True)
class SignedRequest:
    body: bytes
    headers: dict[str, str]
    nonce: str


def sign_request(
    *, merchant_id: str, secret: str, method: str, path: str, payload: dict[str, Any] | None, now: int
) -> SignedRequest:
    body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    nonce = secrets.token_urlsafe(18)
    timestamp = str(now)
    headers = {
        "X-Ecard-Merchant": merchant_id,
        "X-Ecard-Timestamp": timestamp,
        "X-Ecard-Nonce": nonce,
        "X-Ecard-Signature": sign(secret, request_string_to_sign(method, path, timestamp, nonce, body)),
    }
    if payload is not None:
        headers["Content-Type"] = "application/json"
    return SignedRequest(body=body, headers=headers, nonce=nonce)


def verify_response(
    *, secret: str, status: int, request_nonce: str, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    """Return the parsed body only if the provider signed exactly these bytes for this request."""
    verify_signature(secret=secret, status=status, request_nonce=request_nonce, headers=headers, body=body)
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise ResponseNotVerified("response body is not JSON") from exc
    if not isinstance(parsed, dict):
        raise ResponseNotVerified("response body is not a JSON object")
    return parsed


def verify_signature(
    *, secret: str, status: int, request_nonce: str, headers: dict[str, str], body: bytes
) -> None:
    """Raise ``ResponseNotVerified`` unless the provider signed exactly these bytes for this
    request (any body: the daily statement is CSV)."""
    timestamp = headers.get("x-ecard-timestamp")
    nonce = headers.get("x-ecard-nonce")
    signature = headers.get("x-ecard-signature")
    if not (timestamp and nonce and signature):
        raise ResponseNotVerified("response is not signed")
    expected = sign(secret, response_string_to_sign(status, request_nonce, timestamp, nonce, body))
    if not hmac.compare_digest(expected, signature):
        raise ResponseNotVerified("response signature does not verify")
