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
    # E-card depth (docs/ecard-protocol.md, "Accounts in depth"): a subsidy wallet spent first,
    # valid between two local dates (inclusive), and the PIN thresholds (fen) of the account.
    subsidy: int = 0
    subsidy_valid_from: str | None = None
    subsidy_valid_to: str | None = None
    pin_per_payment: int | None = None
    pin_daily: int | None = None


@dataclass(frozen=True)
class EcardMealPeriod:
    """A meal period of every e-card merchant after a reset: local (Asia/Shanghai) HH:MM times,
    start inclusive, end exclusive."""

    name: str
    start: str
    end: str


@dataclass(frozen=True)
class EcardStore:
    """A store the sandbox e-card knows by `store_ref`; unknown store refs have no meal rules."""

    store_ref: str
    category: str
    meal_periods_only: bool
    fixed_prices: tuple[tuple[str, int], ...] = ()  # (meal period, price in fen)


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
    SandboxCard(
        "31000007",
        "stu_grace",
        "A1007",
        10_000,
        "ACTIVE",
        pin="2468",
        subsidy=3_000,
        subsidy_valid_from="2020-01-01",
        subsidy_valid_to="2099-12-31",
    ),
    SandboxCard(
        "31000008",
        "stu_henry",
        "A1008",
        20_000,
        "ACTIVE",
        pin="1357",
        subsidy=5_000,
        subsidy_valid_from="2020-09-01",
        subsidy_valid_to="2021-01-31",
    ),
    SandboxCard(
        "31000009", "stu_ivy", "A1009", 50_000, "ACTIVE", pin="8642", pin_per_payment=2_000, pin_daily=5_000
    ),
    SandboxCard(
        "31000010",
        "stu_jack",
        "A1010",
        30_000,
        "ACTIVE",
        pin="9753",
        subsidy=1_000,
        subsidy_valid_from="2020-01-01",
        subsidy_valid_to="2099-12-31",
        pin_per_payment=3_000,
        pin_daily=10_000,
    ),
)

ECARD_MEAL_PERIODS: tuple[EcardMealPeriod, ...] = (
    EcardMealPeriod("breakfast", "06:30", "09:00"),
    EcardMealPeriod("lunch", "11:00", "13:30"),
    EcardMealPeriod("dinner", "17:00", "19:30"),
)

ECARD_STORES: tuple[EcardStore, ...] = (
    EcardStore("canteen-1", "canteen", True, (("breakfast", 500), ("lunch", 1500), ("dinner", 1200))),
    EcardStore("canteen-2", "canteen", True),
    EcardStore("shop-1", "shop", False),
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
        "ecard_accounts": [
            {
                "card_no": card.card_no,
                "account_no": card.account_no,
                "subsidy": card.subsidy,
                "subsidy_valid_from": card.subsidy_valid_from,
                "subsidy_valid_to": card.subsidy_valid_to,
                "pin_per_payment": card.pin_per_payment,
                "pin_daily": card.pin_daily,
            }
            for card in CARDS
            if card.subsidy or card.pin_per_payment is not None or card.pin_daily is not None
        ],
        "ecard_meal_periods": [{"name": p.name, "start": p.start, "end": p.end} for p in ECARD_MEAL_PERIODS],
        "ecard_stores": [
            {
                "store_ref": store.store_ref,
                "category": store.category,
                "meal_periods_only": store.meal_periods_only,
                "fixed_prices": dict(store.fixed_prices),
            }
            for store in ECARD_STORES
        ],
        "alipay": _alipay_values(),
        "bank": _bank_values(),
    }


# The sandbox bank (docs/bank-protocol.md). Its TEST PKI lives in sandbox/bank/pki/.
BankAccountStatus = Literal["ACTIVE", "FROZEN"]


@dataclass(frozen=True)
class BankTestMerchant:
    mer_id: str
    sign_method: str  # "01" (merchant certificate), "11" (SHA-256 key) or "12" (SM3 key)
    secure_key: str | None = None  # 11 and 12; 01 uses sandbox/bank/pki/merchant.pem


@dataclass(frozen=True)
class BankTestAccount:
    acc_no: str
    holder: str
    balance: int  # fen
    status: BankAccountStatus


@dataclass(frozen=True)
class BankTestAgreement:
    """A direct-debit agreement restored by every reset (so tests need not open one first)."""

    mer_id: str
    token: str
    acc_no: str
    payer_ref: str


BANK_TR_ID = "62000000001"  # every sandbox merchant's token requestor id unless registered otherwise
BANK_DEFAULT_MER_ID = "777290058110001"
# Same keys as tests/contract/vectors/bank.json, so the committed vectors verify against them.
BANK_MERCHANTS: tuple[BankTestMerchant, ...] = (
    BankTestMerchant(BANK_DEFAULT_MER_ID, "01"),
    BankTestMerchant("777290058110011", "11", "campuspay-bank-secure-key-11-0123456789abcdef"),
    BankTestMerchant("777290058110012", "12", "campuspay-bank-secure-key-12-0123456789abcdef"),
)
BANK_ACCOUNTS: tuple[BankTestAccount, ...] = (
    BankTestAccount("6216610200000000012", "Wang Fang", 1_000_000, "ACTIVE"),
    BankTestAccount("6216610200000000020", "Li Lei", 500, "ACTIVE"),
    BankTestAccount("6216610200000000038", "Zhao Min", 100_000, "FROZEN"),
    BankTestAccount("6216610200000000046", "Chen Jie", 100_000_000, "ACTIVE"),
)
BANK_AGREEMENTS: tuple[BankTestAgreement, ...] = (
    BankTestAgreement(BANK_DEFAULT_MER_ID, "6299990000000000101", "6216610200000000012", "stu_alice"),
    BankTestAgreement(BANK_DEFAULT_MER_ID, "6299990000000000102", "6216610200000000020", "stu_bob"),
    BankTestAgreement(BANK_DEFAULT_MER_ID, "6299990000000000103", "6216610200000000038", "stu_dave"),
    BankTestAgreement(BANK_DEFAULT_MER_ID, "6299990000000000104", "6216610200000000046", "stu_frank"),
    BankTestAgreement("777290058110011", "6299990000000001101", "6216610200000000012", "stu_alice"),
    BankTestAgreement("777290058110012", "6299990000000001201", "6216610200000000012", "stu_alice"),
)

# By txnAmt (fen) % 100, on consume only (void, refund and query are never affected).
BANK_MAGIC_AMOUNTS: tuple[MagicAmount, ...] = (
    MagicAmount(
        71,
        "bank",
        "consume",
        "processing",
        "respCode 04 (status unknown); the first query says origRespCode 05 (processing); from the "
        "second query on it is settled: debited, origRespCode 00, notification sent",
    ),
    MagicAmount(
        72, "bank", "consume", "error_500_after_apply", "debited (notification sent), then HTTP 500 answered"
    ),
    MagicAmount(73, "bank", "consume", "bad_signature", "debited, answered 00 with a signature that fails"),
    MagicAmount(
        74,
        "bank",
        "consume",
        "expired_cert",
        "debited, answered 00 signed with the EXPIRED bank certificate (01; 11/12 merchants: bad signature)",
    ),
    MagicAmount(
        75,
        "bank",
        "consume",
        "wrong_subject_cert",
        "debited, answered 00 signed with the WRONG-SUBJECT certificate (01; 11/12: bad signature)",
    ),
    MagicAmount(
        76,
        "bank",
        "consume",
        "other_root_cert",
        "debited, answered 00 signed with a certificate of ANOTHER ROOT (01; 11/12: bad signature)",
    ),
)


def bank_magic_amount(amount: int) -> MagicAmount | None:
    """The sandbox bank's magic behaviour for a consume of this amount (fen), if any."""
    for magic in BANK_MAGIC_AMOUNTS:
        if amount % 100 == magic.ending:
            return magic
    return None


def _bank_values() -> dict[str, Any]:
    # Imported here: sandbox.bank imports sandbox.control, which imports this module.
    from sandbox.bank.wire import pki_cert, pki_text

    return {
        "base_path": "/bank",
        "back_trans_path": "/bank/gateway/api/backTransReq.do",
        "query_path": "/bank/gateway/api/queryTrans.do",
        "tr_id": BANK_TR_ID,
        "merchants": [
            {
                "mer_id": m.mer_id,
                "sign_method": m.sign_method,
                "secure_key": m.secure_key,
                "cert_id": str(pki_cert("merchant").serial_number) if m.sign_method == "01" else None,
                "cert_pem": pki_text("merchant.pem") if m.sign_method == "01" else None,
                "private_key_pem": pki_text("merchant.key.pem") if m.sign_method == "01" else None,
            }
            for m in BANK_MERCHANTS
        ],
        "accounts": [
            {"acc_no": a.acc_no, "holder": a.holder, "balance": a.balance, "status": a.status}
            for a in BANK_ACCOUNTS
        ],
        "agreements": [
            {"mer_id": a.mer_id, "token": a.token, "acc_no": a.acc_no, "payer_ref": a.payer_ref}
            for a in BANK_AGREEMENTS
        ],
        "root_ca_pem": pki_text("root-ca.pem"),
        "intermediate_ca_pem": pki_text("intermediate-ca.pem"),
        "bank_cert_id": str(pki_cert("bank-sign").serial_number),
        "bank_subject": {"CN": "CampusPay Sandbox Bank Signing", "O": "CampusPay Sandbox Bank", "C": "CN"},
        "magic_amounts": [
            {
                "ending": m.ending,
                "provider": m.provider,
                "operation": m.operation,
                "action": m.action,
                "effect": m.effect,
            }
            for m in BANK_MAGIC_AMOUNTS
        ],
    }
