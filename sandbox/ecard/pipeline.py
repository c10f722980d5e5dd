"""Between the wire and the ledger: authentication, signed answers, faults, magic amounts.

Bodies are parsed by hand from the exact bytes (the signature covers them), after the request is
authenticated, so a malformed request from a known merchant gets a signed 422 and a refused
request changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel, ValidationError

from sandbox.asgi import request_target
from sandbox.bills import BillFaults
from sandbox.control import ControlPlane
from sandbox.ecard import ledger, signing, statement
from sandbox.ecard.ledger import Outcome
from sandbox.ecard.models import StatementRequest
from sandbox.ecard.state import EcardState, Merchant
from sandbox.faults import fault_effect, faulted
from sandbox.testvalues import magic_amount

PROVIDER = "ecard"
M = TypeVar("M", bound=BaseModel)
Apply = Callable[[Merchant, M], Outcome]
# What the auth_refusal fault answers: the provider's own refusal of a request it cannot verify.
REFUSAL = ("SIGNATURE_INVALID", "signature does not verify")


def lagging(apply: Apply[M], seen_before: float) -> Apply[M]:
    """A query that cannot see orders recorded after `seen_before` yet (a lagging replica)."""

    def query(merchant: Merchant, payload: M) -> Outcome:
        order_ref = getattr(payload, "order_ref", None)
        order = merchant.orders.get(order_ref) if isinstance(order_ref, str) else None
        if order is not None and order.recorded_at > seen_before:
            return ledger.query(merchant, order.order_ref, hidden=True)
        return apply(merchant, payload)

    return query


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error(code: str, message: str) -> dict[str, Any]:
    return {"result": "ERROR", "code": code, "message": message}


def validation_message(errors: Any) -> str:
    parts = []
    for item in errors:
        where, what = ".".join(str(p) for p in item.get("loc", ())), item.get("msg", "invalid")
        parts.append(f"{where}: {what}" if where else what)
    return "; ".join(parts) or "malformed request"


class EcardEndpoints:
    """Everything between the wire and the ledger, for one sandbox's e-card state."""

    def __init__(self, state: EcardState, control: ControlPlane) -> None:
        self.state = state
        self.control = control

    def signed(
        self,
        merchant: Merchant,
        request: Request,
        status: int,
        body: dict[str, Any],
        *,
        corrupt: bool = False,
    ) -> Response:
        return self.signed_bytes(merchant, request, status, encode(body), "application/json", corrupt=corrupt)

    def signed_bytes(
        self,
        merchant: Merchant,
        request: Request,
        status: int,
        raw: bytes,
        media_type: str,
        *,
        corrupt: bool = False,
    ) -> Response:
        timestamp, nonce = str(int(self.control.now(PROVIDER))), signing.new_nonce()
        request_nonce = request.headers.get(signing.NONCE_HEADER, "")
        signature = signing.sign_response(merchant.secret, status, request_nonce, timestamp, nonce, raw)
        headers = {
            signing.TIMESTAMP_HEADER: timestamp,
            signing.NONCE_HEADER: nonce,
            signing.SIGNATURE_HEADER: signing.corrupt(signature) if corrupt else signature,
        }
        return Response(raw, status_code=status, media_type=media_type, headers=headers)

    async def authenticate(self, request: Request, raw: bytes) -> Merchant | Response:
        """The merchant a request verifiably comes from, or the 401 to answer with."""
        headers = request.headers
        merchant = self.state.get(headers.get(signing.MERCHANT_HEADER))
        if merchant is None:  # nothing to sign with: this one answer is unsigned
            body = encode(error("MERCHANT_UNKNOWN", "unknown X-Ecard-Merchant"))
            return Response(body, status_code=401, media_type="application/json")
        timestamp = headers.get(signing.TIMESTAMP_HEADER, "")
        nonce = headers.get(signing.NONCE_HEADER, "")
        given = headers.get(signing.SIGNATURE_HEADER, "")

        def refuse(code: str, message: str) -> Response:
            return self.signed(merchant, request, 401, error(code, message))

        if not (timestamp.isascii() and timestamp.isdigit()) or not signing.NONCE_PATTERN.fullmatch(nonce):
            return refuse("SIGNATURE_INVALID", "missing or malformed X-Ecard-Timestamp or X-Ecard-Nonce")
        path = request_target(request.scope)
        expected = signing.sign_request(merchant.secret, request.method, path, timestamp, nonce, raw)
        if not signing.signature_matches(expected, given):
            return refuse("SIGNATURE_INVALID", f"signature does not verify for {request.method} {path}")
        now = self.control.now(PROVIDER)
        if abs(now - int(timestamp)) > signing.TIMESTAMP_WINDOW_S:
            return refuse("TIMESTAMP_EXPIRED", f"timestamp is more than {signing.TIMESTAMP_WINDOW_S}s off")
        async with merchant.lock:
            if not merchant.remember_nonce(nonce, now):
                return refuse("NONCE_REUSED", "nonce already used")
        return merchant

    def invalid(self, merchant: Merchant, request: Request, errors: Any) -> Response:
        return self.signed(merchant, request, 422, error("INVALID_REQUEST", validation_message(errors)))

    async def handle(
        self,
        request: Request,
        operation: str,
        model: type[M],
        apply: Apply[M],
        path_fields: dict[str, str] | None = None,
    ) -> Response:
        raw = await request.body()
        merchant = await self.authenticate(request, raw)
        if isinstance(merchant, Response):
            return merchant
        try:
            if path_fields is not None:
                payload = model.model_validate(path_fields)
            else:
                payload = model.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            return self.invalid(merchant, request, exc.errors(include_url=False))
        fields = payload.model_dump()
        effect = None
        rule = self.control.take_fault(PROVIDER, operation, fields)
        if rule is not None:
            effect = fault_effect(rule.action, rule.delay_ms)
            source: dict[str, Any] = {"rule_id": rule.id, "action": rule.action}
        elif operation == "consume" and (magic := magic_amount(PROVIDER, operation, fields["amount"])):
            effect = fault_effect(magic.action, magic.delay_ms)
            source = {"magic_ending": magic.ending, "action": magic.action}
        if effect is None:
            return self.signed(merchant, request, *await self._apply(merchant, payload, apply))
        self.control.record(
            PROVIDER,
            "fault",
            merchant.merchant_id,
            operation=operation,
            order_ref=fields.get("order_ref"),
            **source,
        )
        if effect.lag_s:
            apply = lagging(apply, self.control.now(PROVIDER) - effect.lag_s)

        async def run() -> tuple[int, dict[str, Any]]:
            return await self._apply(merchant, payload, apply)

        def answer(result: tuple[int, dict[str, Any]], corrupt: bool) -> Response:
            return self.signed(merchant, request, *result, corrupt=corrupt)

        return await faulted(
            effect,
            apply=run,
            answer=answer,
            error=lambda: self.signed(merchant, request, 500, error("INTERNAL_ERROR", "internal error")),
            refusal=lambda: self.signed(merchant, request, 401, error(*REFUSAL)),
            breaker=self.control.breaker,
            commit=self.control.commit,
            what=f"{PROVIDER} {operation}",
        )

    async def statement(self, request: Request) -> Response:
        """The day's statement as signed text/csv (sandbox/ecard/statement.py); bill faults only."""
        raw = await request.body()
        merchant = await self.authenticate(request, raw)
        if isinstance(merchant, Response):
            return merchant
        try:
            payload = StatementRequest.model_validate_json(raw or b"{}")
            day = date.fromisoformat(payload.date)
        except (ValidationError, ValueError) as exc:
            errors = (
                exc.errors(include_url=False) if isinstance(exc, ValidationError) else [{"msg": str(exc)}]
            )
            return self.invalid(merchant, request, errors)
        faults = BillFaults.take(self.control, PROVIDER, "statement", merchant.merchant_id)
        async with merchant.lock:
            refusal, content = statement.statement(merchant, day, self.control.now(PROVIDER), faults)
        if refusal is not None:
            return self.signed(merchant, request, refusal.status, refusal.body)
        self.control.record(
            PROVIDER, "ecard.statement", merchant.merchant_id, date=payload.date, bytes=len(content)
        )
        return self.signed_bytes(merchant, request, 200, content, "text/csv; charset=utf-8")

    async def _apply(self, merchant: Merchant, payload: M, apply: Apply[M]) -> tuple[int, dict[str, Any]]:
        async with merchant.lock:
            outcome = apply(merchant, payload)
            for kind, event_fields in outcome.events:
                self.control.record(PROVIDER, kind, merchant.merchant_id, **event_fields)
        return outcome.status, outcome.body
