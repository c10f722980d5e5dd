"""The signing rules, checked three independent ways against one vector file.

(a) the signature base is rebuilt here by string formatting from the rules in docs/signing.md
    and must equal the vector file, and ``sign_request`` must produce exactly the vector headers;
(b) the vector signatures are verified with ``cryptography`` directly (and with the
    http-message-signatures verifier the gateway uses);
(c) docs/signing.md shows the same values, so the document and the file cannot drift.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms

from gateway.client import (
    CampusPayClient,
    DeviceCredentials,
    generate_ed25519_keypair,
    new_nonce,
    sign_request,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
VECTORS: dict[str, Any] = json.loads((ROOT / "tests/contract/vectors/signing.json").read_text("utf-8"))
DOC = (ROOT / "docs/signing.md").read_text("utf-8")
ALGS = ("ed25519", "hmac-sha256")
CASES = [(v, alg) for v in VECTORS["vectors"] for alg in ALGS]
IDS = [f"{v['name']}-{alg}" for v, alg in CASES]


def _creds(alg: str) -> DeviceCredentials:
    keys = VECTORS["keys"][alg]
    return DeviceCredentials(
        key_id=VECTORS["keyid"],
        alg=alg,
        private_key_pem=keys.get("private_key_pem"),
        secret=keys.get("secret"),
    )


def _body(vector: dict[str, Any]) -> bytes:
    body: str | None = vector["request"]["body"]
    return body.encode("utf-8") if body else b""


def _hand_digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def _hand_base(vector: dict[str, Any], alg: str) -> tuple[str, str]:
    """The signature base and @signature-params value, from the written rules alone."""
    req = vector["request"]
    url = urlsplit(req["url"])
    origin = req["public_base_url"] or f"{url.scheme}://{url.netloc}"
    target_uri = origin + url.path + (f"?{url.query}" if url.query else "")
    headers = {k.lower(): v.strip() for k, v in req["headers"].items()}
    lines = [("@method", req["method"].upper()), ("@target-uri", target_uri)]
    body = _body(vector)
    if body:
        lines.append(("content-digest", _hand_digest(body)))
    if "idempotency-key" in headers:
        lines.append(("idempotency-key", headers["idempotency-key"]))
    components = " ".join(f'"{name}"' for name, _ in lines)
    params = (
        f'({components});created={VECTORS["created"]};keyid="{VECTORS["keyid"]}"'
        f';alg="{alg}";nonce="{VECTORS["nonce"]}"'
    )
    base = "\n".join(f'"{name}": {value}' for name, value in lines) + f'\n"@signature-params": {params}'
    return base, params


def _raw_signature(alg: str, base: str) -> bytes:
    if alg == "ed25519":
        key = serialization.load_pem_private_key(
            VECTORS["keys"]["ed25519"]["private_key_pem"].encode(), password=None
        )
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key.sign(base.encode("ascii"))
    secret = VECTORS["keys"]["hmac-sha256"]["secret"].encode("utf-8")
    return hmac.new(secret, base.encode("ascii"), hashlib.sha256).digest()


def _signature_bytes(header: str) -> bytes:
    match = re.fullmatch(r"sig1=:([A-Za-z0-9+/=]+):", header)
    assert match, header
    return base64.b64decode(match.group(1), validate=True)


def _vector_request(vector: dict[str, Any]) -> httpx.Request:
    req = vector["request"]
    return httpx.Request(req["method"], req["url"], headers=req["headers"], content=_body(vector) or None)


# -- (a) hand-built base == vector file == sign_request ----------------------------------------


@pytest.mark.parametrize(("vector", "alg"), CASES, ids=IDS)
def test_hand_built_signature_base_matches_vector(vector: dict[str, Any], alg: str) -> None:
    expected = vector["signatures"][alg]
    base, params = _hand_base(vector, alg)
    assert base == expected["signature_base"]
    assert expected["signature_input"] == f"sig1={params}"
    assert not base.endswith("\n") and "\r" not in base
    if vector["request"]["body"]:
        assert vector["content_digest"] == _hand_digest(_body(vector))
    else:
        assert vector["content_digest"] is None
    # Ed25519 and HMAC are deterministic: the raw signature over the hand-built base is the vector.
    assert _signature_bytes(expected["signature"]) == _raw_signature(alg, base)


@pytest.mark.parametrize(("vector", "alg"), CASES, ids=IDS)
def test_sign_request_produces_vector_headers(vector: dict[str, Any], alg: str) -> None:
    request = _vector_request(vector)
    sign_request(
        request,
        _creds(alg),
        public_base_url=vector["request"]["public_base_url"],
        created=VECTORS["created"],
        nonce=VECTORS["nonce"],
    )
    expected = vector["signatures"][alg]
    assert request.headers.get("content-digest") == vector["content_digest"]
    assert request.headers["signature-input"] == expected["signature_input"]
    assert request.headers["signature"] == expected["signature"]
    assert request.content == _body(vector)  # signing never touches the body


def test_resigning_replaces_previous_signature_and_digest() -> None:
    vector = VECTORS["vectors"][0]
    request = _vector_request(vector)
    creds = _creds("ed25519")
    sign_request(request, creds, created=1, nonce="n" * 22)
    sign_request(request, creds, created=VECTORS["created"], nonce=VECTORS["nonce"])
    assert request.headers.get_list("signature") == [vector["signatures"]["ed25519"]["signature"]]
    assert request.headers.get_list("content-digest") == [vector["content_digest"]]


async def test_client_serialises_the_vector_body_byte_for_byte() -> None:
    """The client's JSON (compact, key order kept) is the vector body, so the digest matches."""
    vector = VECTORS["vectors"][0]
    payload = json.loads(vector["request"]["body"])
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "pay_1", "status": "succeeded"})

    async with CampusPayClient(
        "http://127.0.0.1:8080", _creds("ed25519"), transport=httpx.MockTransport(handler)
    ) as client:
        await client.create_payment(
            idempotency_key=vector["request"]["headers"]["Idempotency-Key"], **payload
        )
    assert seen[0].content == _body(vector)
    assert seen[0].headers["content-digest"] == vector["content_digest"]
    assert seen[0].headers["idempotency-key"] == vector["request"]["headers"]["Idempotency-Key"]


def test_fresh_nonce_and_created_by_default() -> None:
    creds = _creds("hmac-sha256")
    inputs = set()
    for _ in range(20):
        request = httpx.Request("GET", "http://127.0.0.1:8080/v1/payments/pay_1")
        sign_request(request, creds)
        inputs.add(request.headers["signature-input"])
        nonce = re.search(r';nonce="([^"]*)"', request.headers["signature-input"])
        assert nonce and re.fullmatch(r"[A-Za-z0-9_-]{22,}", nonce.group(1))
    assert len(inputs) == 20
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", new_nonce())


def test_public_base_url_must_be_an_origin() -> None:
    request = httpx.Request("GET", "http://10.0.0.5:8080/v1/payments/pay_1")
    for bad in ("https://pay.example-school.cn/prefix", "pay.example-school.cn", "https://u@h", "ftp://h"):
        with pytest.raises(ValueError):
            sign_request(request, _creds("ed25519"), public_base_url=bad)
    sign_request(request, _creds("ed25519"), public_base_url="https://pay.example-school.cn/")


def test_credentials_validation_and_repr() -> None:
    with pytest.raises(ValueError):
        DeviceCredentials(key_id="k", alg="ed25519")
    with pytest.raises(ValueError):
        DeviceCredentials(key_id="k", alg="hmac-sha256")
    with pytest.raises(ValueError):
        DeviceCredentials(key_id="k", alg="rsa-pss-sha512", secret="x")
    creds = _creds("hmac-sha256")
    assert VECTORS["keys"]["hmac-sha256"]["secret"] not in repr(creds)


def test_generated_keypair_is_pkcs8_and_spki() -> None:
    private_pem, public_pem = generate_ed25519_keypair()
    assert private_pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert public_pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    private = serialization.load_pem_private_key(private_pem.encode(), password=None)
    public = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(private.sign(b"x"), b"x")


def test_demo_file(tmp_path: Path) -> None:
    private_pem, _ = generate_ed25519_keypair()
    demo = {
        "base_url": "http://127.0.0.1:8080",
        "devices": [
            {"device_id": "dev_1", "key_id": "key_1", "alg": "ed25519", "private_key_pem": private_pem},
            {"device_id": "dev_2", "key_id": "key_2", "alg": "hmac-sha256", "secret": "hsk_abc"},
        ],
    }
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(demo), "utf-8")
    ed = DeviceCredentials.from_demo(path)
    hm = DeviceCredentials.from_demo(path, alg="hmac-sha256")
    assert (ed.key_id, ed.alg, ed.device_id, ed.private_key_pem) == ("key_1", "ed25519", "dev_1", private_pem)
    assert (hm.key_id, hm.alg, hm.device_id, hm.secret) == ("key_2", "hmac-sha256", "dev_2", "hsk_abc")
    client = CampusPayClient.from_demo(path, alg="hmac-sha256")
    assert client.creds == hm
    with pytest.raises(LookupError):
        DeviceCredentials.from_demo(path, alg="nope")


# -- (b) the vector signatures verify --------------------------------------------------------


@pytest.mark.parametrize(("vector", "alg"), CASES, ids=IDS)
def test_vector_signature_verifies_with_cryptography(vector: dict[str, Any], alg: str) -> None:
    expected = vector["signatures"][alg]
    base = expected["signature_base"].encode("ascii")
    signature = _signature_bytes(expected["signature"])
    if alg == "ed25519":
        public = serialization.load_pem_public_key(VECTORS["keys"]["ed25519"]["public_key_pem"].encode())
        assert isinstance(public, ed25519.Ed25519PublicKey)
        assert len(signature) == 64
        public.verify(signature, base)  # raises InvalidSignature on mismatch
    else:
        secret = VECTORS["keys"]["hmac-sha256"]["secret"].encode("utf-8")
        assert hmac.compare_digest(signature, hmac.new(secret, base, hashlib.sha256).digest())


class _NoClockVerifier(HTTPMessageVerifier):
    # The vectors have a fixed `created`; the clock window is the gateway's business, not the vector's.
    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


@pytest.mark.parametrize(("vector", "alg"), CASES, ids=IDS)
def test_vector_verifies_with_the_gateway_library(vector: dict[str, Any], alg: str) -> None:
    """What the gateway's verifier sees: the public URL, the headers on the wire, the body."""
    req = vector["request"]
    url = urlsplit(req["url"])
    origin = req["public_base_url"] or f"{url.scheme}://{url.netloc}"
    headers = dict(req["headers"])
    if vector["content_digest"]:
        headers["Content-Digest"] = vector["content_digest"]
    headers["Signature-Input"] = vector["signatures"][alg]["signature_input"]
    headers["Signature"] = vector["signatures"][alg]["signature"]
    keys = VECTORS["keys"][alg]
    if alg == "ed25519":
        public: Any = keys["public_key_pem"].encode()
        algorithm: Any = algorithms.ED25519
    else:
        public = keys["secret"].encode()
        algorithm = algorithms.HMAC_SHA256
    message = httpx.Request(req["method"], origin + url.path + (f"?{url.query}" if url.query else ""))
    message.headers.clear()
    message.headers.update(headers)
    verifier = _NoClockVerifier(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(public_keys={VECTORS["keyid"]: public}, private_keys={}),
    )
    (result,) = verifier.verify(message, max_age=None, body=_body(vector))
    assert result.label == "sig1"
    assert result.nonce == VECTORS["nonce"]
    assert list(result.covered_components)[:-1] == [f'"{c}"' for c in vector["covered_components"]]


# -- (c) the document shows the same values ----------------------------------------------------


def test_doc_shows_the_keys() -> None:
    keys = VECTORS["keys"]
    assert keys["ed25519"]["private_key_pem"] in DOC
    assert keys["ed25519"]["public_key_pem"] in DOC
    assert keys["hmac-sha256"]["secret"] in DOC
    for value in (str(VECTORS["created"]), VECTORS["nonce"], VECTORS["keyid"]):
        assert value in DOC


@pytest.mark.parametrize(("vector", "alg"), CASES, ids=IDS)
def test_doc_shows_the_vector(vector: dict[str, Any], alg: str) -> None:
    req = vector["request"]
    assert f"{req['method']} {req['url']}" in DOC
    for name, value in req["headers"].items():
        assert f"{name}: {value}" in DOC
    if req["body"]:
        assert f"```json\n{req['body']}\n```" in DOC
        assert f"Content-Digest: {vector['content_digest']}\n" in DOC
    if req["public_base_url"]:
        assert req["public_base_url"] in DOC
    expected = vector["signatures"][alg]
    assert f"```\n{expected['signature_base']}\n```" in DOC
    assert f"Signature-Input: {expected['signature_input']}\nSignature: {expected['signature']}\n" in DOC
