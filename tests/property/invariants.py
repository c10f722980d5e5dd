"""What must hold between the gateway's word and the providers' books.

``money_invariants`` holds after every step, whatever is still in flight; ``disagreements``
lists what differs once recovery has settled everything (an empty list is the goal).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from gateway.payments.state import ALLOWED
from tests.property.books import Books

FINAL_REFUND = frozenset({"succeeded", "failed"})


@dataclass
class PaymentView:
    """What the terminal has been told about one payment, in the order it was told."""

    id: str
    order: str
    amount: int
    adapter: str | None  # the provider that took it (None: refused before any was chosen)
    statuses: list[str] = field(default_factory=list)
    refunded: int = 0
    refunds: list[str] = field(default_factory=list)
    cancel_asked: bool = False

    @property
    def status(self) -> str:
        return self.statuses[-1]

    def see(self, resource: dict[str, Any]) -> None:
        """A current view of the payment: no state goes backwards (gateway/payments/state.py)
        and no refunded money comes back."""
        status, refunded = resource["status"], resource["refunded_amount"]
        assert resource["amount"] == self.amount, (self.id, resource)
        if self.statuses and status != self.status:
            assert status in ALLOWED[self.status], f"payment {self.id} went {self.status} -> {status}"
        if not self.statuses or status != self.status:
            self.statuses.append(status)
        assert self.refunded <= refunded <= self.amount, (
            f"payment {self.id} refunded {self.refunded} -> {refunded}"
        )
        self.refunded = refunded
        if status == "canceled" and "succeeded" in self.statuses:  # CONTRACT.md, "Cancel"
            assert refunded == self.amount, f"payment {self.id} paid, then canceled with {refunded} refunded"


@dataclass
class RefundView:
    id: str
    payment_id: str
    amount: int
    statuses: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.statuses[-1]

    def see(self, resource: dict[str, Any]) -> None:
        status = resource["status"]
        assert (resource["payment_id"], resource["amount"]) == (self.payment_id, self.amount), resource
        if self.statuses and status != self.status:
            # a refund is processing until it is final, and final for good
            assert self.status not in FINAL_REFUND, f"refund {self.id} went {self.status} -> {status}"
        if not self.statuses or status != self.status:
            self.statuses.append(status)


def payment_of(reference: str) -> str:
    """``pay_…-2`` -> ``pay_…``; ``pay_…-1-cancel`` (a cancel's refund of the rest) likewise."""
    return reference.split("-", 1)[0]


def money_invariants(
    books: Books, start: int, payments: dict[str, PaymentView], refunds: dict[str, RefundView]
) -> None:
    """Checked against the providers' books after every step."""
    # balance conservation: what the payers hold plus what the merchants hold never changes
    assert books.balances + books.held == start, (
        f"money created or lost: payers {books.balances} + merchants {books.held} != {start}"
    )
    by_refunds = books.refunded_by_refunds()
    live_by_order: dict[str, list[str]] = defaultdict(list)
    for ref, charge in books.charges.items():
        assert 0 <= charge.held <= charge.amount, charge
        assert charge.refunded <= charge.amount and by_refunds.get(ref, 0) <= charge.amount, (
            f"refunded above the capture: {charge}, refunds {by_refunds.get(ref, 0)}"
        )
        if charge.live:
            view = payments.get(payment_of(ref))
            live_by_order[view.order if view is not None else payment_of(ref)].append(ref)
    for order, refs in live_by_order.items():
        assert len(refs) <= 1, f"order {order} captured more than once: {refs}"
    for view in payments.values():
        charges = books.of_payment(view.id)
        if view.status in ("failed", "canceled"):
            held = [c for c in charges if c.held]
            assert not held, f"payment {view.id} is {view.status} but the provider holds {held}"
        if "succeeded" in view.statuses:
            assert any(c.captured for c in charges), f"payment {view.id} succeeded, no charge at the provider"
    for refund in refunds.values():
        if refund.status == "succeeded":
            assert refund.id in books.refunds, f"refund {refund.id} succeeded, the provider has none"
            assert books.refunds[refund.id][1] == refund.amount, (refund, books.refunds[refund.id])


def disagreements(
    books: Books, payments: dict[str, dict[str, Any]], refunds: dict[str, dict[str, Any]]
) -> list[str]:
    """Once nothing is in flight: every gateway status is what the provider holds."""
    problems: list[str] = []
    for pid, p in payments.items():
        charges, status = books.of_payment(pid), p["status"]
        live = [c for c in charges if c.live]
        if status == "processing":
            problems.append(f"{pid} still processing")
        elif status == "succeeded":
            if len(live) != 1:
                problems.append(f"{pid} succeeded, the provider has {len(live)} live charges: {charges}")
            elif (
                live[0].refunded != p["refunded_amount"] or live[0].held != p["amount"] - p["refunded_amount"]
            ):
                problems.append(f"{pid} succeeded with {p['refunded_amount']} refunded, provider: {live[0]}")
            if any(c.held for c in charges if not c.live):
                problems.append(f"{pid}: an earlier attempt still holds money: {charges}")
        elif any(c.held for c in charges):
            problems.append(f"{pid} is {status} but the provider holds money: {charges}")
    succeeded_refunds: dict[str, int] = defaultdict(int)
    for r in refunds.values():
        if r["status"] == "succeeded":
            succeeded_refunds[r["payment_id"]] += r["amount"]
    for pid, p in payments.items():
        if p["status"] == "succeeded" and p["refunded_amount"] != succeeded_refunds[pid]:
            problems.append(f"{pid} refunded {p['refunded_amount']}, its refunds {succeeded_refunds[pid]}")
    for rid, r in refunds.items():
        at_provider = books.refunds.get(rid)
        if r["status"] == "processing":
            problems.append(f"refund {rid} still processing")
        elif r["status"] == "succeeded" and (at_provider is None or at_provider[1] != r["amount"]):
            problems.append(f"refund {rid} succeeded, the provider has {at_provider}")
        elif r["status"] == "failed" and at_provider is not None:
            problems.append(f"refund {rid} failed, the provider refunded it: {at_provider}")
    for ref, charge in books.charges.items():
        if (charge.held or charge.live) and payment_of(ref) not in payments:
            problems.append(f"the provider holds a charge no payment knows: {charge}")
    for ref, (charge_ref, amount) in books.refunds.items():
        if ref not in refunds and not ref.endswith("-cancel"):
            problems.append(f"the provider has a refund no refund knows: {ref} {charge_ref} {amount}")
        if ref.endswith("-cancel") and payments.get(payment_of(ref), {}).get("status") != "canceled":
            problems.append(f"a cancel's refund {ref} for a payment that is not canceled")
    return problems
