"""Alipay's result codes, sorted by what they are about (PROTOCOLS.md, "Result codes").

An answer is either about the *trade* (paid, waiting, closed, refused for a business reason) or
about the gateway's *request* (Alipay would not process it). Only the first kind can settle a
payment; the second is a ``Refusal`` and stays unknown (adapters/base.py).

=========  =================================================  ====================================
code       sub_code                                           about
=========  =================================================  ====================================
10000                                                         the trade (success)
10003                                                         the trade (user paying)
20000      isp.* / ACQ.SYSTEM_ERROR                           nothing known (system error)
20001      aop.invalid-auth-token, aop.invalid-app-auth-...   the request: authorisation (AUTH)
40001      isv.missing-*                                      the request: missing parameter
                                                              (MALFORMED)
40002      isv.invalid-signature                              the request: SIGNATURE
40002      isv.invalid-timestamp                              the request: TIMESTAMP
40002      isv.invalid-app-id                                 the request: MERCHANT (the app)
40002      any other isv.invalid-*                            the request: MALFORMED
40003      (not in PROTOCOLS.md; always read as a refusal)    the request: MALFORMED
40004      ACQ.INVALID_PARAMETER                              the request: MALFORMED
40004      ACQ.SYSTEM_ERROR                                   nothing known (query now)
40004      any other ACQ.* (balance, token, agreement, ...)   the trade (business failure)
40006      isv.insufficient-isv-permissions                   the request: AUTH (the app lacks
                                                              the API)
=========  =================================================  ====================================

Alipay checks these before it processes anything, so a *signed* one proves that nothing of that
request was applied. Unsigned answers (``isv.invalid-app-id``: no app, nothing to sign with; an
HTTP 401/403/429 from something in front of Alipay, ``adapters.base.http_refusal``) are sorted
the same way but prove nothing. Alipay's answers carry no nonce of the request they answer, and
a refusal names no ``out_trade_no``: that a signed refusal answers *this* request rests on the
transport (TLS), as every signed Alipay answer without an ``out_trade_no`` does.
"""

from __future__ import annotations

from adapters.base import Refusal

__all__ = ["request_refusal"]

_BY_CODE: dict[str, Refusal] = {
    "20001": Refusal.AUTH,
    "40001": Refusal.MALFORMED,
    "40002": Refusal.MALFORMED,
    "40003": Refusal.MALFORMED,
    "40006": Refusal.AUTH,
}
_BY_SUB_CODE: dict[str, Refusal] = {
    "isv.invalid-signature": Refusal.SIGNATURE,
    "isv.missing-signature": Refusal.SIGNATURE,
    "isv.invalid-timestamp": Refusal.TIMESTAMP,
    "isv.invalid-app-id": Refusal.MERCHANT,
    "isv.missing-app-id": Refusal.MERCHANT,
}
# business-layer (40004) sub_codes that refuse the request, not the trade
_BUSINESS_REFUSALS: dict[str, Refusal] = {"ACQ.INVALID_PARAMETER": Refusal.MALFORMED}


def request_refusal(code: str, sub_code: str) -> Refusal | None:
    """What an answer refuses about the request, or None when it speaks about the trade."""
    if code == "40004":
        return _BUSINESS_REFUSALS.get(sub_code)
    if code not in _BY_CODE:
        return None
    return _BY_SUB_CODE.get(sub_code, _BY_CODE[code])
