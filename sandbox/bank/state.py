"""The sandbox bank's state: merchants, accounts, agreements (tokens) and transactions."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from cryptography import x509

from sandbox.bank import wire
from sandbox.testvalues import BANK_ACCOUNTS, BANK_AGREEMENTS, BANK_MERCHANTS, BANK_TR_ID

BEIJING = timezone(timedelta(hours=8))


def beijing(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC).astimezone(BEIJING)


def last4(acc_no: str) -> str:
    return acc_no[-4:]


def masked(acc_no: str) -> str:
    return acc_no[:6] + "*" * max(len(acc_no) - 10, 0) + acc_no[-4:]


@dataclass
class Merchant:
    mer_id: str
    sign_method: str
    tr_id: str = BANK_TR_ID
    cert: x509.Certificate | None = None  # signMethod 01
    secure_key: str | None = None  # signMethod 11 / 12

    @property
    def cert_id(self) -> str | None:
        return str(self.cert.serial_number) if self.cert is not None else None


@dataclass
class Account:
    acc_no: str
    holder: str
    balance: int
    status: str


@dataclass
class Agreement:
    token: str
    mer_id: str
    tr_id: str
    acc_no: str
    payer_ref: str
    begin: str  # YYYYMMDDhhmmss
    end: str
    active: bool = True


@dataclass
class Txn:
    """One recorded transaction (agreement open, consume, void or refund), keyed by merId + orderId."""

    mer_id: str
    order_id: str
    txn_time: str
    txn_type: str
    txn_sub_type: str
    query_id: str
    resp_code: str
    details: dict[str, str]  # what idempotency compares
    amount: int = 0
    extras: dict[str, str] = field(default_factory=dict)  # answer fields beyond the echo
    notify_fields: dict[str, str] = field(default_factory=dict)  # the request echo, for notifications
    orig_query_id: str | None = None
    settle_day: str | None = None  # YYYYMMDD, Beijing calendar day it succeeded
    token: str | None = None
    acc_no: str | None = None
    refunded: int = 0
    voided: bool = False
    pending_queries: int | None = None  # magic 71: queries seen while processing
    back_url: str | None = None
    recorded_at: float = 0.0  # sandbox clock; a query_lag fault hides younger transactions


class BankState:
    def __init__(self) -> None:
        self.merchants: dict[str, Merchant] = {}
        self.accounts: dict[str, Account] = {}
        self.agreements: dict[str, Agreement] = {}
        self.orders: dict[tuple[str, str], Txn] = {}
        self.by_query_id: dict[str, Txn] = {}
        self._seq = 0
        self.reset()

    def reset(self) -> None:
        self.merchants = {}
        for m in BANK_MERCHANTS:
            cert = wire.pki_cert("merchant") if m.sign_method == "01" else None
            self.merchants[m.mer_id] = Merchant(m.mer_id, m.sign_method, cert=cert, secure_key=m.secure_key)
        self.accounts = {a.acc_no: Account(a.acc_no, a.holder, a.balance, a.status) for a in BANK_ACCOUNTS}
        self.agreements = {
            a.token: Agreement(
                a.token, a.mer_id, BANK_TR_ID, a.acc_no, a.payer_ref, "20250101000000", "20450101000000"
            )
            for a in BANK_AGREEMENTS
        }
        self.orders = {}
        self.by_query_id = {}
        self._seq = secrets.randbelow(9_000_000)

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) % 10_000_000
        return self._seq

    def new_query_id(self, now: datetime) -> str:
        return now.strftime("%Y%m%d%H%M%S") + f"{self.next_seq():07d}"

    def new_token(self) -> str:
        while True:
            token = "62999" + "".join(secrets.choice("0123456789") for _ in range(14))
            if token not in self.agreements:
                return token

    def new_acc_no(self) -> str:
        while True:
            acc_no = "62166103" + "".join(secrets.choice("0123456789") for _ in range(11))
            if acc_no not in self.accounts:
                return acc_no

    def new_mer_id(self) -> str:
        while True:
            mer_id = "777290058" + "".join(secrets.choice("0123456789") for _ in range(6))
            if mer_id not in self.merchants:
                return mer_id
