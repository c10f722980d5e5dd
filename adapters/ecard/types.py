"""Typed answers and errors of the e-card adapter's card-management and offline calls.

These calls are not part of the generic ``Adapter`` protocol (no other provider has them); the
gateway reaches them on an ``EcardAdapter`` (docs/ecard-protocol.md, "Cards" and "Offline
consumption records"). Card numbers are kept out of ``repr`` so they never reach a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any, ClassVar, Literal, cast

from adapters.base import AdapterError

__all__ = [
    "MAX_OFFLINE_RECORDS",
    "BlacklistChange",
    "CardReplacement",
    "CardStatus",
    "CardStatusChange",
    "EcardRefused",
    "EcardRequestInvalid",
    "EcardUnverified",
    "OfflineRecord",
    "OfflineResult",
    "OfflineResultKind",
    "SubsidyWallet",
]

MAX_OFFLINE_RECORDS = 500  # per upload; larger batches are split by the caller

OfflineResultKind = Literal["posted", "duplicate", "held_for_review", "rejected"]


class EcardUnverified(AdapterError):
    """No verified answer: timeout, transport error, 5xx/``ERROR``, a missing or wrong signature,
    or a signed answer that does not have the documented shape. What happened is unknown; every
    card-management and offline call is idempotent, so repeating it is safe."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class EcardRefused(AdapterError):
    """A verified refusal (``FAIL`` with its ``code``, or a signed 401/422): nothing changed.
    ``of_request`` tells the second kind: the gateway's request was refused (its credentials,
    its clock), not the operation on the card."""

    def __init__(self, code: str, message: str = "", *, of_request: bool = False) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.of_request = of_request


class EcardRequestInvalid(AdapterError):
    """The call was refused before anything was sent (e.g. more than 500 offline records)."""


class _Readable:
    """Read-only mapping access to a frozen answer (``x["reason"]``, ``x.get("txn_id")``,
    ``dict(x)``), for callers that handle provider answers as dictionaries."""

    _aliases: ClassVar[tuple[str, ...]] = ()  # read-only properties readable like fields

    def keys(self) -> list[str]:
        return [f.name for f in fields(cast(Any, self))] + list(self._aliases)

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default


def _last4(card_no: str) -> str:
    return f"****{card_no[-4:]}"


@dataclass(frozen=True)
class CardStatusChange(_Readable):
    """Answer of ``report_lost`` / ``cancel_loss``."""

    card_no: str = field(repr=False)
    status: Literal["ACTIVE", "LOST"]
    version: int  # the blacklist version after the call
    changed: bool  # False: the card already was in that state (nothing bumped)


@dataclass(frozen=True)
class CardReplacement(_Readable):
    old_card_no: str = field(repr=False)
    new_card_no: str = field(repr=False)
    account_no: str = field(repr=False)
    version: int
    changed: bool


@dataclass(frozen=True)
class BlacklistChange(_Readable):
    version: int
    card_no: str = field(repr=False)
    status: Literal["ACTIVE", "LOST"]
    at: datetime
    reason: str  # initial | report_lost | cancel_loss | replaced | issued

    def __repr__(self) -> str:
        return f"BlacklistChange(v{self.version}, card={_last4(self.card_no)}, {self.status}, {self.reason})"


@dataclass(frozen=True)
class SubsidyWallet:
    amount: int
    valid_from: date
    valid_to: date


@dataclass(frozen=True)
class CardStatus(_Readable):
    """``GET /v1/cards/{card_no}``."""

    card_no: str = field(repr=False)
    status: Literal["ACTIVE", "LOST", "FROZEN"]
    account_no: str = field(repr=False)
    student_ref: str = field(repr=False)
    balance: int = field(repr=False)
    subsidy: SubsidyWallet | None = field(default=None, repr=False)
    replaced_by: str | None = field(default=None, repr=False)
    pin_locked: bool = False


@dataclass(frozen=True)
class OfflineRecord:
    """One card payment a terminal made offline (never with a PIN)."""

    terminal_seq: int
    order_ref: str
    card_no: str = field(repr=False)
    amount: int  # fen
    occurred_at: datetime  # timezone-aware
    currency: str = "CNY"
    store_ref: str | None = None


@dataclass(frozen=True)
class OfflineResult(_Readable):
    """What the provider did with one uploaded record (same order as the upload)."""

    index: int
    terminal_seq: int | None
    order_ref: str | None
    result: OfflineResultKind
    reason: str | None = None  # held_for_review / rejected, and a duplicate of a held record
    txn_id: str | None = None  # posted, and a duplicate of a posted record
    amount: int | None = None
    subsidy_used: int | None = None
    balance_used: int | None = None
    original_result: Literal["posted", "held_for_review"] | None = None  # duplicates only
    message: str | None = None  # what was malformed

    _aliases: ClassVar[tuple[str, ...]] = ("status",)

    @property
    def status(self) -> OfflineResultKind:
        """The same as ``result`` (the record's fate; ``result`` is its name on the wire)."""
        return self.result

    @property
    def money_moved(self) -> bool:
        """Whether this record's money is (now or from an earlier upload) debited."""
        return self.result == "posted" or self.original_result == "posted"
