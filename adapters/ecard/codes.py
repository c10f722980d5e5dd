"""The e-card dialect's codes, sorted by what they are about (docs/ecard-protocol.md, "Results").

An answer is either about the *payment* (the order: it moved money, or verifiably did not) or
about the gateway's *request* (the provider would not process it). Only the first kind can
settle a payment; the second is ``Refusal`` and stays unknown (adapters/base.py).

============================  ======  ================================  =======================
code                          HTTP    what it is about                  nothing applied?
============================  ======  ================================  =======================
CARD_NOT_FOUND, CARD_LOST,    200     the payment (``FAIL``): final     --
CARD_FROZEN, INSUFFICIENT_
BALANCE, PIN_*, OUTSIDE_MEAL_
PERIOD, PRICE_MISMATCH,
ORDER_REVERSED, ORDER_NOT_
FOUND, REFUND_EXCEEDS_AMOUNT,
NOT_REFUNDABLE
ORDER_CONFLICT                409     our reference, used with other    -- (unknown: the first
                                      details                           order stands)
SIGNATURE_INVALID             401     the request: signature            yes, when signed
TIMESTAMP_EXPIRED             401     the request: clock drift > 300 s  yes, when signed
NONCE_REUSED                  401     the request: nonce seen before    no: an earlier copy of
                                                                        the same bytes may have
                                                                        been applied
MERCHANT_UNKNOWN              401     the request: merchant             yes, when signed (the
                                                                        sandbox cannot sign it)
INVALID_REQUEST               422     the request: malformed            yes, when signed
any other code                401/403 the request: credentials          yes, when signed
any                           429     the request: throttled            yes, when signed
============================  ======  ================================  =======================

"When signed": an unsigned or wrongly signed answer is evidence of nothing (anyone on the path
can write one), so it never says that nothing was applied; it is still sorted as a refusal,
so that a payment stuck behind it is shown for what it most likely is.
"""

from __future__ import annotations

from adapters.base import Refusal, http_refusal

__all__ = ["PAYMENT_FAILURES", "request_refusal"]

# Business refusals: the provider verifiably moved nothing for this order.
PAYMENT_FAILURES = frozenset(
    {
        "CARD_NOT_FOUND",
        "CARD_LOST",
        "CARD_FROZEN",
        "INSUFFICIENT_BALANCE",
        "PIN_REQUIRED",
        "PIN_INVALID",
        "PIN_LOCKED",
        "OUTSIDE_MEAL_PERIOD",
        "PRICE_MISMATCH",
        "ORDER_REVERSED",
        "REFUND_EXCEEDS_AMOUNT",
        "NOT_REFUNDABLE",
        "ORDER_NOT_FOUND",
    }
)

_REQUEST_CODES: dict[str, Refusal] = {
    "SIGNATURE_INVALID": Refusal.SIGNATURE,
    "TIMESTAMP_EXPIRED": Refusal.TIMESTAMP,
    "NONCE_REUSED": Refusal.REPLAY,
    "MERCHANT_UNKNOWN": Refusal.MERCHANT,
    "INVALID_REQUEST": Refusal.MALFORMED,
}
_MAY_HAVE_APPLIED = frozenset({Refusal.REPLAY})


def request_refusal(status: int, code: str) -> tuple[Refusal, bool] | None:
    """``(what was refused, whether a signed answer proves nothing was applied)`` when the
    answer refuses the request rather than speaking about the order; None otherwise."""
    by_status = Refusal.MALFORMED if status == 422 else http_refusal(status)
    if by_status is None:
        return None
    refusal = _REQUEST_CODES.get(code, by_status)
    return refusal, refusal not in _MAY_HAVE_APPLIED
