"""The cryptography a payment cannot avoid, timed in the bench's own run.

Whatever implements it, a payment needs these operations (CONTRACT.md, PROTOCOLS.md):
- card: the device's request signature verified (Ed25519 on the demo's till), the e-card
  request signed and its answer verified (HMAC-SHA256 each);
- face: the device's signature verified, then at Alipay ``ftoken.query`` and ``trade.pay`` each
  RSA-2048 signed with the app key and their answers verified with Alipay's key, and the
  payment's notification verified (RSA).
"""

from __future__ import annotations

import hashlib
import hmac
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

__all__ = ["OPERATIONS", "crypto_costs", "unavoidable_ms"]

# operation -> how many of it each payment method needs
OPERATIONS: dict[str, dict[str, int]] = {
    "card": {"ed25519_verify": 1, "hmac_sha256": 2},
    "face": {"ed25519_verify": 1, "rsa2048_sign": 2, "rsa2048_verify": 3},
}

_MESSAGE = b"app_id=2021000000000000&biz_content={...}&charset=utf-8&method=alipay.trade.pay" * 4


def _per_op_ms(op: Callable[[], object], runs: int = 200, batches: int = 5) -> float:
    figures = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(runs):
            op()
        figures.append((time.perf_counter() - started) / runs * 1000)
    return round(statistics.median(figures), 4)


def crypto_costs() -> dict[str, float]:
    """Milliseconds per operation on this machine, now (median of batches)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pub = rsa_key.public_key()
    rsa_sig = rsa_key.sign(_MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_pub = ed_key.public_key()
    ed_sig = ed_key.sign(_MESSAGE)
    secret = b"k" * 32
    return {
        "rsa2048_sign": _per_op_ms(lambda: rsa_key.sign(_MESSAGE, padding.PKCS1v15(), hashes.SHA256())),
        "rsa2048_verify": _per_op_ms(
            lambda: rsa_pub.verify(rsa_sig, _MESSAGE, padding.PKCS1v15(), hashes.SHA256())
        ),
        "ed25519_verify": _per_op_ms(lambda: ed_pub.verify(ed_sig, _MESSAGE)),
        "hmac_sha256": _per_op_ms(lambda: hmac.new(secret, _MESSAGE, hashlib.sha256).digest()),
    }


def unavoidable_ms(method: str, costs: dict[str, float]) -> float:
    return sum(costs[op] * n for op, n in OPERATIONS[method].items())
