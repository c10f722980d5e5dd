"""In-memory state of the sandbox Alipay: apps, trades, refunds, buyer balances, bill files.

Every app has an asyncio.Lock; the gateway holds it around each operation, and operations never
await while changing state, so concurrent retries of one trade apply one at a time.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.alipay import keys, wire
from sandbox.testvalues import ALIPAY_BUYER_BALANCE, ALIPAY_DEFAULT_APP_ID, ALIPAY_DEFAULT_SELLER_ID

TradeStatus = Literal["WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_CLOSED", "TRADE_FINISHED"]


@dataclass
class App:
    app_id: str
    seller_id: str
    public_key: rsa.RSAPublicKey
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Refund:
    out_request_no: str
    amount: int  # fen
    at: float  # sandbox clock
    result: dict[str, Any]  # the response node, replayed (fund_change "N") to a retry
    source: Literal["refund", "cancel"] = "refund"


@dataclass
class Trade:
    app_id: str
    out_trade_no: str
    trade_no: str
    status: TradeStatus
    created_at: float
    # None for a trade that only exists because a cancel arrived before any pay (a placeholder).
    fingerprint: tuple[Any, ...] | None = None
    total: int = 0  # fen
    subject: str = ""
    product_code: str = ""
    auth_code: str | None = None
    agreement_no: str | None = None
    store_id: str | None = None
    terminal_id: str | None = None
    notify_url: str | None = None
    buyer_id: str | None = None
    paid_at: float | None = None
    closed_at: float | None = None
    refunds: dict[str, Refund] = field(default_factory=dict)  # by out_request_no
    cancel_refund: Refund | None = None  # what alipay.trade.cancel gave back (action "refund")
    refunded: int = 0  # fen, by refunds and by a cancel
    # A WAIT_BUYER_PAY trade: how many more queries answer WAIT_BUYER_PAY before the buyer
    # "confirms" (magic 81); None: the buyer never does (magic 85).
    queries_until_paid: int | None = None
    cancel_failures_left: int = 0  # magic 86
    cancel_action: Literal["close", "refund"] | None = None
    pay_result: dict[str, Any] | None = None  # the 10000 node, replayed to an identical retry

    @property
    def key(self) -> str:
        """How the face cloud knows this trade (FaceDirectory.use_token's trade_key)."""
        return f"{self.app_id}:{self.out_trade_no}"

    @property
    def was_paid(self) -> bool:
        return self.paid_at is not None


@dataclass
class Bill:
    filename: str
    content: bytes
    expires_at: float  # sandbox clock: the link answers 403 afterwards, like Alipay's


@cache
def alipay_private_key() -> rsa.RSAPrivateKey:
    return wire.load_private_key(keys.ALIPAY_PRIVATE_KEY_PEM)


@cache
def test_app_public_key() -> rsa.RSAPublicKey:
    return wire.load_app_public_key(keys.TEST_APP_PUBLIC_KEY_PEM)


def new_trade_no(now: float) -> str:
    """28 digits like Alipay's: the Beijing date, a channel-ish infix, then random digits."""
    return wire.beijing(now).strftime("%Y%m%d") + "22001" + f"{secrets.randbelow(10**15):015d}"


def new_digits(prefix: str, total: int) -> str:
    rest = total - len(prefix)
    return prefix + f"{secrets.randbelow(10**rest):0{rest}d}"


class AlipayState:
    def __init__(self) -> None:
        self.alipay_key = alipay_private_key()
        self.apps: dict[str, App] = {}
        self.trades: dict[tuple[str, str], Trade] = {}  # (app_id, out_trade_no)
        self.by_trade_no: dict[str, Trade] = {}
        self.balances: dict[str, int] = {}  # buyer user id -> fen
        self.invalid_agreements: set[str] = set()
        self.bills: dict[str, Bill] = {}
        self.reset()

    def reset(self) -> None:
        default = App(ALIPAY_DEFAULT_APP_ID, ALIPAY_DEFAULT_SELLER_ID, test_app_public_key())
        self.apps = {default.app_id: default}
        self.trades = {}
        self.by_trade_no = {}
        self.balances = {}
        self.invalid_agreements = set()
        self.bills = {}

    def register_app(self, public_key: rsa.RSAPublicKey) -> App:
        while True:
            app_id = new_digits("2021", 16)
            if app_id not in self.apps:
                break
        app = App(app_id, new_digits("2088", 16), public_key)
        self.apps[app_id] = app
        return app

    def balance(self, user_id: str) -> int:
        return self.balances.setdefault(user_id, ALIPAY_BUYER_BALANCE)

    def find(self, app_id: str, out_trade_no: str | None, trade_no: str | None) -> Trade | None:
        """By trade_no when given (Alipay prefers it), else by out_trade_no, within one app."""
        if trade_no:
            trade = self.by_trade_no.get(trade_no)
            if trade is None or trade.app_id != app_id:
                return None
            if out_trade_no and trade.out_trade_no != out_trade_no:
                return None
            return trade
        if out_trade_no:
            return self.trades.get((app_id, out_trade_no))
        return None

    def add(self, trade: Trade) -> Trade:
        self.trades[(trade.app_id, trade.out_trade_no)] = trade
        self.by_trade_no[trade.trade_no] = trade
        return trade

    def add_bill(self, filename: str, content: bytes, expires_at: float) -> str:
        token = secrets.token_urlsafe(18)
        # Expired links are forgotten as new ones are made: a long run must not keep every file.
        self.bills = {t: b for t, b in self.bills.items() if b.expires_at >= expires_at - 60} | {
            token: Bill(filename, content, expires_at)
        }
        return token
