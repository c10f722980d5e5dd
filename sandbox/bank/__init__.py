"""The UnionPay-style bank gateway (全渠道 5.1.0), provider side (docs/bank-protocol.md).

Notifications go out with ``BankProvider.notify_client`` when set (e.g. an ``httpx.AsyncClient``
over ASGI into a gateway under test), else with a fresh client per attempt.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp

from sandbox.asgi import EventLogMiddleware
from sandbox.bank.gateway import OPERATIONS, PROVIDER, BankGateway, create_bank_app
from sandbox.bank.notify import BankNotifier, NotifyFaultIn, ScheduleIn
from sandbox.bank.state import Account, BankState, masked
from sandbox.control import ControlPlane
from sandbox.faults import ALL_ACTIONS

__all__ = ["BankProvider"]


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    balance: int = Field(ge=0, description="fen")
    status: Literal["ACTIVE", "FROZEN"] = "ACTIVE"
    holder: str = "Sandbox Holder"


class AccountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    balance: int | None = Field(default=None, ge=0)
    status: Literal["ACTIVE", "FROZEN"] | None = None


def _account(account: Account) -> dict[str, Any]:
    return {
        "acc_no": account.acc_no,
        "holder": account.holder,
        "balance": account.balance,
        "status": account.status,
    }


class BankProvider:
    """Registers the sandbox bank with a control plane: its app, operations, reset and test hooks."""

    name = PROVIDER
    operations = OPERATIONS  # agreement, consume, void, refund, query
    actions = ALL_ACTIONS
    query_operations = frozenset({"query"})
    bill_operations = frozenset({"file_transfer"})

    def __init__(self, control: ControlPlane, notify_client: httpx.AsyncClient | None = None) -> None:
        self.control = control
        self.state = BankState()
        self.notifier = BankNotifier(control)
        self.notifier.client = notify_client
        self.gateway = BankGateway(self.state, control, self.notifier)
        self.fastapi_app = create_bank_app(self.gateway)
        # Bank messages carry merId in the form body: it is in the domain events instead.
        self.app: ASGIApp = EventLogMiddleware(
            self.fastapi_app, control, PROVIDER, merchant_header="x-bank-merid", header_prefix="x-bank-"
        )
        control.register(self)

    @property
    def notify_client(self) -> httpx.AsyncClient | None:
        return self.notifier.client

    @notify_client.setter
    def notify_client(self, client: httpx.AsyncClient | None) -> None:
        self.notifier.client = client

    async def reset(self) -> None:
        # Operations never await while changing state, so none is caught half-way by a reset.
        await self.notifier.reset()
        self.state.reset()

    async def aclose(self) -> None:
        """Stop pending notification deliveries (call before the event loop goes away)."""
        await self.notifier.aclose()

    def control_router(self) -> APIRouter:
        router = APIRouter()
        state, notifier = self.state, self.notifier

        @router.get("/merchants")
        async def merchants() -> dict[str, Any]:
            return {
                "merchants": [
                    {"mer_id": m.mer_id, "sign_method": m.sign_method, "cert_id": m.cert_id, "tr_id": m.tr_id}
                    for m in state.merchants.values()
                ]
            }

        @router.post("/accounts")
        async def new_account(body: AccountIn) -> dict[str, Any]:
            account = Account(state.new_acc_no(), body.holder, body.balance, body.status)
            state.accounts[account.acc_no] = account
            return _account(account)

        @router.get("/accounts/{acc_no}")
        async def account(acc_no: str) -> dict[str, Any]:
            found = state.accounts.get(acc_no)
            if found is None:
                raise HTTPException(404, "no such account")
            return _account(found)

        @router.put("/accounts/{acc_no}")
        async def update_account(acc_no: str, body: AccountUpdate) -> dict[str, Any]:
            found = state.accounts.get(acc_no)
            if found is None:
                raise HTTPException(404, "no such account")
            if body.balance is not None:
                found.balance = body.balance
            if body.status is not None:
                found.status = body.status
            return _account(found)

        @router.get("/agreements/{token}")
        async def agreement(token: str) -> dict[str, Any]:
            found = state.agreements.get(token)
            if found is None:
                raise HTTPException(404, f"no agreement {token!r}")
            return {
                "token": found.token,
                "mer_id": found.mer_id,
                "tr_id": found.tr_id,
                "acc_no": masked(found.acc_no),
                "payer_ref": found.payer_ref,
                "active": found.active,
            }

        @router.delete("/agreements/{token}")
        async def close_agreement(token: str) -> dict[str, Any]:
            found = state.agreements.get(token)
            if found is None:
                raise HTTPException(404, f"no agreement {token!r}")
            found.active = False
            return {"token": token, "active": False}

        @router.get("/merchants/{mer_id}/orders/{order_id}")
        async def order(mer_id: str, order_id: str) -> dict[str, Any]:
            txn = state.orders.get((mer_id, order_id))
            if txn is None:
                raise HTTPException(404, f"no order {order_id!r} for merchant {mer_id!r}")
            return {
                "mer_id": mer_id,
                "order_id": txn.order_id,
                "txn_time": txn.txn_time,
                "txn_type": txn.txn_type,
                "query_id": txn.query_id,
                "resp_code": "05" if txn.pending_queries is not None else txn.resp_code,
                "amount": txn.amount,
                "refunded": txn.refunded,
                "voided": txn.voided,
                "orig_query_id": txn.orig_query_id,
                "token": txn.token,
            }

        @router.get("/notify-schedule")
        async def get_schedule() -> dict[str, Any]:
            return notifier.schedule()

        @router.post("/notify-schedule")
        async def set_schedule(body: ScheduleIn) -> dict[str, Any]:
            notifier.scale = body.scale
            return notifier.schedule()

        @router.get("/notify-faults")
        async def notify_faults() -> dict[str, Any]:
            return {
                "faults": [f.listing() for f in notifier.faults()],
                "pending_deliveries": notifier.pending,
            }

        @router.post("/notify-faults")
        async def add_notify_fault(spec: NotifyFaultIn) -> dict[str, Any]:
            fault = notifier.add_fault(spec)
            return {"id": fault.id, "fault": fault.listing()}

        @router.delete("/notify-faults")
        async def clear_notify_faults() -> dict[str, Any]:
            return {"deleted": notifier.clear_faults()}

        return router
