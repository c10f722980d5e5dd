"""The committed OpenAPI document is the app's own: regenerate with ``campuspay openapi``."""

import json
import re
from pathlib import Path

import pytest

from gateway.errors import CODES, BadRequest
from gateway.idempotency.service import validate_key
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
        ("/v1/schools/{school_id}/webhook-endpoints", "post"),
        ("/v1/schools/{school_id}/webhook-endpoints", "get"),
        ("/v1/schools/{school_id}/webhook-endpoints/{endpoint_id}", "get"),
        ("/v1/schools/{school_id}/webhook-endpoints/{endpoint_id}", "patch"),
        ("/v1/schools/{school_id}/webhook-endpoints/{endpoint_id}", "delete"),
        ("/v1/schools/{school_id}/webhook-endpoints/{endpoint_id}/rotate-secret", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing"
    assert not any(p.startswith(("/sandbox", "/_control")) for p in paths)


def test_the_idempotency_key_format_is_the_one_the_gateway_enforces() -> None:
    paths = json.loads(COMMITTED.read_text())["paths"]
    posts = [op for ops in paths.values() for m, op in ops.items() if m == "post" and "security" in op]
    device = [op for op in posts if any("deviceSignature" in s for s in op["security"])]
    assert device
    samples = ["6f1c2a0e-4f7b", "a", "~!" * 127, "", "has space", "tab\t", "ключ", "x" * 256, "nul\x00"]
    for op in device:
        (param,) = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
        schema = param["schema"]
        for key in samples:
            documented = schema["minLength"] <= len(key) <= schema["maxLength"] and bool(
                re.search(schema["pattern"], key)
            )
            try:
                validate_key(key)
                enforced = True
            except BadRequest:
                enforced = False
            assert documented == enforced, (op["operationId"], key)


def test_notify_documents_its_answers_as_problems() -> None:
    op = json.loads(COMMITTED.read_text())["paths"]["/v1/notify/{adapter}/{school_id}"]["post"]
    assert op["responses"]["200"]["content"]["text/plain"]["schema"]["enum"] == ["success"]
    for status in ("413", "422"):
        content = op["responses"][status]["content"]
        assert set(content) == {"application/problem+json"}, status
        assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "notification_rejected" in op["responses"]["422"]["description"]


def test_every_error_is_documented_as_the_problem_it_is() -> None:
    """Errors are sent as application/problem+json; FastAPI documented the Problem schema under
    application/json and none under the real type, so no error body was ever checked."""
    paths = json.loads(COMMITTED.read_text())["paths"]
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in paths.items():
        for method, op in operations.items():
            for status, answer in op["responses"].items():
                if status[0] in "45":
                    assert answer.get("content") == problem, (method, path, status)
            if "requestBody" in op:
                assert "413" in op["responses"], (method, path)
            if (method, path) not in {("get", "/healthz"), ("get", "/metrics")}:
                assert "503" in op["responses"], (method, path)


def test_metrics_token_is_optional_as_it_is_in_a_sandbox_without_one() -> None:
    op = json.loads(COMMITTED.read_text())["paths"]["/metrics"]["get"]
    assert op["security"] == [{"metricsToken": []}, {}]
