"""The e-card adapter's signing against the committed vectors (computed from the published rules
with the standard library, not with either implementation)."""

import json
from pathlib import Path

import pytest

from adapters.ecard import wire

pytestmark = pytest.mark.contract
V = json.loads((Path(__file__).parent / "vectors" / "ecard.json").read_text())


def test_request_string_and_signature() -> None:
    r = V["request"]
    sts = wire.request_string_to_sign(r["method"], r["path"], r["timestamp"], r["nonce"], r["body"].encode())
    assert sts == r["string_to_sign"]
    assert wire.sign(V["secret"], sts) == r["signature"]


def test_response_verification() -> None:
    r = V["response"]
    headers = {
        "x-ecard-timestamp": r["timestamp"],
        "x-ecard-nonce": r["nonce"],
        "x-ecard-signature": r["signature"],
    }
    body = wire.verify_response(
        secret=V["secret"],
        status=r["status"],
        request_nonce=r["request_nonce"],
        headers=headers,
        body=r["body"].encode(),
    )
    assert body["txn_id"] == "txn_1"
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_response(
            secret=V["secret"],
            status=r["status"],
            request_nonce="another-request",
            headers=headers,
            body=r["body"].encode(),
        )
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_response(
            secret=V["secret"],
            status=r["status"],
            request_nonce=r["request_nonce"],
            headers=headers,
            body=r["body"].encode().replace(b"1250", b"1251"),
        )
