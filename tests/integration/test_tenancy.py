"""Tenancy and admin authorisation (CONTRACT.md "Who may call what"), provider settings and the
environment guard at save time and at start-up."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from gateway.app import StartupRefused, create_app
from gateway.client import DeviceCredentials
from gateway.store.models import ProviderSetting
from sandbox.alipay.keys import ALIPAY_PUBLIC_KEY_PEM, TEST_APP_PRIVATE_KEY_PEM
from tests.harness import GATEWAY, SANDBOX, Harness, make_settings
from tests.signing_helpers import Attempt, assert_problem, assert_standard_headers, signed

pytestmark = pytest.mark.integration


@dataclass
class School:
    id: str
    api_key: str
    store_id: str
    device: DeviceCredentials


async def second_school(h: Harness) -> School:
    r = await h.admin("POST", "/v1/schools", {"name": "Other School"}, token=h.platform_token)
    assert r.status_code == 201, r.text
    school_id, key = r.json()["id"], r.json()["api_key"]
    assert school_id != h.school_id and key != h.api_key
    r = await h.admin(
        "POST", f"/v1/schools/{school_id}/stores", {"name": "Shop", "merchant_category": "shop"}, token=key
    )
    assert r.status_code == 201, r.text
    device = await h.new_device("ed25519", school_id=school_id, token=key)
    return School(school_id, key, r.json()["id"], device)


def _payment(h: Harness, **overrides: Any) -> dict[str, Any]:
    return h.payment(**{"currency": "CNY", **overrides})


async def _pay(h: Harness, creds: DeviceCredentials, **overrides: Any) -> dict[str, Any]:
    attempt = Attempt(h, _payment(h, **overrides), str(uuid.uuid4()))
    response = await h.gateway.send(attempt.request(creds))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_device_cannot_reach_another_schools_objects(harness: Harness) -> None:
    assert harness.device is not None
    other = await second_school(harness)
    payment = await _pay(harness, harness.device)
    async with harness.client() as client:
        refund = await client.refund_payment(payment["id"], amount=100)
    assert refund.status_code == 201, refund.body

    dev = other.device
    missing = await harness.gateway.send(signed(harness, dev, "GET", "/v1/payments/pay_doesnotexist"))
    probes = [
        signed(harness, dev, "GET", f"/v1/payments/{payment['id']}"),
        signed(harness, dev, "GET", f"/v1/refunds/{refund.body['id']}"),
        signed(harness, dev, "POST", f"/v1/payments/{payment['id']}/cancel", idempotency_key="k-cancel"),
        signed(
            harness,
            dev,
            "POST",
            f"/v1/payments/{payment['id']}/refunds",
            body={"amount": 50},
            idempotency_key="k-r",
        ),
    ]
    for probe in probes:
        body = assert_problem(await harness.gateway.send(probe), 404, "not_found")
        assert payment["id"] not in body["detail"]
    # Another school's id is indistinguishable from one that does not exist.
    assert assert_problem(missing, 404, "not_found")["detail"] == body["detail"]

    async with harness.client() as client:
        after = await client.get_payment(payment["id"])
    assert (after["status"], after["refunded_amount"]) == ("succeeded", 100)
    assert [d["amount"] for d in await harness.debits()] == [1250]


async def test_order_lookup_shows_only_the_calling_devices_payments(harness: Harness) -> None:
    assert harness.device is not None
    other = await second_school(harness)
    sibling = await harness.new_device("hmac-sha256")  # same school, another till
    order = "shared-" + uuid.uuid4().hex[:8]
    mine = await _pay(harness, harness.device, merchant_order_id=order)
    theirs = await _pay(harness, sibling, merchant_order_id=order)
    foreign = await _pay(harness, other.device, merchant_order_id=order, store_id=other.store_id)
    assert len({mine["id"], theirs["id"], foreign["id"]}) == 3

    for creds, expected in ((harness.device, mine), (sibling, theirs), (other.device, foreign)):
        request = signed(harness, creds, "GET", f"/v1/payments?merchant_order_id={order}")
        response = await harness.gateway.send(request)
        assert response.status_code == 200, response.text
        assert [p["id"] for p in response.json()["data"]] == [expected["id"]]


def _school_paths(h: Harness) -> list[tuple[str, str, Any]]:
    assert h.device is not None
    s, d = f"/v1/schools/{h.school_id}", h.device.device_id
    return [
        ("GET", f"{s}/stores", None),
        ("POST", f"{s}/stores", {"name": "X", "merchant_category": "shop"}),
        ("GET", f"{s}/devices", None),
        ("POST", f"{s}/devices", {"name": "X", "alg": "hmac-sha256"}),
        ("POST", f"{s}/devices/{d}/keys", {"alg": "hmac-sha256"}),
        ("DELETE", f"{s}/devices/{d}/keys/{h.device.key_id}", None),
        ("DELETE", f"{s}/devices/{d}", None),
        ("POST", f"{s}/students", {"external_ref": "x1", "age_band": "adult"}),
        ("POST", f"{s}/cards", {"student_id": next(iter(h.cards.values())), "card_no": "99990001"}),
        ("PUT", f"{s}/providers/ecard", {"endpoint": f"{SANDBOX}/ecard", "credentials": {"secret": "s"}}),
        ("GET", f"{s}/providers/ecard", None),
        ("POST", f"{s}/providers/ecard/check", None),
        ("GET", f"{s}/audit", None),
        ("GET", f"{s}/audit/verify", None),
    ]


async def test_admin_tokens_reach_only_their_own_school(harness: Harness) -> None:
    assert harness.device is not None
    other = await second_school(harness)
    audit_before = (await harness.admin("GET", f"/v1/schools/{harness.school_id}/audit")).json()["data"]
    for method, path, body in _school_paths(harness):
        for token in (other.api_key, harness.platform_token):
            response = await harness.admin(method, path, body, token=token)
            assert_problem(response, 404, "not_found")
    # Nothing changed: the device still pays, and the audit chain has no new entry.
    await _pay(harness, harness.device)
    audit = (await harness.admin("GET", f"/v1/schools/{harness.school_id}/audit")).json()["data"]
    new_actions = [e["action"] for e in audit[len(audit_before) :]]
    assert new_actions and all(a.startswith("payment.") for a in new_actions), new_actions
    # ...and the other school's own key works on its own school.
    r = await harness.admin("GET", f"/v1/schools/{other.id}/stores", token=other.api_key)
    assert r.status_code == 200 and [s["id"] for s in r.json()] == [other.store_id]


async def test_own_school_path_with_another_schools_ids(harness: Harness) -> None:
    """A school admin naming its own school in the path cannot reach another school's devices."""
    other = await second_school(harness)
    s, d = f"/v1/schools/{harness.school_id}", other.device.device_id
    probes = [
        ("POST", f"{s}/devices/{d}/keys", {"alg": "hmac-sha256"}),
        ("DELETE", f"{s}/devices/{d}/keys/{other.device.key_id}", None),
        ("DELETE", f"{s}/devices/{d}", None),
    ]
    for method, path, body in probes:
        assert_problem(await harness.admin(method, path, body), 404, "not_found")
    r = await harness.admin("GET", f"/v1/schools/{other.id}/devices", token=other.api_key)
    assert [(x["status"], len(x["keys"])) for x in r.json()] == [("active", 1)]
    # Nor bind a card to another school's student.
    student = await harness.admin(
        "POST",
        f"/v1/schools/{other.id}/students",
        {"external_ref": "b1", "age_band": "adult"},
        token=other.api_key,
    )
    r = await harness.admin("POST", f"{s}/cards", {"student_id": student.json()["id"], "card_no": "77770001"})
    assert_problem(r, 422, "validation_error")


async def test_only_the_platform_creates_schools(harness: Harness) -> None:
    assert_problem(await harness.admin("POST", "/v1/schools", {"name": "Nope"}), 403, "forbidden")
    r = await harness.admin("POST", "/v1/schools", {"name": ""}, token=harness.platform_token)
    assert_problem(r, 422, "validation_error")
    bad = [
        {},
        {"Authorization": "Bearer cp_sk_not-a-real-token"},
        {"Authorization": f"Basic {harness.api_key}"},
        {"Authorization": "Bearer "},
    ]
    for headers in bad:
        for path in ("/v1/schools", f"/v1/schools/{harness.school_id}/stores"):
            r = await harness.gateway.post(path, json={"name": "Nope"}, headers=headers)
            assert_problem(r, 401, "token_invalid")
            assert r.headers["www-authenticate"].startswith("Bearer")
    # A device signature is not an admin credential either.
    assert harness.device is not None
    r = await harness.gateway.send(
        signed(harness, harness.device, "GET", f"/v1/schools/{harness.school_id}/stores")
    )
    assert_problem(r, 401, "token_invalid")


async def test_store_and_card_of_another_school_are_unknown(harness: Harness) -> None:
    other = await second_school(harness)
    attempt = Attempt(harness, _payment(harness), str(uuid.uuid4()))  # harness.store_id: school A's
    response = await harness.gateway.send(attempt.request(other.device))
    assert_problem(response, 422, "store_unknown")
    await attempt.assert_nothing_written(0)

    # A card bound in school A means nothing at school B (and the retry with the same key runs).
    attempt.body["store_id"] = other.store_id
    response = await harness.gateway.send(attempt.request(other.device))
    assert response.status_code == 201, response.text
    assert (response.json()["status"], response.json()["failure_code"]) == ("failed", "card_unknown")
    assert response.json()["student"] is None
    assert await harness.debits() == []


async def test_provider_secrets_are_never_returned_audited_or_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = f"/v1/schools/{harness.school_id}/providers/ecard"
    creds = {"merchant_id": harness.merchant_id, "secret": harness.merchant_secret}
    put = await harness.admin("PUT", path, {"endpoint": f"{SANDBOX}/ecard", "credentials": creds})
    got = await harness.admin("GET", path)
    for r in (put, got):
        assert r.status_code == 200, r.text
        assert r.json()["credential_fields"] == ["merchant_id", "secret"]
        assert r.json()["endpoint"] == f"{SANDBOX}/ecard"
        assert harness.merchant_secret not in r.text

    device = await harness.new_device("hmac-sha256")
    async with harness.client(device) as client:
        result = await client.create_payment(
            **_payment(harness, credential={"card_no": "31000004", "pin": "1234"})
        )
    assert result.body["status"] == "succeeded", result.body
    assert device.secret is not None

    audit = await harness.admin("GET", f"/v1/schools/{harness.school_id}/audit?limit=1000")
    assert audit.status_code == 200
    assert any(e["action"] == "provider.configured" for e in audit.json()["data"])
    # The PIN is short: look for it as a token of its own, not inside hashes or timestamps.
    secrets = {
        "provider secret": re.escape(harness.merchant_secret),
        "device secret": re.escape(device.secret),
        "PIN": r"(?<![0-9A-Za-z])1234(?![0-9A-Za-z])",
        "card number": "31000004",
    }
    for name, pattern in secrets.items():
        assert not re.search(pattern, audit.text), name
        for record in caplog.records:
            assert not re.search(pattern, _logged_text(record)), (name, record.name, record.getMessage())
    assert any(r.name.startswith("adapters.ecard") for r in caplog.records), "expected DEBUG records"


_STANDARD = set(logging.LogRecord("x", logging.INFO, "f", 1, "m", None, None).__dict__) | {"message"}


def _logged_text(record: logging.LogRecord) -> str:
    """What a handler could write: the message, the traceback, and any ``extra`` fields."""
    extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    return f"{record.getMessage()} {record.exc_text or ''} {record.stack_info or ''} {extra}"


@pytest.mark.parametrize(
    "endpoint", ["https://ecard.example.com/api", "http://10.0.0.8/ecard", "http://sandbox.test.example.com/"]
)
async def test_sandbox_refuses_live_provider_hosts(harness: Harness, endpoint: str) -> None:
    path = f"/v1/schools/{harness.school_id}/providers/ecard"
    body = {"endpoint": endpoint, "credentials": {"merchant_id": "m", "secret": "s"}}
    assert_problem(await harness.admin("PUT", path, body), 422, "endpoint_not_allowed")
    assert (await harness.admin("GET", path)).json()["endpoint"] == f"{SANDBOX}/ecard"


async def test_unknown_adapter_and_provider_check(harness: Harness) -> None:
    base = f"/v1/schools/{harness.school_id}/providers"
    body = {"endpoint": f"{SANDBOX}/x", "credentials": {"secret": "s"}}
    assert_problem(await harness.admin("PUT", f"{base}/paypal", body), 422, "unknown_adapter")

    ok = await harness.admin("POST", f"{base}/ecard/check")
    assert ok.status_code == 200, ok.text
    assert ok.json()["ok"] is True and ok.json()["adapter"] == "ecard"

    wrong = {
        "endpoint": f"{SANDBOX}/ecard",
        "credentials": {"merchant_id": harness.merchant_id, "secret": "nope"},
    }
    assert (await harness.admin("PUT", f"{base}/ecard", wrong)).status_code == 200
    failed = assert_problem(await harness.admin("POST", f"{base}/ecard/check"), 502, "provider_check_failed")
    assert "nope" not in failed["detail"]


@pytest.fixture
async def production(tmp_path: Path) -> Any:
    """Settings for a production gateway on a fresh database of its own."""
    return make_settings(f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}", tmp_path / "prod", env="production")


async def test_production_refuses_sandbox_providers_at_start_up(harness: Harness, tmp_path: Path) -> None:
    url = harness.settings.database_url
    assert url is not None
    app = create_app(make_settings(url, tmp_path / "p", env="production"), run_workers=False)
    with pytest.raises(StartupRefused, match=re.escape("sandbox.test")):
        async with app.router.lifespan_context(app):
            pass


async def _set_endpoint(h: Harness, endpoint: str) -> None:
    # Straight into the database: the API refuses this endpoint in the sandbox environment.
    async with h.services.db.transaction() as session:
        await session.execute(
            update(ProviderSetting).where(ProviderSetting.school_id == h.school_id).values(endpoint=endpoint)
        )


async def test_sandbox_refuses_live_providers_at_start_up(harness: Harness, tmp_path: Path) -> None:
    url = harness.settings.database_url
    assert url is not None
    await _set_endpoint(harness, "https://ecard.example.com/api")
    try:
        app = create_app(make_settings(url, tmp_path / "s"), run_workers=False)
        with pytest.raises(StartupRefused, match=re.escape("ecard.example.com")):
            async with app.router.lifespan_context(app):
                pass
    finally:  # the PostgreSQL database is shared by the whole session
        await _set_endpoint(harness, f"{SANDBOX}/ecard")


async def test_production_has_no_sandbox_and_guards_providers(production: Any, harness: Harness) -> None:
    assert (await harness.gateway.get("/sandbox/_control/test-values")).status_code == 200  # control
    app = create_app(production, run_workers=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=GATEWAY) as gw,
    ):
        for path in ("/sandbox/_control/test-values", "/sandbox/ecard/v1/ping", "/_control/test-values"):
            response = await gw.get(path)
            assert_problem(response, 404, "not_found")
            assert_standard_headers(response)
        auth = {"Authorization": f"Bearer {production.bootstrap_token}"}
        school = (await gw.post("/v1/schools", json={"name": "Live"}, headers=auth)).json()
        body = {"endpoint": f"{SANDBOX}/ecard", "credentials": {"merchant_id": "m", "secret": "s"}}
        r = await gw.put(
            f"/v1/schools/{school['id']}/providers/ecard",
            json=body,
            headers={"Authorization": f"Bearer {school['api_key']}"},
        )
        assert_problem(r, 422, "endpoint_not_allowed")
        # a live-looking endpoint with the sandbox's published Alipay key: refused as well
        test_key = {
            "endpoint": "https://openapi.alipay.com/gateway.do",
            "credentials": {
                "app_id": "2021000000000001",
                "app_private_key": TEST_APP_PRIVATE_KEY_PEM,
                "alipay_public_key": ALIPAY_PUBLIC_KEY_PEM,
            },
        }
        r = await gw.put(
            f"/v1/schools/{school['id']}/providers/alipay",
            json=test_key,
            headers={"Authorization": f"Bearer {school['api_key']}"},
        )
        assert_problem(r, 422, "sandbox_credential_in_production")


async def test_production_refuses_to_start_without_a_master_key(production: Any) -> None:
    app = create_app(production.model_copy(update={"master_key": None}), run_workers=False)
    with pytest.raises(StartupRefused, match="MASTER_KEY"):
        async with app.router.lifespan_context(app):
            pass
    assert not (production.data_dir / "master.key").exists()
