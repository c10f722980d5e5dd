"""Offline batches and the card blacklist for terminals; loss reports for school admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from gateway.api.deps import AdminDep, DeviceDep, ServicesDep
from gateway.api.idempotent import run_idempotent
from gateway.api.problems import validation_problem
from gateway.api.schemas import BIGINT_MAX, CardOut, Problem
from gateway.idempotency.service import Claim
from gateway.offline.service import MAX_RECORDS, OfflineInput

__all__ = ["router"]

router = APIRouter(tags=["offline"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    s: {"model": Problem, "content": {"application/problem+json": {}}}
    for s in (400, 401, 404, 409, 413, 422, 502)
}


class OfflineRecordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    terminal_seq: Annotated[StrictInt, Field(ge=0)]
    merchant_order_id: Annotated[str, Field(min_length=1, max_length=64)]
    amount: Annotated[StrictInt, Field(gt=0, le=100_000_000)]
    currency: str
    card_no: Annotated[str, Field(pattern=r"^[0-9]{8,19}$")]
    store_id: Annotated[str, Field(min_length=1, max_length=40)]
    occurred_at: datetime


class OfflineBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_RECORDS)]


class CardNoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    card_no: Annotated[str, Field(pattern=r"^[0-9]{8,19}$")]


class ReplaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    old_card_no: Annotated[str, Field(pattern=r"^[0-9]{8,19}$")]
    new_card_no: Annotated[str, Field(pattern=r"^[0-9]{8,19}$")]


@router.post(
    "/v1/offline-batches",
    responses=_PROBLEMS,
    summary="Upload card payments taken offline (≤ 500)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OfflineBatchIn"}}},
        }
    },
)
async def upload_batch(request: Request, caller: DeviceDep, services: ServicesDep) -> Response:
    body = await request.body()
    try:
        batch = OfflineBatchIn.model_validate_json(body or b"{}")
    except ValidationError as exc:
        return validation_problem(exc.errors(), getattr(request.state, "request_id", None))
    records: list[OfflineInput] = []
    # each position of the batch: the index of its valid record, or its ready rejection
    slots: list[int | dict[str, Any]] = []
    for raw in batch.records:
        try:
            r = OfflineRecordIn.model_validate(raw)
            errors = [] if r.occurred_at.tzinfo is not None else [("occurred_at", "needs a time zone")]
        except ValidationError as exc:
            r, errors = None, [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        if r is None or errors:
            seq = raw.get("terminal_seq")
            slots.append(
                {
                    "terminal_seq": seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
                    "status": "rejected",
                    "reason": "invalid_record",
                    "errors": [{"loc": loc.split("."), "msg": msg} for loc, msg in errors],
                }
            )
            continue
        slots.append(len(records))
        records.append(
            OfflineInput(
                r.terminal_seq,
                r.merchant_order_id,
                r.amount,
                r.currency,
                r.card_no,
                r.store_id,
                r.occurred_at,
            )
        )

    async def execute(claim: Claim) -> tuple[int, dict[str, Any]]:
        result = await services.offline.upload(caller.school_id, caller.device_id, records, claim)
        answered = result["results"]
        # answered in the batch's own order; ``index`` is each record's position in it
        result["results"] = [
            {"index": i, **(answered[slot] if isinstance(slot, int) else slot)}
            for i, slot in enumerate(slots)
        ]
        invalid = sum(1 for slot in slots if not isinstance(slot, int))
        if invalid:
            result["counts"]["rejected"] = result["counts"].get("rejected", 0) + invalid
        return 200, result

    return await run_idempotent(request, services, caller, execute)


@router.get("/v1/cards/blacklist", responses=_PROBLEMS, summary="Card status changes since a version")
async def blacklist(
    caller: DeviceDep, services: ServicesDep, since_version: int = Query(0, ge=0, le=BIGINT_MAX)
) -> dict[str, Any]:
    return await services.cards.blacklist(caller.school_id, since_version)


def _card(card: Any) -> dict[str, Any]:
    return {
        "id": card.id,
        "student_id": card.student_id,
        "last4": card.last4,
        "funding_adapter": card.funding_adapter,
        "status": card.status,
    }


@router.post(
    "/v1/schools/{school_id}/cards/report-lost",
    response_model=CardOut,
    responses=_PROBLEMS,
    summary="Loss report: the card is refused at once everywhere",
)
async def report_lost(school_id: str, body: CardNoIn, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return _card(await services.cards.report_lost(school_id, body.card_no, f"{admin.role}:{admin.key_id}"))


@router.post("/v1/schools/{school_id}/cards/cancel-loss", response_model=CardOut, responses=_PROBLEMS)
async def cancel_loss(school_id: str, body: CardNoIn, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return _card(await services.cards.cancel_loss(school_id, body.card_no, f"{admin.role}:{admin.key_id}"))


@router.post(
    "/v1/schools/{school_id}/cards/replace",
    response_model=CardOut,
    responses=_PROBLEMS,
    summary="Replacement card: takes over the account; the old card stays refused",
)
async def replace_card(school_id: str, body: ReplaceIn, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    actor = f"{admin.role}:{admin.key_id}"
    return _card(await services.cards.replace(school_id, body.old_card_no, body.new_card_no, actor))
