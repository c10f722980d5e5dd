"""Alipay OpenAPI v1 on the wire: RSA2 signing, request encoding, response and notification
verification, and amounts.

Written from /work/shared/PROTOCOLS.md (Alipay section) and checked against the official
``alipay-sdk-python`` (``alipay/aop/api/util/SignatureUtils.py`` and ``DefaultAlipayClient``) in
tests/unit/adapters/test_alipay_wire.py, and against the SDK-computed vectors in
tests/contract/vectors/alipay.json -- never only against our own sandbox.

The rules, in one place:

* **String to sign** (requests): every parameter except ``sign``; empty values dropped; keys
  sorted by byte order; ``key=value`` joined with ``&`` using the raw, unencoded values;
  ``sign_type`` stays in. Notifications: the same, but ``sign_type`` is removed as well.
* **RSA2** = SHA256withRSA, PKCS#1 v1.5, over the UTF-8 bytes; base64 without line breaks.
* **Requests** go out like the official SDK sends them: common parameters (and ``sign``)
  URL-encoded in the query string, ``biz_content`` in an
  ``application/x-www-form-urlencoded;charset=utf-8`` body; ``timestamp`` in Beijing time.
* **Responses** ``{"<method>_response": {...}, "sign": "..."}`` are verified over the exact raw
  bytes of the response node, from its ``{`` to the matching ``}`` (found by string-aware
  brace matching, never by re-serialising the parsed JSON).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "BEIJING",
    "CONTENT_TYPE",
    "EncodedRequest",
    "InvalidKey",
    "NotificationNotVerified",
    "ResponseNotVerified",
    "VerifiedResponse",
    "beijing_timestamp",
    "biz_content_json",
    "build_request",
    "canonical_string",
    "fen_to_yuan",
    "load_private_key",
    "load_public_key",
    "locate_response_node",
    "notification_string",
    "parse_form",
    "response_node_name",
    "sign",
    "verify",
    "verify_notification",
    "verify_response",
    "yuan_to_fen",
]

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
CONTENT_TYPE = "application/x-www-form-urlencoded;charset=utf-8"
MIN_KEY_BITS = 2048  # RSA2 keys issued by Alipay are 2048 bits


class InvalidKey(ValueError):
    """A key that cannot be used. The message never contains key material."""


class ResponseNotVerified(Exception):
    """The response is unsigned, wrongly signed, or not shaped like an Alipay answer."""


class NotificationNotVerified(Exception):
    """The notification is unsigned, wrongly signed, or malformed."""


# -- keys ---------------------------------------------------------------------------------------


def _normalise_key_text(text: str) -> str:
    # Keys pasted into settings often arrive with literal "\n" sequences instead of newlines.
    return text.replace("\\n", "\n").strip()


def _bare_body_der(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidKey("key is neither PEM nor a base64 key body") from exc


@lru_cache(maxsize=1024)  # one key pair per school: sized for a district, not a test
def load_private_key(text: str) -> rsa.RSAPrivateKey:
    """The app private key: PEM (PKCS#1 ``RSA PRIVATE KEY`` or PKCS#8 ``PRIVATE KEY``) or the bare
    base64 body without armour, as the official SDK accepts. Parsed once per distinct text: RSA
    key parsing is expensive and adapters may be built per call."""
    text = _normalise_key_text(text)
    if not text:
        raise InvalidKey("private key is empty")
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        else:
            key = serialization.load_der_private_key(_bare_body_der(text), password=None)
    except InvalidKey:
        raise
    except (ValueError, TypeError, UnicodeError) as exc:
        raise InvalidKey(f"private key does not parse ({type(exc).__name__})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidKey("private key is not an RSA key")
    if key.key_size < MIN_KEY_BITS:
        raise InvalidKey(f"RSA2 needs a key of at least {MIN_KEY_BITS} bits, got {key.key_size}")
    return key


@lru_cache(maxsize=1024)  # one key pair per school: sized for a district, not a test
def load_public_key(text: str) -> rsa.RSAPublicKey:
    """Alipay's public key: PEM (X.509 SubjectPublicKeyInfo, or PKCS#1 ``RSA PUBLIC KEY``) or the
    bare base64 body, as the Alipay console shows it."""
    text = _normalise_key_text(text)
    if not text:
        raise InvalidKey("public key is empty")
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            key = serialization.load_der_public_key(_bare_body_der(text))
    except InvalidKey:
        raise
    except (ValueError, TypeError, UnicodeError) as exc:
        raise InvalidKey(f"public key does not parse ({type(exc).__name__})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidKey("public key is not an RSA key")
    if key.key_size < MIN_KEY_BITS:
        raise InvalidKey(f"RSA2 needs a key of at least {MIN_KEY_BITS} bits, got {key.key_size}")
    return key


# -- signing ------------------------------------------------------------------------------------


def canonical_string(params: Mapping[str, str | None], exclude: Collection[str] = ("sign",)) -> str:
    """``k=v&…`` over the non-empty parameters not in ``exclude``, sorted by the keys' bytes,
    with raw (unencoded) values."""
    items = [(k, v) for k, v in params.items() if k not in exclude and v is not None and v != ""]
    items.sort(key=lambda kv: kv[0].encode("utf-8"))
    return "&".join(f"{k}={v}" for k, v in items)


def sign(private_key: rsa.RSAPrivateKey, content: str) -> str:
    """RSA2: SHA256withRSA (PKCS#1 v1.5) over the UTF-8 bytes, base64 on one line."""
    signature = private_key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(public_key: rsa.RSAPublicKey, content: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(raw, content, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# -- requests -----------------------------------------------------------------------------------


def beijing_timestamp(now: datetime | None = None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in Beijing time, as the gateway expects ``timestamp``."""
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("timestamp needs an aware datetime")
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def biz_content_json(biz: Mapping[str, Any]) -> str:
    """``biz_content`` as the official SDK serialises its models: compact, sorted, UTF-8."""
    return json.dumps(biz, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class EncodedRequest:
    """A signed request ready for the wire: POST ``<endpoint>?<query>`` with ``body``."""

    params: dict[str, str]  # every signed parameter plus ``sign``
    string_to_sign: str
    query: str
    body: bytes
    headers: dict[str, str]


def build_request(
    *,
    private_key: rsa.RSAPrivateKey,
    app_id: str,
    method: str,
    biz_content: Mapping[str, Any],
    timestamp: str,
    notify_url: str | None = None,
    app_auth_token: str | None = None,
) -> EncodedRequest:
    """Sign and encode one call the way ``alipay-sdk-python``'s ``DefaultAlipayClient`` does."""
    common: dict[str, str] = {
        "app_id": app_id,
        "method": method,
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": timestamp,
        "version": "1.0",
    }
    if notify_url:
        common["notify_url"] = notify_url
    if app_auth_token:
        common["app_auth_token"] = app_auth_token
    business = {"biz_content": biz_content_json(biz_content)}
    string_to_sign = canonical_string({**common, **business})
    common["sign"] = sign(private_key, string_to_sign)
    return EncodedRequest(
        params={**common, **business},
        string_to_sign=string_to_sign,
        query=urlencode(common, encoding="utf-8"),
        body=urlencode(business, encoding="utf-8").encode("ascii"),
        headers={"Content-Type": CONTENT_TYPE, "Accept": "application/json"},
    )


# -- responses ----------------------------------------------------------------------------------

_WS = frozenset(b" \t\r\n")
_QUOTE, _BACKSLASH = 0x22, 0x5C
_OPEN, _CLOSE = frozenset(b"{["), frozenset(b"}]")


def response_node_name(method: str) -> str:
    """``alipay.trade.pay`` -> ``alipay_trade_pay_response``."""
    return method.replace(".", "_") + "_response"


def _skip_ws(raw: bytes, i: int) -> int:
    while i < len(raw) and raw[i] in _WS:
        i += 1
    return i


def _string_end(raw: bytes, i: int) -> int:
    """``raw[i]`` is an opening quote; the index just past its closing quote."""
    i += 1
    while i < len(raw):
        c = raw[i]
        if c == _BACKSLASH:
            i += 2
            continue
        if c == _QUOTE:
            return i + 1
        i += 1
    raise ResponseNotVerified("unterminated string in response")


def _value_end(raw: bytes, i: int) -> int:
    """The index just past the JSON value starting at ``raw[i]``. Braces and brackets inside
    strings (including escaped quotes) do not count. UTF-8 never puts an ASCII byte inside a
    multi-byte sequence, so scanning bytes is exact."""
    if i >= len(raw):
        raise ResponseNotVerified("truncated response")
    if raw[i] == _QUOTE:
        return _string_end(raw, i)
    if raw[i] in _OPEN:
        depth = 0
        while i < len(raw):
            c = raw[i]
            if c == _QUOTE:
                i = _string_end(raw, i)
                continue
            if c in _OPEN:
                depth += 1
            elif c in _CLOSE:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        raise ResponseNotVerified("unbalanced braces in response")
    while i < len(raw) and raw[i] not in _WS and raw[i] not in b",}]":
        i += 1
    return i


def _top_level_members(raw: bytes) -> dict[str, tuple[int, int]]:
    """Key -> raw byte span of each member of the top-level object. A repeated key is refused:
    a parser that keeps the last copy would read a different node than the one verified."""
    members: dict[str, tuple[int, int]] = {}
    i = _skip_ws(raw, 0)
    if i >= len(raw) or raw[i] != ord("{"):
        raise ResponseNotVerified("response is not a JSON object")
    i = _skip_ws(raw, i + 1)
    if i < len(raw) and raw[i] == ord("}"):
        return members
    while True:
        if i >= len(raw) or raw[i] != _QUOTE:
            raise ResponseNotVerified("malformed response object")
        key_end = _string_end(raw, i)
        key = json.loads(raw[i:key_end])
        i = _skip_ws(raw, key_end)
        if i >= len(raw) or raw[i] != ord(":"):
            raise ResponseNotVerified("malformed response object")
        start = _skip_ws(raw, i + 1)
        end = _value_end(raw, start)
        if key in members:
            raise ResponseNotVerified(f"response repeats {key!r}")
        members[key] = (start, end)
        i = _skip_ws(raw, end)
        if i < len(raw) and raw[i] == ord(","):
            i = _skip_ws(raw, i + 1)
            continue
        if i < len(raw) and raw[i] == ord("}"):
            return members
        raise ResponseNotVerified("malformed response object")


def locate_response_node(raw: bytes, method: str) -> tuple[str, bytes, str | None]:
    """(node name, the node's exact raw bytes, the ``sign`` value or None) of an answer to
    ``method``: its ``<method>_response`` node, or else a gateway-level ``error_response``."""
    try:
        json.loads(raw)  # the whole body must be well-formed JSON, not just the part we read
    except ValueError as exc:
        raise ResponseNotVerified("response is not JSON") from exc
    members = _top_level_members(raw)
    for name in (response_node_name(method), "error_response"):
        if name in members:
            start, end = members[name]
            break
    else:
        raise ResponseNotVerified(f"response has no {response_node_name(method)} node")
    node = raw[start:end]
    if not node.startswith(b"{"):
        raise ResponseNotVerified(f"{name} is not a JSON object")
    signature: str | None = None
    if "sign" in members:
        s_start, s_end = members["sign"]
        value = json.loads(raw[s_start:s_end])
        if not isinstance(value, str):
            raise ResponseNotVerified("sign is not a string")
        signature = value
    return name, node, signature


@dataclass(frozen=True)
class VerifiedResponse:
    node_name: str
    node: dict[str, Any]


def verify_response(raw: bytes, method: str, public_key: rsa.RSAPublicKey) -> VerifiedResponse:
    """The parsed response node, only if Alipay's signature covers its exact bytes."""
    name, node_bytes, signature = locate_response_node(raw, method)
    if not signature:
        raise ResponseNotVerified("response is not signed")
    if not verify(public_key, node_bytes, signature):
        raise ResponseNotVerified("response signature does not verify")
    node = json.loads(node_bytes)
    if not isinstance(node, dict):  # pragma: no cover - guarded by locate_response_node
        raise ResponseNotVerified("response node is not an object")
    return VerifiedResponse(name, node)


# -- notifications ------------------------------------------------------------------------------

_CHARSETS = {"utf-8": "utf-8", "utf8": "utf-8", "gbk": "gbk", "gb2312": "gb2312", "gb18030": "gb18030"}


def parse_form(body: bytes) -> dict[str, str]:
    """A form-encoded notification body, decoded in the charset it declares (utf-8 by default).
    Repeated keys are refused rather than guessed at."""
    try:
        first = parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
        declared = next((v for k, v in first if k == "charset"), "utf-8").strip().lower()
        charset = _CHARSETS.get(declared or "utf-8")
        if charset is None:
            raise NotificationNotVerified(f"unsupported charset {declared!r}")
        pairs = parse_qsl(body.decode(charset), keep_blank_values=True, encoding=charset, errors="strict")
    except (UnicodeError, ValueError) as exc:
        raise NotificationNotVerified("notification body is not a valid form") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise NotificationNotVerified(f"notification repeats {key!r}")
        form[key] = value
    return form


def notification_string(params: Mapping[str, str]) -> str:
    """What Alipay signs in a notification: ``sign`` *and* ``sign_type`` removed."""
    return canonical_string(params, exclude=("sign", "sign_type"))


def verify_notification(body: bytes, public_key: rsa.RSAPublicKey) -> dict[str, str]:
    """The notification's fields, only if Alipay signed them (RSA2)."""
    form = parse_form(body)
    signature = form.get("sign")
    if not signature:
        raise NotificationNotVerified("notification is not signed")
    if form.get("sign_type", "RSA2") != "RSA2":
        raise NotificationNotVerified("notification is not signed with RSA2")
    if not verify(public_key, notification_string(form).encode("utf-8"), signature):
        raise NotificationNotVerified("notification signature does not verify")
    return form


# -- amounts ------------------------------------------------------------------------------------

_YUAN = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]{1,2}))?")


def fen_to_yuan(fen: int) -> str:
    """1234 -> "12.34": always two decimals, never a float."""
    if isinstance(fen, bool) or not isinstance(fen, int) or fen < 0:
        raise ValueError("amount must be a non-negative integer number of fen")
    return f"{fen // 100}.{fen % 100:02d}"


def yuan_to_fen(yuan: str) -> int:
    """ "12.34" -> 1234; "12.3" -> 1230; "12" -> 1200. Anything else raises ValueError."""
    match = _YUAN.fullmatch(yuan) if isinstance(yuan, str) else None
    if match is None:
        raise ValueError("not an amount in yuan")
    whole, frac = match.group(1), match.group(2) or ""
    return int(whole) * 100 + int(frac.ljust(2, "0"))
