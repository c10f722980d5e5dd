"""Admin API: what recovery cannot finish on its own (docs/admin-api.md, "Needs attention")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from gateway.api.deps import AdminDep, ServicesDep
from gateway.api.schemas import NeedsAttentionPage, Problem

__all__ = ["router"]

router = APIRouter(tags=["admin"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    s: {"model": Problem, "content": {"application/problem+json": {}}} for s in (401, 403, 404, 422)
}


@router.get(
    "/v1/schools/{school_id}/recovery/needs-attention",
    response_model=NeedsAttentionPage,
    responses=_PROBLEMS,
)
async def needs_attention(
    school_id: str,
    admin: AdminDep,
    services: ServicesDep,
    limit: int = Query(50, ge=1, le=100),
    cursor: str | None = Query(None, max_length=200),
) -> dict[str, Any]:
    """Payments and refunds whose provider has refused the gateway's requests past the recovery
    deadline (its clock drifted, the school's credentials are wrong): they stay unresolved,
    oldest refusal first, until the provider answers again."""
    admin.require_school(school_id)
    return await services.attention.page(school_id, limit=limit, cursor=cursor)
