"""Device authentication (RFC 9421 + RFC 9530) exactly as CONTRACT.md "Who may call what" says.

Every refusal is checked for its precise status and problem code, for leaving nothing behind
(no payment row, no idempotency record, no provider debit) and for not spoiling the
Idempotency-Key: a correctly signed retry with the same key then pays.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from gateway.client import DeviceCredentials, generate_ed25519_keypair, new_nonce
from tests.harness import Harness
from tests.signing_helpers import (
    Attempt,
    assert_problem,
    assert_standard_headers,
    build,
    dump,
    gateway_now,
    other_ed25519_key,
    sign_with_library,
    sign_without_nonce,
    signed,
    unsigned_copy,
    with_signature_bytes_flipped,
)

pytestmark = pytest.mark.integration

Tamper = Callable[[Harness, Attempt, DeviceCredentials], httpx.Request]


def _attempt(h: Harness, **overrides: Any) -> Attempt:
    return Attempt(h, h.payment(**{"currency": "CNY", **overrides}), str(uuid.uuid4()))


def _unsigned(h: Harness, a: Attempt, c: DeviceCredentials) -> httpx.Request:
    return build("POST", "/v1/payments", body=a.body, idempotency_key=a.key)


def _no_nonce(h: Harness, a: Attempt, c: DeviceCredentials) -> httpx.Request:
    request = build("POST", "/v1/payments", body=a.body, idempotency_key=a.key)
    sign_without_nonce(h, c, request)
    return request


def _signed_as(method: str) -> Tamper:
    def tamper(h: Harness, a: Attempt, c: DeviceCredentials) -> httpx.Request:
        other = signed(h, c, method, "/v1/payments", body=a.body, idempotency_key=a.key)
        return unsigned_copy(other, method="POST")

    return tamper


def _signed_for_path(path: str) -> Tamper:
    def tamper(h: Harness, a: Attempt, c: DeviceCredentials) -> httpx.Request:
        other = signed(h, c, "POST", path, body=a.body, idempotency_key=a.key)
        return httpx.Request("POST", a.request(c).url, content=other.content, headers=other.headers)

    return tamper


def _expiring(seconds_from_now: int) -> Tamper:
    """A perfect signature whose ``expires`` is ``seconds_from_now`` on the gateway's clock."""

    def tamper(h: Harness, a: Attempt, c: DeviceCredentials) -> httpx.Request:
        request = build("POST", "/v1/payments", body=a.body, idempotency_key=a.key)
        sign_with_library(h, c, request, nonce=new_nonce(), expires=gateway_now(h) + seconds_from_now)
        return request

    return tamper


def _idempotency_key_added_later(h: Harness, a: Attempt, c: DeviceCredentials) -> httpx.Request:
    request = signed(h, c, "POST", "/v1/payments", body=a.body)
    return unsigned_copy(request, set_headers={"Idempotency-Key": a.key})


def _changed_body(h: Harness, a: Attempt, c: DeviceCredentials) -> httpx.Request:
    return unsigned_copy(a.request(c), body=dump({**a.body, "amount": a.body["amount"] + 1}))


REFUSALS: dict[str, tuple[Tamper, str]] = {
    "unsigned": (_unsigned, "signature_missing"),
    "no-signature-header": (
        lambda h, a, c: unsigned_copy(a.request(c), drop=("signature",)),
        "signature_missing",
    ),
    "no-signature-input": (
        lambda h, a, c: unsigned_copy(a.request(c), drop=("signature-input",)),
        "signature_missing",
    ),
    "input-not-structured": (
        lambda h, a, c: unsigned_copy(a.request(c), set_headers={"Signature-Input": "sig1=(((oops"}),
        "signature_malformed",
    ),
    "input-wrong-label": (
        lambda h, a, c: unsigned_copy(
            a.request(c),
            set_headers={
                "Signature-Input": a.request(c).headers["signature-input"].replace("sig1=", "sig2=")
            },
        ),
        "signature_malformed",
    ),
    "input-without-created": (
        lambda h, a, c: unsigned_copy(
            a.request(c), set_headers={"Signature-Input": f'sig1=("@method");keyid="{c.key_id}";nonce="n"'}
        ),
        "signature_malformed",
    ),
    "signature-bytes-altered": (
        lambda h, a, c: with_signature_bytes_flipped(a.request(c)),
        "signature_invalid",
    ),
    "signed-with-another-key": (lambda h, a, c: a.request(other_ed25519_key(c)), "signature_invalid"),
    "signed-for-another-host": (
        lambda h, a, c: a.request(c, public_base_url="http://evil.test"),
        "signature_invalid",
    ),
    "signed-as-put": (_signed_as("PUT"), "signature_invalid"),
    "signed-for-another-path": (_signed_for_path("/v1/refunds"), "signature_invalid"),
    "body-changed-after-signing": (_changed_body, "digest_mismatch"),
    "content-digest-dropped": (
        lambda h, a, c: unsigned_copy(a.request(c), drop=("content-digest",)),
        "digest_missing",
    ),
    "created-301s-ago": (lambda h, a, c: a.request(c, created=gateway_now(h) - 301), "signature_expired"),
    "created-301s-ahead": (lambda h, a, c: a.request(c, created=gateway_now(h) + 301), "signature_expired"),
    "expires-passed": (_expiring(-1), "signature_expired"),
    "expires-now": (_expiring(0), "signature_expired"),
    "expires-not-an-integer": (
        lambda h, a, c: unsigned_copy(
            a.request(c),
            set_headers={"Signature-Input": a.request(c).headers["signature-input"] + ';expires="x"'},
        ),
        "signature_malformed",
    ),
    "no-nonce-parameter": (_no_nonce, "nonce_missing"),
    "empty-nonce": (lambda h, a, c: a.request(c, nonce=""), "nonce_missing"),
    "alg-claims-hmac-for-ed25519-key": (
        lambda h, a, c: a.request(DeviceCredentials(key_id=c.key_id, alg="hmac-sha256", secret="guess")),
        "alg_mismatch",
    ),
    "unknown-key-id": (
        lambda h, a, c: a.request(
            DeviceCredentials(
                key_id="key_" + "0" * 24, alg="ed25519", private_key_pem=generate_ed25519_keypair()[0]
            )
        ),
        "key_unknown",
    ),
    "idempotency-key-not-covered": (_idempotency_key_added_later, "signature_components_missing"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refused_request_writes_nothing_and_the_key_stays_usable(harness: Harness, case: str) -> None:
    tamper, code = REFUSALS[case]
    assert harness.device is not None
    harness.clock.freeze()
    attempt = _attempt(harness)
    debits_before = len(await harness.debits())

    response = await harness.gateway.send(tamper(harness, attempt, harness.device))

    assert_problem(response, 401, code)
    assert_standard_headers(response, harness.clock())
    await attempt.assert_nothing_written(debits_before)
    await attempt.retry_succeeds(harness.device)


async def test_nonce_is_single_use(harness: Harness) -> None:
    assert harness.device is not None
    nonce = new_nonce()
    first = signed(harness, harness.device, "GET", "/v1/payments?merchant_order_id=x", nonce=nonce)
    assert (await harness.gateway.send(first)).status_code == 200
    # The very same bytes again (a captured request replayed):
    assert_problem(await harness.gateway.send(first), 401, "nonce_reused")

    attempt = _attempt(harness)
    debits_before = len(await harness.debits())
    # A fresh, otherwise perfect signature that reuses the nonce:
    response = await harness.gateway.send(attempt.request(harness.device, nonce=nonce))
    assert_problem(response, 401, "nonce_reused")
    await attempt.assert_nothing_written(debits_before)
    await attempt.retry_succeeds(harness.device)


async def test_query_and_method_of_a_get_are_covered(harness: Harness) -> None:
    assert harness.device is not None
    request = signed(harness, harness.device, "GET", "/v1/payments?merchant_order_id=mine")
    other_query = httpx.Request("GET", str(request.url).replace("=mine", "=theirs"), headers=request.headers)
    assert_problem(await harness.gateway.send(other_query), 401, "signature_invalid")
    as_post = signed(harness, harness.device, "POST", "/v1/payments?merchant_order_id=mine")
    assert_problem(await harness.gateway.send(unsigned_copy(as_post, method="GET")), 401, "signature_invalid")
    assert (await harness.gateway.send(request)).status_code == 200


async def test_nonces_expire_on_the_gateway_clock(harness: Harness) -> None:
    """A nonce is remembered for as long as its signature is fresh on the gateway's clock, also
    when that clock is far from the host's, and housekeeping runs in between."""
    assert harness.device is not None
    harness.clock.advance(hours=1)
    request = signed(harness, harness.device, "GET", "/v1/payments?merchant_order_id=x")
    assert (await harness.gateway.send(request)).status_code == 200
    await harness.services.recovery.housekeeping()
    assert_problem(await harness.gateway.send(request), 401, "nonce_reused")
    harness.clock.advance(seconds=700)
    await harness.services.recovery.housekeeping()
    assert_problem(await harness.gateway.send(request), 401, "signature_expired")


async def test_refused_signature_does_not_burn_the_nonce(harness: Harness) -> None:
    """Only a verified signature may consume a nonce, so nobody can burn a device's nonces."""
    assert harness.device is not None
    attempt = _attempt(harness)
    nonce = new_nonce()
    forged = attempt.request(other_ed25519_key(harness.device), nonce=nonce)
    assert_problem(await harness.gateway.send(forged), 401, "signature_invalid")
    response = await harness.gateway.send(attempt.request(harness.device, nonce=nonce))
    assert response.status_code == 201, response.text


async def test_a_signature_expiring_later_is_accepted(harness: Harness) -> None:
    assert harness.device is not None
    harness.clock.freeze()
    attempt = _attempt(harness)
    response = await harness.gateway.send(_expiring(5)(harness, attempt, harness.device))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("skew", [-290, 290])
async def test_skew_within_300s_is_accepted(harness: Harness, skew: int) -> None:
    assert harness.device is not None
    attempt = _attempt(harness)
    response = await harness.gateway.send(
        attempt.request(harness.device, created=gateway_now(harness) + skew)
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("seconds", [301, -301, 3600])
async def test_freshness_follows_the_gateway_clock(harness: Harness, seconds: int) -> None:
    """Moving the gateway's clock makes a signature made by the host's clock stale, and a
    terminal that corrects its clock from the ``Date`` header is accepted again."""
    assert harness.device is not None
    harness.clock.freeze()
    host_now = int(harness.clock().timestamp())
    harness.clock.advance(seconds=seconds)
    attempt = _attempt(harness)
    debits_before = len(await harness.debits())
    stale = attempt.request(harness.device, created=host_now)
    response = await harness.gateway.send(stale)
    assert_problem(response, 401, "signature_expired")
    await attempt.assert_nothing_written(debits_before)

    served = parsedate_to_datetime(response.headers["date"])
    assert abs((served - harness.clock()).total_seconds()) <= 5, "Date must be the gateway's clock"
    corrected = attempt.request(harness.device, created=int(served.timestamp()), nonce=new_nonce())
    response = await harness.gateway.send(corrected)
    assert response.status_code == 201, response.text


async def test_hmac_device_pays_end_to_end(harness: Harness) -> None:
    creds = await harness.new_device("hmac-sha256")
    assert creds.secret and creds.secret.startswith("hsk_")
    async with harness.client(creds) as client:
        result = await client.create_payment(**harness.payment(amount=700))
        assert result.status_code == 201 and result.body["status"] == "succeeded", result.body
        assert (await client.get_payment(result.body["id"]))["amount"] == 700
    assert [d["amount"] for d in await harness.debits()] == [700]

    # An HMAC key refuses an ed25519-claiming signature, and a wrong secret does not verify.
    attempt = _attempt(harness)
    ed_claim = DeviceCredentials(
        key_id=creds.key_id, alg="ed25519", private_key_pem=generate_ed25519_keypair()[0]
    )
    assert_problem(await harness.gateway.send(attempt.request(ed_claim)), 401, "alg_mismatch")
    wrong = DeviceCredentials(key_id=creds.key_id, alg="hmac-sha256", secret="hsk_wrong")
    assert_problem(await harness.gateway.send(attempt.request(wrong)), 401, "signature_invalid")
    await attempt.retry_succeeds(creds)


async def _pays(h: Harness, creds: DeviceCredentials) -> httpx.Response:
    return await h.gateway.send(_attempt(h).request(creds))


async def test_key_rotation_retirement_and_revocation(harness: Harness) -> None:
    first = harness.device
    assert first is not None and first.device_id is not None
    keys = f"/v1/schools/{harness.school_id}/devices/{first.device_id}/keys"
    private, public = generate_ed25519_keypair()
    r = await harness.admin("POST", keys, {"alg": "ed25519", "public_key": public})
    assert r.status_code == 201, r.text
    assert r.json()["device_id"] == first.device_id
    second = DeviceCredentials(key_id=r.json()["key_id"], alg="ed25519", private_key_pem=private)

    for creds in (first, second):  # both active keys sign for the same device
        assert (await _pays(harness, creds)).status_code == 201

    r = await harness.admin("POST", keys, {"alg": "ed25519", "public_key": generate_ed25519_keypair()[1]})
    assert_problem(r, 409, "key_limit_reached")
    r = await harness.admin("POST", keys, {"alg": "hmac-sha256"})
    assert_problem(r, 409, "key_limit_reached")

    r = await harness.admin("DELETE", f"{keys}/{first.key_id}")
    assert r.status_code == 204, r.text
    attempt = _attempt(harness)
    debits_before = len(await harness.debits())
    assert_problem(await harness.gateway.send(attempt.request(first)), 401, "key_retired")
    await attempt.assert_nothing_written(debits_before)
    await attempt.retry_succeeds(second)  # same device, so the same Idempotency-Key scope

    assert_problem(await harness.admin("DELETE", f"{keys}/{second.key_id}"), 409, "last_active_key")
    assert (await _pays(harness, second)).status_code == 201

    r = await harness.admin("DELETE", f"/v1/schools/{harness.school_id}/devices/{first.device_id}")
    assert r.status_code == 204, r.text
    for creds in (first, second):
        attempt = _attempt(harness)
        debits_before = len(await harness.debits())
        assert_problem(await harness.gateway.send(attempt.request(creds)), 401, "device_revoked")
        get = signed(harness, creds, "GET", "/v1/payments?merchant_order_id=x")
        assert_problem(await harness.gateway.send(get), 401, "device_revoked")
        await attempt.assert_nothing_written(debits_before)
    r = await harness.admin("POST", keys, {"alg": "ed25519", "public_key": generate_ed25519_keypair()[1]})
    assert_problem(r, 404, "not_found")  # a revoked device gets no new keys


async def test_date_and_request_id_on_every_response(harness: Harness) -> None:
    assert harness.device is not None
    now = datetime.now(UTC)
    answers = [
        await _pays(harness, harness.device),  # success
        await harness.gateway.post("/v1/payments", json={}),  # problem (401)
        await harness.gateway.get("/no/such/route"),  # routing 404
        await harness.admin("GET", f"/v1/schools/{harness.school_id}/stores"),  # admin
        await harness.gateway.get("/healthz"),
        await harness.gateway.get("/readyz"),
    ]
    after = datetime.now(UTC)
    assert answers[0].status_code == 201
    for response in answers:
        assert_standard_headers(response)
        # between the first request and the last answer, however slow the machine (Date has
        # whole seconds, so a second's slack below)
        date = parsedate_to_datetime(response.headers["date"])
        assert now - timedelta(seconds=1) <= date <= after, (response.headers["date"], now, after)
    assert len({r.headers["x-request-id"] for r in answers}) == len(answers)  # one id per request


async def test_an_unexpected_error_is_a_problem_with_date_and_request_id(harness: Harness) -> None:
    """Starlette answers unhandled exceptions outside every middleware; the headers every answer
    carries must be there too."""

    async def boom() -> None:
        raise RuntimeError("a bug")

    harness.app.add_api_route("/v1/test-boom", boom)
    transport = httpx.ASGITransport(app=harness.app, raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        response = await client.get("/v1/test-boom")
    assert_problem(response, 500, "internal_error")
    assert_standard_headers(response, harness.clock())
    assert "a bug" not in response.text


async def test_body_over_64_kib_is_refused_before_anything_runs(harness: Harness) -> None:
    assert harness.device is not None
    attempt = _attempt(harness, description="x" * 100)
    debits_before = len(await harness.debits())
    big = dump({**attempt.body, "terminal_params": "p" * (64 * 1024)})
    request = signed(harness, harness.device, "POST", "/v1/payments", body=big, idempotency_key=attempt.key)
    assert int(request.headers["content-length"]) > 64 * 1024
    response = await harness.gateway.send(request)
    assert_problem(response, 413, "payload_too_large")
    assert_standard_headers(response)
    await attempt.assert_nothing_written(debits_before)
    await attempt.retry_succeeds(harness.device)


async def test_chunked_body_over_64_kib_is_refused(harness: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b"x" * 1024

    request = httpx.Request("POST", "http://gateway.test/v1/payments", content=chunks())
    assert "content-length" not in request.headers
    response = await harness.gateway.send(request)
    assert_problem(response, 413, "payload_too_large")


async def test_routing_errors_are_problems(harness: Harness) -> None:
    assert_problem(await harness.gateway.get("/v1/nothing-here"), 404, "not_found")
    assert_problem(await harness.gateway.get("/v1/payments/pay_x/refunds"), 405, "method_not_allowed")
    assert_problem(await harness.gateway.delete("/healthz"), 405, "method_not_allowed")


async def test_query_numbers_beyond_the_databases_range_are_refused(harness: Harness) -> None:
    """A number past 2^63-1 reached the driver (500, OverflowError on SQLite, a range error on
    PostgreSQL); found by schemathesis on ``after_seq``. Now the largest stored number passes and
    one more is a 422."""
    largest, beyond = 2**63 - 1, 2**63
    audit = f"/v1/schools/{harness.school_id}/audit"
    r = await harness.admin("GET", f"{audit}?after_seq={largest}")
    assert r.status_code == 200, r.text
    assert all(entry["seq"] is None for entry in r.json()["data"])  # none sealed after it
    assert_problem(await harness.admin("GET", f"{audit}?after_seq={beyond}"), 422, "validation_error")
    head = "0" * 64
    r = await harness.admin("GET", f"{audit}/verify?head_seq={largest}&head_hash={head}")
    assert r.status_code == 200, r.text
    r = await harness.admin("GET", f"{audit}/verify?head_seq={beyond}&head_hash={head}")
    assert_problem(r, 422, "validation_error")
    assert harness.device is not None
    for since, status in ((largest, 200), (beyond, 422)):
        request = signed(harness, harness.device, "GET", f"/v1/cards/blacklist?since_version={since}")
        r = await harness.gateway.send(request)
        assert r.status_code == status, r.text


async def test_method_not_allowed_names_every_method_of_the_path(harness: Harness) -> None:
    """Each method of a path is a route of its own; Allow named only the first route's (found by
    schemathesis' allow_header_conformance: `Allow: POST` on /v1/payments, which has GET too)."""
    response = await harness.gateway.delete("/v1/payments")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"
    response = await harness.admin("PATCH", f"/v1/schools/{harness.school_id}/routing")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "DELETE, GET, PUT"
    response = await harness.gateway.post("/healthz")
    assert response.headers["allow"] == "GET"


# A body that is not JSON at all is 400 malformed_body: tests/integration/test_malformed_requests.py
INVALID_BODIES: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "not-an-object": lambda b: b"[1, 2, 3]",
    "unknown-field": lambda b: dump({**b, "tip": 100}),
    "amount-zero": lambda b: dump({**b, "amount": 0}),
    "amount-negative": lambda b: dump({**b, "amount": -5}),
    "amount-fraction": lambda b: dump({**b, "amount": 1.5}),
    "amount-string": lambda b: dump({**b, "amount": "1250"}),
    "amount-bool": lambda b: dump({**b, "amount": True}),
    "currency-usd": lambda b: dump({**b, "currency": "USD"}),
    "missing-store": lambda b: dump({k: v for k, v in b.items() if k != "store_id"}),
    "empty-order-id": lambda b: dump({**b, "merchant_order_id": ""}),
    "card-without-card-no": lambda b: dump({**b, "credential": {"face_token": "fp_abcdefgh"}}),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
async def test_invalid_payment_is_422_and_not_stored(harness: Harness, case: str) -> None:
    assert harness.device is not None
    attempt = _attempt(harness)
    debits_before = len(await harness.debits())
    body = INVALID_BODIES[case](attempt.body)
    request = signed(harness, harness.device, "POST", "/v1/payments", body=body, idempotency_key=attempt.key)
    assert_problem(await harness.gateway.send(request), 422, "validation_error")
    await attempt.assert_nothing_written(debits_before)
    await attempt.retry_succeeds(harness.device)


BIOMETRIC: dict[str, dict[str, Any]] = {
    "image-key": {"face_token": "fp_abcdefgh", "image": "aGVsbG8="},
    "jpeg-base64": {"face_token": "/9j/4AAQSkZJRgABAQAAAQABAAD"},
    "data-uri": {"face_token": "data:image/png;base64,iVBORw0KGgo="},
    "vector": {"face_token": "fp_abcdefgh", "embedding": [0.01] * 128},
    "bare-list": {"face_token": [0.5] * 512},
}


@pytest.mark.parametrize("case", list(BIOMETRIC))
async def test_biometric_credential_is_refused_unstored(
    harness: Harness, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert harness.device is not None
    caplog.set_level("DEBUG")
    attempt = _attempt(harness, method="face", credential=BIOMETRIC[case])
    request = attempt.request(harness.device)
    assert_problem(await harness.gateway.send(request), 422, "biometric_data_not_accepted")
    await attempt.assert_nothing_written(0)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/9j/" not in logged and "iVBOR" not in logged and "0.01" not in logged
