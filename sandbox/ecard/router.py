"""The e-card provider's routes (docs/ecard-protocol.md) and their OpenAPI description.

Handlers take the raw Request and leave parsing to sandbox/ecard/pipeline.py, so the request
models are added to the OpenAPI spec by hand (see _EcardApp).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, ValidationError

from sandbox.control import ControlPlane, iso_utc
from sandbox.ecard import cards, ledger, offline, signing
from sandbox.ecard.ledger import Outcome
from sandbox.ecard.models import (
    CARD_NO_PATTERN,
    BlacklistRequest,
    BlacklistResult,
    CardInfo,
    CardRef,
    CardStatusResult,
    ConsumeRequest,
    ConsumeResult,
    EmptyRequest,
    ErrorBody,
    FailBody,
    MerchantCreated,
    OfflineRecord,
    OfflineUploadRequest,
    OfflineUploadResult,
    OrderRequest,
    PingResult,
    QueryResult,
    RefundRequest,
    RefundResult,
    ReplaceRequest,
    ReplaceResult,
    ReverseResult,
    StatementRequest,
)
from sandbox.ecard.pipeline import PROVIDER, EcardEndpoints, encode, error, validation_message
from sandbox.ecard.state import EcardState, Merchant

# --- routes and their OpenAPI description -----------------------------------------------------

REQUEST_HEADERS = [
    {"name": name, "in": "header", "required": True, "schema": {"type": "string"}, "description": text}
    for name, text in (
        (signing.MERCHANT_HEADER, "the merchant id"),
        (signing.TIMESTAMP_HEADER, "Unix seconds, decimal; within 300 s of the provider's clock"),
        (signing.NONCE_HEADER, "16-64 characters from [A-Za-z0-9_-], never reused"),
        (signing.SIGNATURE_HEADER, "base64 HMAC-SHA256(secret, the request string to sign)"),
    )
]
RESPONSE_HEADERS = {
    signing.TIMESTAMP_HEADER: {"schema": {"type": "string"}, "description": "Unix seconds"},
    signing.NONCE_HEADER: {"schema": {"type": "string"}, "description": "a fresh nonce of the provider"},
    signing.SIGNATURE_HEADER: {
        "schema": {"type": "string"},
        "description": "base64 HMAC-SHA256(secret, the response string to sign)",
    },
}
REQUEST_MODELS: list[type[BaseModel]] = [
    ConsumeRequest,
    OrderRequest,
    RefundRequest,
    EmptyRequest,
    CardRef,
    ReplaceRequest,
    BlacklistRequest,
    OfflineUploadRequest,
    OfflineRecord,
    StatementRequest,
]


def _responses(ok: Any, *, conflicts: bool = False) -> dict[int | str, dict[str, Any]]:
    def signed(model: Any, text: str) -> dict[str, Any]:
        return {"model": model, "description": text, "headers": RESPONSE_HEADERS}

    responses: dict[int | str, dict[str, Any]] = {
        200: signed(ok, "SUCCESS, or FAIL: a business refusal (nothing moved)"),
        401: {"model": ErrorBody, "description": "refused; signed unless MERCHANT_UNKNOWN"},
        422: signed(ErrorBody, "INVALID_REQUEST"),
        500: signed(ErrorBody, "ERROR: the outcome of a money-moving call is unknown; query it"),
    }
    if conflicts:
        responses[409] = signed(FailBody, "ORDER_CONFLICT: the reference is used with other details")
    return responses


def _signed_call(body_model: type[BaseModel] | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"parameters": REQUEST_HEADERS}
    if body_model is not None:
        ref = {"$ref": f"#/components/schemas/{body_model.__name__}"}
        extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    return extra


class _EcardApp(FastAPI):
    def openapi(self) -> dict[str, Any]:
        # Bodies are parsed by hand (see module doc), so the request models are added here.
        if self.openapi_schema is None:
            schema = super().openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in REQUEST_MODELS:
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
            self.openapi_schema = schema
        return self.openapi_schema


def create_ecard_app(state: EcardState, control: ControlPlane) -> FastAPI:
    endpoints = EcardEndpoints(state, control)
    app = _EcardApp(
        title="CampusPay sandbox: campus e-card",
        version="1",
        description="The e-card wire protocol of docs/ecard-protocol.md, as the sandbox implements it.",
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_path(request: Request, exc: RequestValidationError) -> Response:
        # Only path parameters reach FastAPI's own validation; answer like the hand-parsed bodies.
        merchant = await endpoints.authenticate(request, await request.body())
        if isinstance(merchant, Response):
            return merchant
        return endpoints.invalid(merchant, request, exc.errors())

    def post(
        path: str, ok: Any, body: type[BaseModel], summary: str, *, conflicts: bool = False
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        responses = _responses(ok, conflicts=conflicts)
        return app.post(path, responses=responses, openapi_extra=_signed_call(body), summary=summary)

    @post("/v1/consume", ConsumeResult | FailBody, ConsumeRequest, "Debit a card", conflicts=True)
    async def consume(request: Request) -> Response:
        return await endpoints.handle(
            request, "consume", ConsumeRequest, lambda m, p: ledger.consume(m, p, control.now(PROVIDER))
        )

    @post("/v1/query", QueryResult, OrderRequest, "What happened to an order")
    async def query(request: Request) -> Response:
        return await endpoints.handle(
            request, "query", OrderRequest, lambda m, p: ledger.query(m, p.order_ref)
        )

    @post("/v1/reverse", ReverseResult, OrderRequest, "Undo an order in full (idempotent)")
    async def reverse(request: Request) -> Response:
        return await endpoints.handle(
            request,
            "reverse",
            OrderRequest,
            lambda m, p: ledger.reverse(m, p.order_ref, control.now(PROVIDER)),
        )

    @post("/v1/refund", RefundResult | FailBody, RefundRequest, "Give back all or part", conflicts=True)
    async def refund(request: Request) -> Response:
        return await endpoints.handle(
            request, "refund", RefundRequest, lambda m, p: ledger.refund(m, p, control.now(PROVIDER))
        )

    @post(
        "/v1/cards/report-lost", CardStatusResult | FailBody, CardRef, "Loss report: the card is LOST at once"
    )
    async def report_lost(request: Request) -> Response:
        return await endpoints.handle(
            request,
            "report_lost",
            CardRef,
            lambda m, p: cards.report_lost(m, p.card_no, control.now(PROVIDER)),
        )

    @post("/v1/cards/cancel-loss", CardStatusResult | FailBody, CardRef, "Cancel a loss report")
    async def cancel_loss(request: Request) -> Response:
        return await endpoints.handle(
            request,
            "cancel_loss",
            CardRef,
            lambda m, p: cards.cancel_loss(m, p.card_no, control.now(PROVIDER)),
        )

    @post("/v1/cards/replace", ReplaceResult | FailBody, ReplaceRequest, "Replacement card for the account")
    async def replace(request: Request) -> Response:
        return await endpoints.handle(
            request,
            "replace",
            ReplaceRequest,
            lambda m, p: cards.replace(m, p.old_card_no, p.new_card_no, control.now(PROVIDER)),
        )

    @post("/v1/blacklist", BlacklistResult, BlacklistRequest, "Card status changes since a version")
    async def blacklist(request: Request) -> Response:
        return await endpoints.handle(
            request, "blacklist", BlacklistRequest, lambda m, p: cards.blacklist(m, p.since_version)
        )

    @post("/v1/offline/upload", OfflineUploadResult, OfflineUploadRequest, "Upload offline records")
    async def offline_upload(request: Request) -> Response:
        return await endpoints.handle(
            request,
            "offline_upload",
            OfflineUploadRequest,
            lambda m, p: offline.upload(m, p, control.now(PROVIDER)),
        )

    @app.post(
        "/v1/statement",
        responses={
            200: {
                "description": "the day's statement (text/csv, signed), or FAIL STATEMENT_NOT_READY",
                "headers": RESPONSE_HEADERS,
                "content": {"text/csv": {"schema": {"type": "string"}}, "application/json": {}},
            },
            401: {"model": ErrorBody, "description": "refused; signed unless MERCHANT_UNKNOWN"},
            422: {"model": ErrorBody, "description": "INVALID_REQUEST"},
        },
        openapi_extra=_signed_call(StatementRequest),
        summary="The daily statement of one local day (UTC+8)",
    )
    async def statement(request: Request) -> Response:
        return await endpoints.statement(request)

    @post("/v1/ping", PingResult, EmptyRequest, "A signed round trip")
    async def ping(request: Request) -> Response:
        def pong(merchant: Merchant, _: EmptyRequest) -> Outcome:
            body = {
                "result": "SUCCESS",
                "merchant_id": merchant.merchant_id,
                "time": iso_utc(control.now(PROVIDER)),
            }
            return Outcome(200, body)

        return await endpoints.handle(request, "ping", EmptyRequest, pong)

    @app.get(
        "/v1/cards/{card_no}",
        responses=_responses(CardInfo | FailBody),
        openapi_extra=_signed_call(None),
        summary="Card status and balance",
    )
    async def card(request: Request, card_no: Annotated[str, Path(pattern=CARD_NO_PATTERN)]) -> Response:
        return await endpoints.handle(
            request, "card", CardRef, lambda m, p: ledger.card_info(m, p.card_no), {"card_no": card_no}
        )

    @app.post(
        "/merchants",
        responses={200: {"model": MerchantCreated}, 422: {"model": ErrorBody}},
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}},
        summary="Sandbox only, unsigned: a new merchant with its own copy of the test cards",
    )
    async def create_merchant(request: Request) -> Response:
        try:
            EmptyRequest.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            body = error("INVALID_REQUEST", validation_message(exc.errors(include_url=False)))
            return Response(encode(body), status_code=422, media_type="application/json")
        merchant = state.create_merchant()
        control.record(PROVIDER, "ecard.merchant_created", merchant.merchant_id)
        created = {"merchant_id": merchant.merchant_id, "secret": merchant.secret}
        return Response(encode(created), media_type="application/json")

    return app
