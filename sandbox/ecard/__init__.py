"""The campus e-card system, provider side (docs/ecard-protocol.md)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp

from sandbox.asgi import EventLogMiddleware
from sandbox.control import ControlPlane
from sandbox.ecard.models import MealPeriodName
from sandbox.ecard.offline import stored_records
from sandbox.ecard.pipeline import PROVIDER
from sandbox.ecard.router import create_ecard_app
from sandbox.ecard.signing import MERCHANT_HEADER
from sandbox.ecard.state import EcardState, MealPeriod, Merchant, Subsidy, parse_clock
from sandbox.faults import ALL_ACTIONS

__all__ = ["EcardProvider"]


class EcardProvider:
    """Registers the e-card system with a control plane: its app, operations, reset and test hooks."""

    name = PROVIDER
    operations = frozenset(
        {
            "consume",
            "query",
            "refund",
            "reverse",
            "ping",
            "card",
            "report_lost",
            "cancel_loss",
            "replace",
            "blacklist",
            "offline_upload",
            "statement",
        }
    )
    actions = ALL_ACTIONS
    query_operations = frozenset({"query"})
    bill_operations = frozenset({"statement"})

    def __init__(self, control: ControlPlane) -> None:
        self.state = EcardState()
        self.fastapi_app = create_ecard_app(self.state, control)
        self.app: ASGIApp = EventLogMiddleware(
            self.fastapi_app, control, PROVIDER, merchant_header=MERCHANT_HEADER, header_prefix="x-ecard-"
        )
        control.register(self)

    async def reset(self) -> None:
        # Operations never await while changing state, so none is caught half-way by a reset.
        self.state.reset()

    def control_router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/merchants/{merchant_id}/cards/{card_no}")
        async def card(merchant_id: str, card_no: str) -> dict[str, Any]:
            merchant = self.state.get(merchant_id)
            found = merchant.cards.get(card_no) if merchant else None
            if merchant is None or found is None:
                raise HTTPException(404, f"no card {card_no!r} for merchant {merchant_id!r}")
            wallet = merchant.subsidies.get(found.account_no)
            return {
                "merchant_id": merchant_id,
                "card_no": found.card_no,
                "status": found.status,
                "balance": merchant.balances[found.account_no],
                "account_no": found.account_no,
                "student_ref": found.student_ref,
                "subsidy": wallet.amount if wallet is not None else 0,
                "subsidy_valid_from": wallet.valid_from.isoformat() if wallet is not None else None,
                "subsidy_valid_to": wallet.valid_to.isoformat() if wallet is not None else None,
                "pin_failures": found.pin_failures,
                "pin_locked": found.pin_locked,
                "replaced_by": found.replaced_by,
            }

        @router.post("/merchants/{merchant_id}/cards/{card_no}/unlock-pin")
        async def unlock_pin(merchant_id: str, card_no: str) -> dict[str, Any]:
            merchant = self._merchant(merchant_id)
            async with merchant.lock:
                found = merchant.cards.get(card_no)
                if found is None:
                    raise HTTPException(404, f"no card {card_no!r} for merchant {merchant_id!r}")
                found.pin_locked, found.pin_failures = False, 0
            return {"merchant_id": merchant_id, "card_no": card_no, "pin_locked": False}

        @router.put("/merchants/{merchant_id}/accounts/{account_no}/subsidy")
        async def put_subsidy(merchant_id: str, account_no: str, spec: SubsidySpec) -> dict[str, Any]:
            merchant = self._merchant(merchant_id)
            if account_no not in merchant.balances:
                raise HTTPException(404, f"no account {account_no!r} for merchant {merchant_id!r}")
            if spec.valid_to < spec.valid_from:
                raise HTTPException(422, "valid_to is before valid_from")
            async with merchant.lock:
                merchant.subsidies[account_no] = Subsidy(spec.amount, spec.valid_from, spec.valid_to)
            return {"merchant_id": merchant_id, "account_no": account_no, **spec.model_dump(mode="json")}

        @router.put("/merchants/{merchant_id}/meal-periods")
        async def put_meal_periods(merchant_id: str, spec: MealPeriodsSpec) -> dict[str, Any]:
            merchant = self._merchant(merchant_id)
            for period in spec.periods:
                if parse_clock(period.end) is not None and period.end <= period.start:
                    raise HTTPException(422, f"{period.name}: end must be after start")
            async with merchant.lock:
                merchant.meal_periods = [MealPeriod(p.name, p.start, p.end) for p in spec.periods]
            return {"merchant_id": merchant_id, **spec.model_dump()}

        @router.get("/merchants/{merchant_id}/orders")
        async def orders(merchant_id: str) -> dict[str, Any]:
            """The merchant's books: every order and refund as the e-card holds them."""
            merchant = self._merchant(merchant_id)
            return {
                "merchant_id": merchant_id,
                "orders": [
                    {
                        "order_ref": o.order_ref,
                        "status": o.status,
                        "card_no": o.card_no,
                        "account_no": o.account_no,
                        "amount": o.amount,
                        "debited": o.txn_id is not None,  # money was taken at some point
                        "refunded": o.refunded,
                        "reversed_amount": o.reversed_amount,
                        "code": o.code,
                    }
                    for o in merchant.orders.values()
                ],
                "refunds": [
                    {"refund_ref": r.refund_ref, "order_ref": r.order_ref, "amount": r.amount}
                    for r in merchant.refunds.values()
                ],
            }

        @router.get("/merchants/{merchant_id}/offline-records")
        async def offline_records(merchant_id: str) -> dict[str, Any]:
            return {"records": stored_records(self._merchant(merchant_id))}

        return router

    def _merchant(self, merchant_id: str) -> Merchant:
        merchant = self.state.get(merchant_id)
        if merchant is None:
            raise HTTPException(404, f"no merchant {merchant_id!r}")
        return merchant


_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class SubsidySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=0)
    valid_from: date
    valid_to: date


class MealPeriodSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: MealPeriodName
    start: str = Field(pattern=_CLOCK)
    end: str = Field(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")


class MealPeriodsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    periods: list[MealPeriodSpec] = Field(max_length=10)
