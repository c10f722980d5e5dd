"""The one interface every provider adapter implements, and the neutral types it speaks.

An adapter turns a neutral request (``PaymentRequest``) into one provider's wire protocol and
the provider's answer back into a neutral ``ProviderResult``. Adapters import nothing from
the gateway: they receive an ``httpx.AsyncClient`` and their per-school ``ProviderConfig`` and
are otherwise pure.

The rule that keeps money safe: only an explicit, verified success or an explicit, verified
failure from the provider is final. A timeout, a 5xx, a body that does not parse, or an answer
whose signature does not verify is ``Outcome.UNKNOWN`` and the gateway must learn the truth by
querying (and, failing that, reversing with the same reference).

Errors raised by adapters::

    AdapterError                     base; never raised itself
    ├── AdapterConfigError           the school's provider settings are unusable (no call made)
    ├── IdentificationFailed         the provider verifiably refused a face token
    ├── ProviderUnreachable          the request provably never reached the provider
    │                                (connection refused before a byte was sent): safe to fail over
    └── OperationUnsupported         the adapter has no such operation

Anything else that can go wrong during a call is reported as ``Outcome.UNKNOWN`` in the result,
not raised, because the caller must then recover rather than give up.

Only an answer *about the payment* is final. A provider that refuses the gateway's *request* --
our credentials, signature, timestamp or parameters, a merchant it does not know or has
disabled, throttling -- says nothing about whether money moved, so such an answer is never
SUCCEEDED or FAILED: it is ``Outcome.UNKNOWN`` with ``refused`` saying what was refused (each
adapter's ``codes.py`` sorts its provider's codes). ``nothing_applied`` adds that the provider
verifiably applied nothing of *this* request (a signed refusal, before any processing). On
``pay``, sent once per reference, that means the payment was not accepted; on query, cancel
and refund it proves nothing about an earlier send, so there a refusal is simply unknown.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx

__all__ = [
    "CANCEL_UNAVAILABLE",
    "Adapter",
    "AdapterConfigError",
    "AdapterError",
    "AdapterFactory",
    "AgreementCredential",
    "BaseAdapter",
    "BillKind",
    "BillNotReady",
    "BillRow",
    "BillUnavailable",
    "Capabilities",
    "CardCredential",
    "FaceCredential",
    "IdentificationFailed",
    "Operation",
    "OperationUnsupported",
    "Outcome",
    "PaymentRequest",
    "ProviderConfig",
    "ProviderEvent",
    "ProviderIdentity",
    "ProviderResult",
    "ProviderUnreachable",
    "RefundRequest",
    "Refusal",
    "http_refusal",
]


# ``cancel`` answers UNKNOWN with this code when the provider *verifiably refused* to cancel
# because a cancel is no longer possible (e.g. past its window), so nothing was reversed. The
# gateway then learns by ``query`` whether money moved and, if it did, gives it back by
# ``refund``. Any other UNKNOWN from ``cancel`` is simply retried: the cancel may have applied.
CANCEL_UNAVAILABLE = "CANCEL_UNAVAILABLE"


class Outcome(enum.StrEnum):
    """What the provider said happened. Only SUCCEEDED and FAILED are final."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"
    PENDING_USER = "pending_user"
    NOT_FOUND = "not_found"  # query only: the provider never saw this reference
    REVERSED = "reversed"  # query/cancel: money moved and was given back in full, or never will


class Refusal(enum.StrEnum):
    """What a provider refused about the gateway's *request* (not about the payment)."""

    AUTH = "auth"  # credentials or permissions refused
    SIGNATURE = "signature"  # our signature did not verify
    TIMESTAMP = "timestamp"  # our timestamp is outside the provider's window (a clock drifted)
    REPLAY = "replay"  # the provider had seen this request (its nonce) before
    MERCHANT = "merchant"  # the merchant or app is unknown to the provider, or disabled
    THROTTLED = "throttled"  # too many requests
    MALFORMED = "malformed"  # the provider could not read the request (missing, invalid fields)


def http_refusal(status: int) -> Refusal | None:
    """What an HTTP status alone refuses (credentials, throttling), from whoever answered it: a
    provider whose protocol always answers 200, or a proxy or rate limiter in front of it."""
    return {401: Refusal.AUTH, 403: Refusal.AUTH, 429: Refusal.THROTTLED}.get(status)


class Operation(enum.StrEnum):
    PAY = "pay"
    QUERY = "query"
    CANCEL = "cancel"
    REFUND = "refund"
    CLOSE = "close"
    IDENTIFY = "identify"
    BILLS = "bills"
    DELETE_ENROLLMENT = "delete_enrollment"
    CHECK = "check"


@dataclass(frozen=True)
class Capabilities:
    methods: frozenset[str]
    operations: frozenset[Operation]
    currencies: frozenset[str] = frozenset({"CNY"})
    min_amount: int = 1
    max_amount: int = 10_000_000
    notifications: bool = False
    # Which kinds of funding source this adapter can charge: routing fails over only between
    # adapters that reach the payer's funding source (e.g. "ecard_account", "bank_agreement").
    funding: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ProviderConfig:
    """A school's settings for one adapter, decrypted only for the duration of a call."""

    endpoint: str
    credentials: Mapping[str, str]
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CardCredential:
    card_no: str
    pin: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never let a full card number or PIN reach a log line
        return f"CardCredential(card=****{self.card_no[-4:]})"


@dataclass(frozen=True)
class FaceCredential:
    face_token: str = field(repr=False)


@dataclass(frozen=True)
class AgreementCredential:
    """A direct-debit agreement token (e.g. a guardian's bank agreement): the only thing about a
    bank account that reaches the bank adapter; full bank card numbers never do."""

    token: str = field(repr=False)
    card_last4: str | None = None


@dataclass(frozen=True)
class PaymentRequest:
    """A neutral pay instruction. ``reference`` is the gateway's provider reference: stable
    across retries of the same attempt, so a retried pay can never become a second charge."""

    reference: str
    amount: int
    currency: str
    method: str
    credential: CardCredential | FaceCredential | AgreementCredential
    store_ref: str
    terminal_ref: str
    description: str | None = None
    terminal_params: str | None = None
    agreement_no: str | None = None


@dataclass(frozen=True)
class RefundRequest:
    reference: str  # the payment's provider reference
    refund_reference: str  # stable across retries of the same refund
    amount: int
    reason: str | None = None


@dataclass(frozen=True)
class ProviderResult:
    outcome: Outcome
    provider_txn_id: str | None = None
    amount: int | None = None
    code: str | None = None  # the provider's own code, e.g. INSUFFICIENT_BALANCE
    message: str | None = None
    retryable: bool = False  # for UNKNOWN: whether the same call may simply be repeated
    raw: Mapping[str, Any] = field(default_factory=dict)  # scrubbed provider fields, for audit
    paid_at: datetime | None = None
    # A refusal of the request itself (always with Outcome.UNKNOWN; see the module docstring).
    refused: Refusal | None = None
    # The provider verifiably applied nothing of this request (set only with ``refused``).
    nothing_applied: bool = False

    @classmethod
    def refusal(
        cls,
        refused: Refusal,
        code: str,
        message: str | None = None,
        *,
        nothing_applied: bool,
        raw: Mapping[str, Any] | None = None,
    ) -> ProviderResult:
        """The provider refused the request: unknown for the payment, worth repeating later."""
        return cls(
            Outcome.UNKNOWN,
            code=code,
            message=message,
            retryable=True,
            raw=dict(raw or {}),
            refused=refused,
            nothing_applied=nothing_applied,
        )


@dataclass(frozen=True)
class ProviderIdentity:
    """Who a face token belongs to, as the provider says: its user, and the face group (the
    school's group at the provider) the token was issued in, when the provider tells."""

    user_id: str
    group: str | None = None


@dataclass(frozen=True)
class ProviderEvent:
    """A verified notification from a provider."""

    reference: str
    outcome: Outcome
    provider_txn_id: str | None
    amount: int | None
    dedupe_key: str
    raw: Mapping[str, Any] = field(default_factory=dict)


class BillKind(enum.StrEnum):
    """What one line of a provider's bill says moved."""

    PAYMENT = "payment"  # money taken (a consume, a trade paid, a settled consume)
    REVERSAL = "reversal"  # a payment given back in full (a void, a cancel's reversal)
    REFUND = "refund"  # all or part of a payment given back under a refund request number
    OFFLINE = "offline"  # an offline record posted (money taken hours after the sale)


@dataclass(frozen=True, slots=True)
class BillRow:
    """One line of a provider's bill, neutral: amounts in fen (parsed from yuan with Decimal by
    the adapter), ``reference`` is the gateway's provider reference of the payment,
    ``refund_reference`` the refund's request number (refunds only). ``fee`` is what the
    provider charged for this line, when the bill says."""

    kind: BillKind
    reference: str
    amount: int
    refund_reference: str | None = None
    fee: int | None = None
    provider_txn_id: str | None = None
    at: datetime | None = None


class AdapterError(Exception):
    """Base of every error an adapter raises."""


class AdapterConfigError(AdapterError):
    """The provider settings are incomplete or malformed; nothing was sent."""


class ProviderUnreachable(AdapterError):
    """The request provably never reached the provider; a new attempt elsewhere is safe."""


class OperationUnsupported(AdapterError):
    """The provider has no such operation."""


class BillUnavailable(AdapterError):
    """The provider did not hand over a verified bill (unreachable, unsigned, refused, cut
    short). ``code`` is the provider's own code or the adapter's transport code."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class BillNotReady(BillUnavailable):
    """The provider verifiably says the day's bill does not exist yet (Alipay's
    ``BILL_NOT_EXIST``): try again later; nothing is wrong."""


class IdentificationFailed(AdapterError):
    """The provider verifiably refused a face token (expired, used, unknown, user deleted).
    ``code`` is the provider's own; nothing was charged."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


@runtime_checkable
class Adapter(Protocol):
    """A provider adapter. Instances are cheap and stateless; one per (school, call) is fine."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    async def pay(self, request: PaymentRequest) -> ProviderResult:
        """Ask the provider to move money. Must be safe to repeat with the same reference."""
        ...

    async def query(self, reference: str) -> ProviderResult:
        """What the provider knows about ``reference``: the source of truth after an unknown."""
        ...

    async def cancel(self, reference: str) -> ProviderResult:
        """Reverse ``reference`` in full whatever its state; afterwards it can never charge."""
        ...

    async def refund(self, request: RefundRequest) -> ProviderResult:
        """Give back all or part of a succeeded payment. Idempotent on ``refund_reference``."""
        ...

    async def check(self) -> ProviderResult:
        """A signed round trip proving endpoint and credentials work."""
        ...

    async def identify(self, face_token: str) -> ProviderIdentity:
        """Face token -> the provider user behind it (face adapters only). Raises
        ``IdentificationFailed`` when the provider verifiably refuses the token."""
        ...

    async def parse_notification(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify a notification on its raw bytes and return what it says."""
        ...

    async def download_bill(self, day: date) -> bytes:
        """The provider's verified statement for one provider day (the provider's own calendar
        day), as the provider's file. Raises ``BillNotReady`` when it does not exist yet and
        ``BillUnavailable`` when no verified file could be had."""
        ...

    def parse_bill(self, content: bytes) -> Iterator[BillRow]:
        """The lines of a file ``download_bill`` returned, one at a time (bills of a large school
        run to ~100,000 lines a day: never a list). Raises ``BillUnavailable`` (code
        ``MALFORMED_BILL``) when the file is not one of this provider's bills."""
        ...

    async def delete_enrollment(self, provider_user_id: str) -> ProviderResult:
        """Delete a face enrolment at the provider."""
        ...


class AdapterFactory(Protocol):
    """How the registry builds an adapter: ``factory(config, http_client)``."""

    def __call__(self, config: ProviderConfig, http: httpx.AsyncClient) -> Adapter: ...


class BaseAdapter:
    """Convenience base: the optional operations answer ``OperationUnsupported``."""

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities]

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self.http = http

    def _unsupported(self, operation: Operation) -> OperationUnsupported:
        return OperationUnsupported(f"{self.name} does not support {operation.value}")

    async def identify(self, face_token: str) -> ProviderIdentity:
        raise self._unsupported(Operation.IDENTIFY)

    async def parse_notification(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        raise OperationUnsupported(f"{self.name} sends no notifications")

    async def download_bill(self, day: date) -> bytes:
        raise self._unsupported(Operation.BILLS)

    def parse_bill(self, content: bytes) -> Iterator[BillRow]:
        raise self._unsupported(Operation.BILLS)

    async def delete_enrollment(self, provider_user_id: str) -> ProviderResult:
        raise self._unsupported(Operation.DELETE_ENROLLMENT)
