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


@dataclass(frozen=True)
class FaceTestUser:
    """A test student of the face cloud; enrolled ones (with ids) are enrolled again by every reset.

    Each is enrolled with capture 0 of its synthetic face (GET /face/test-faces/{school}/{student}).
    """

    school: str  # the face group: the provider-side school id
    student: str
    user_id: str | None = None  # None: not enrolled
    agreement_no: str | None = None
    consent_ref: str | None = None

    @property
    def enrolled(self) -> bool:
        return self.user_id is not None


FACE_USERS: tuple[FaceTestUser, ...] = (
    FaceTestUser(
        "school-demo", "stu_alice", "2088101000000001", "20221000000000000001", "consent-demo-alice"
    ),
    FaceTestUser("school-demo", "stu_bob", "2088101000000002", "20221000000000000002", "consent-demo-bob"),
    FaceTestUser("school-demo", "stu_carol"),
    FaceTestUser("school-other", "stu_zed", "2088101000000003", "20221000000000000003", "consent-other-zed"),
)

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


# The sandbox Alipay (docs/alipay-sandbox.md). Its keys live in sandbox/alipay/keys.py.
ALIPAY_DEFAULT_APP_ID = "2021000000000001"
ALIPAY_DEFAULT_SELLER_ID = "2088000000000001"
ALIPAY_BUYER_BALANCE = 100_000  # fen: every face user's Alipay balance after a reset

# By total_amount in fen % 100, on alipay.trade.pay (86: on the cancel of a trade paid with it).
# Kept apart from MAGIC_AMOUNTS: these script Alipay result codes, not fault-rule actions.
ALIPAY_MAGIC_AMOUNTS: tuple[MagicAmount, ...] = (
    MagicAmount(
        81,
        "alipay",
        "alipay.trade.pay",
        "user_paying",
        "10003 (user paying): WAIT_BUYER_PAY at the first query, TRADE_SUCCESS from the second query on",
    ),
    MagicAmount(
        82,
        "alipay",
        "alipay.trade.pay",
        "unknown_after_apply",
        "paid (money moved, token used, notification sent), then 20000 isp.unknow-error answered; "
        "a query says TRADE_SUCCESS",
    ),
    MagicAmount(
        83,
        "alipay",
        "alipay.trade.pay",
        "unknown_before_apply",
        "20000 isp.unknow-error before anything happened; a query says ACQ.TRADE_NOT_EXIST",
    ),
    MagicAmount(
        84,
        "alipay",
        "alipay.trade.pay",
        "bad_signature",
        "paid and answered 10000, but the response sign does not verify",
    ),
    MagicAmount(
        85,
        "alipay",
        "alipay.trade.pay",
        "system_error",
        "40004 ACQ.SYSTEM_ERROR; the trade exists as WAIT_BUYER_PAY and is never paid (cancel closes it)",
    ),
    MagicAmount(
        86,
        "alipay",
        "alipay.trade.cancel",
        "cancel_retry",
        "paid normally; the first cancel answers 40004 ACQ.SYSTEM_ERROR with retry_flag Y and does "
        "nothing; the next cancel works",
    ),
)


def alipay_magic_amount(amount: int) -> MagicAmount | None:
    """The sandbox Alipay's magic behaviour for a trade of this amount (fen), if any."""
    for magic in ALIPAY_MAGIC_AMOUNTS:
        if amount % 100 == magic.ending:
            return magic
    return None


def _alipay_values() -> dict[str, Any]:
    # Imported here: sandbox.alipay imports sandbox.control, which imports this module.
    from sandbox.alipay.keys import ALIPAY_PUBLIC_KEY_PEM, TEST_APP_PRIVATE_KEY_PEM, TEST_APP_PUBLIC_KEY_PEM

    return {
        "gateway_path": "/alipay/gateway.do",
        "default_app": {
            "app_id": ALIPAY_DEFAULT_APP_ID,
            "seller_id": ALIPAY_DEFAULT_SELLER_ID,
            "app_private_key": TEST_APP_PRIVATE_KEY_PEM,
            "app_public_key": TEST_APP_PUBLIC_KEY_PEM,
        },
        "alipay_public_key": ALIPAY_PUBLIC_KEY_PEM,
        "buyer_balance": ALIPAY_BUYER_BALANCE,
        "magic_amounts": [
            {
                "ending": m.ending,
                "provider": m.provider,
                "operation": m.operation,
                "action": m.action,
                "effect": m.effect,
            }
            for m in ALIPAY_MAGIC_AMOUNTS
        ],
    }


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
        "face": [
            {
                "school": user.school,
                "student": user.student,
                "user_id": user.user_id,
                "agreement_no": user.agreement_no,
                "consent_ref": user.consent_ref,
                "enrolled": user.enrolled,
                "test_face": f"/face/test-faces/{user.school}/{user.student}",
            }
            for user in FACE_USERS
        ],
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
        "alipay": _alipay_values(),
    }
