"""The campus e-card system, provider side (docs/ecard-protocol.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.types import ASGIApp

from sandbox.asgi import EventLogMiddleware
from sandbox.control import ControlPlane
from sandbox.ecard.pipeline import PROVIDER
from sandbox.ecard.router import create_ecard_app
from sandbox.ecard.signing import MERCHANT_HEADER
from sandbox.ecard.state import EcardState

__all__ = ["EcardProvider"]


class EcardProvider:
    """Registers the e-card system with a control plane: its app, operations, reset and test hooks."""

    name = PROVIDER
    operations = frozenset({"consume", "query", "refund", "reverse", "ping", "card"})

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
            return {
                "merchant_id": merchant_id,
                "card_no": found.card_no,
                "status": found.status,
                "balance": merchant.balances[found.account_no],
                "account_no": found.account_no,
                "student_ref": found.student_ref,
            }

        return router
