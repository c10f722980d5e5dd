"""Requests that cannot be read are 400 ``malformed_body`` and change nothing (CONTRACT.md
"Malformed requests"; issue 7 A6): a body that is not UTF-8 or not JSON, JSON nested deeper than
32 levels, a NUL character (or a lone surrogate) in any string of the body, in a query or in a
path parameter. Each answered 500 on some path before, and on PostgreSQL a NUL in a stored
string failed only when the row was written. Every case runs on a device path and an admin path,
on SQLite and PostgreSQL (the ``harness`` fixture)."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gateway.store.models import Payment, Store
from tests.harness import Harness
from tests.signing_helpers import assert_problem, dump, idempotency_rows, signed

pytestmark = pytest.mark.integration


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _objects(depth: int) -> bytes:
    """{"a": {"a": ... 1 ...}}: ``depth`` objects inside each other."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def _store_body(**fields: Any) -> dict[str, Any]:
    return {"name": "Kiosk", "merchant_category": "canteen", "timezone": "Asia/Shanghai", **fields}


# name -> (how the payment body (a dict) becomes the bytes sent, the loc the answer names)
BODIES: dict[str, tuple[Any, list[str] | None]] = {
    "not-utf8": (lambda b: dump(b).replace(b'"CNY"', b'"\xff\xfeCNY"'), ["body"]),
    "latin1-text": (lambda b: dump({**b, "description": "caf\u00e9"}).replace(b"\\u00e9", b"\xe9"), ["body"]),
    "utf16": (lambda b: json.dumps(b).encode("utf-16"), ["body"]),
    "nested-30000-arrays": (lambda b: _nested(30_000), ["body"]),
    "nested-33-objects": (lambda b: _objects(33), ["body"]),
    "not-json": (lambda b: dump(b)[:-3], None),
    "form-encoded": (lambda b: b"merchant_order_id=x&amount=1", None),
    "nul-in-a-field": (
        lambda b: dump({**b, "merchant_order_id": b["merchant_order_id"] + "\u0000"}),
        ["body", "merchant_order_id"],
    ),
    "nul-in-description": (lambda b: dump({**b, "description": "lunch\u0000"}), ["body", "description"]),
    "nul-in-a-key": (lambda b: dump({**b, "tip\u0000": 1}), ["body", "tip\x00"]),
    "lone-surrogate": (
        lambda b: dump(b).replace(b'"store_id":', b'"description":"\\ud800x","store_id":'),
        ["body", "description"],
    ),
}


def _admin_bytes(case: str) -> bytes:
    make, _ = BODIES[case]
    body = make({**_store_body(), "merchant_order_id": "ord-x", "currency": "CNY", "store_id": "s"})
    return bytes(body)


async def _stores(h: Harness) -> int:
    async with h.services.db.transaction() as session:
        count = await session.scalar(
            select(func.count()).select_from(Store).where(Store.school_id == h.school_id)
        )
    return int(count or 0)


async def _payments(h: Harness) -> int:
    async with h.services.db.transaction() as session:
        mine = select(func.count()).select_from(Payment).where(Payment.school_id == h.school_id)
        return int(await session.scalar(mine) or 0)


def _problem(response: httpx.Response, loc: list[str] | None) -> None:
    body = assert_problem(response, 400, "malformed_body")
    if loc is not None:
        assert body["errors"][0]["loc"] == loc, body


@pytest.mark.parametrize("case", list(BODIES))
async def test_an_unreadable_payment_is_400_and_nothing_happens(
    harness: Harness, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert harness.device is not None
    make, loc = BODIES[case]
    body = {**harness.payment(), "currency": "CNY"}
    key, debits = str(uuid.uuid4()), len(await harness.debits())
    request = signed(harness, harness.device, "POST", "/v1/payments", body=make(body), idempotency_key=key)
    with caplog.at_level(logging.ERROR):
        _problem(await harness.gateway.send(request), loc)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "nothing was an error"
    assert await _payments(harness) == 0
    assert await idempotency_rows(harness, key) == 0
    assert len(await harness.debits()) == debits
    # the same key then pays: the refusal stored nothing
    retry = await harness.gateway.send(
        signed(harness, harness.device, "POST", "/v1/payments", body=body, idempotency_key=key)
    )
    assert retry.status_code == 201 and retry.json()["status"] == "succeeded", retry.text


@pytest.mark.parametrize("case", list(BODIES))
async def test_an_unreadable_admin_body_is_400_and_nothing_is_created(harness: Harness, case: str) -> None:
    _, loc = BODIES[case]
    before = await _stores(harness)
    response = await harness.gateway.post(
        f"/v1/schools/{harness.school_id}/stores",
        content=_admin_bytes(case),
        headers={**harness.admin_headers(), "Content-Type": "application/json"},
    )
    _problem(response, loc)
    assert await _stores(harness) == before
    ok = await harness.admin("POST", f"/v1/schools/{harness.school_id}/stores", _store_body())
    assert ok.status_code == 201 and await _stores(harness) == before + 1


async def test_nul_in_an_admin_string_names_the_field(harness: Harness) -> None:
    before = await _stores(harness)
    response = await harness.admin(
        "POST", f"/v1/schools/{harness.school_id}/stores", _store_body(name="Ki\0sk")
    )
    _problem(response, ["body", "name"])
    assert "name" in response.json()["detail"] and await _stores(harness) == before


async def test_deep_nesting_within_the_batch_limit_and_beyond_the_body_limit(harness: Harness) -> None:
    assert harness.device is not None
    for path, depth, status, code in (
        ("/v1/offline-batches", 100_000, 400, "malformed_body"),  # 200 KB, under the 1 MiB batch limit
        ("/v1/payments", 100_000, 413, "payload_too_large"),  # over 64 KiB: refused before it is read
        ("/v1/payments", 32, 422, "validation_error"),  # 32 levels is JSON the route may judge
    ):
        key = str(uuid.uuid4())
        request = signed(harness, harness.device, "POST", path, body=_nested(depth), idempotency_key=key)
        assert_problem(await harness.gateway.send(request), status, code)
        assert await idempotency_rows(harness, key) == 0
    admin = await harness.gateway.post(
        f"/v1/schools/{harness.school_id}/stores",
        content=_objects(32),
        headers={**harness.admin_headers(), "Content-Type": "application/json"},
    )
    assert_problem(admin, 422, "validation_error")


async def test_nul_in_a_query_or_path_parameter_is_400_naming_it(harness: Harness) -> None:
    assert harness.device is not None
    device = {
        "/v1/payments?merchant_order_id=ord%00x": ["query", "merchant_order_id"],
        "/v1/payments/pay_%00x": ["path", "payment_id"],
        "/v1/refunds/ref_x%00": ["path", "refund_id"],
    }
    for target, loc in device.items():
        _problem(await harness.gateway.send(signed(harness, harness.device, "GET", target)), loc)
    school = harness.school_id
    admin = {
        f"/v1/schools/{school}/funding-sources?student_id=stu_%00": ["query", "student_id"],
        f"/v1/schools/{school}/consents/con_%00x": ["path", "consent_id"],
        f"/v1/schools/{school}%00/stores": ["path", "school_id"],
    }
    for target, loc in admin.items():
        _problem(await harness.gateway.get(target, headers=harness.admin_headers()), loc)
    # a NUL-free request on the same routes still works
    listed = await harness.gateway.send(
        signed(harness, harness.device, "GET", "/v1/payments?merchant_order_id=x")
    )
    assert listed.status_code == 200 and listed.json() == {"data": []}


async def test_a_database_error_never_logs_the_parameters(harness: Harness) -> None:
    """hide_parameters: the statement of a failed query is logged, its parameter row (amounts,
    card hashes, personal data) is not."""
    import sqlalchemy as sa

    secret = "stu-secret-4111111111111111"
    with pytest.raises(sa.exc.DBAPIError) as failed:
        async with harness.services.db.transaction() as session:
            await session.execute(
                sa.insert(Store).values(
                    id=f"sto_{secret}",
                    school_id="sch_does_not_exist",
                    name=secret,
                    merchant_category="canteen",
                    timezone="Asia/Shanghai",
                )
            )
    assert secret not in str(failed.value)
    assert "hide_parameters" in str(failed.value)
