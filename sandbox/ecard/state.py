"""In-memory state of the e-card system: merchants, each with its own accounts, cards and orders.

Every merchant has one asyncio.Lock; the router holds it around each operation so concurrent
requests for one merchant (50 consumes with the same order_ref) apply one at a time.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal

from sandbox.ecard.signing import TIMESTAMP_WINDOW_S, new_secret
from sandbox.testvalues import (
    CARDS,
    ECARD_DEFAULT_MERCHANT_ID,
    ECARD_DEFAULT_SECRET,
    ECARD_MEAL_PERIODS,
    ECARD_STORES,
    CardStatus,
)

OrderStatus = Literal["SUCCESS", "FAILED", "REVERSED"]
OfflineResultKind = Literal["posted", "held_for_review"]

# Asia/Shanghai: UTC+8 all year (no daylight saving), so a fixed offset is exact.
LOCAL_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")
# When the cards LOST in the initial test data were reported lost (2025-09-01T00:00:00Z).
INITIAL_LOSS_AT = 1756684800.0
PIN_ATTEMPTS = 3  # the 3rd consecutive wrong PIN locks it


def local_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, LOCAL_TZ)


def local_date(ts: float) -> date:
    return local_datetime(ts).date()


def parse_clock(value: str) -> time | None:
    """HH:MM as a time of day; "24:00" (the end of the day) is None."""
    if value == "24:00":
        return None
    return time.fromisoformat(value)


# A timestamp may be up to TIMESTAMP_WINDOW_S off either way, so a request accepted now can be
# replayed until twice the window has passed; its nonce is remembered that long.
NONCE_MEMORY_S = 2 * TIMESTAMP_WINDOW_S


@dataclass
class Card:
    card_no: str
    account_no: str
    student_ref: str
    status: CardStatus
    pin: str | None
    pin_failures: int = 0  # consecutive wrong PINs
    pin_locked: bool = False
    replaced_by: str | None = None


@dataclass
class Subsidy:
    amount: int
    valid_from: date
    valid_to: date

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day <= self.valid_to


@dataclass(frozen=True)
class Limits:
    """PIN thresholds of an account (fen); None: no such threshold."""

    per_payment: int | None
    daily: int | None


@dataclass(frozen=True)
class MealPeriod:
    name: str
    start: str  # HH:MM local, inclusive
    end: str  # HH:MM local, exclusive; "24:00" for the end of the day

    def contains(self, moment: datetime) -> bool:
        start, end = parse_clock(self.start), parse_clock(self.end)
        clock = moment.time().replace(tzinfo=None)
        assert start is not None
        return start <= clock and (end is None or clock < end)


@dataclass(frozen=True)
class Store:
    store_ref: str
    category: str
    meal_periods_only: bool
    fixed_prices: dict[str, int]


@dataclass(frozen=True)
class BlacklistEntry:
    version: int
    card_no: str
    status: Literal["ACTIVE", "LOST"]
    at: float
    reason: str


@dataclass
class OfflineStored:
    """A stored offline record (posted or held), keyed by (terminal_id, terminal_seq)."""

    terminal_id: str
    terminal_seq: int
    order_ref: str
    card_no: str
    amount: int
    occurred_at: float
    result: OfflineResultKind
    reason: str | None = None
    txn_id: str | None = None
    subsidy_used: int = 0
    balance_used: int = 0


@dataclass
class Order:
    order_ref: str
    status: OrderStatus
    # None for an order reversed before any consume arrived: its details were never known.
    card_no: str | None = None
    amount: int = 0
    currency: str = "CNY"
    account_no: str | None = None
    txn_id: str | None = None
    code: str | None = None  # why it FAILED
    refunded: int = 0  # by refunds
    reversed_amount: int = 0  # by the reverse
    consume_result: dict[str, Any] | None = None  # replayed verbatim to an identical consume
    subsidy_used: int = 0
    balance_used: int = 0
    subsidy_returned: int = 0  # of subsidy_used, given back so far (restored or forfeited)
    day: date | None = None  # the local day its amount counts towards (daily threshold)
    reverse_split: dict[str, int] = field(default_factory=dict)  # what the reverse gave back where
    recorded_at: float = 0.0  # sandbox clock; a query_lag fault hides orders younger than its lag
    reversed_at: float | None = None  # sandbox clock: when a reverse gave the money back
    source: Literal["online", "offline"] = "online"  # offline: posted from an uploaded record


@dataclass
class Refund:
    refund_ref: str
    order_ref: str
    amount: int
    result: dict[str, Any]
    at: float = 0.0  # sandbox clock


@dataclass
class Merchant:
    merchant_id: str
    secret: str
    cards: dict[str, Card]
    balances: dict[str, int]  # account_no -> fen
    orders: dict[str, Order] = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    nonces: dict[str, float] = field(default_factory=dict)  # nonce -> when seen
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subsidies: dict[str, Subsidy] = field(default_factory=dict)  # account_no -> wallet
    limits: dict[str, Limits] = field(default_factory=dict)  # account_no -> PIN thresholds
    daily_spent: dict[tuple[str, date], int] = field(default_factory=dict)  # (account, local day)
    blacklist: list[BlacklistEntry] = field(default_factory=list)  # entry i has version i + 1
    meal_periods: list[MealPeriod] = field(default_factory=list)
    stores: dict[str, Store] = field(default_factory=dict)
    offline: dict[tuple[str, int], OfflineStored] = field(default_factory=dict)
    offline_refs: dict[str, tuple[str, int]] = field(default_factory=dict)  # order_ref -> key

    @classmethod
    def with_test_cards(cls, merchant_id: str, secret: str) -> Merchant:
        merchant = cls(
            merchant_id=merchant_id,
            secret=secret,
            cards={c.card_no: Card(c.card_no, c.account_no, c.student, c.status, c.pin) for c in CARDS},
            balances={c.account_no: c.balance for c in CARDS},
            meal_periods=[MealPeriod(p.name, p.start, p.end) for p in ECARD_MEAL_PERIODS],
            stores={
                s.store_ref: Store(s.store_ref, s.category, s.meal_periods_only, dict(s.fixed_prices))
                for s in ECARD_STORES
            },
        )
        for c in CARDS:
            if c.subsidy_valid_from is not None and c.subsidy_valid_to is not None:
                merchant.subsidies[c.account_no] = Subsidy(
                    c.subsidy,
                    date.fromisoformat(c.subsidy_valid_from),
                    date.fromisoformat(c.subsidy_valid_to),
                )
            if c.pin_per_payment is not None or c.pin_daily is not None:
                merchant.limits[c.account_no] = Limits(c.pin_per_payment, c.pin_daily)
            if c.status == "LOST":
                merchant.add_change(c.card_no, "LOST", INITIAL_LOSS_AT, "initial")
        return merchant

    @property
    def blacklist_version(self) -> int:
        return len(self.blacklist)

    def add_change(
        self, card_no: str, status: Literal["ACTIVE", "LOST"], at: float, reason: str
    ) -> BlacklistEntry:
        entry = BlacklistEntry(self.blacklist_version + 1, card_no, status, at, reason)
        self.blacklist.append(entry)
        return entry

    def lost_at(self, card_no: str, moment: float) -> bool:
        """Whether the card's last blacklist change at or before `moment` made it LOST."""
        status = None
        for entry in self.blacklist:
            if entry.card_no == card_no and entry.at <= moment:
                status = entry.status
        return status == "LOST"

    def current_period(self, now: float) -> MealPeriod | None:
        moment = local_datetime(now)
        return next((p for p in self.meal_periods if p.contains(moment)), None)

    def usable_subsidy(self, account_no: str, day: date) -> int:
        wallet = self.subsidies.get(account_no)
        return wallet.amount if wallet is not None and wallet.valid_on(day) else 0

    def remember_nonce(self, nonce: str, now: float) -> bool:
        """False when the nonce was already seen recently (a replay); otherwise remembers it."""
        # Insertion order is arrival order, so forgetting stops at the first nonce still fresh
        # (cheap per request even under load tests).
        while self.nonces:
            oldest, seen = next(iter(self.nonces.items()))
            if now - seen <= NONCE_MEMORY_S:
                break
            del self.nonces[oldest]
        if nonce in self.nonces:
            return False
        self.nonces[nonce] = now
        return True


class EcardState:
    def __init__(self) -> None:
        self.merchants: dict[str, Merchant] = {}
        self.reset()

    def reset(self) -> None:
        default = Merchant.with_test_cards(ECARD_DEFAULT_MERCHANT_ID, ECARD_DEFAULT_SECRET)
        self.merchants = {default.merchant_id: default}

    def create_merchant(self) -> Merchant:
        merchant_id = f"m_{secrets.token_hex(8)}"
        merchant = Merchant.with_test_cards(merchant_id, new_secret())
        self.merchants[merchant_id] = merchant
        return merchant

    def get(self, merchant_id: str | None) -> Merchant | None:
        return self.merchants.get(merchant_id) if merchant_id else None
