"""Webhook endpoints API (issue 9 item 1; CONTRACT.md "Events and webhooks")."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.store.models import WebhookEndpoint
from tests.harness import Harness, start_harness
from tests.outbound_helpers import PUBLIC_IP, StaticResolver
from tests.signing_helpers import assert_problem

pytestmark = pytest.mark.integration

RECEIVER = "http://receiver.test/hooks"


def _path(h: Harness, suffix: str = "") -> str:
    return f"/v1/schools/{h.school_id}/webhook-endpoints{suffix}"


async def _create(h: Harness, **body: Any) -> dict[str, Any]:
    r = await h.admin("POST", _path(h), {"url": RECEIVER, **body})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def _audit_actions(h: Harness) -> list[str]:
    await h.services.audit.seal(h.school_id)
    entries = await h.services.audit.read(h.school_id, 0, 1000)
    return [e["action"] for e in entries if e["object_type"] == "webhook_endpoint"]


async def test_an_endpoint_s_life(harness: Harness) -> None:
    h = harness
    created = await _create(h, event_types=["payment.succeeded", "refund.succeeded"], description="finance")
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert created["status"] == "enabled" and created["disabled_reason"] is None
    assert created["event_types"] == ["payment.succeeded", "refund.succeeded"]
    endpoint_id = created["id"]
    assert endpoint_id.startswith("whe_")

    # the secret is shown once, and stored encrypted
    got = (await h.admin("GET", _path(h, f"/{endpoint_id}"))).json()
    assert "secret" not in got and got["url"] == RECEIVER and got["description"] == "finance"
    async with h.services.db.transaction() as session:
        row = (
            await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
        ).scalar_one()
        assert secret not in row.secret_enc and secret.removeprefix("whsec_") not in row.secret_enc
        assert h.services.webhook_endpoints.secrets(row, h.clock()) == [secret]

    listed = (await h.admin("GET", _path(h))).json()
    assert [e["id"] for e in listed["data"]] == [endpoint_id] and listed["next_cursor"] is None
    assert "secret" not in listed["data"][0]

    r = await h.admin(
        "PATCH", _path(h, f"/{endpoint_id}"), {"url": "http://other.test/in", "event_types": None}
    )
    assert r.status_code == 200, r.text
    assert r.json()["url"] == "http://other.test/in" and r.json()["event_types"] is None
    assert r.json()["description"] == "finance"  # not sent, not changed

    r = await h.admin("PATCH", _path(h, f"/{endpoint_id}"), {"status": "disabled"})
    assert r.json()["status"] == "disabled" and r.json()["disabled_reason"] == "disabled_by_admin"
    r = await h.admin("PATCH", _path(h, f"/{endpoint_id}"), {"status": "enabled"})
    assert r.json()["status"] == "enabled" and r.json()["disabled_reason"] is None

    # rotation: both secrets sign during the overlap, only the new one afterwards
    r = await h.admin("POST", _path(h, f"/{endpoint_id}/rotate-secret"), {"overlap_seconds": 3600})
    assert r.status_code == 200, r.text
    rotated = r.json()
    new_secret = rotated["secret"]
    assert new_secret != secret and new_secret.startswith("whsec_")
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert timedelta(seconds=3590) < expires - h.clock() <= timedelta(seconds=3600)
    async with h.services.db.transaction() as session:
        row = await session.get(WebhookEndpoint, endpoint_id)
        assert row is not None
        assert h.services.webhook_endpoints.secrets(row, h.clock()) == [new_secret, secret]
        later = h.clock() + timedelta(seconds=3601)
        assert h.services.webhook_endpoints.secrets(row, later) == [new_secret]
    h.clock.advance(seconds=3601)
    assert (await h.admin("GET", _path(h, f"/{endpoint_id}"))).json()["previous_secret_expires_at"] is None

    r = await h.admin("POST", _path(h, f"/{endpoint_id}/rotate-secret"))  # no body: 24 h overlap
    expires = datetime.fromisoformat(r.json()["previous_secret_expires_at"])
    assert timedelta(hours=23, minutes=59) < expires - h.clock() <= timedelta(hours=24)

    r = await h.admin("DELETE", _path(h, f"/{endpoint_id}"))
    assert r.status_code == 204
    assert_problem(await h.admin("GET", _path(h, f"/{endpoint_id}")), 404, "not_found")
    assert_problem(await h.admin("DELETE", _path(h, f"/{endpoint_id}")), 404, "not_found")

    assert await _audit_actions(h) == [
        "webhook_endpoint.created",
        "webhook_endpoint.updated",
        "webhook_endpoint.disabled",
        "webhook_endpoint.enabled",
        "webhook_endpoint.secret_rotated",
        "webhook_endpoint.secret_rotated",
        "webhook_endpoint.deleted",
    ]
    entries = await h.services.audit.read(h.school_id, 0, 1000)
    assert not any(secret in str(e) or new_secret in str(e) for e in entries)


async def test_bad_input_is_a_problem_and_changes_nothing(harness: Harness) -> None:
    h = harness
    for body, code in [
        ({"url": RECEIVER, "event_types": ["payment.exploded"]}, "validation_error"),
        ({"url": RECEIVER, "event_types": []}, "validation_error"),
        ({"url": RECEIVER, "secret": "whsec_mine"}, "validation_error"),
        ({"url": "ftp://receiver.test/x"}, "validation_error"),
        ({"url": "not a url"}, "validation_error"),
        ({"url": "http://example.com/hooks"}, "endpoint_not_allowed"),  # sandbox: sandbox hosts only
    ]:
        assert_problem(await h.admin("POST", _path(h), body), 422, code)
    assert (await h.admin("GET", _path(h))).json()["data"] == []

    created = await _create(h)
    one = _path(h, f"/{created['id']}")
    assert_problem(await h.admin("PATCH", one, {"status": "paused"}), 422, "validation_error")
    assert_problem(await h.admin("PATCH", one, {"url": "http://example.com/"}), 422, "endpoint_not_allowed")
    for overlap in (-1, 604801, "1h"):
        r = await h.admin("POST", one + "/rotate-secret", {"overlap_seconds": overlap})
        assert_problem(r, 422, "validation_error")
    assert (await h.admin("GET", one)).json()["url"] == RECEIVER
    assert_problem(await h.admin("GET", _path(h, "/whe_nosuch")), 404, "not_found")


async def test_another_school_sees_nothing(harness: Harness) -> None:
    h = harness
    created = await _create(h)
    r = await h.admin("POST", "/v1/schools", {"name": "Other"}, token=h.platform_token)
    other_key = r.json()["api_key"]
    other_school = r.json()["id"]
    for method, suffix, body in [
        ("GET", f"/{created['id']}", None),
        ("PATCH", f"/{created['id']}", {"description": "mine now"}),
        ("DELETE", f"/{created['id']}", None),
        ("POST", f"/{created['id']}/rotate-secret", {}),
        ("GET", "", None),
    ]:
        assert_problem(await h.admin(method, _path(h, suffix), body, token=other_key), 404, "not_found")
    # and its own path does not reach this school's endpoint either
    path = f"/v1/schools/{other_school}/webhook-endpoints/{created['id']}"
    assert_problem(await h.admin("GET", path, token=other_key), 404, "not_found")
    assert_problem(await h.admin("GET", _path(h), token=h.platform_token), 404, "not_found")
    assert_problem(await h.gateway.get(_path(h)), 401, "token_invalid")


async def test_the_list_pages(harness: Harness) -> None:
    h = harness
    ids = sorted([(await _create(h))["id"] for _ in range(3)])
    first = (await h.admin("GET", _path(h) + "?limit=2")).json()
    assert [e["id"] for e in first["data"]] == ids[:2] and first["next_cursor"] == ids[1]
    rest = (await h.admin("GET", _path(h) + f"?limit=2&cursor={first['next_cursor']}")).json()
    assert [e["id"] for e in rest["data"]] == ids[2:] and rest["next_cursor"] is None


@asynccontextmanager
async def _production(tmp_path: Path) -> AsyncIterator[Harness]:
    names = {
        "ecard.campus.example": [PUBLIC_IP],
        "hooks.school.example": [PUBLIC_IP],
        "hooks-local.school.example": ["127.0.0.1"],
        "finance.lan.example": ["10.20.0.5"],
    }
    async with start_harness(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}",
        data_dir=tmp_path,
        env="production",
        resolver=StaticResolver(names),
        provider_base="http://ecard.campus.example",
        run_workers=False,
    ) as h:
        yield h


async def test_production_delivers_to_https_public_addresses_and_the_allow_list(tmp_path: Path) -> None:
    async with _production(tmp_path) as h:
        for url in [
            "http://hooks.school.example/in",  # not https
            "https://127.0.0.1/in",
            "https://127.1/in",
            "https://[::1]/in",
            "https://localhost/in",
            "https://hooks-local.school.example/in",
            "https://169.254.169.254/latest/meta-data/",
            "https://[fe80::1]/in",
            "https://receiver.test/in",
            "https://finance.lan.example/in",  # private, and not in the allow-list
            "https://nowhere.school.example/in",  # does not resolve
        ]:
            problem = assert_problem(
                await h.admin("POST", _path(h), {"url": url}), 422, "endpoint_not_allowed"
            )
            assert problem["detail"], url
        assert (await h.admin("GET", _path(h))).json()["data"] == []

        created = await _create_at(h, "https://hooks.school.example/in")
        one = _path(h, f"/{created['id']}")
        r = await h.admin("PATCH", one, {"url": "https://finance.lan.example/in"})
        assert_problem(r, 422, "endpoint_not_allowed")
        r = await h.admin(
            "PUT",
            f"/v1/schools/{h.school_id}/network-allowlist",
            {"cidrs": ["10.20.0.0/16"]},
            token=h.platform_token,
        )
        assert r.status_code == 200, r.text
        r = await h.admin("PATCH", one, {"url": "https://finance.lan.example/in"})
        assert r.status_code == 200, r.text
        assert r.json()["url"] == "https://finance.lan.example/in"


async def _create_at(h: Harness, url: str) -> dict[str, Any]:
    r = await h.admin("POST", _path(h), {"url": url})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created
