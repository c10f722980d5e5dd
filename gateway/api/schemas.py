"""Request and response models of the public API (the OpenAPI document is built from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

__all__ = [
    "BIGINT_MAX",
    "CardBinsIn",
    "CardBinsOut",
    "CardCredentialIn",
    "CardIn",
    "CardOut",
    "DeviceIn",
    "DeviceKeyIn",
    "DeviceOut",
    "DryRunIn",
    "DryRunOut",
    "EventOut",
    "EventPage",
    "FaceCredentialIn",
    "FundingSourceIn",
    "FundingSourceOut",
    "LimitPolicyIn",
    "LimitPolicyOut",
    "LimitValues",
    "LimitsIn",
    "LimitsOut",
    "MealPeriod",
    "MealPeriodsIn",
    "NeedsAttentionItem",
    "NeedsAttentionPage",
    "NetworkAllowlistIn",
    "NetworkAllowlistOut",
    "PaymentCreate",
    "PaymentOut",
    "Problem",
    "ProviderIn",
    "ProviderOut",
    "RedeliverIn",
    "RedeliverOut",
    "RefundCreate",
    "RefundOut",
    "RefusalOut",
    "RotateSecretIn",
    "RoutingOut",
    "RoutingReasonOut",
    "RoutingValidationOut",
    "SchoolIn",
    "SchoolOut",
    "SkippedOut",
    "StoreIn",
    "StoreOut",
    "StudentIn",
    "StudentOut",
    "TestEventOut",
    "WebhookAttemptOut",
    "WebhookAttemptPage",
    "WebhookEndpointCreated",
    "WebhookEndpointIn",
    "WebhookEndpointOut",
    "WebhookEndpointPage",
    "WebhookEndpointPatch",
]


# The largest integer the databases store (SQLite INTEGER, PostgreSQL BIGINT): a query number
# compared with a stored one must be at most this, or the driver raises (a 500) instead of a 422.
BIGINT_MAX = 2**63 - 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CardCredentialIn(Strict):
    card_no: Annotated[
        str, Field(pattern=r"^[0-9]{8,19}$", description="The card number (stored only hashed)")
    ]
    pin: Annotated[str | None, Field(pattern=r"^[0-9]{4,6}$", description="Never stored or logged")] = None


class FaceCredentialIn(Strict):
    face_token: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9_\-]{8,128}$", description="A provider face token, never an image")
    ]


class PaymentCreate(Strict):
    merchant_order_id: Annotated[str, Field(min_length=1, max_length=64)]
    amount: Annotated[StrictInt, Field(gt=0, le=100_000_000, description="Integer fen")]
    currency: Literal["CNY"]
    method: Literal["face", "card"]
    credential: CardCredentialIn | FaceCredentialIn
    store_id: Annotated[str, Field(min_length=1, max_length=40)]
    description: Annotated[str | None, Field(max_length=200)] = None
    terminal_params: Annotated[str | None, Field(max_length=4096)] = None


class PaymentOut(BaseModel):
    id: str
    status: Literal["processing", "succeeded", "failed", "canceled"]
    amount: int
    currency: str
    method: str
    adapter: str | None
    merchant_order_id: str
    store_id: str
    student: str | None = Field(description="Pseudonymous student ref")
    provider_reference: str | None
    failure_code: str | None
    failure_message: str | None
    refunded_amount: int
    created_at: datetime = Field(
        description="When the gateway took the payment: its cancel window and statement day"
    )
    occurred_at: datetime = Field(
        description="When the sale happened: what limits count. The same as created_at online; "
        "for an offline record, the terminal's sale time (created_at is when it was posted)"
    )
    updated_at: datetime


class PaymentList(BaseModel):
    data: list[PaymentOut]


class RefundCreate(Strict):
    amount: Annotated[StrictInt, Field(gt=0, le=100_000_000)]
    reason: Annotated[str | None, Field(max_length=200)] = None


class RefundOut(BaseModel):
    id: str
    payment_id: str
    status: Literal["processing", "succeeded", "failed"]
    amount: int
    currency: str
    reason: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: datetime
    updated_at: datetime


class RefusalOut(BaseModel):
    kind: Literal["auth", "signature", "timestamp", "replay", "merchant", "throttled", "malformed"] = Field(
        description="What the provider refused about the gateway's request"
    )
    code: str = Field(description="The provider's own code, e.g. TIMESTAMP_EXPIRED or 11")


class NeedsAttentionItem(BaseModel):
    object: Literal["payment", "refund"]
    id: str
    payment_id: str
    status: Literal["processing", "succeeded"] = Field(
        description="`succeeded` with `reversal_requested`: a cancel the provider has not carried out yet"
    )
    reversal_requested: bool
    amount: int
    currency: str
    adapter: str | None
    provider_reference: str | None
    refusal: RefusalOut
    refused_since: datetime = Field(description="Since when every answer has been a refusal")
    next_attempt_at: datetime | None
    created_at: datetime


class NeedsAttentionPage(BaseModel):
    data: list[NeedsAttentionItem]
    next_cursor: str | None


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None
    errors: list[dict[str, Any]] | None = None


class SchoolIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]


class SchoolOut(BaseModel):
    id: str
    name: str
    api_key: str = Field(description="The first school-admin API key; shown once")


class MealPeriod(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z_]{1,20}$", examples=["breakfast", "lunch", "dinner"])]
    start: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["11:00"])]
    end: Annotated[
        str,
        Field(
            pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$",
            examples=["13:30"],
            description="Exclusive; 24:00 is the end of the day",
        ),
    ]


_MEAL_PERIODS_DOC = (
    "The store's meal periods in its time zone (at most 10, not overlapping): the windows a "
    "guardian's per-meal-period limit counts in. Outside them that limit does not apply."
)


class MealPeriodsIn(Strict):
    meal_periods: Annotated[list[MealPeriod], Field(max_length=10, description=_MEAL_PERIODS_DOC)]


class StoreIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    merchant_category: Annotated[
        str, Field(pattern=r"^[a-z_]{2,40}$", examples=["canteen", "shop", "vending"])
    ]
    timezone: Annotated[str, Field(min_length=1, max_length=64, examples=["Asia/Shanghai"])] = "Asia/Shanghai"
    meal_periods: Annotated[list[MealPeriod] | None, Field(max_length=10, description=_MEAL_PERIODS_DOC)] = (
        None
    )


class StoreOut(BaseModel):
    id: str
    name: str
    merchant_category: str
    timezone: str
    meal_periods: list[MealPeriod] | None = None


_FEN = Annotated[
    StrictInt | None, Field(ge=0, le=100_000_000, description="fen (0 blocks every payment); null: not set")
]


class LimitsIn(Strict):
    """A student's limits as the guardian sets them; an absent or null limit is not set (the
    school's default applies, if any). Each is at most the school's ceiling for it."""

    per_payment: _FEN = None
    per_meal_period: _FEN = None
    per_day: _FEN = None
    per_week: _FEN = None


class LimitValues(BaseModel):
    per_payment: int | None
    per_meal_period: int | None
    per_day: int | None
    per_week: int | None


class LimitsOut(LimitValues):
    """What the guardians set, and what applies: ``effective`` is each limit after the school's
    defaults and ceilings."""

    effective: LimitValues
    ceilings: LimitValues


class LimitPolicyIn(Strict):
    defaults: LimitsIn = Field(
        default_factory=LimitsIn, description="Limits of students whose guardians set none"
    )
    ceilings: LimitsIn = Field(
        default_factory=LimitsIn, description="No guardian limit may exceed these; they cap every student"
    )


class LimitPolicyOut(BaseModel):
    defaults: LimitValues
    ceilings: LimitValues


class DeviceIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    alg: Literal["ed25519", "hmac-sha256"]
    public_key: Annotated[str | None, Field(max_length=2000, description="PEM, for ed25519")] = None


class DeviceKeyIn(Strict):
    alg: Literal["ed25519", "hmac-sha256"]
    public_key: Annotated[str | None, Field(max_length=2000)] = None


class DeviceOut(BaseModel):
    device_id: str
    key_id: str
    alg: str
    secret: str | None = Field(default=None, description="For hmac-sha256 only; shown once")


class DeviceKeyView(BaseModel):
    key_id: str
    alg: str
    status: str
    created_at: datetime


class DeviceView(BaseModel):
    device_id: str
    name: str
    status: str
    keys: list[DeviceKeyView]


class StudentIn(Strict):
    external_ref: Annotated[
        str, Field(min_length=1, max_length=64, description="The school's student number")
    ]
    age_band: Literal["under_14", "14_17", "adult"]
    name: Annotated[str | None, Field(max_length=100, description="Encrypted at rest")] = None


class StudentOut(BaseModel):
    id: str
    external_ref: str
    age_band: str


class CardIn(Strict):
    student_id: str
    card_no: Annotated[str, Field(pattern=r"^[0-9]{8,19}$")]
    funding_adapter: Annotated[str, Field(min_length=1, max_length=40)] = "ecard"
    funding_source_id: Annotated[
        str | None,
        Field(
            max_length=40,
            description="The funding source to pay from: required (a bank agreement) for a bank "
            "co-branded card; omitted, the student's e-card account",
        ),
    ] = None


class CardOut(BaseModel):
    id: str
    student_id: str
    last4: str
    funding_adapter: str
    funding_source_id: str | None = None
    status: str = "active"


class ProviderIn(Strict):
    endpoint: Annotated[str, Field(min_length=1, max_length=500)]
    credentials: dict[str, Annotated[str, Field(max_length=8192)]]
    options: dict[str, Any] = Field(default_factory=dict)


class ProviderOut(BaseModel):
    adapter: str
    endpoint: str
    credential_fields: list[str] = Field(description="Names only; secrets are never returned")
    options: dict[str, Any]
    updated_at: datetime


class ProviderCheckOut(BaseModel):
    adapter: str
    ok: bool
    detail: str


class NetworkAllowlistIn(Strict):
    cidrs: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]],
        Field(
            max_length=64,
            description=(
                "Private networks (CIDR, no host bits) this school's providers may live in, inside "
                "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10 or fc00::/7. Replaces the "
                "list; [] removes it. Loopback, link-local and metadata addresses stay refused."
            ),
        ),
    ]


class NetworkAllowlistOut(BaseModel):
    school_id: str
    cidrs: list[str]
    updated_at: datetime | None = Field(description="null while the school has no allow-list")


class GuardianIn(Strict):
    student_id: str
    external_ref: Annotated[str, Field(min_length=1, max_length=64)]
    relation: Literal["mother", "father", "guardian", "other"]
    name: Annotated[str | None, Field(max_length=100, description="Encrypted at rest")] = None


class GuardianOut(BaseModel):
    id: str
    student_id: str
    external_ref: str
    relation: str


class NoticeIn(Strict):
    version: Annotated[str, Field(min_length=1, max_length=40)]
    content: Annotated[
        str, Field(min_length=1, max_length=20000, description="The full text shown to signers")
    ]
    standalone: bool = Field(description="Must be true: a face-consent notice is never part of general terms")
    controller: str = Field(description="Who processes the data")
    contact: str = Field(description="How to contact them")
    purpose: str
    method: str
    retention: str
    rights: str = Field(description="How to see, copy, correct, delete and withdraw")
    necessity_impact: str


class NoticeOut(BaseModel):
    id: str
    version: str
    content_hash: str


class ConsentSigner(Strict):
    type: Literal["guardian", "student"]
    guardian_id: str | None = None


class ConsentIn(Strict):
    student_id: str
    signer: ConsentSigner
    notice_id: str
    notice_version: str
    notice_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    scope: Literal["face_payment"]
    ends_at: datetime | None = Field(description="Required: consents are never permanent")


class ConsentOut(BaseModel):
    id: str
    student_id: str
    signer_type: str
    scope: str
    status: str
    ends_at: datetime
    withdrawn_at: datetime | None


class EnrollmentIn(Strict):
    student_id: str
    provider: Annotated[str, Field(min_length=1, max_length=40)]
    provider_user_id: Annotated[str, Field(min_length=1, max_length=64)]
    agreement_no: Annotated[str | None, Field(max_length=64)] = None
    consent_id: str


class EnrollmentOut(BaseModel):
    id: str
    student_id: str
    provider: str
    provider_user_id: str
    consent_id: str
    status: str
    deletion_reason: str | None
    deleted_at: datetime | None


class FundingSourceIn(Strict):
    student_id: Annotated[str, Field(min_length=1, max_length=40)]
    kind: Literal["bank_agreement", "ecard_account"] = "bank_agreement"
    adapter: Annotated[str, Field(min_length=1, max_length=40)] = "bank"
    agreement_token: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=256,
            description="The direct-debit agreement token the guardian got from the bank's binding "
            "flow (stored encrypted, never returned). Never a card number.",
        ),
    ] = None
    card_last4: Annotated[str | None, Field(pattern=r"^[0-9]{4}$", description="Bank card last four")] = None


class FundingSourceOut(BaseModel):
    id: str
    student_id: str
    kind: str
    adapter: str
    card_last4: str | None
    status: str
    created_at: datetime


class CardBinsIn(Strict):
    co_branded_prefixes: Annotated[
        list[Annotated[str, Field(pattern=r"^[0-9]{4,10}$")]],
        Field(max_length=100, description="BIN prefixes of the school's bank co-branded campus cards"),
    ]


class CardBinsOut(BaseModel):
    co_branded_prefixes: list[str]


class RoutingReasonOut(BaseModel):
    code: str
    rule: int | None
    message: str


class RoutingOut(BaseModel):
    configured: bool = Field(description="False: no rules, every payment takes the default route")
    version: int
    rules: list[dict[str, Any]]
    breaker: dict[str, Any]
    updated_at: datetime | None


class RoutingValidationOut(BaseModel):
    valid: bool
    code: str | None = Field(description="routing_invalid or non_face_required when not valid")
    reasons: list[RoutingReasonOut]


class DryRunIn(Strict):
    method: Literal["card", "face"]
    card_no: Annotated[
        str | None, Field(pattern=r"^[0-9]{8,19}$", description="A bound card (looked up, never stored)")
    ] = None
    bin: Annotated[str | None, Field(pattern=r"^[0-9]{4,10}$", description="Or just the card's BIN")] = None
    amount: Annotated[StrictInt, Field(gt=0, le=100_000_000)]
    currency: Literal["CNY"] = "CNY"
    store_id: Annotated[str, Field(min_length=1, max_length=40)]
    at: datetime | None = Field(default=None, description="When (default: now); rules use store-local time")
    student_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=40,
            description="The payer of a face dry run, so that its limits show (a card names its own)",
        ),
    ] = None


class SkippedOut(BaseModel):
    adapter: str
    reason: str


class DryRunLimits(BaseModel):
    applied: LimitValues
    spent: dict[str, int] | None
    exceeded: str | None


class DryRunOut(BaseModel):
    adapter: str | None = Field(description="The adapter that would take the payment")
    candidates: list[str] = Field(description="Usable candidates, in the order they would be tried")
    skipped: list[SkippedOut]
    rule: int | None
    rule_name: str | None
    reason: str
    default_route: bool
    rules: list[dict[str, Any]] = Field(description="Each rule looked at, and why it did not match")
    breakers: dict[str, str]
    funding: str | None
    version: int
    would_fail_with: str | None
    limits: DryRunLimits | None = Field(
        default=None, description="The payer's limits, what is spent in each window, and which would refuse"
    )


_EVENT_TYPES_DOC = (
    "Event types this endpoint receives (docs/webhooks.md lists them); null or absent: every type"
)


class WebhookEndpointIn(Strict):
    url: Annotated[
        str,
        Field(
            min_length=1,
            max_length=2048,
            description="Where events are POSTed. Production: https only, and a public address (a "
            "private one only inside the school's network allow-list).",
        ),
    ]
    event_types: Annotated[
        list[Annotated[str, Field(max_length=60)]] | None, Field(max_length=50, description=_EVENT_TYPES_DOC)
    ] = None
    description: Annotated[str, Field(max_length=500)] = ""


class WebhookEndpointPatch(Strict):
    url: Annotated[str | None, Field(min_length=1, max_length=2048)] = None
    event_types: Annotated[
        list[Annotated[str, Field(max_length=60)]] | None, Field(max_length=50, description=_EVENT_TYPES_DOC)
    ] = None
    description: Annotated[str | None, Field(max_length=500)] = None
    status: Annotated[
        Literal["enabled", "disabled"] | None,
        Field(description="`disabled` stops deliveries (they wait); `enabled` resumes them"),
    ] = None


class RotateSecretIn(Strict):
    overlap_seconds: Annotated[
        StrictInt,
        Field(
            ge=0,
            le=604800,
            description="How long the previous secret keeps signing beside the new one (both "
            "signatures are sent, space-separated); 0 retires it at once",
        ),
    ] = 86400


class WebhookEndpointOut(BaseModel):
    id: str
    url: str
    description: str
    event_types: list[str] | None
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None = Field(
        description="`disabled_by_admin`, or `failing` (every delivery failed for 5 days)"
    )
    previous_secret_expires_at: datetime | None = Field(
        description="While a rotation's overlap lasts: when the previous secret stops signing"
    )
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpointOut):
    secret: str = Field(description="`whsec_…`: shown once, here; keep it to verify signatures")


class WebhookEndpointPage(BaseModel):
    data: list[WebhookEndpointOut]
    next_cursor: str | None


class EventOut(BaseModel):
    id: str = Field(description="`evt_…`; the `webhook-id` of every delivery of this event")
    type: str
    # a string, not a datetime: the list gives the very text the webhook body carries
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    school_id: str
    sequence: int = Field(description="Per school, in commit order, without gaps")
    data: dict[str, Any] = Field(
        description="Thin: ids, statuses, amounts and codes; `version` is the resource's version "
        "(1 for its first event, one more for each later one): order one resource's events by it"
    )


class EventPage(BaseModel):
    data: list[EventOut]
    next_cursor: str | None


class WebhookAttemptOut(BaseModel):
    id: str = Field(description="The attempt's id in the log (the list's cursor)")
    delivery_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    attempt: int = Field(description="1 for the first attempt of this event at this endpoint")
    status_code: int | None = Field(description="The endpoint's HTTP status; null when none came")
    succeeded: bool = Field(description="A 2xx answer")
    error: str | None = Field(description="Why no answer came: timeout, refused, dropped, not allowed")
    duration_ms: int
    response_body: str | None = Field(description="At most 1 KiB of the endpoint's answer")
    at: datetime


class WebhookAttemptPage(BaseModel):
    data: list[WebhookAttemptOut]
    next_cursor: str | None


class RedeliverIn(Strict):
    event_id: Annotated[str | None, Field(max_length=40, description="Deliver this event again")] = None
    since: datetime | None = Field(
        default=None, description="Deliver again every event since then whose delivery here failed"
    )


class RedeliverOut(BaseModel):
    redelivered: int = Field(description="How many deliveries are due again")


class TestEventOut(BaseModel):
    event_id: str = Field(description="The `webhook_endpoint.test` event; follow it in the deliveries")
