"""The sandbox Alipay: OpenAPI v1 ``gateway.do``, provider side (docs/alipay-sandbox.md).

Face tokens come from the sandbox's face cloud through ``FaceDirectory``
(sandbox/face/directory.py); set ``AlipayProvider.directory`` to it. Notifications go out with
``AlipayProvider.notify_client`` when set (e.g. an ``httpx.AsyncClient`` over ASGI into a
gateway under test), else with a fresh client per attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp

from sandbox.alipay import wire
from sandbox.alipay.gateway import PROVIDER, AlipayGateway, create_alipay_app
from sandbox.alipay.notify import AlipayNotifier, NotifyFaultIn, ScheduleIn
from sandbox.alipay.state import AlipayState, Trade
from sandbox.alipay.trades import METHODS, status_of
from sandbox.asgi import EventLogMiddleware
from sandbox.control import ControlPlane
from sandbox.faults import ALL_ACTIONS

if TYPE_CHECKING:
    from sandbox.face.directory import FaceDirectory

__all__ = ["AlipayProvider"]


class BalanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    balance: int = Field(ge=0, description="fen")


class AgreementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    valid: bool


class AlipayProvider:
    """Registers the sandbox Alipay with a control plane: its app, operations, reset and test hooks."""

    name = PROVIDER
    operations = frozenset(METHODS)  # fault rules name the OpenAPI method, e.g. "alipay.trade.pay"
    actions = ALL_ACTIONS
    query_operations = frozenset({"alipay.trade.query"})
    bill_operations = frozenset({"alipay.data.dataservice.bill.downloadurl.query"})

    def __init__(
        self,
        control: ControlPlane,
        directory: FaceDirectory | None = None,
        notify_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.control = control
        self.state = AlipayState()
        self.notifier = AlipayNotifier(control, lambda data: wire.sign(self.state.alipay_key, data))
        self.notifier.client = notify_client
        self.gateway = AlipayGateway(self.state, control, self.notifier)
        self.gateway.directory = directory
        self.fastapi_app = create_alipay_app(self.gateway)
        # Alipay's calls carry no identifying header: app ids are in the domain events instead.
        self.app: ASGIApp = EventLogMiddleware(
            self.fastapi_app, control, PROVIDER, merchant_header="x-alipay-app-id", header_prefix="x-alipay-"
        )
        control.register(self)

    @property
    def directory(self) -> FaceDirectory | None:
        return self.gateway.directory

    @directory.setter
    def directory(self, directory: FaceDirectory | None) -> None:
        self.gateway.directory = directory

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

        @router.get("/apps")
        async def apps() -> dict[str, Any]:
            return {"apps": [{"app_id": a.app_id, "seller_id": a.seller_id} for a in state.apps.values()]}

        def listing(found: Trade) -> dict[str, Any]:
            return {
                "app_id": found.app_id,
                "out_trade_no": found.out_trade_no,
                "trade_no": found.trade_no,
                "trade_status": status_of(found, self.control.now(PROVIDER)),
                "paid": found.was_paid,  # the buyer was charged at some point
                "total_amount": wire.yuan(found.total),
                "refunded_amount": wire.yuan(found.refunded),
                "buyer_id": found.buyer_id,
                "product_code": found.product_code or None,
                "agreement_no": found.agreement_no,
                "notify_url": found.notify_url,
                "refunds": [
                    {"out_request_no": r.out_request_no, "refund_amount": wire.yuan(r.amount)}
                    for r in found.refunds.values()
                ],
                "cancel_action": found.cancel_action,
            }

        @router.get("/apps/{app_id}/trades")
        async def trades(app_id: str) -> dict[str, Any]:
            """The app's books: every trade the sandbox holds for it."""
            if app_id not in state.apps:
                raise HTTPException(404, f"no app {app_id!r}")
            return {"trades": [listing(t) for t in state.trades.values() if t.app_id == app_id]}

        @router.get("/apps/{app_id}/trades/{out_trade_no}")
        async def trade(app_id: str, out_trade_no: str) -> dict[str, Any]:
            found = state.trades.get((app_id, out_trade_no))
            if found is None:
                raise HTTPException(404, f"no trade {out_trade_no!r} for app {app_id!r}")
            return listing(found)

        @router.get("/buyers/{user_id}")
        async def buyer(user_id: str) -> dict[str, Any]:
            return {"user_id": user_id, "balance": state.balance(user_id)}

        @router.put("/buyers/{user_id}")
        async def set_buyer(user_id: str, body: BalanceIn) -> dict[str, Any]:
            state.balances[user_id] = body.balance
            return {"user_id": user_id, "balance": body.balance}

        @router.put("/agreements/{agreement_no}")
        async def agreement(agreement_no: str, body: AgreementIn) -> dict[str, Any]:
            if body.valid:
                state.invalid_agreements.discard(agreement_no)
            else:
                state.invalid_agreements.add(agreement_no)
            return {"agreement_no": agreement_no, "valid": body.valid}

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
