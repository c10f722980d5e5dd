"""The committed OpenAPI document is the app's own: regenerate with ``campuspay openapi``."""

import json
from pathlib import Path

import pytest

from gateway.errors import CODES
from gateway.openapi import render

pytestmark = pytest.mark.unit
COMMITTED = Path(__file__).parents[3] / "openapi" / "gateway.json"


def test_committed_openapi_is_current() -> None:
    assert COMMITTED.read_text() == render(), "openapi/gateway.json is stale: run `campuspay openapi`"


def test_every_problem_code_is_documented() -> None:
    description = json.loads(COMMITTED.read_text())["info"]["description"]
    missing = [code for code in CODES if f"`{code}`" not in description]
    assert not missing


def test_contract_paths_exist() -> None:
    paths = json.loads(COMMITTED.read_text())["paths"]
    for path, method in [
        ("/v1/payments", "post"),
        ("/v1/payments", "get"),
        ("/v1/payments/{payment_id}", "get"),
        ("/v1/payments/{payment_id}/cancel", "post"),
        ("/v1/payments/{payment_id}/refunds", "post"),
        ("/v1/refunds/{refund_id}", "get"),
        ("/v1/schools", "post"),
        ("/v1/schools/{school_id}/devices", "post"),
        ("/v1/schools/{school_id}/devices/{device_id}/keys", "post"),
        ("/v1/schools/{school_id}/devices/{device_id}/keys/{key_id}", "delete"),
        ("/v1/schools/{school_id}/devices/{device_id}", "delete"),
        ("/v1/schools/{school_id}/providers/{adapter}", "put"),
        ("/v1/schools/{school_id}/providers/{adapter}/check", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing"
    assert not any(p.startswith(("/sandbox", "/_control")) for p in paths)
