"""/metrics: label sets from a closed set (issue 7, A7) and a token in production (A11)."""

from __future__ import annotations

import random
import string
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.routing import BaseRoute, Mount, Route

from gateway.metrics import HTTP_METHODS, REGISTRY, UNMATCHED
from gateway.protection.crypto import Keyring
from gateway.settings import Settings
from tests.harness import Harness, start_harness

pytestmark = pytest.mark.integration

TOKEN = "metrics-token-" + "k" * 24
SEED = 20260907


@asynccontextmanager
async def gateway(tmp_path: Path, **settings: Any) -> AsyncIterator[Harness]:
    async with start_harness(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'campuspay.db'}",
        data_dir=tmp_path,
        seed=False,
        run_workers=False,
        **settings,
    ) as h:
        yield h


def production(**settings: Any) -> dict[str, Any]:
    # A fresh master key: production may refuse keys the repository publishes.
    return {"env": "production", "master_key": Keyring.generate(), **settings}


def label_sets() -> set[tuple[str, str, str]]:
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"])
        for metric in REGISTRY.collect()
        if metric.name == "campuspay_http_request_seconds"
        for s in metric.samples
    }


def templates(routes: Iterable[BaseRoute], prefix: str = "") -> set[str]:
    """The labels the app's own plain routes and its mounts (nested ones too) can have."""
    found: set[str] = set()
    for route in routes:
        if isinstance(route, Mount):
            found |= {prefix + route.path + "/{path}"} | templates(route.routes, prefix + route.path)
        elif isinstance(route, Route) and not prefix:
            found.add(route.path)
    return found


def random_request(rng: random.Random) -> tuple[str, str]:
    token = "".join(rng.choices(string.ascii_uppercase + "-_!~", k=rng.randint(1, 12)))
    method = rng.choice([*sorted(HTTP_METHODS), token, token, token])
    junk = "".join(rng.choices(string.ascii_letters + string.digits + "-._~%", k=rng.randint(1, 40)))
    path = rng.choice(
        [
            f"/{junk}",
            f"/{junk}/{junk}",
            f"/v1/payments/{junk}",
            f"/v1/notify/{junk}/{junk}",
            f"/v1/schools/{junk}/devices",
            f"/sandbox/{junk}",
            f"/sandbox/ecard/{junk}",
            f"/sandbox/_control/{junk}",
            f"/metrics/{junk}",
        ]
    )
    return method, path + rng.choice(["", f"?{junk}={junk}"])


async def test_label_sets_stay_in_a_closed_set_whatever_is_sent(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    async with gateway(tmp_path) as h:
        before = label_sets()
        for _ in range(500):
            method, path = random_request(rng)
            await h.gateway.request(method, path)
        new = label_sets() - before
        known_routes = set(h.app.openapi()["paths"]) | templates(h.app.routes) | {UNMATCHED}
    assert {method for method, _, _ in new} <= HTTP_METHODS | {"other"}, f"seed {SEED}"
    assert {route for _, route, _ in new} <= known_routes, f"seed {SEED}"
    # 8 method labels x the few routes random paths reach x their few statuses, not one per request
    assert len(new) < 100, sorted(new)


async def test_routes_are_labelled_with_their_template_and_mounts_with_theirs(tmp_path: Path) -> None:
    async with gateway(tmp_path) as h:
        before = label_sets()
        await h.gateway.get("/sandbox/ecard/merchants")  # a sandbox route: POST only
        await h.gateway.request("BREW", "/v1/payments")
    assert label_sets() - before == {
        ("GET", "/sandbox/ecard/{path}", "405"),
        ("other", "/v1/payments", "405"),
    }


async def test_sandbox_serves_metrics_without_a_token(tmp_path: Path) -> None:
    async with gateway(tmp_path) as h:
        response = await h.gateway.get("/metrics")
    assert response.status_code == 200
    assert "campuspay_http_request_seconds" in response.text


async def test_production_without_a_token_does_not_serve_metrics(tmp_path: Path) -> None:
    async with gateway(tmp_path, **production()) as h:
        response = await h.gateway.get("/metrics")
        unknown = await h.gateway.get("/no-such-path")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    # Indistinguishable from a path that does not exist.
    assert {k: v for k, v in response.json().items() if k != "request_id"} == {
        k: v for k, v in unknown.json().items() if k != "request_id"
    }


@pytest.mark.parametrize("env", ["production", "sandbox"])
async def test_a_metrics_token_is_required_once_set(tmp_path: Path, env: str) -> None:
    settings = production(metrics_token=TOKEN) if env == "production" else {"metrics_token": TOKEN}
    async with gateway(tmp_path, **settings) as h:
        refused = [
            await h.gateway.get("/metrics"),
            await h.gateway.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"}),
            await h.gateway.get("/metrics", headers={"Authorization": f"Bearer {TOKEN[:-1]}"}),
            await h.gateway.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}),
            await h.gateway.get("/metrics", headers={"Authorization": f"Bearer {h.platform_token}"}),
        ]
        allowed = await h.gateway.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    for response in refused:
        assert response.status_code == 401
        assert response.json()["code"] == "token_invalid"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "campuspay_http_request_seconds" not in response.text
    assert allowed.status_code == 200
    assert "campuspay_http_request_seconds" in allowed.text


def test_a_short_metrics_token_is_refused_and_an_empty_one_is_unset() -> None:
    with pytest.raises(ValidationError, match="metrics_token"):
        Settings(metrics_token="short")
    assert Settings(metrics_token="").metrics_token is None
