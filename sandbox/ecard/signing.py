"""The e-card provider's HMAC-SHA256 signing, written from docs/ecard-protocol.md (stdlib only)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

TIMESTAMP_WINDOW_S = 300
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")

MERCHANT_HEADER = "X-Ecard-Merchant"
TIMESTAMP_HEADER = "X-Ecard-Timestamp"
NONCE_HEADER = "X-Ecard-Nonce"
SIGNATURE_HEADER = "X-Ecard-Signature"


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def request_string_to_sign(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return "\n".join([method.upper(), path, timestamp, nonce, body_sha256(body)])


def response_string_to_sign(status: int, request_nonce: str, timestamp: str, nonce: str, body: bytes) -> str:
    return "\n".join([str(status), request_nonce, timestamp, nonce, body_sha256(body)])


def sign(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_request(secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return sign(secret, request_string_to_sign(method, path, timestamp, nonce, body))


def sign_response(
    secret: str, status: int, request_nonce: str, timestamp: str, nonce: str, body: bytes
) -> str:
    return sign(secret, response_string_to_sign(status, request_nonce, timestamp, nonce, body))


def signature_matches(expected: str, given: str) -> bool:
    """Compares decoded digests in constant time; anything that is not strict base64 fails."""
    try:
        given_digest = base64.b64decode(given.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return False
    return hmac.compare_digest(base64.b64decode(expected), given_digest)


def corrupt(signature: str) -> str:
    """Still well-formed base64 of 32 bytes, but not the right digest (the bad_signature fault)."""
    digest = bytearray(base64.b64decode(signature))
    digest[0] ^= 0xFF
    return base64.b64encode(bytes(digest)).decode("ascii")


def new_nonce() -> str:
    return secrets.token_urlsafe(18)  # 24 characters from [A-Za-z0-9_-]


def new_secret() -> str:
    return secrets.token_urlsafe(30)  # 40 characters, comfortably over the 32-byte minimum
