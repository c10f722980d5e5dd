"""Request and response bodies of the e-card API (docs/ecard-protocol.md), as pydantic models.

Requests are strict and refuse unknown fields, so a client drifting from the protocol fails here
rather than in production; the same models produce openapi/sandbox-ecard.json.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CARD_NO_PATTERN = r"^[0-9]{8,19}$"
CardNo = Annotated[str, Field(pattern=CARD_NO_PATTERN)]
Ref = Annotated[str, Field(min_length=1, max_length=64)]
Fen = Annotated[int, Field(gt=0, description="integer fen (1/100 CNY)")]
MealPeriodName = Literal["breakfast", "lunch", "dinner"]
MAX_OFFLINE_RECORDS = 500


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
    meal_period: MealPeriodName | None = None


class OrderRequest(_Request):
    """Body of query and reverse."""

    order_ref: Ref


class StatementRequest(_Request):
    """Body of statement: the local calendar day (UTC+8), YYYY-MM-DD."""

    date: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class RefundRequest(_Request):
    order_ref: Ref
    refund_ref: Ref
    amount: Fen


class EmptyRequest(_Request):
    """Body of ping and of POST /merchants: `{}`."""


class CardRef(_Request):
    card_no: CardNo


class ReplaceRequest(_Request):
    old_card_no: CardNo
    new_card_no: CardNo


class BlacklistRequest(_Request):
    since_version: int = Field(ge=0)


class OfflineUploadRequest(_Request):
    """Each record is judged on its own (OfflineRecord), so a malformed one is `rejected`."""

    terminal_id: str = Field(min_length=1, max_length=64)
    records: list[Any] = Field(min_length=1, max_length=MAX_OFFLINE_RECORDS)


class OfflineRecord(_Request):
    """One record of an offline upload."""

    terminal_seq: int = Field(ge=0)
    order_ref: Ref
    card_no: CardNo
    amount: Fen
    occurred_at: str = Field(description="ISO 8601 with an offset, e.g. 2026-03-02T04:05:06Z")
    currency: Literal["CNY"] = "CNY"
    store_ref: str | None = Field(default=None, max_length=64)


class ConsumeResult(BaseModel):
    result: Literal["SUCCESS"]
    order_ref: str
    txn_id: str
    status: Literal["SUCCESS"]
    amount: int
    balance_after: int
    account_no: str
    paid_at: str = Field(description="ISO 8601 UTC, e.g. 2026-01-01T00:00:00Z")
    subsidy_used: int = Field(description="taken from the subsidy wallet (spent first)")
    balance_used: int = Field(description="taken from the main balance")
    subsidy_after: int
    meal_period: MealPeriodName | None = Field(description="the current period at a store with meal rules")


class GiveBack(BaseModel):
    """Where given-back money went; present only for orders that used the subsidy wallet."""

    subsidy_restored: int | None = Field(default=None, description="back into the (still valid) wallet")
    balance_restored: int | None = Field(default=None, description="back into the main balance")
    subsidy_forfeited: int | None = Field(
        default=None, description="subsidy part returned to its funder: the wallet is no longer valid"
    )


class QueryResult(BaseModel):
    result: Literal["SUCCESS"]
    order_ref: str
    status: Literal["SUCCESS", "FAILED", "REVERSED", "NOT_FOUND"]
    amount: int = Field(description="amount of the consume; 0 when NOT_FOUND or reversed unseen")
    refunded_amount: int = Field(description="given back so far by refunds and by a reverse")
    txn_id: str | None = Field(default=None, description="present when money moved")
    code: str | None = Field(default=None, description="why, when FAILED")


class ReverseResult(GiveBack):
    result: Literal["SUCCESS"]
    order_ref: str
    status: Literal["FAILED", "REVERSED"]
    reversed_amount: int


class RefundResult(GiveBack):
    result: Literal["SUCCESS"]
    order_ref: str
    refund_ref: str
    amount: int
    refunded_total: int
    balance_after: int
    subsidy_after: int | None = Field(default=None, description="present when the order used the wallet")


class SubsidyInfo(BaseModel):
    amount: int
    valid_from: str = Field(description="local (Asia/Shanghai) date, inclusive")
    valid_to: str = Field(description="local (Asia/Shanghai) date, inclusive")


class CardInfo(BaseModel):
    result: Literal["SUCCESS"]
    card_no: str
    status: Literal["ACTIVE", "LOST", "FROZEN"]
    account_no: str
    student_ref: str
    balance: int
    subsidy: SubsidyInfo | None = Field(default=None, description="present when the account has one")
    replaced_by: str | None = Field(default=None, description="present when the card was replaced")
    pin_locked: bool | None = Field(default=None, description="present (true) while the PIN is locked")


class CardStatusResult(BaseModel):
    result: Literal["SUCCESS"]
    card_no: str
    status: Literal["ACTIVE", "LOST"]
    version: int = Field(description="the blacklist version after the call")
    changed: bool = Field(description="false: the card already was in that state; nothing bumped")


class ReplaceResult(BaseModel):
    result: Literal["SUCCESS"]
    old_card_no: str
    new_card_no: str
    account_no: str
    status: Literal["ACTIVE"]
    version: int
    changed: bool


class BlacklistChange(BaseModel):
    version: int
    card_no: str
    status: Literal["ACTIVE", "LOST"]
    at: str = Field(description="ISO 8601 UTC")
    reason: Literal["initial", "report_lost", "cancel_loss", "replaced", "issued"]


class BlacklistResult(BaseModel):
    result: Literal["SUCCESS"]
    version: int
    changes: list[BlacklistChange]


OfflineReason = Literal[
    "malformed",
    "occurred_in_future",
    "sequence_reused",
    "order_ref_in_use",
    "card_not_found",
    "card_lost_before_record",
    "card_frozen",
    "over_limit",
    "insufficient_balance",
]


class OfflineRecordResult(BaseModel):
    index: int
    terminal_seq: int | None = Field(default=None, description="absent when the record had none")
    order_ref: str | None = None
    result: Literal["posted", "duplicate", "held_for_review", "rejected"]
    reason: OfflineReason | None = None
    message: str | None = Field(default=None, description="what was malformed")
    txn_id: str | None = None
    amount: int | None = None
    subsidy_used: int | None = None
    balance_used: int | None = None
    original_result: Literal["posted", "held_for_review"] | None = None


class OfflineUploadResult(BaseModel):
    result: Literal["SUCCESS"]
    terminal_id: str
    results: list[OfflineRecordResult]


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
    "PIN_LOCKED",
    "OUTSIDE_MEAL_PERIOD",
    "PRICE_MISMATCH",
    "CARD_EXISTS",
    "CARD_REPLACED",
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
