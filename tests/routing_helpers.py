"""Helpers for routing and funding tests: a second e-card adapter instance, a host that refuses
connections, and a bank-shaped adapter that records what it was asked to do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import httpx
from sqlalchemy import select

from adapters.base import (
    BaseAdapter,
    Capabilities,
    Operation,
    Outcome,
    PaymentRequest,
    ProviderConfig,
    ProviderResult,
    RefundRequest,
)
from adapters.ecard.adapter import EcardAdapter
from gateway.store.models import PaymentAttempt
from tests.harness import SANDBOX, Harness, start_harness

DOWN_HOST = "down.test"


class RefusingHost(httpx.AsyncBaseTransport):
    """The network: connections to ``down.test`` are refused before a byte is sent."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == DOWN_HOST:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


class RecordingBank(BaseAdapter):
    """A bank-shaped adapter (card method, bank agreements) that keeps every request it gets."""

    name: ClassVar[str] = "test-bank"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({"card"}),
        funding=frozenset({"bank_agreement"}),
        operations=frozenset({Operation.PAY, Operation.QUERY, Operation.CANCEL, Operation.REFUND}),
    )
    requests: ClassVar[list[Any]] = []

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config, http)

    async def pay(self, request: PaymentRequest) -> ProviderResult:
        self.requests.append(request)
        return ProviderResult(Outcome.SUCCEEDED, provider_txn_id="bank-" + request.reference)

    async def query(self, reference: str) -> ProviderResult:
        return ProviderResult(Outcome.SUCCEEDED, provider_txn_id="bank-" + reference)

    async def cancel(self, reference: str) -> ProviderResult:
        self.requests.append(("cancel", reference))
        return ProviderResult(Outcome.REVERSED)

    async def refund(self, request: RefundRequest) -> ProviderResult:
        self.requests.append(request)
        return ProviderResult(Outcome.SUCCEEDED)

    async def check(self) -> ProviderResult:
        return ProviderResult(Outcome.SUCCEEDED)

    async def parse_notification(self, body: bytes, headers: Mapping[str, str]) -> Any:
        raise NotImplementedError


@asynccontextmanager
async def routed_harness(database_url: str, tmp_path: Path, **kw: Any) -> AsyncIterator[Harness]:
    """The usual harness, plus test-only adapters in its registry: ``ecard-b`` (the e-card
    adapter again, for a second merchant), ``ecard-down`` (the e-card adapter, pointed at a host
    that refuses connections until reconfigured) and ``test-bank``."""
    async with start_harness(
        database_url=database_url, data_dir=tmp_path, wrap_transport=RefusingHost, **kw
    ) as h:
        registry = h.services.registry
        for name in ("ecard-b", "ecard-down"):
            registry.register(name, EcardAdapter, EcardAdapter.capabilities)
        registry.register("test-bank", RecordingBank, RecordingBank.capabilities)
        RecordingBank.requests.clear()
        yield h


async def configure_ecard(
    h: Harness, name: str, *, reachable: bool = True, merchant: dict[str, str] | None = None
) -> dict[str, str]:
    """Point adapter ``name`` at a (new) sandbox e-card merchant, or at the refusing host."""
    if merchant is None:
        r = await h.sandbox.post("/ecard/merchants", json={})
        assert r.status_code in (200, 201), r.text
        merchant = {"merchant_id": r.json()["merchant_id"], "secret": r.json()["secret"]}
    endpoint = f"{SANDBOX}/ecard" if reachable else f"http://{DOWN_HOST}/ecard"
    r = await h.admin(
        "PUT", f"/v1/schools/{h.school_id}/providers/{name}", {"endpoint": endpoint, "credentials": merchant}
    )
    assert r.status_code == 200, r.text
    return merchant


async def configure_bank(h: Harness) -> None:
    r = await h.admin(
        "PUT",
        f"/v1/schools/{h.school_id}/providers/test-bank",
        {"endpoint": "http://bank.test/", "credentials": {}},
    )
    assert r.status_code == 200, r.text


async def put_rules(h: Harness, *rules: dict[str, Any], **extra: Any) -> Any:
    return await h.admin("PUT", f"/v1/schools/{h.school_id}/routing", {"rules": list(rules), **extra})


async def debits(h: Harness, merchant_id: str) -> list[dict[str, Any]]:
    r = await h.sandbox.get(
        "/_control/events", params={"provider": "ecard", "merchant_id": merchant_id, "kind": "ecard.debit"}
    )
    r.raise_for_status()
    data = r.json()
    return list(data["events"] if isinstance(data, dict) else data)


async def attempts(h: Harness, payment_id: str) -> list[tuple[str, str, str]]:
    async with h.services.db.transaction() as session:
        rows = await session.execute(
            select(PaymentAttempt)
            .where(PaymentAttempt.payment_id == payment_id)
            .order_by(PaymentAttempt.provider_reference)
        )
        return [(a.adapter, a.provider_reference, a.status) for a in rows.scalars()]
