"""openapi/sandbox-ecard.json must be what the sandbox e-card routes generate today."""

from __future__ import annotations

import pytest

from sandbox.app import ECARD_OPENAPI_PATH, ecard_openapi, render_ecard_openapi

pytestmark = pytest.mark.unit


def test_committed_ecard_spec_is_current() -> None:
    regenerate = 'regenerate with: .venv/bin/python -c "import sandbox.app as s; s.write_ecard_openapi()"'
    assert ECARD_OPENAPI_PATH.exists(), regenerate
    assert ECARD_OPENAPI_PATH.read_text(encoding="utf-8") == render_ecard_openapi(), regenerate


def test_spec_describes_every_operation_precisely() -> None:
    spec = ecard_openapi()
    assert set(spec["paths"]) == {
        "/v1/consume",
        "/v1/query",
        "/v1/reverse",
        "/v1/refund",
        "/v1/ping",
        "/v1/cards/{card_no}",
        "/v1/cards/report-lost",
        "/v1/cards/cancel-loss",
        "/v1/cards/replace",
        "/v1/blacklist",
        "/v1/offline/upload",
        "/v1/statement",
        "/merchants",
    }
    consume = spec["components"]["schemas"]["ConsumeRequest"]
    assert consume["additionalProperties"] is False
    assert set(consume["required"]) == {"order_ref", "card_no", "amount", "currency"}
    operation = spec["paths"]["/v1/consume"]["post"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"X-Ecard-Merchant", "X-Ecard-Timestamp", "X-Ecard-Nonce", "X-Ecard-Signature"}
    assert "X-Ecard-Signature" in operation["responses"]["200"]["headers"]
