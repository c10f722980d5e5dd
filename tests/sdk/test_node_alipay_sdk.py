"""The Node ``alipay-sdk`` (npm, pinned in tests/sdk/node/package.json) against a real sandbox.

tests/sdk/node/flow.mjs runs pay -> query -> refund -> refund query -> cancel -> query with
``validateSign: true`` on every call (the SDK's own response-sign check), verifies the payment
notification with ``checkNotifySignV2``, and expects the SDK to reject a response with a bad sign.
``npm ci`` runs first when node_modules is missing. Skipped with the reason when node or npm is
absent -- never under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sdk.support import unavailable

pytestmark = pytest.mark.e2e
NODE_DIR = Path(__file__).resolve().parent / "node"


def node_tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are needed for the Node alipay-sdk acceptance test")
    return node, npm


def installed(npm: str) -> None:
    if (NODE_DIR / "node_modules" / "alipay-sdk" / "package.json").exists():
        return
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        unavailable(f"npm ci failed in {NODE_DIR} (no registry access?):\n{done.stderr[-2000:]}")


def test_node_alipay_sdk_pay_query_refund_cancel(sandbox_url: str) -> None:
    node, npm = node_tools()
    installed(npm)
    env = {**os.environ, "SANDBOX_URL": sandbox_url}
    done = subprocess.run(
        [node, "flow.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"flow.mjs failed:\n{done.stdout}\n{done.stderr}"
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["pay"]["code"] == "10000" and summary["pay"]["buyerUserId"] == "2088101000000001"
    assert summary["notification"] == {
        "trade_status": "TRADE_SUCCESS",
        "verified": True,
        "tampered_rejected": True,
    }
    assert summary["query"]["tradeStatus"] == "TRADE_SUCCESS"
    assert (summary["refund"]["fundChange"], summary["refund"]["refundFee"]) == ("Y", "2.50")
    assert summary["refund_query"]["refundAmount"] == "2.50"
    assert (summary["cancel"]["action"], summary["cancel"]["retryFlag"]) == ("refund", "N")
    assert summary["query_after_cancel"]["tradeStatus"] == "TRADE_CLOSED"
    assert summary["bad_sign_rejected"] is True
