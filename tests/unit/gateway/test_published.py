"""The gateway's list of published credentials is exactly what the repository publishes.

The gateway keeps fingerprints only (it must not import the sandbox); this test derives them
again from the sandbox's own files and test values, the contract vectors and the docs, so a key
added there without a line in gateway/protection/published.py fails here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.protection.published import _PEM, PUBLISHED, fingerprints, published_in
from sandbox.alipay.keys import ALIPAY_PUBLIC_KEY_PEM, TEST_APP_PRIVATE_KEY_PEM
from sandbox.testvalues import ECARD_DEFAULT_SECRET, fixed_values

pytestmark = pytest.mark.unit
ROOT = Path(__file__).parents[3]
SECRET_FIELDS = {"secret", "secure_key"}  # the names published secrets go by in test values and vectors


def _keys_in(text: str) -> set[str]:
    return {fp for m in _PEM.finditer(text) for fp in fingerprints(m.group(0)) if fp.startswith("spki-")}


def _walk(node: Any, key: str | None = None) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_walk(v, k) for k, v in node.items()))
    if isinstance(node, list):
        return set().union(*(_walk(v, key) for v in node))
    if not isinstance(node, str):
        return set()
    found = _keys_in(node)
    if key in SECRET_FIELDS:
        found.add("sha256:" + hashlib.sha256(node.strip().encode()).hexdigest())
    return found


def published_by_the_repository() -> set[str]:
    found = _walk(fixed_values())
    for path in (ROOT / "sandbox").rglob("*"):
        if path.suffix in (".py", ".pem"):
            found |= _keys_in(path.read_text())
    for path in (ROOT / "tests" / "contract" / "vectors").glob("*.json"):
        found |= _walk(json.loads(path.read_text()))
    for path in (ROOT / "docs").rglob("*.md"):
        found |= _keys_in(path.read_text())
    return found


def test_the_list_is_what_the_repository_publishes() -> None:
    derived = published_by_the_repository()
    assert len(derived) > 10
    assert derived - PUBLISHED.keys() == set(), (
        "published but not refused: add to gateway/protection/published.py"
    )
    assert PUBLISHED.keys() - derived == set(), "listed but no longer published: remove from the list"


def _body(pem: str) -> str:
    return "".join(pem.strip().splitlines()[1:-1])


@pytest.mark.parametrize(
    "value",
    [
        ECARD_DEFAULT_SECRET,
        f"  {ECARD_DEFAULT_SECRET}\n",
        ALIPAY_PUBLIC_KEY_PEM,
        _body(ALIPAY_PUBLIC_KEY_PEM),  # the bare base64 body the Alipay adapter also accepts
        TEST_APP_PRIVATE_KEY_PEM,
        _body(TEST_APP_PRIVATE_KEY_PEM),
        (ROOT / "sandbox/bank/pki/root-ca.pem").read_text(),
        (ROOT / "sandbox/bank/pki/merchant.key.pem").read_text(),  # PKCS#8: same key as merchant.pem
    ],
)
def test_each_encoding_of_a_published_value_is_found(value: str) -> None:
    hits = published_in({"field": value, "other": "not published"})
    assert [field for field, _ in hits] == ["field"], hits


def test_other_values_are_not() -> None:
    assert published_in({"secret": "a-school-s-own-secret-0123456789", "merchant_id": "m_test"}) == []
