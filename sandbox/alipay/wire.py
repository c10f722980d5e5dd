"""Alipay OpenAPI v1 on the wire, Alipay's side: parameters, RSA2, signed response bytes, codes.

Written from /work/shared/PROTOCOLS.md and the SDKs' sources (alipay-sdk-python 3.7,
python-alipay-sdk 3.4, Node alipay-sdk 4.14), never from CampusPay's adapter.

* Requests: the query string and a form body are merged (the query string wins a duplicate
  key); the string to sign is every parameter except ``sign``, empty values dropped, keys in byte
  order, raw ``k=v`` joined with ``&`` (``sign_type`` stays in); RSA2 = SHA256withRSA PKCS#1 v1.5.
* Responses: ``{"<node>":{...},"sign":"..."}`` where the sign covers the exact UTF-8 bytes of the
  node object as emitted, from its ``{`` to its matching ``}``.
* Notifications: as requests, but ``sign_type`` is left out of the string too.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
TIMESTAMP_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
MIN_KEY_BITS = 2048
MAX_AMOUNT_FEN = 100_000_000_00  # 100,000,000.00 yuan, Alipay's upper bound for total_amount

# code -> msg, as Alipay words them.
CODE_MSG = {
    "10000": "Success",
    "10003": "order success pay inprocess",
    "20000": "Service Currently Unavailable",
    "20001": "Insufficient Token Permissions",
    "40001": "Missing Required Arguments",
    "40002": "Invalid Arguments",
    "40004": "Business Failed",
    "40006": "Insufficient Permissions",
}


class InvalidAppKey(ValueError):
    """An app public key that cannot be used (the message never contains key material)."""


# --- parameters ---------------------------------------------------------------------------------


def parse_form(data: bytes | str) -> list[tuple[str, str]]:
    """``k=v&…`` pairs, percent-decoded as UTF-8 (``+`` is a space), blank values kept."""
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="replace")


def merge_params(query: bytes, body: bytes, content_type: str) -> dict[str, str]:
    """The request's parameters: the query string, then a form body; the first value of a key wins.

    python-alipay-sdk sends everything in the query string (GET); the official Python SDK and
    the Node SDK send the common parameters there and ``biz_content`` in the form body (POST).
    """
    pairs = parse_form(query)
    kind = content_type.split(";", 1)[0].strip().lower()
    if body and kind in ("", "application/x-www-form-urlencoded"):
        pairs += parse_form(body)
    merged: dict[str, str] = {}
    for key, value in pairs:
        merged.setdefault(key, value)
    return merged


def string_to_sign(params: Mapping[str, str], exclude: Collection[str] = ("sign",)) -> str:
    """Sorted raw ``k=v`` pairs joined with ``&``: no empty values, no excluded keys."""
    keys = sorted((k for k, v in params.items() if k not in exclude and v != ""), key=lambda k: k.encode())
    return "&".join(f"{k}={params[k]}" for k in keys)


def notification_string(params: Mapping[str, str]) -> str:
    return string_to_sign(params, exclude=("sign", "sign_type"))


# --- RSA2 ---------------------------------------------------------------------------------------


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidAppKey("not an RSA private key")
    return key


def load_app_public_key(text: str) -> rsa.RSAPublicKey:
    """An app public key as a developer pastes it: SPKI or PKCS#1 PEM, or the bare base64 body."""
    stripped = text.strip()
    key: object
    try:
        if stripped.startswith("-----BEGIN"):  # "PUBLIC KEY" (SPKI) or "RSA PUBLIC KEY" (PKCS#1)
            key = serialization.load_pem_public_key(stripped.encode("ascii"))
        else:
            der = base64.b64decode("".join(stripped.split()), validate=True)
            try:
                key = serialization.load_der_public_key(der)
            except ValueError:
                # A bare PKCS#1 body: wrap it so cryptography can read it.
                body = base64.b64encode(der).decode("ascii")
                pem = f"-----BEGIN RSA PUBLIC KEY-----\n{body}\n-----END RSA PUBLIC KEY-----\n"
                key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, binascii.Error, UnicodeEncodeError, UnsupportedAlgorithm):
        raise InvalidAppKey("not a readable RSA public key (PEM SubjectPublicKeyInfo or PKCS#1)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidAppKey("not an RSA public key")
    if key.key_size < MIN_KEY_BITS:
        raise InvalidAppKey(f"RSA2 needs a key of at least {MIN_KEY_BITS} bits, got {key.key_size}")
    return key


def public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def sign(key: rsa.RSAPrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def verify(key: rsa.RSAPublicKey, data: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        key.verify(raw, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return True


def corrupt(signature: str) -> str:
    """Still well-formed base64 of the right length, but not a valid signature."""
    raw = bytearray(base64.b64decode(signature))
    raw[len(raw) // 2] ^= 0xFF
    return base64.b64encode(bytes(raw)).decode("ascii")


# --- responses ----------------------------------------------------------------------------------


def node_name(method: str) -> str:
    return method.replace(".", "_") + "_response"


def encode_node(body: Mapping[str, Any]) -> str:
    # Compact, UTF-8 (no \\u escapes), like Alipay's gateway. Values never contain braces that
    # matter: python-alipay-sdk finds the node by counting braces without looking at quotes.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def response_bytes(
    node: str, body: Mapping[str, Any], key: rsa.RSAPrivateKey | None, *, corrupt_sign: bool = False
) -> bytes:
    """The whole response document; signed over the node's exact bytes when there is a key."""
    text = encode_node(body)
    if key is None:
        return f'{{"{node}":{text}}}'.encode()
    signature = sign(key, text.encode("utf-8"))
    if corrupt_sign:
        signature = corrupt(signature)
    return f'{{"{node}":{text},"sign":"{signature}"}}'.encode()


def result(
    code: str, sub_code: str | None = None, sub_msg: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A response node: ``code``, ``msg``, optional ``sub_code``/``sub_msg``, then the fields."""
    body: dict[str, Any] = {"code": code, "msg": CODE_MSG[code]}
    if sub_code is not None:
        body["sub_code"] = sub_code
        body["sub_msg"] = sub_msg or ""
    body.update({k: v for k, v in fields.items() if v is not None})
    return body


# --- amounts and times --------------------------------------------------------------------------


def parse_amount(value: Any) -> int | None:
    """Yuan (a string like "12.50", or a JSON number) to fen; None if not a valid amount."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        amount = Decimal(str(value).strip())
        if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
            return None
    except InvalidOperation:
        return None
    fen = int(amount * 100)
    return fen if 1 <= fen <= MAX_AMOUNT_FEN else None


def yuan(fen: int) -> str:
    sign_ = "-" if fen < 0 else ""
    return f"{sign_}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def beijing(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC).astimezone(BEIJING)


def beijing_time(unix: float) -> str:
    """``yyyy-MM-dd HH:mm:ss`` in Beijing time, Alipay's format for every time on the wire."""
    return beijing(unix).strftime("%Y-%m-%d %H:%M:%S")


def valid_timestamp(text: str) -> bool:
    if not TIMESTAMP_PATTERN.fullmatch(text):
        return False
    try:
        datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return False
    return True
