"""Request and response bodies of the e-card API (docs/ecard-protocol.md), as pydantic models.

Requests are strict and refuse unknown fields, so a client drifting from the protocol fails here
rather than in production; the same models produce openapi/sandbox-ecard.json.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

CARD_NO_PATTERN = r"^[0-9]{8,19}$"
CardNo = Annotated[str, Field(pattern=CARD_NO_PATTERN)]
Ref = Annotated[str, Field(min_length=1, max_length=64)]
Fen = Annotated[int, Field(gt=0, description="integer fen (1/100 CNY)")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ConsumeRequest(_Request):
    order_ref: Ref
    card_no: CardNo
    amount: Fen
    currency: Literal["CNY"]
    pin: str | None = Field(default=None, pattern=r"^[0-9]{4,6}$")
    terminal_id: str | None = None
    store_ref: str | None = None
    description: str | None = Field(default=None, max_length=128)


class OrderRequest(_Request):
    """Body of query and reverse."""

    order_ref: Ref


class RefundRequest(_Request):
    order_ref: Ref
    refund_ref: Ref
    amount: Fen


class EmptyRequest(_Request):
    """Body of ping and of POST /merchants: `{}`."""


class CardRef(_Request):
    card_no: CardNo


class ConsumeResult(BaseModel):
    result: Literal["SUCCESS"]
    order_ref: str
    txn_id: str
    status: Literal["SUCCESS"]
    amount: int
    balance_after: int
    account_no: str
    paid_at: str = Field(description="ISO 8601 UTC, e.g. 2026-01-01T00:00:00Z")


class QueryResult(BaseModel):
    result: Literal["SUCCESS"]
    order_ref: str
    status: Literal["SUCCESS", "FAILED", "REVERSED", "NOT_FOUND"]
    amount: int = Field(description="amount of the consume; 0 when NOT_FOUND or reversed unseen")
    refunded_amount: int = Field(description="given back so far by refunds and by a reverse")
    txn_id: str | None = Field(default=None, description="present when money moved")
    code: str | None = Field(default=None, description="why, when FAILED")


class ReverseResult(BaseModel):
    result: Literal["SUCCESS"]
    order_ref: str
    status: Literal["FAILED", "REVERSED"]
    reversed_amount: int


class RefundResult(BaseModel):
    result: Literal["SUCCESS"]
    order_ref: str
    refund_ref: str
    amount: int
    refunded_total: int
    balance_after: int


class CardInfo(BaseModel):
    result: Literal["SUCCESS"]
    card_no: str
    status: Literal["ACTIVE", "LOST", "FROZEN"]
    account_no: str
    student_ref: str
    balance: int


class PingResult(BaseModel):
    result: Literal["SUCCESS"]
    merchant_id: str
    time: str = Field(description="the provider's clock, ISO 8601 UTC")


class MerchantCreated(BaseModel):
    merchant_id: str
    secret: str


FailCode = Literal[
    "CARD_NOT_FOUND",
    "CARD_LOST",
    "CARD_FROZEN",
    "INSUFFICIENT_BALANCE",
    "PIN_REQUIRED",
    "PIN_INVALID",
    "ORDER_CONFLICT",
    "ORDER_REVERSED",
    "ORDER_NOT_FOUND",
    "REFUND_EXCEEDS_AMOUNT",
    "NOT_REFUNDABLE",
]


class FailBody(BaseModel):
    """A business refusal: nothing moved."""

    result: Literal["FAIL"]
    code: FailCode
    message: str
    order_ref: str | None = None


class ErrorBody(BaseModel):
    """An authentication error (401), malformed request (422) or technical error (5xx)."""

    result: Literal["ERROR"]
    code: Literal[
        "SIGNATURE_INVALID",
        "TIMESTAMP_EXPIRED",
        "NONCE_REUSED",
        "MERCHANT_UNKNOWN",
        "INVALID_REQUEST",
        "INTERNAL_ERROR",
    ]
    message: str
