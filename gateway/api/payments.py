"""POS API: payments and refunds. Routers only: parse, authorise, call the service, render."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from gateway.api.deps import DeviceDep, ServicesDep
from gateway.api.idempotent import run_idempotent
from gateway.api.problems import validation_problem
from gateway.api.schemas import PaymentCreate, PaymentList, PaymentOut, Problem, RefundCreate, RefundOut
from gateway.errors import Unprocessable
from gateway.idempotency.service import Answer, Claim
from gateway.metrics import PAYMENTS
from gateway.payments.service import PaymentInput, is_pending
from gateway.payments.state import payment_resource, refund_resource

__all__ = ["router"]

router = APIRouter(tags=["payments"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    s: {"model": Problem, "content": {"application/problem+json": {}}} for s in (400, 401, 404, 409, 413, 422)
}


# These bodies are validated by hand (after the signature check, so 401 comes before 422); their
# schemas are added to the document's components by gateway.app's custom_openapi.
BODY_MODELS = (PaymentCreate, RefundCreate)


def _body_spec(model: type[Any]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


@router.post(
    "/v1/payments",
    status_code=201,
    response_model=PaymentOut,
    responses={
        202: {"model": PaymentOut, "description": "Outcome not known within the synchronous budget"},
        **_PROBLEMS,
    },
    openapi_extra=_body_spec(PaymentCreate),
    summary="Pay by card or face",
)
async def create_payment(request: Request, caller: DeviceDep, services: ServicesDep) -> Response:
    body = await request.body()  # images and templates were refused with the signature check
    try:
        data: PaymentCreate = PaymentCreate.model_validate_json(body or b"{}")
    except ValidationError as exc:
        return validation_problem(exc.errors(), getattr(request.state, "request_id", None))
    cred = data.credential
    if data.method == "card" and not hasattr(cred, "card_no"):
        raise Unprocessable("validation_error", "a card payment needs credential.card_no")
    if data.method == "face" and not hasattr(cred, "face_token"):
        raise Unprocessable("validation_error", "a face payment needs credential.face_token")
    payment_input = PaymentInput(
        merchant_order_id=data.merchant_order_id,
        amount=data.amount,
        currency=data.currency,
        method=data.method,
        store_id=data.store_id,
        card_no=getattr(cred, "card_no", None),
        pin=getattr(cred, "pin", None),
        face_token=getattr(cred, "face_token", None),
        description=data.description,
        terminal_params=data.terminal_params,
    )

    async def execute(claim: Claim) -> tuple[int, dict[str, Any]] | Answer:
        payment, answer = await services.payments.create(caller, payment_input, claim)
        PAYMENTS.labels(payment.method, payment.status).inc()
        if answer is not None:
            return answer  # stored with the payment's final state
        return (202 if is_pending(payment) else 201), payment_resource(payment)

    return await run_idempotent(request, services, caller, execute)


@router.get(
    "/v1/payments/{payment_id}", response_model=PaymentOut, responses=_PROBLEMS, summary="One payment"
)
async def get_payment(payment_id: str, caller: DeviceDep, services: ServicesDep) -> dict[str, Any]:
    return payment_resource(await services.payments.get(caller, payment_id))


@router.get(
    "/v1/payments",
    response_model=PaymentList,
    responses=_PROBLEMS,
    summary="This device's payments for one of its order ids",
)
async def list_payments(
    caller: DeviceDep, services: ServicesDep, merchant_order_id: str = Query(min_length=1, max_length=64)
) -> dict[str, Any]:
    payments = await services.payments.list_for_order(caller, merchant_order_id)
    return {"data": [payment_resource(p) for p in payments]}


@router.post(
    "/v1/payments/{payment_id}/cancel",
    response_model=PaymentOut,
    responses={202: {"model": PaymentOut, "description": "Reversal sent; not yet acknowledged"}, **_PROBLEMS},
    summary="Reverse a payment before the store's day ends",
)
async def cancel_payment(
    payment_id: str, request: Request, caller: DeviceDep, services: ServicesDep
) -> Response:
    async def execute(claim: Claim) -> tuple[int, dict[str, Any]]:
        payment = await services.payments.cancel(caller, payment_id, claim)
        return (202 if is_pending(payment) else 200), payment_resource(payment)

    return await run_idempotent(request, services, caller, execute)


@router.post(
    "/v1/payments/{payment_id}/refunds",
    status_code=201,
    response_model=RefundOut,
    responses={202: {"model": RefundOut, "description": "Refund sent; outcome not yet known"}, **_PROBLEMS},
    openapi_extra=_body_spec(RefundCreate),
    summary="Refund all or part of a payment",
)
async def create_refund(
    payment_id: str, request: Request, caller: DeviceDep, services: ServicesDep
) -> Response:
    body = await request.body()
    try:
        data = RefundCreate.model_validate_json(body or b"{}")
    except ValidationError as exc:
        return validation_problem(exc.errors(), getattr(request.state, "request_id", None))

    async def execute(claim: Claim) -> tuple[int, dict[str, Any]]:
        refund = await services.payments.refund(caller, payment_id, data.amount, data.reason, claim)
        return (202 if refund.status == "processing" else 201), refund_resource(refund)

    return await run_idempotent(request, services, caller, execute)


@router.get("/v1/refunds/{refund_id}", response_model=RefundOut, responses=_PROBLEMS, summary="One refund")
async def get_refund(refund_id: str, caller: DeviceDep, services: ServicesDep) -> dict[str, Any]:
    return refund_resource(await services.payments.get_refund(caller, refund_id))
