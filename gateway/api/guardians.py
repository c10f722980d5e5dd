"""Guardians' controls (COMPLIANCE rules 6, 15): a student's limits, set by a guardian through
the school's parent app; the school's defaults and ceilings; stores' meal periods.

Guardian paths take ``CampusPay-On-Behalf-Of`` (gateway.auth.guardians); school admins set the
school-wide values and never a guardian's own limits. See docs/guardians.md.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.deps import AdminDep, GuardianDep, ServicesDep
from gateway.api.schemas import (
    LimitPolicyIn,
    LimitPolicyOut,
    LimitsIn,
    LimitsOut,
    MealPeriodsIn,
    Problem,
    StoreOut,
)

__all__ = ["router"]

router = APIRouter(tags=["guardians"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    s: {"model": Problem, "content": {"application/problem+json": {}}} for s in (400, 401, 403, 404, 422)
}


def _actor(admin: AdminDep) -> str:
    return f"{admin.role}:{admin.key_id}"


@router.get(
    "/v1/schools/{school_id}/students/{student_id}/limits", response_model=LimitsOut, responses=_PROBLEMS
)
async def get_limits(school_id: str, student_id: str, guardian: GuardianDep, services: ServicesDep) -> Any:
    """The limits the guardians set, and what applies after the school's defaults and ceilings."""
    return await services.limits.get_limits(school_id, student_id)


@router.put(
    "/v1/schools/{school_id}/students/{student_id}/limits",
    response_model=LimitsOut,
    responses=_PROBLEMS,
    summary="Set a student's spending limits (a guardian, through the parent app)",
)
async def put_limits(
    school_id: str, student_id: str, body: LimitsIn, guardian: GuardianDep, services: ServicesDep
) -> Any:
    """Replaces all four limits (absent: not set). Hard caps over every payment method together;
    a payment over one fails ``limit_exceeded``. A limit above the school's ceiling is refused
    422 ``limit_above_ceiling`` and nothing changes."""
    return await services.limits.put_limits(
        school_id,
        student_id,
        body.model_dump(),
        actor=guardian.actor,
        on_behalf_of=guardian.on_behalf_of,
    )


@router.get("/v1/schools/{school_id}/limit-policy", response_model=LimitPolicyOut, responses=_PROBLEMS)
async def get_limit_policy(school_id: str, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return await services.limits.get_policy(school_id)


@router.put(
    "/v1/schools/{school_id}/limit-policy",
    response_model=LimitPolicyOut,
    responses=_PROBLEMS,
    summary="Set the school's limit defaults and ceilings",
)
async def put_limit_policy(
    school_id: str, body: LimitPolicyIn, admin: AdminDep, services: ServicesDep
) -> Any:
    """Defaults apply to students whose guardians set no such limit; ceilings cap every
    student (a guardian's higher limit is capped, and a new one above is refused). A default
    above its ceiling is refused 422 ``limit_above_ceiling``."""
    admin.require_school(school_id)
    return await services.limits.put_policy(
        school_id, body.defaults.model_dump(), body.ceilings.model_dump(), _actor(admin)
    )


@router.put(
    "/v1/schools/{school_id}/stores/{store_id}/meal-periods", response_model=StoreOut, responses=_PROBLEMS
)
async def put_meal_periods(
    school_id: str, store_id: str, body: MealPeriodsIn, admin: AdminDep, services: ServicesDep
) -> Any:
    """The store's meal periods (store-local, not overlapping): a per-meal-period limit counts
    within the one a sale falls in. An empty list removes them."""
    admin.require_school(school_id)
    return await services.tenancy.set_meal_periods(
        school_id, store_id, [p.model_dump() for p in body.meal_periods], _actor(admin)
    )
