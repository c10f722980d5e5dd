"""In-memory state of the e-card system: merchants, each with its own accounts, cards and orders.

Every merchant has one asyncio.Lock; the router holds it around each operation so concurrent
requests for one merchant (50 consumes with the same order_ref) apply one at a time.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox.ecard.signing import TIMESTAMP_WINDOW_S, new_secret
from sandbox.testvalues import CARDS, ECARD_DEFAULT_MERCHANT_ID, ECARD_DEFAULT_SECRET, CardStatus

OrderStatus = Literal["SUCCESS", "FAILED", "REVERSED"]

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


@dataclass
class Refund:
    refund_ref: str
    order_ref: str
    amount: int
    result: dict[str, Any]


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

    @classmethod
    def with_test_cards(cls, merchant_id: str, secret: str) -> Merchant:
        return cls(
            merchant_id=merchant_id,
            secret=secret,
            cards={c.card_no: Card(c.card_no, c.account_no, c.student, c.status, c.pin) for c in CARDS},
            balances={c.account_no: c.balance for c in CARDS},
        )

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
