"""Per-adapter cases for the contract suite: how to build the adapter against its sandbox, and
which requests pay, decline, or leave the outcome unknown. A new adapter adds one case here."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from adapters.base import Adapter, CardCredential, PaymentRequest, ProviderConfig
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


CASES = {"ecard": ecard_case}
