"""A header the signature covers, or a signature header itself, sent twice: refused (401
``signature_malformed``, CONTRACT.md "Malformed requests"), because readers disagree about
which copy counts. The gateway signed over the last ``Idempotency-Key`` and stored the first, so
a party on the path could turn an honest retry into a second refund.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gateway.client import new_nonce
from gateway.store.models import Refund
from tests.harness import Harness
from tests.signing_helpers import (
    Attempt,
    assert_problem,
    build,
    idempotency_rows,
    sign_with_library,
    signed,
)

pytestmark = pytest.mark.integration


def _twice(
    request: httpx.Request, name: str, value: str | None = None, *, first: bool = True
) -> httpx.Request:
    """``request`` with one more ``name`` header (``value``, or a copy of its own), placed before
    or after the original one; everything else exactly as signed."""
    extra = (name, request.headers[name] if value is None else value)
    items = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
    headers = [extra, *items] if first else [*items, extra]
    return httpx.Request(request.method, request.url, content=request.content or None, headers=headers)


async def _refunds(h: Harness, payment_id: str) -> int:
    async with h.services.db.transaction() as session:
        count = await session.scalar(
            select(func.count()).select_from(Refund).where(Refund.payment_id == payment_id)
        )
    return int(count or 0)


async def test_an_honest_refund_retry_cannot_be_made_to_refund_again(harness: Harness) -> None:
    assert harness.device is not None
    async with harness.client() as client:
        paid = await client.create_payment(**harness.payment(amount=1000))
    assert paid.body["status"] == "succeeded", paid.body
    path, key, body = f"/v1/payments/{paid.body['id']}/refunds", str(uuid.uuid4()), {"amount": 300}
    first = await harness.gateway.send(
        signed(harness, harness.device, "POST", path, body=body, idempotency_key=key)
    )
    assert first.status_code == 201, first.text

    # The terminal's retry (its answer was lost), freshly signed with the same key; on the way a
    # second Idempotency-Key is slipped in, before or after the signed one.
    for position in (True, False):
        retry = signed(harness, harness.device, "POST", path, body=body, idempotency_key=key)
        tampered = _twice(retry, "Idempotency-Key", str(uuid.uuid4()), first=position)
        assert_problem(await harness.gateway.send(tampered), 401, "signature_malformed")

    assert await _refunds(harness, paid.body["id"]) == 1
    refunds = [e for e in await harness.events() if e["kind"] == "ecard.refund"]
    assert len(refunds) == 1, refunds
    # and the honest retry itself replays the first refund
    retry = await harness.gateway.send(
        signed(harness, harness.device, "POST", path, body=body, idempotency_key=key)
    )
    assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()


@pytest.mark.parametrize("name", ["Signature", "Signature-Input", "Content-Digest", "Idempotency-Key"])
@pytest.mark.parametrize("copy", ["same", "other"])
async def test_a_signature_header_twice_is_refused_and_writes_nothing(
    harness: Harness, name: str, copy: str
) -> None:
    assert harness.device is not None
    attempt = Attempt(harness, harness.payment(currency="CNY"), str(uuid.uuid4()))
    debits_before = len(await harness.debits())
    request = attempt.request(harness.device)
    other: dict[str, Any] = {
        "Signature": signed(harness, harness.device, "GET", "/v1/payments?merchant_order_id=x").headers[
            "signature"
        ],
        "Signature-Input": attempt.request(harness.device).headers["signature-input"],
        "Content-Digest": "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hJ9Xo=:",
        "Idempotency-Key": str(uuid.uuid4()),
    }
    for first in (True, False):
        value = None if copy == "same" else other[name]
        response = await harness.gateway.send(_twice(request, name, value, first=first))
        assert_problem(response, 401, "signature_malformed")
    await attempt.assert_nothing_written(debits_before)
    await attempt.retry_succeeds(harness.device)


async def test_a_get_with_two_signatures_is_refused(harness: Harness) -> None:
    assert harness.device is not None
    request = signed(harness, harness.device, "GET", "/v1/payments?merchant_order_id=x")
    assert_problem(await harness.gateway.send(_twice(request, "Signature-Input")), 401, "signature_malformed")
    assert (await harness.gateway.send(request)).status_code == 200  # the nonce was not used up


async def test_any_covered_header_must_come_once_and_others_may_repeat(harness: Harness) -> None:
    """A device may cover more than the contract's minimum (here ``content-type``); what it
    covers must then come once. A header nobody signed or reads may repeat."""
    device = harness.device
    assert device is not None
    attempt = Attempt(harness, harness.payment(currency="CNY"), str(uuid.uuid4()))

    def covering_content_type() -> httpx.Request:
        request = build("POST", "/v1/payments", body=attempt.body, idempotency_key=attempt.key)
        sign_with_library(harness, device, request, nonce=new_nonce(), extra=("content-type",))
        return request

    doubled = _twice(covering_content_type(), "Content-Type", "application/json", first=False)
    assert_problem(await harness.gateway.send(doubled), 401, "signature_malformed")
    assert await idempotency_rows(harness, attempt.key) == 0

    response = await harness.gateway.send(_twice(covering_content_type(), "Accept", "text/plain"))
    assert response.status_code == 201, response.text
