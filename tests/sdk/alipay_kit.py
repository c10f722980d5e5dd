"""Client-side helpers for testing the sandbox Alipay, written from PROTOCOLS.md with `cryptography`
only (never from sandbox.alipay.wire, so the sandbox is checked, not mirrored).

Also a tiny in-memory ``FaceDirectory`` for tests that need exact control over tokens.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox.alipay.keys import TEST_APP_PRIVATE_KEY_PEM
from sandbox.face.directory import FaceToken, FaceUser
from sandbox.testvalues import ALIPAY_DEFAULT_APP_ID

GATEWAY = "/alipay/gateway.do"
BEIJING = timezone(timedelta(hours=8))

# The face cloud's fixed test students (GET /_control/test-values, key "face").
SCHOOL = "school-demo"
ALICE, BOB = "stu_alice", "stu_bob"
OTHER_SCHOOL, ZED = "school-other", "stu_zed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def public_pem(key: rsa.RSAPrivateKey, fmt: Literal["spki", "pkcs1"] = "spki") -> str:
    form = (
        serialization.PublicFormat.SubjectPublicKeyInfo if fmt == "spki" else serialization.PublicFormat.PKCS1
    )
    return key.public_key().public_bytes(serialization.Encoding.PEM, form).decode()


def load_public(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def content_to_sign(params: Mapping[str, str], exclude: tuple[str, ...] = ("sign",)) -> str:
    keys = sorted((k for k, v in params.items() if k not in exclude and v != ""), key=lambda k: k.encode())
    return "&".join(f"{k}={params[k]}" for k in keys)


def rsa2_sign(key: rsa.RSAPrivateKey, text: str) -> str:
    return base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa2_verifies(key: rsa.RSAPublicKey, data: bytes, sign: str) -> bool:
    try:
        key.verify(base64.b64decode(sign), data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def raw_node(raw: str, node: str) -> str:
    """The exact text of ``"node": {...}``'s object: string-aware brace matching."""
    start = raw.index("{", raw.index(f'"{node}"') + len(node) + 2)
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(raw)):
        c = raw[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return raw[start : i + 1]
    raise AssertionError(f"unbalanced response: {raw!r}")


def beijing_now() -> str:
    return datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


@dataclass
class Answer:
    raw: str
    node_name: str
    node: dict[str, Any]
    sign: str | None
    verified: bool

    @property
    def code(self) -> str:
        return str(self.node.get("code"))

    @property
    def sub_code(self) -> str | None:
        sub: str | None = self.node.get("sub_code")
        return sub


class AlipayTestClient:
    """Signs like the official SDK, sends POST (common params in the query, biz_content in the
    form body) or GET (everything in the query, like python-alipay-sdk)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        alipay_public_key: rsa.RSAPublicKey,
        app_id: str = ALIPAY_DEFAULT_APP_ID,
        private_key: rsa.RSAPrivateKey | None = None,
    ) -> None:
        self.http = http
        self.alipay_public_key = alipay_public_key
        self.app_id = app_id
        if private_key is None:
            loaded = serialization.load_pem_private_key(TEST_APP_PRIVATE_KEY_PEM.encode(), password=None)
            assert isinstance(loaded, rsa.RSAPrivateKey)
            private_key = loaded
        self.private_key = private_key

    def params(
        self, method: str, biz: Mapping[str, Any] | str | None = None, **common: str
    ) -> dict[str, str]:
        params = {
            "app_id": self.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": beijing_now(),
            "version": "1.0",
        }
        if biz is not None:
            params["biz_content"] = biz if isinstance(biz, str) else json.dumps(biz, ensure_ascii=False)
        params.update(common)
        params["sign"] = rsa2_sign(self.private_key, content_to_sign(params))
        return params

    async def send(self, params: Mapping[str, str], style: Literal["post", "get"] = "post") -> httpx.Response:
        if style == "get":
            return await self.http.get(GATEWAY + "?" + urlencode(params))
        common = {k: v for k, v in params.items() if k != "biz_content"}
        form = {k: v for k, v in params.items() if k == "biz_content"}
        return await self.http.post(
            GATEWAY + "?" + urlencode(common),
            content=urlencode(form).encode(),
            headers={"content-type": "application/x-www-form-urlencoded;charset=utf-8"},
        )

    def parse(self, response: httpx.Response, method: str) -> Answer:
        assert response.status_code == 200, response.text
        raw = response.content.decode("utf-8")
        document = json.loads(raw)
        name = method.replace(".", "_") + "_response"
        if name not in document:
            name = "error_response"
        sign = document.get("sign")
        verified = sign is not None and rsa2_verifies(
            self.alipay_public_key, raw_node(raw, name).encode("utf-8"), sign
        )
        return Answer(raw, name, document[name], sign, verified)

    async def call(
        self,
        method: str,
        biz: Mapping[str, Any] | str | None = None,
        *,
        style: Literal["post", "get"] = "post",
        **common: str,
    ) -> Answer:
        return self.parse(await self.send(self.params(method, biz, **common), style), method)

    async def pay(self, out_trade_no: str, fen: int, token: str, **biz: Any) -> Answer:
        notify_url = biz.pop("notify_url", None)
        body = {
            "out_trade_no": out_trade_no,
            "scene": "security_code",
            "auth_code": token,
            "product_code": "FACE_TO_FACE_PAYMENT",
            "subject": "lunch",
            "total_amount": yuan(fen),
            **biz,
        }
        common = {"notify_url": notify_url} if notify_url else {}
        return await self.call("alipay.trade.pay", body, **common)


async def face_token(http: httpx.AsyncClient, student: str = ALICE, school: str = SCHOOL) -> str:
    """A fresh token for a test student from the sandbox's face cloud."""
    response = await http.post("/face/test-tokens", json={"school": school, "student": student})
    assert response.status_code == 200, response.text
    token: str = response.json()["face_token"]
    return token


async def face_user(http: httpx.AsyncClient, student: str = ALICE, school: str = SCHOOL) -> dict[str, Any]:
    values = (await http.get("/_control/test-values")).json()
    found: dict[str, Any] = next(
        u for u in values["face"] if u["student"] == student and u["school"] == school
    )
    return found


class FakeFaceDirectory:
    """A FaceDirectory in memory, for tests that need exact control over tokens and users."""

    def __init__(self) -> None:
        self.users: dict[str, FaceUser] = {}
        self.tokens: dict[str, FaceToken] = {}

    def add_user(self, school: str, student: str) -> FaceUser:
        n = len(self.users) + 1
        user = FaceUser(
            user_id=f"2088999{n:09d}",
            school=school,
            student=student,
            agreement_no=f"2022999{n:013d}",
            consent_ref=f"consent-{student}",
        )
        self.users[user.user_id] = user
        return user

    def mint(self, user: FaceUser, now: float, ttl_s: float = 300.0) -> str:
        token = "fp" + secrets.token_urlsafe(25)[:33]
        self.tokens[token] = FaceToken(token, user.school, user.user_id, now, now + ttl_s, None)
        return token

    def lookup_token(self, token: str) -> FaceToken | None:
        return self.tokens.get(token)

    def use_token(self, token: str, trade_key: str) -> bool:
        found = self.tokens.get(token)
        if found is None or (found.used_by is not None and found.used_by != trade_key):
            return False
        self.tokens[token] = dataclasses.replace(found, used_by=trade_key)
        return True

    def user(self, user_id: str) -> FaceUser | None:
        return self.users.get(user_id)

    def delete_user(self, school: str, user_id: str) -> bool:
        found = self.users.get(user_id)
        if found is None or found.school != school or found.deleted:
            return False
        self.users[user_id] = dataclasses.replace(found, deleted=True)
        return True
