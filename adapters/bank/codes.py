"""The bank's ``respCode`` values, sorted by what they are about (docs/bank-protocol.md).

An answer is either about the *transaction* (it moved money, or verifiably did not) or about the
gateway's *request* (the bank would not process it, and recorded nothing: "answers 10, 11, 13,
31 record nothing, the orderId stays free"). Only the first kind can settle a payment; the
second is a ``Refusal`` and stays unknown (adapters/base.py).

=====  ==========================================  =================================  ==========
code   meaning                                     about                              outcome
=====  ==========================================  =================================  ==========
00     success                                     the transaction                    final
03/04  timeout, status unknown                     nothing known                      unknown
05     accepted, being processed                   nothing known yet                  unknown
10     malformed message                           the request: MALFORMED             refusal
11     signature did not verify, wrong signMethod  the request: SIGNATURE             refusal
       or certId
12     orderId used with other details             our reference (the first order     unknown
                                                   stands)
13     a required field is missing                 the request: MALFORMED             refusal
31     unknown merId (never signed)                the request: MERCHANT              refusal
34     query: no such transaction                  the transaction                    not found
35     original missing or not in a state for it   the transaction                    final
36     does not match the original                 the transaction                    final
40     agreement check failed                      the payment (the payer's token)    final
61/63  unknown account / frozen                    the payment                        final
64     insufficient balance                        the payment                        final
=====  ==========================================  =================================  ==========

A refusal proves that nothing of that request was applied only when it is signed; ``31`` never
is, so it proves nothing (anyone on the path can write it).
"""

from __future__ import annotations

from adapters.base import Refusal

__all__ = ["request_refusal"]

_REQUEST_CODES: dict[str, Refusal] = {
    "10": Refusal.MALFORMED,
    "11": Refusal.SIGNATURE,
    "13": Refusal.MALFORMED,
    "31": Refusal.MERCHANT,
}


def request_refusal(resp_code: str) -> Refusal | None:
    """What a ``respCode`` refuses about the request, or None when it is about the transaction."""
    return _REQUEST_CODES.get(resp_code)
