"""The providers' own books, read from the sandbox's control plane (never from the gateway).

The same reader serves the in-process sandbox (over ``httpx.ASGITransport``) and a sandbox
process (over a socket): e-card orders and refunds (``/_control/ecard/merchants/{id}/orders``),
Alipay trades (``/_control/alipay/apps/{app_id}/trades``) and what every payer still holds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import httpx


@dataclass(frozen=True)
class Payers:
    """Whose money the run moves: one e-card merchant's cards, one Alipay app's buyers."""

    ecard_merchant: str
    cards: tuple[str, ...]
    alipay_app: str | None = None
    buyers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Charge:
    """One provider order (e-card) or trade (Alipay), by the reference the gateway sent."""

    provider: str
    reference: str
    amount: int
    captured: bool  # the payer was charged at some point
    reversed: bool  # given back by the provider's own reversal or cancel (not by refunds)
    refunded: int  # given back by refunds (for Alipay, a cancel's refund too)
    held: int  # what the merchant holds of it now

    @property
    def live(self) -> bool:
        """A capture the provider has not undone: at most one per order."""
        return self.captured and not self.reversed


@dataclass
class Books:
    charges: dict[str, Charge] = field(default_factory=dict)
    refunds: dict[str, tuple[str, int]] = field(default_factory=dict)  # refund ref -> (charge ref, fen)
    balances: int = 0  # what all the payers hold together

    @property
    def held(self) -> int:
        return sum(c.held for c in self.charges.values())

    def of_payment(self, payment_id: str) -> list[Charge]:
        """Every attempt's charge: the gateway's references are ``<payment id>-<attempt>``."""
        return [c for ref, c in self.charges.items() if ref.startswith(payment_id + "-")]

    def refunded_by_refunds(self) -> dict[str, int]:
        total: dict[str, int] = defaultdict(int)
        for reference, amount in self.refunds.values():
            total[reference] += amount
        return total


def fen(yuan: str) -> int:
    return int(Decimal(yuan) * 100)


async def read_books(sandbox: httpx.AsyncClient, payers: Payers) -> Books:
    books = Books()
    r = await sandbox.get(f"/_control/ecard/merchants/{payers.ecard_merchant}/orders")
    r.raise_for_status()
    for o in r.json()["orders"]:
        debited = bool(o["debited"])
        held = o["amount"] - o["refunded"] - o["reversed_amount"] if debited else 0
        books.charges[o["order_ref"]] = Charge(
            "ecard", o["order_ref"], o["amount"], debited, o["status"] == "REVERSED", o["refunded"], held
        )
    for refund in r.json()["refunds"]:
        books.refunds[refund["refund_ref"]] = (refund["order_ref"], refund["amount"])
    for card in payers.cards:
        r = await sandbox.get(f"/_control/ecard/merchants/{payers.ecard_merchant}/cards/{card}")
        r.raise_for_status()
        books.balances += int(r.json()["balance"])
    if payers.alipay_app is not None:
        r = await sandbox.get(f"/_control/alipay/apps/{payers.alipay_app}/trades")
        r.raise_for_status()
        for t in r.json()["trades"]:
            total, refunded, paid = fen(t["total_amount"]), fen(t["refunded_amount"]), bool(t["paid"])
            books.charges[t["out_trade_no"]] = Charge(
                "alipay",
                t["out_trade_no"],
                total,
                paid,
                t["cancel_action"] == "refund",
                refunded,
                total - refunded if paid else 0,
            )
            for refund in t["refunds"]:
                books.refunds[refund["out_request_no"]] = (t["out_trade_no"], fen(refund["refund_amount"]))
        for buyer in payers.buyers:
            r = await sandbox.get(f"/_control/alipay/buyers/{buyer}")
            r.raise_for_status()
            books.balances += int(r.json()["balance"])
    return books
