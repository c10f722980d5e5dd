"""Admin API for funding sources, co-branded card BINs and routing (docs/routing.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response

from gateway.api.deps import AdminDep, ServicesDep
from gateway.api.schemas import (
    CardBinsIn,
    CardBinsOut,
    DryRunIn,
    DryRunOut,
    FundingSourceIn,
    FundingSourceOut,
    Problem,
    RoutingOut,
    RoutingValidationOut,
)
from gateway.errors import Unprocessable
from gateway.payments.rules import RuleSet, strictest_code

__all__ = ["router"]

router = APIRouter(tags=["routing"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    s: {"model": Problem, "content": {"application/problem+json": {}}} for s in (401, 403, 404, 409, 422)
}


def _actor(admin: AdminDep) -> str:
    return f"{admin.role}:{admin.key_id}"


@router.post(
    "/v1/schools/{school_id}/funding-sources",
    status_code=201,
    response_model=FundingSourceOut,
    responses=_PROBLEMS,
)
async def create_funding_source(
    school_id: str, body: FundingSourceIn, admin: AdminDep, services: ServicesDep
) -> Any:
    """Register a guardian's bank direct-debit agreement (the token from the bank's binding flow
    and the bank card's last four digits) for a student. Bind co-branded cards to it."""
    admin.require_school(school_id)
    return await services.funding.create(
        school_id,
        student_id=body.student_id,
        kind=body.kind,
        adapter=body.adapter,
        agreement_token=body.agreement_token,
        card_last4=body.card_last4,
        actor=_actor(admin),
    )


@router.get(
    "/v1/schools/{school_id}/funding-sources", response_model=list[FundingSourceOut], responses=_PROBLEMS
)
async def list_funding_sources(
    school_id: str, admin: AdminDep, services: ServicesDep, student_id: str | None = Query(None)
) -> Any:
    admin.require_school(school_id)
    return await services.funding.list(school_id, student_id)


@router.post(
    "/v1/schools/{school_id}/funding-sources/{source_id}/revoke",
    response_model=FundingSourceOut,
    responses=_PROBLEMS,
)
async def revoke_funding_source(
    school_id: str, source_id: str, admin: AdminDep, services: ServicesDep
) -> Any:
    """End a guardian's bank agreement: no more payments from it, its token erased (idempotent)."""
    admin.require_school(school_id)
    return await services.funding.revoke(school_id, source_id, _actor(admin))


@router.get("/v1/schools/{school_id}/card-bins", response_model=CardBinsOut, responses=_PROBLEMS)
async def get_card_bins(school_id: str, admin: AdminDep, services: ServicesDep) -> dict[str, Any]:
    admin.require_school(school_id)
    return {"co_branded_prefixes": await services.funding.card_bins(school_id)}


@router.put("/v1/schools/{school_id}/card-bins", response_model=CardBinsOut, responses=_PROBLEMS)
async def put_card_bins(
    school_id: str, body: CardBinsIn, admin: AdminDep, services: ServicesDep
) -> dict[str, Any]:
    """Replace the school's bank co-branded BIN prefixes. Cards bound afterwards with one of these
    prefixes must name a bank agreement; cards already bound keep their funding source."""
    admin.require_school(school_id)
    prefixes = await services.funding.put_card_bins(school_id, body.co_branded_prefixes, _actor(admin))
    return {"co_branded_prefixes": prefixes}


def _routing_out(stored: Any) -> dict[str, Any]:
    ruleset = stored.ruleset or RuleSet(rules=[])
    return {
        "configured": stored.ruleset is not None,
        "version": stored.version,
        "rules": [r.model_dump(mode="json", exclude_none=True) for r in ruleset.rules],
        "breaker": ruleset.breaker.model_dump(mode="json"),
        "updated_at": stored.updated_at,
    }


@router.get("/v1/schools/{school_id}/routing", response_model=RoutingOut, responses=_PROBLEMS)
async def get_routing(school_id: str, admin: AdminDep, services: ServicesDep) -> dict[str, Any]:
    admin.require_school(school_id)
    return _routing_out(await services.routing.get(school_id))


@router.put("/v1/schools/{school_id}/routing", response_model=RoutingOut, responses=_PROBLEMS)
async def put_routing(
    school_id: str, body: RuleSet, admin: AdminDep, services: ServicesDep
) -> dict[str, Any]:
    """Replace the rule set. Rejected with every reason (422 ``routing_invalid``, or
    ``non_face_required`` when it would switch card payment off while face is on)."""
    admin.require_school(school_id)
    return _routing_out(await services.routing.put(school_id, body, _actor(admin)))


@router.delete("/v1/schools/{school_id}/routing", status_code=204, responses=_PROBLEMS)
async def delete_routing(school_id: str, admin: AdminDep, services: ServicesDep) -> Response:
    """Drop the rule set: every payment takes the default route again."""
    admin.require_school(school_id)
    await services.routing.delete(school_id, _actor(admin))
    return Response(status_code=204)


@router.post(
    "/v1/schools/{school_id}/routing/validate", response_model=RoutingValidationOut, responses=_PROBLEMS
)
async def validate_routing(
    school_id: str, body: RuleSet, admin: AdminDep, services: ServicesDep
) -> dict[str, Any]:
    """Validate a rule set against the school as it is now, without saving it."""
    admin.require_school(school_id)
    reasons = await services.routing.validate(school_id, body)
    return {
        "valid": not reasons,
        "code": strictest_code(reasons) if reasons else None,
        "reasons": [r.as_dict() for r in reasons],
    }


@router.post("/v1/schools/{school_id}/routing/dry-run", response_model=DryRunOut, responses=_PROBLEMS)
async def dry_run(school_id: str, body: DryRunIn, admin: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Which adapter would take this payment, the candidates in order, and why each one was
    kept or skipped. Nothing is charged, no breaker is tripped."""
    admin.require_school(school_id)
    if body.method == "card" and body.card_no is None and body.bin is None:
        raise Unprocessable("validation_error", "a card dry run needs card_no or bin")
    store = await services.tenancy.get_store(school_id, body.store_id)
    if store is None:
        raise Unprocessable("store_unknown", f"no store {body.store_id!r} at this school")
    return await services.routing.dry_run(
        school_id,
        method=body.method,
        amount=body.amount,
        currency=body.currency,
        store=store,
        at=body.at or services.clock(),
        card_no=body.card_no,
        bin_prefix=body.bin,
        student_id=body.student_id,
    )


@router.get("/v1/schools/{school_id}/routing/breakers", responses=_PROBLEMS)
async def breakers(school_id: str, admin: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Circuit-breaker state of each configured adapter: closed, open, or half_open."""
    admin.require_school(school_id)
    return {"data": await services.routing.breakers(school_id)}
