"""Per-adapter cases for the contract suite: how to build the adapter against its sandbox, and
which requests pay, decline, or leave the outcome unknown. A new adapter adds one case here."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from adapters.bank.adapter import BankAdapter, order_id_for
from adapters.base import (
    Adapter,
    AgreementCredential,
    CardCredential,
    FaceCredential,
    Outcome,
    PaymentRequest,
    ProviderConfig,
)
from adapters.registry import default_registry
from sandbox import create_sandbox_app


@dataclass
class Case:
    name: str
    adapter: Adapter
    sandbox: httpx.AsyncClient
    pay: Callable[[int], PaymentRequest]  # a request that succeeds, for this amount
    decline: PaymentRequest  # a request the provider refuses
    unknown: PaymentRequest  # a request whose outcome the provider leaves unknown
    tampered: PaymentRequest  # a request whose answer carries a bad signature
    secrets: list[str]  # strings that must never reach logs or results
    money_moved: Callable[[str], object]  # coroutine: did money move for this reference?
    # What a query may answer after a decline. Every one of them means "nothing moved": the
    # e-card keeps the refused order (FAILED); Alipay keeps no trade for a refused pay
    # (ACQ.TRADE_NOT_EXIST -> NOT_FOUND), or a closed one (REVERSED).
    decline_query: frozenset[Outcome] = field(default_factory=lambda: frozenset({Outcome.FAILED}))
    # A request that succeeds and carries a credential that must never leak; None: the suite's
    # own e-card card + PIN request.
    secret_pay: Callable[[], PaymentRequest] | None = None


def _card_request(card: str, amount: int, pin: str | None = None) -> PaymentRequest:
    return PaymentRequest(
        reference="ref_" + secrets.token_hex(8),
        amount=amount,
        currency="CNY",
        method="card",
        credential=CardCredential(card_no=card, pin=pin),
        store_ref="store_1",
        terminal_ref="dev_1",
    )


@asynccontextmanager
async def ecard_case(
    transport_wrapper: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> AsyncIterator[Case]:
    app = create_sandbox_app()
    transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=app)
    if transport_wrapper is not None:
        transport = transport_wrapper(transport)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as sb,
        httpx.AsyncClient(transport=transport) as http,
    ):
        merchant = (await sb.post("/ecard/merchants", json={})).json()
        config = ProviderConfig(
            endpoint="http://sandbox.test/ecard",
            credentials={"merchant_id": merchant["merchant_id"], "secret": merchant["secret"]},
            options={"timeout_seconds": 2.0},
        )
        adapter = default_registry().create("ecard", config, http)

        async def money_moved(reference: str) -> bool:
            events = (
                await sb.get(
                    "/_control/events", params={"merchant_id": merchant["merchant_id"], "kind": "ecard.debit"}
                )
            ).json()["events"]
            return any(e.get("order_ref") == reference for e in events)

        yield Case(
            name="ecard",
            adapter=adapter,
            sandbox=sb,
            pay=lambda amount: _card_request("31000001", amount),
            decline=_card_request("31000002", 90_000),  # balance 500
            unknown=_card_request("31000001", 1091),  # magic: HTTP 500 before applying
            tampered=_card_request("31000001", 1094),  # magic: applied, answer's signature corrupted
            secrets=[merchant["secret"], "31000004", "1234"],
            money_moved=money_moved,
        )


ALIPAY_VECTORS = json.loads((Path(__file__).parent / "vectors" / "alipay.json").read_text(encoding="utf-8"))
FACE_SCHOOL = "school-demo"  # the sandbox face cloud's demo school (its face group)


def _pem_body(pem: str) -> str:
    return "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))


def _face_request(token: str, amount: int) -> PaymentRequest:
    return PaymentRequest(
        reference="ref_" + secrets.token_hex(8),
        amount=amount,
        currency="CNY",
        method="face",
        credential=FaceCredential(face_token=token),
        store_ref="store_1",
        terminal_ref="dev_1",
        description="lunch",
    )


@asynccontextmanager
async def alipay_case(
    transport_wrapper: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> AsyncIterator[Case]:
    """The Alipay adapter against the sandbox Alipay + face cloud (docs/test-values.md).

    A face token pays one trade only, so every request gets its own, minted up front through
    ``POST /face/test-tokens`` for ``stu_alice`` (balance 100000 fen): ``case.pay`` is
    synchronous and takes the next one from the pool."""
    app = create_sandbox_app()
    transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=app)
    if transport_wrapper is not None:
        transport = transport_wrapper(transport)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as sb,
        httpx.AsyncClient(transport=transport) as http,
    ):
        registered = (
            await sb.post("/alipay/apps", json={"app_public_key": ALIPAY_VECTORS["app_public_key"]})
        ).json()
        app_id = registered["app_id"]
        config = ProviderConfig(
            endpoint="http://sandbox.test/alipay/gateway.do",
            credentials={
                "app_id": app_id,
                "app_private_key": ALIPAY_VECTORS["app_private_key"],
                "alipay_public_key": registered["alipay_public_key"],
            },
            options={"timeout_seconds": 2.0, "face_group": FACE_SCHOOL},
        )
        adapter = default_registry().create("alipay", config, http)
        tokens: list[str] = []
        for _ in range(8):
            minted = await sb.post("/face/test-tokens", json={"school": FACE_SCHOOL, "student": "stu_alice"})
            minted.raise_for_status()
            tokens.append(minted.json()["face_token"])
        pool = list(tokens)

        async def money_moved(reference: str) -> bool:
            events = (
                await sb.get(
                    "/_control/events",
                    params={"provider": "alipay", "kind": "alipay.pay", "merchant_id": app_id},
                )
            ).json()["events"]
            return any(e.get("out_trade_no") == reference for e in events)

        private_body = _pem_body(ALIPAY_VECTORS["app_private_key"])
        yield Case(
            name="alipay",
            adapter=adapter,
            sandbox=sb,
            pay=lambda amount: _face_request(pool.pop(), amount),
            decline=_face_request(pool.pop(), 150_000),  # over the buyer's 100000 fen balance
            unknown=_face_request(pool.pop(), 1083),  # magic 83: 20000 before anything happened
            tampered=_face_request(pool.pop(), 1084),  # magic 84: paid, answer's sign corrupted
            secrets=[*tokens, private_body, private_body[200:260]],
            money_moved=money_moved,
            decline_query=frozenset({Outcome.FAILED, Outcome.NOT_FOUND, Outcome.REVERSED}),
            secret_pay=lambda: _face_request(pool.pop(), 500),
        )


BANK_VECTORS = json.loads((Path(__file__).parent / "vectors" / "bank.json").read_text(encoding="utf-8"))
BANK_PKI = Path(__file__).resolve().parents[2] / BANK_VECTORS["pki"]["dir"]
BANK_RICH_ACCOUNT = "6216610200000000012"  # balance 1000000 fen (docs/test-values.md, "Bank")
BANK_POOR_ACCOUNT = "6216610200000000020"  # balance 500 fen: a larger consume gets 64


def bank_config(endpoint: str = "http://sandbox.test/bank") -> ProviderConfig:
    """The sandbox's default signMethod 01 merchant, trusting the committed test PKI."""
    pki = BANK_VECTORS["pki"]
    return ProviderConfig(
        endpoint=endpoint,
        credentials={
            "mer_id": BANK_VECTORS["sign_method_01"]["merId"],
            "sign_method": "01",
            "tr_id": "62000000001",
            "merchant_private_key": BANK_VECTORS["merchant_private_key_pem"],
            "merchant_cert": BANK_VECTORS["merchant_cert_pem"],
            "bank_root_ca": (BANK_PKI / pki["root"]).read_text(encoding="utf-8"),
            "bank_intermediate_ca": (BANK_PKI / pki["intermediate"]).read_text(encoding="utf-8"),
            "bank_subject_cn": pki["bank_subject"]["CN"],
            "bank_subject_o": pki["bank_subject"]["O"],
        },
        options={"timeout_seconds": 2.0, "back_url": "http://gateway.test/v1/notify/bank"},
    )


def _agreement_request(token: str, amount: int) -> PaymentRequest:
    return PaymentRequest(
        reference="ref_" + secrets.token_hex(8),
        amount=amount,
        currency="CNY",
        method="card",
        credential=AgreementCredential(token=token),
        store_ref="store_1",
        terminal_ref="dev_1",
    )


@asynccontextmanager
async def bank_case(
    transport_wrapper: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> AsyncIterator[Case]:
    """The bank adapter (signMethod 01) against the sandbox bank (docs/bank-protocol.md).

    Every request pays with its own agreement token, opened up front through the adapter's
    ``open_agreement`` for a fresh payer reference (an untampered client, so the man-in-the-middle
    case still has tokens). Notifications go to an in-memory receiver that answers 200."""
    app = create_sandbox_app()
    transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=app)
    if transport_wrapper is not None:
        transport = transport_wrapper(transport)
    received: list[bytes] = []

    def receive(request: httpx.Request) -> httpx.Response:
        received.append(request.content)
        return httpx.Response(200, text="ok")

    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as sb,
        httpx.AsyncClient(transport=transport) as http,
        httpx.AsyncClient(transport=httpx.MockTransport(receive)) as notify,
    ):
        app.state.bank.notify_client = notify
        try:
            config = bank_config()
            adapter = default_registry().create("bank", config, http)
            minter = BankAdapter(config, sb)
            tokens: list[str] = []
            for _ in range(6):
                opened = await minter.open_agreement(BANK_RICH_ACCOUNT, "stu_" + secrets.token_hex(6))
                tokens.append(opened.token)
            poor = await minter.open_agreement(BANK_POOR_ACCOUNT, "stu_" + secrets.token_hex(6))
            pool = list(tokens)
            unknown = _agreement_request(pool.pop(), 1000)
            # the sandbox answers HTTP 500 before applying every consume of this order
            fault = {
                "provider": "bank",
                "operation": "consume",
                "action": "error_500",
                "times": -1,
                "match": {"order_ref": order_id_for("P", unknown.reference)},
            }
            (await sb.post("/_control/faults", json=fault)).raise_for_status()

            async def money_moved(reference: str) -> bool:
                events = (
                    await sb.get("/_control/events", params={"provider": "bank", "kind": "bank.debit"})
                ).json()["events"]
                return any(e.get("order_id") == order_id_for("P", reference) for e in events)

            key_body = _pem_body(BANK_VECTORS["merchant_private_key_pem"])
            yield Case(
                name="bank",
                adapter=adapter,
                sandbox=sb,
                pay=lambda amount: _agreement_request(pool.pop(), amount),
                decline=_agreement_request(poor.token, 90_000),  # 64: over the account's 500 fen
                unknown=unknown,
                tampered=_agreement_request(pool.pop(), 1073),  # magic 73: debited, signature fails
                secrets=[*tokens, poor.token, key_body[100:160], BANK_RICH_ACCOUNT, BANK_POOR_ACCOUNT],
                money_moved=money_moved,
                secret_pay=lambda: _agreement_request(pool.pop(), 500),
            )
        finally:
            await app.state.bank.aclose()


CASES = {"ecard": ecard_case, "alipay": alipay_case, "bank": bank_case}
