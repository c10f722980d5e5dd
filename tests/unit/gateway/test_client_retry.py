"""Retries and idempotency of the POS client, against a small real ASGI app.

The app verifies every signature with the same library the gateway uses, records what each
attempt carried (Idempotency-Key, nonce, signature, body) and answers from a script, so each test
states exactly which failures the client meets and in which order.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms

from gateway.client import (
    CampusPayClient,
    CampusPayError,
    DeviceCredentials,
    generate_ed25519_keypair,
)

pytestmark = pytest.mark.unit

PUBLIC_BASE_URL = "https://pay.example-school.cn"
BASE_URL = "http://gateway.internal:8080"
PAYMENT = {
    "id": "pay_1",
    "status": "succeeded",
    "amount": 1250,
    "currency": "CNY",
    "method": "card",
    "merchant_order_id": "ord-1",
    "store_id": "store_1",
    "refunded_amount": 0,
}


def problem(status: int, code: str, *, retry_after: str | None = None, detail: str = "details") -> Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {
        "type": f"https://campuspay.example/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": "req_123",
    }
    return Response(json.dumps(body), status, headers=headers, media_type="application/problem+json")


def ok(status: int = 201, body: dict[str, Any] | None = None, *, replayed: bool = False) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return Response(json.dumps(body or PAYMENT), status, headers=headers, media_type="application/json")


@dataclass
class Attempt:
    method: str
    path: str
    idempotency_key: str | None
    nonce: str | None
    signature: str
    covered: list[str]
    body: bytes


@dataclass
class FakeGateway:
    """Verifies signatures as the gateway does, records attempts, answers from ``script``."""

    verifier: HTTPMessageVerifier
    script: list[Callable[[], Response]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def anything(request: Request) -> Response:
            body = await request.body()
            raw_path = request.scope["raw_path"].decode().split("?", 1)[0]
            query = request.scope["query_string"].decode()
            message = httpx.Request(
                request.method, PUBLIC_BASE_URL + raw_path + (f"?{query}" if query else "")
            )
            message.headers.clear()
            message.headers.update(dict(request.headers))
            try:
                (result,) = self.verifier.verify(message, body=body)
            except Exception as exc:
                return problem(401, "signature_invalid", detail=str(exc))
            self.attempts.append(
                Attempt(
                    method=request.method,
                    path=raw_path + (f"?{query}" if query else ""),
                    idempotency_key=request.headers.get("idempotency-key"),
                    nonce=result.nonce,
                    signature=request.headers["signature"],
                    covered=[c.strip('"') for c in list(result.covered_components)[:-1]],
                    body=body,
                )
            )
            return self.script.pop(0)() if self.script else ok()

        return app


class FlakyTransport(httpx.AsyncBaseTransport):
    """Wraps the ASGI transport; on the listed attempt numbers, fails like a real network.

    ``lose_answer`` attempts reach the app (the gateway acted) and then time out on the way back;
    ``refuse`` attempts never reach it.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        lose_answer: frozenset[int] | set[int] = frozenset(),
        refuse: frozenset[int] | set[int] = frozenset(),
    ) -> None:
        self.inner = inner
        self.lose_answer = lose_answer
        self.refuse = refuse
        self.count = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        if self.count in self.refuse:
            raise httpx.ConnectError("connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        if self.count in self.lose_answer:
            await response.aread()
            await response.aclose()
            raise httpx.ReadTimeout("timed out reading the answer", request=request)
        return response


@pytest.fixture(params=["ed25519", "hmac-sha256"])
def device(request: pytest.FixtureRequest) -> tuple[DeviceCredentials, HTTPMessageVerifier]:
    if request.param == "ed25519":
        private_pem, public_pem = generate_ed25519_keypair()
        creds = DeviceCredentials(key_id="key_1", alg="ed25519", private_key_pem=private_pem)
        public: Any = public_pem.encode()
        algorithm: Any = algorithms.ED25519
    else:
        creds = DeviceCredentials(key_id="key_1", alg="hmac-sha256", secret="hsk_unit_secret")
        public = b"hsk_unit_secret"
        algorithm = algorithms.HMAC_SHA256
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(public_keys={"key_1": public}, private_keys={}),
    )
    return creds, verifier


@pytest.fixture
def gateway(device: tuple[DeviceCredentials, HTTPMessageVerifier]) -> FakeGateway:
    return FakeGateway(verifier=device[1])


def make_client(
    gateway: FakeGateway,
    creds: DeviceCredentials,
    transport: httpx.AsyncBaseTransport | None = None,
    **kw: Any,
) -> CampusPayClient:
    kw.setdefault("backoff_initial", 0.001)
    kw.setdefault("backoff_max", 0.01)
    return CampusPayClient(
        BASE_URL,
        creds,
        public_base_url=PUBLIC_BASE_URL,
        transport=transport or httpx.ASGITransport(app=gateway.app()),
        **kw,
    )


@pytest.fixture
async def client(
    gateway: FakeGateway, device: tuple[DeviceCredentials, HTTPMessageVerifier]
) -> AsyncIterator[CampusPayClient]:
    async with make_client(gateway, device[0]) as c:
        yield c


async def pay(client: CampusPayClient, **kw: Any) -> Any:
    return await client.create_payment(
        merchant_order_id="ord-1",
        amount=1250,
        method="card",
        credential={"card_no": "8800000000000001"},
        store_id="store_1",
        **kw,
    )


# -- retries keep the key, re-sign, and stop ---------------------------------------------------


async def test_retries_500_then_in_use_then_lost_answer_with_same_key_and_fresh_nonce(
    gateway: FakeGateway, device: tuple[DeviceCredentials, HTTPMessageVerifier]
) -> None:
    gateway.script = [
        lambda: problem(500, "internal_error"),
        lambda: problem(409, "idempotency_key_in_use", retry_after="0"),
        lambda: ok(201),  # the gateway answers, but the answer is lost on the way back
        lambda: ok(201, replayed=True),
    ]
    transport = FlakyTransport(httpx.ASGITransport(app=gateway.app()), lose_answer={3})
    async with make_client(gateway, device[0], transport) as client:
        result = await pay(client, description="Lunch")

    assert (result.status_code, result.replayed, result.body) == (201, True, PAYMENT)
    attempts = gateway.attempts
    assert len(attempts) == 4
    assert {a.idempotency_key for a in attempts} == {result.idempotency_key}
    assert len({a.nonce for a in attempts}) == 4, "every attempt needs a fresh nonce"
    assert len({a.signature for a in attempts}) == 4
    assert len({a.body for a in attempts}) == 1, "every attempt sends the same bytes"
    assert all(len(a.nonce or "") >= 22 for a in attempts)
    assert attempts[0].covered == ["@method", "@target-uri", "content-digest", "idempotency-key"]
    assert json.loads(attempts[0].body) == {
        "merchant_order_id": "ord-1",
        "amount": 1250,
        "currency": "CNY",
        "method": "card",
        "credential": {"card_no": "8800000000000001"},
        "store_id": "store_1",
        "description": "Lunch",
    }


async def test_connect_error_is_retried_and_given_key_is_used(
    gateway: FakeGateway, device: tuple[DeviceCredentials, HTTPMessageVerifier]
) -> None:
    transport = FlakyTransport(httpx.ASGITransport(app=gateway.app()), refuse={1, 2})
    async with make_client(gateway, device[0], transport) as client:
        result = await pay(client, idempotency_key="my-key-1")
    assert result.idempotency_key == "my-key-1"
    assert [a.idempotency_key for a in gateway.attempts] == ["my-key-1"]
    assert transport.count == 3


async def test_429_honours_retry_after(client: CampusPayClient, gateway: FakeGateway) -> None:
    gateway.script = [lambda: problem(429, "rate_limited", retry_after="0")]
    result = await pay(client)
    assert result.status_code == 201
    assert len(gateway.attempts) == 2


async def test_an_unverifiable_nonce_is_retried_with_a_new_signature(
    client: CampusPayClient, gateway: FakeGateway
) -> None:
    gateway.script = [lambda: problem(401, "nonce_unverifiable", retry_after="0")]
    result = await pay(client)
    assert result.status_code == 201
    first, second = gateway.attempts
    assert first.idempotency_key == second.idempotency_key
    assert first.nonce != second.nonce and first.signature != second.signature


async def test_retry_after_is_capped(
    gateway: FakeGateway, device: tuple[DeviceCredentials, HTTPMessageVerifier]
) -> None:
    gateway.script = [lambda: problem(409, "idempotency_key_in_use", retry_after="3600")]
    async with make_client(gateway, device[0], retry_after_cap=0.01) as client:
        result = await pay(client)
    assert result.status_code == 201
    assert len(gateway.attempts) == 2


async def test_gives_up_after_max_retries_with_the_last_problem(
    gateway: FakeGateway, device: tuple[DeviceCredentials, HTTPMessageVerifier]
) -> None:
    gateway.script = [lambda: problem(503, "unavailable") for _ in range(10)]
    async with make_client(gateway, device[0], max_retries=2) as client:
        with pytest.raises(CampusPayError) as caught:
            await pay(client)
    assert (caught.value.status, caught.value.code) == (503, "unavailable")
    assert len(gateway.attempts) == 3
    assert len({a.idempotency_key for a in gateway.attempts}) == 1


async def test_transport_errors_exhausted_propagate_with_the_key(
    gateway: FakeGateway, device: tuple[DeviceCredentials, HTTPMessageVerifier]
) -> None:
    transport = FlakyTransport(httpx.ASGITransport(app=gateway.app()), refuse=set(range(1, 10)))
    async with make_client(gateway, device[0], transport, max_retries=3) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await pay(client, idempotency_key="resume-me")
    assert transport.count == 4
    assert any("resume-me" in note for note in caught.value.__notes__)


# -- business answers are final ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (422, "validation_error"),
        (422, "idempotency_key_reused"),
        (402, "payment_required"),
        (409, "duplicate_order"),
        (400, "idempotency_key_missing"),
        (401, "signature_expired"),
        (404, "not_found"),
    ],
)
async def test_business_answers_are_not_retried(
    client: CampusPayClient, gateway: FakeGateway, status: int, code: str
) -> None:
    gateway.script = [lambda: problem(status, code, retry_after="0", detail="why it was refused")]
    with pytest.raises(CampusPayError) as caught:
        await pay(client)
    err = caught.value
    assert len(gateway.attempts) == 1
    assert (err.status, err.code, err.title, err.detail) == (
        status,
        code,
        code.replace("_", " "),
        "why it was refused",
    )
    assert err.body["type"] == f"https://campuspay.example/problems/{code}"
    assert err.request_id == "req_123"
    assert code in str(err)


async def test_failed_payment_is_a_result_not_an_error(client: CampusPayClient, gateway: FakeGateway) -> None:
    failed = {**PAYMENT, "status": "failed", "failure_code": "insufficient_balance"}
    gateway.script = [lambda: ok(201, failed)]
    result = await pay(client)
    assert (result.status_code, result.replayed) == (201, False)
    assert result.body["failure_code"] == "insufficient_balance"
    assert len(gateway.attempts) == 1


async def test_processing_202_is_returned(client: CampusPayClient, gateway: FakeGateway) -> None:
    gateway.script = [lambda: ok(202, {**PAYMENT, "status": "processing"})]
    result = await pay(client)
    assert (result.status_code, result.body["status"]) == (202, "processing")


async def test_non_problem_error_answer(client: CampusPayClient, gateway: FakeGateway) -> None:
    gateway.script = [lambda: Response("<html>bad gateway</html>", 418, media_type="text/html")]
    with pytest.raises(CampusPayError) as caught:
        await pay(client)
    assert (caught.value.status, caught.value.code) == (418, "unexpected_response")
    assert caught.value.detail == "<html>bad gateway</html>"


# -- the other calls -------------------------------------------------------------------------------


async def test_cancel_and_refund(client: CampusPayClient, gateway: FakeGateway) -> None:
    canceled = await client.cancel_payment("pay_1")
    refunded = await client.refund_payment("pay_1", amount=500, reason="cold soup", idempotency_key="r-1")
    assert canceled.status_code == 201 and refunded.idempotency_key == "r-1"
    cancel, refund = gateway.attempts
    assert (cancel.method, cancel.path, cancel.body) == ("POST", "/v1/payments/pay_1/cancel", b"")
    assert cancel.covered == ["@method", "@target-uri", "idempotency-key"]
    assert cancel.idempotency_key == canceled.idempotency_key
    assert (refund.path, json.loads(refund.body)) == (
        "/v1/payments/pay_1/refunds",
        {"amount": 500, "reason": "cold soup"},
    )
    assert refund.idempotency_key == "r-1"


async def test_gets_are_signed_retried_and_scoped(client: CampusPayClient, gateway: FakeGateway) -> None:
    gateway.script = [lambda: problem(502, "bad_gateway"), lambda: ok(200)]
    assert await client.get_payment("pay_1") == PAYMENT
    gateway.script = [lambda: ok(200, {"data": [PAYMENT]})]
    assert await client.list_payments("ord 1/2") == {"data": [PAYMENT]}
    gateway.script = [lambda: ok(200, {"id": "ref_1"})]
    assert await client.get_refund("../admin") == {"id": "ref_1"}
    gateway.script = [lambda: problem(404, "not_found")]
    with pytest.raises(CampusPayError):
        await client.get_payment("pay_other_school")

    paths = [a.path for a in gateway.attempts]
    assert paths == [
        "/v1/payments/pay_1",
        "/v1/payments/pay_1",
        "/v1/payments?merchant_order_id=ord+1%2F2",
        "/v1/refunds/..%2Fadmin",
        "/v1/payments/pay_other_school",
    ]
    assert all(
        a.covered == ["@method", "@target-uri"] and a.idempotency_key is None for a in gateway.attempts
    )


async def test_raw_post_without_key_is_not_retried(client: CampusPayClient, gateway: FakeGateway) -> None:
    gateway.script = [lambda: problem(500, "internal_error")]
    response = await client.request("POST", "/v1/offline-batches", json={"records": []})
    assert response.status_code == 500
    assert len(gateway.attempts) == 1
    assert gateway.attempts[0].covered == ["@method", "@target-uri", "content-digest"]


async def test_raw_request_with_key_is_retried(client: CampusPayClient, gateway: FakeGateway) -> None:
    gateway.script = [lambda: problem(500, "internal_error"), lambda: ok(201, {"results": []})]
    response = await client.request(
        "POST", "/v1/offline-batches", json={"records": []}, idempotency_key="b-1"
    )
    assert response.status_code == 201
    assert [a.idempotency_key for a in gateway.attempts] == ["b-1", "b-1"]


async def test_wrong_public_base_url_is_refused_by_the_verifier(
    gateway: FakeGateway, device: tuple[DeviceCredentials, HTTPMessageVerifier]
) -> None:
    async with CampusPayClient(
        BASE_URL, device[0], transport=httpx.ASGITransport(app=gateway.app())
    ) as client:
        with pytest.raises(CampusPayError) as caught:
            await client.get_payment("pay_1")
    assert (caught.value.status, caught.value.code) == (401, "signature_invalid")


async def test_retry_after_as_http_date(client: CampusPayClient, gateway: FakeGateway) -> None:
    gateway.script = [lambda: problem(503, "unavailable", retry_after="Thu, 01 Jan 2026 00:00:00 GMT")]
    result = await pay(client)
    assert result.status_code == 201
    assert len(gateway.attempts) == 2
