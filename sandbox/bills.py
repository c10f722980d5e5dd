"""Bill faults, the same for every provider: a day's bill late, partial, or wrong.

A provider builds its day's rows in its own shape, then asks `BillFaults.take` which bill_*
rules (sandbox/faults.py) hit this bill and runs its rows through `apply`. What each does:

- ``bill_late``: the bill is not available yet (each provider answers in its own way);
- ``bill_partial``: only the first half of the rows (rounded down) is in the file;
- ``bill_row_missing``: the row(s) of ``match.order_ref`` (else the first row) are left out;
- ``bill_amount_changed``: that row's amount is one fen more than what moved;
- ``bill_extra_row``: a copy of that row under a reference the merchant never sent.

Rules without ``match.order_ref`` hit the first row, so a tester need not know the file's order.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sandbox.control import ControlPlane
from sandbox.faults import FaultRule

R = TypeVar("R")

__all__ = ["BillFaults"]


@dataclass(frozen=True)
class BillFaults:
    rules: Sequence[FaultRule]

    @classmethod
    def take(
        cls, control: ControlPlane, provider: str, operation: str, merchant_id: str | None
    ) -> BillFaults:
        rules = control.take_bill_faults(provider, operation)
        for rule in rules:
            ref = rule.match.order_ref if rule.match else None
            control.record(
                provider,
                "fault",
                merchant_id,
                operation=operation,
                rule_id=rule.id,
                action=rule.action,
                order_ref=ref,
            )
        return cls(rules)

    @property
    def late(self) -> bool:
        return any(rule.action == "bill_late" for rule in self.rules)

    def apply(
        self,
        rows: list[R],
        *,
        reference: Callable[[R], str],
        plus_one_fen: Callable[[R], R],
        renamed: Callable[[R, str], R],
    ) -> list[R]:
        """The rows as the faulted bill shows them."""
        for rule in self.rules:
            if not rows:
                break
            wanted = rule.match.order_ref if rule.match else None
            hit = [i for i, row in enumerate(rows) if reference(row) == wanted] if wanted else [0]
            if rule.action == "bill_partial":
                rows = rows[: len(rows) // 2]
            elif rule.action == "bill_row_missing":
                rows = [row for i, row in enumerate(rows) if i not in hit]
            elif rule.action == "bill_amount_changed":
                rows = [plus_one_fen(row) if i in hit else row for i, row in enumerate(rows)]
            elif rule.action == "bill_extra_row" and hit:
                rows = [*rows, renamed(rows[hit[0]], f"SBXNEVER{secrets.token_hex(6).upper()}")]
        return rows
