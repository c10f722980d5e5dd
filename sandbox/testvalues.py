"""The sandbox's fixed test data: one table, restored by every reset.

docs/test-values.md documents the same table for testers and `GET /_control/test-values` serves it
as JSON; a unit test keeps the document in step with this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

CardStatus = Literal["ACTIVE", "LOST", "FROZEN"]


@dataclass(frozen=True)
class SandboxCard:
    """One test card; every card has its own account so balances never interfere."""

    card_no: str
    student: str
    account_no: str
    balance: int  # fen
    status: CardStatus
    pin: str | None = None


@dataclass(frozen=True)
class MagicAmount:
    """An amount ending (amount % 100) that scripts a provider's answer without a fault rule.

    `action` and `delay_ms` name the same behaviour as a fault rule (sandbox.control), so magic
    amounts and fault rules share one implementation.
    """

    ending: int
    provider: str
    operation: str
    action: str
    effect: str
    delay_ms: int | None = None


ECARD_DEFAULT_MERCHANT_ID = "m_test"
# Same secret as tests/contract/vectors/ecard.json, so the committed vectors verify against it.
ECARD_DEFAULT_SECRET = "ecard-test-secret-0123456789abcdef0123"

CARDS: tuple[SandboxCard, ...] = (
    SandboxCard("31000001", "stu_alice", "A1001", 100_000, "ACTIVE"),
    SandboxCard("31000002", "stu_bob", "A1002", 500, "ACTIVE"),
    SandboxCard("31000003", "stu_carol", "A1003", 20_000, "LOST"),
    SandboxCard("31000004", "stu_dave", "A1004", 20_000, "ACTIVE", pin="1234"),
    SandboxCard("31000005", "stu_erin", "A1005", 20_000, "FROZEN"),
    SandboxCard("31000006", "stu_frank", "A1006", 100_000_000, "ACTIVE"),
)

MAGIC_AMOUNTS: tuple[MagicAmount, ...] = (
    MagicAmount(
        91, "ecard", "consume", "error_500", "HTTP 500 ERROR before applying: nothing moved, nothing recorded"
    ),
    MagicAmount(
        92,
        "ecard",
        "consume",
        "error_500_after_apply",
        "applied (money moved), then HTTP 500 ERROR answered; a query shows SUCCESS",
    ),
    MagicAmount(
        93,
        "ecard",
        "consume",
        "delay_after_apply",
        "applied, then the answer is held 30 s: a client with a shorter timeout sees a timeout",
        delay_ms=30_000,
    ),
    MagicAmount(
        94,
        "ecard",
        "consume",
        "bad_signature",
        "applied, answered normally but with a corrupted X-Ecard-Signature",
    ),
)


def magic_amount(provider: str, operation: str, amount: int) -> MagicAmount | None:
    """The magic behaviour an amount triggers for this provider operation, if any."""
    for magic in MAGIC_AMOUNTS:
        if magic.provider == provider and magic.operation == operation and amount % 100 == magic.ending:
            return magic
    return None


def fixed_values() -> dict[str, Any]:
    """The fixed data as served by `GET /_control/test-values`.

    Not named test_*: pytest would collect it from any test module that imports it.
    """
    return {
        "cards": [
            {
                "card_no": card.card_no,
                "pin": card.pin,
                "status": card.status,
                "balance": card.balance,
                "student": card.student,
                "account_no": card.account_no,
            }
            for card in CARDS
        ],
        # Face users arrive with the face cloud; the key is part of the contract already.
        "face": [],
        "magic_amounts": [
            {
                "ending": m.ending,
                "provider": m.provider,
                "operation": m.operation,
                "action": m.action,
                "effect": m.effect,
            }
            for m in MAGIC_AMOUNTS
        ],
        "ecard_default_merchant": {"merchant_id": ECARD_DEFAULT_MERCHANT_ID, "secret": ECARD_DEFAULT_SECRET},
    }
