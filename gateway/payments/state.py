"""The payment state machine and the wire shape of payments and refunds.

    processing ──► succeeded ──► canceled
        │  └─────► failed
        └────────► canceled

No state goes backwards. Every transition is a compare-and-set on the current status in the
database (see ``PaymentRepository.transition``), so a request handler and the recovery worker
can race on the same payment and exactly one of them wins.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.store.models import Payment, Refund

__all__ = [
    "ALLOWED",
    "FAILURE_CODES",
    "FAILURE_MESSAGES",
    "face_token_failure",
    "failure_code_for",
    "payment_resource",
    "refund_failure_code_for",
    "refund_resource",
]

ALLOWED: dict[str, frozenset[str]] = {
    "processing": frozenset({"succeeded", "failed", "canceled"}),
    "succeeded": frozenset({"canceled"}),
    "failed": frozenset(),
    "canceled": frozenset(),
}

# Provider codes -> the stable failure codes terminals see.
FAILURE_CODES: dict[str, str] = {
    "CARD_NOT_FOUND": "card_unknown",
    "CARD_LOST": "card_reported_lost",
    "CARD_FROZEN": "card_frozen",
    "INSUFFICIENT_BALANCE": "insufficient_balance",
    "PIN_REQUIRED": "pin_required",
    "PIN_INVALID": "pin_invalid",
    "PIN_LOCKED": "pin_locked",
    "OUTSIDE_MEAL_PERIOD": "outside_meal_period",
    "PRICE_MISMATCH": "price_mismatch",
    "CARD_REPLACED": "card_reported_lost",
    "ORDER_REVERSED": "provider_reversed",
    # UnionPay-style bank respCodes (docs/bank-protocol.md)
    "64": "insufficient_balance",
    "63": "card_frozen",
    "40": "agreement_invalid",
    # Alipay sub_codes
    "ACQ.BUYER_BALANCE_NOT_ENOUGH": "insufficient_balance",
    "ACQ.PAYMENT_AUTH_CODE_INVALID": "face_token_invalid",
    "ACQ.AGREEMENT_NOT_EXIST": "agreement_invalid",
    "ACQ.AGREEMENT_INVALID": "agreement_invalid",
    "ACQ.USER_FACE_PAYMENT_SWITCH_OFF": "face_payment_switched_off",
    "ACQ.PAYMENT_REQUEST_HAS_RISK": "provider_risk_declined",
    "ACQ.TRADE_HAS_CLOSE": "provider_reversed",
}

FAILURE_MESSAGES: dict[str, str] = {
    "card_unknown": "This card is not registered at this school.",
    "card_reported_lost": "This card has been reported lost.",
    "card_frozen": "This card is frozen.",
    "insufficient_balance": "The card balance is too low.",
    "pin_required": "This payment needs the card PIN.",
    "pin_invalid": "The PIN is wrong.",
    "pin_locked": "Too many wrong PINs; the card is locked.",
    "provider_reversed": "The provider had already reversed this order.",
    "provider_refused": (
        "The provider refused the gateway's request (credentials, signature, clock or settings); "
        "nothing was charged. School IT must fix the provider settings."
    ),
    "provider_declined": "The provider declined the payment.",
    "provider_not_configured": "The school has not configured a provider for this payment.",
    "provider_unavailable": "The provider could not be reached; nothing was charged.",
    "no_route": "The school's routing rules leave no provider that can take this payment.",
    "funding_source_inactive": "The card's funding source is no longer active; see the school office.",
    "outcome_unknown_reversed": "The provider did not answer in time; the payment was reversed.",
    "method_unavailable": "Face payment is not configured at this school; pay by card.",
    "outside_meal_period": "This canteen only sells inside meal periods.",
    "price_mismatch": "The amount is not this meal period's fixed price.",
    "consent_required": "No active guardian consent covers face payment for this student; pay by card.",
    "consent_withdrawn": "Consent to face payment was withdrawn; pay by card.",
    "enrollment_scope": "This face token was issued for another school.",
    "identity_mismatch": "The face does not belong to the student's current enrolment; pay by card.",
    "face_token_invalid": "The face token is unknown or was refused; scan again or pay by card.",
    "face_token_expired": "The face token has expired; scan again.",
    "face_token_used": "The face token was already used for another payment; scan again.",
    "agreement_invalid": "The guardian's withholding agreement is missing or invalid.",
    "face_payment_switched_off": "Face payment is switched off for this payer.",
    "provider_risk_declined": "The provider declined the payment as risky.",
    "limit_exceeded": (
        "This payment is over a spending limit set by the student's guardian or the school; "
        "no PIN overrides it, and every payment method is refused alike."
    ),
}


def face_token_failure(provider_code: str) -> str:
    """A refused identification, by what the provider said about the token."""
    code = provider_code.upper()
    if "EXPIRE" in code:
        return "face_token_expired"
    if "USED" in code:
        return "face_token_used"
    if "SCOPE" in code or "GROUP" in code:
        return "enrollment_scope"
    return "face_token_invalid"


def failure_code_for(provider_code: str | None) -> str:
    return FAILURE_CODES.get(provider_code or "", "provider_declined")


# A refused refund's provider code -> the stable code terminals see (the provider's own code is
# kept in the audit log and the failure message).
REFUND_FAILURE_CODES: dict[str, str] = {
    "REFUND_EXCEEDS_AMOUNT": "refund_exceeds_amount",
    "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL": "refund_exceeds_amount",
    "36": "refund_exceeds_amount",  # UnionPay-style: above the refundable remainder
    "NOT_REFUNDABLE": "not_refundable",
    "ACQ.TRADE_STATUS_ERROR": "not_refundable",
    "ACQ.TRADE_HAS_CLOSE": "not_refundable",
    "ACQ.TRADE_HAS_FINISHED": "not_refundable",
    "ORIGINAL_NOT_PAID": "not_refundable",
    "35": "not_refundable",  # UnionPay-style: the original is not a refundable consume
    "ACQ.TRADE_NOT_EXIST": "original_not_found",
    "ORDER_NOT_FOUND": "original_not_found",
    "ORIGINAL_NOT_FOUND": "original_not_found",
    "ACQ.SELLER_BALANCE_NOT_ENOUGH": "merchant_balance_insufficient",
}


def refund_failure_code_for(provider_code: str | None) -> str:
    return REFUND_FAILURE_CODES.get(provider_code or "", "provider_declined")


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def payment_resource(p: Payment) -> dict[str, Any]:
    return {
        "id": p.id,
        "status": p.status,
        "amount": p.amount,
        "currency": p.currency,
        "method": p.method,
        "adapter": p.adapter,
        "merchant_order_id": p.merchant_order_id,
        "store_id": p.store_id,
        "student": p.student_id,
        "provider_reference": p.provider_reference,
        "failure_code": p.failure_code,
        "failure_message": p.failure_message,
        "refunded_amount": p.refunded_amount,
        "created_at": _iso(p.created_at),
        "occurred_at": _iso(p.occurred_at),
        "updated_at": _iso(p.updated_at),
    }


def refund_resource(r: Refund) -> dict[str, Any]:
    return {
        "id": r.id,
        "payment_id": r.payment_id,
        "status": r.status,
        "amount": r.amount,
        "currency": r.currency,
        "reason": r.reason,
        "failure_code": r.failure_code,
        "failure_message": r.failure_message,
        "created_at": _iso(r.created_at),
        "updated_at": _iso(r.updated_at),
    }
