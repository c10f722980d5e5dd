"""Admin API: schools (platform admin), and everything a school admin manages in its school."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response

from gateway.api.deps import AdminDep, ServicesDep
from gateway.api.schemas import (
    BIGINT_MAX,
    CardIn,
    CardOut,
    DeviceIn,
    DeviceKeyIn,
    DeviceOut,
    DeviceView,
    NetworkAllowlistIn,
    NetworkAllowlistOut,
    Problem,
    ProviderCheckOut,
    ProviderIn,
    ProviderOut,
    SchoolIn,
    SchoolOut,
    StoreIn,
    StoreOut,
    StudentIn,
    StudentOut,
)
from gateway.errors import BadGateway, NotFound, Unprocessable

__all__ = ["router"]

router = APIRouter(tags=["admin"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    s: {"model": Problem, "content": {"application/problem+json": {}}} for s in (401, 403, 404, 409, 422)
}


def _actor(admin: AdminDep) -> str:
    return f"{admin.role}:{admin.key_id}"


@router.post("/v1/schools", status_code=201, response_model=SchoolOut, responses=_PROBLEMS)
async def create_school(body: SchoolIn, admin: AdminDep, services: ServicesDep) -> dict[str, Any]:
    admin.require_platform()
    school, token = await services.tenancy.create_school(body.name, _actor(admin))
    return {"id": school.id, "name": school.name, "api_key": token}


@router.post("/v1/schools/{school_id}/stores", status_code=201, response_model=StoreOut, responses=_PROBLEMS)
async def create_store(school_id: str, body: StoreIn, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return await services.tenancy.create_store(
        school_id,
        name=body.name,
        merchant_category=body.merchant_category,
        timezone=body.timezone,
        actor=_actor(admin),
        meal_periods=[p.model_dump() for p in body.meal_periods] if body.meal_periods is not None else None,
    )


@router.get("/v1/schools/{school_id}/stores", response_model=list[StoreOut], responses=_PROBLEMS)
async def list_stores(school_id: str, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return await services.tenancy.list_stores(school_id)


@router.post(
    "/v1/schools/{school_id}/devices", status_code=201, response_model=DeviceOut, responses=_PROBLEMS
)
async def create_device(school_id: str, body: DeviceIn, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return await services.tenancy.create_device(
        school_id, name=body.name, alg=body.alg, public_key=body.public_key, actor=_actor(admin)
    )


@router.get("/v1/schools/{school_id}/devices", response_model=list[DeviceView], responses=_PROBLEMS)
async def list_devices(school_id: str, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return [
        {
            "device_id": d.id,
            "name": d.name,
            "status": d.status,
            "keys": [
                {"key_id": k.key_id, "alg": k.alg, "status": k.status, "created_at": k.created_at}
                for k in keys
            ],
        }
        for d, keys in await services.tenancy.list_devices(school_id)
    ]


@router.post(
    "/v1/schools/{school_id}/devices/{device_id}/keys",
    status_code=201,
    response_model=DeviceOut,
    responses=_PROBLEMS,
)
async def add_device_key(
    school_id: str, device_id: str, body: DeviceKeyIn, admin: AdminDep, services: ServicesDep
) -> Any:
    admin.require_school(school_id)
    return await services.tenancy.add_key(
        school_id, device_id, alg=body.alg, public_key=body.public_key, actor=_actor(admin)
    )


@router.delete(
    "/v1/schools/{school_id}/devices/{device_id}/keys/{key_id}", status_code=204, responses=_PROBLEMS
)
async def retire_device_key(
    school_id: str, device_id: str, key_id: str, admin: AdminDep, services: ServicesDep
) -> Response:
    admin.require_school(school_id)
    await services.tenancy.retire_key(school_id, device_id, key_id, _actor(admin))
    return Response(status_code=204)


@router.delete("/v1/schools/{school_id}/devices/{device_id}", status_code=204, responses=_PROBLEMS)
async def revoke_device(school_id: str, device_id: str, admin: AdminDep, services: ServicesDep) -> Response:
    admin.require_school(school_id)
    await services.tenancy.revoke_device(school_id, device_id, _actor(admin))
    return Response(status_code=204)


@router.post(
    "/v1/schools/{school_id}/students", status_code=201, response_model=StudentOut, responses=_PROBLEMS
)
async def create_student(school_id: str, body: StudentIn, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return await services.tenancy.create_student(
        school_id, external_ref=body.external_ref, age_band=body.age_band, name=body.name, actor=_actor(admin)
    )


@router.post("/v1/schools/{school_id}/cards", status_code=201, response_model=CardOut, responses=_PROBLEMS)
async def bind_card(school_id: str, body: CardIn, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    if body.funding_adapter not in services.registry:
        raise Unprocessable("unknown_adapter", f"no adapter named {body.funding_adapter!r}")
    return await services.tenancy.bind_card(
        school_id,
        student_id=body.student_id,
        card_no=body.card_no,
        funding_adapter=body.funding_adapter,
        actor=_actor(admin),
        funding_source_id=body.funding_source_id,
    )


@router.put("/v1/schools/{school_id}/providers/{adapter}", response_model=ProviderOut, responses=_PROBLEMS)
async def put_provider(
    school_id: str, adapter: str, body: ProviderIn, admin: AdminDep, services: ServicesDep
) -> Any:
    admin.require_school(school_id)
    return await services.providers.put(
        school_id,
        adapter,
        endpoint=body.endpoint,
        credentials=body.credentials,
        options=body.options,
        actor=_actor(admin),
    )


@router.get("/v1/schools/{school_id}/providers/{adapter}", response_model=ProviderOut, responses=_PROBLEMS)
async def get_provider(school_id: str, adapter: str, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    view = await services.providers.view(school_id, adapter)
    if view is None:
        raise NotFound("this provider is not configured")
    return view


@router.post(
    "/v1/schools/{school_id}/providers/{adapter}/check",
    response_model=ProviderCheckOut,
    responses={**_PROBLEMS, 502: {"model": Problem}},
)
async def check_provider(school_id: str, adapter: str, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    instance = await services.providers.adapter(school_id, adapter)
    if instance is None:
        raise NotFound("this provider is not configured")
    await services.providers.verify_endpoint(school_id, adapter)  # the guard's word first, as a 422
    try:
        result = await instance.check()
    except Exception as exc:
        raise BadGateway("provider_check_failed", f"{adapter}: {type(exc).__name__}") from exc
    if result.refused is not None:  # what school IT most needs to know: it is the settings
        why = f"{adapter} refused the request ({result.refused.value}): {result.code}"
        raise BadGateway("provider_check_failed", why)
    if result.outcome.value != "succeeded":
        raise BadGateway("provider_check_failed", f"{adapter}: {result.code or result.outcome.value}")
    return {"adapter": adapter, "ok": True, "detail": "signed round trip verified"}


@router.put(
    "/v1/schools/{school_id}/network-allowlist", response_model=NetworkAllowlistOut, responses=_PROBLEMS
)
async def put_network_allowlist(
    school_id: str, body: NetworkAllowlistIn, admin: AdminDep, services: ServicesDep
) -> Any:
    """Platform admin only: the private networks this school's providers may be reached in
    (production). Without an entry, production refuses every private address."""
    admin.require_platform()
    return await services.allowlists.put(school_id, body.cidrs, _actor(admin))


@router.get(
    "/v1/schools/{school_id}/network-allowlist", response_model=NetworkAllowlistOut, responses=_PROBLEMS
)
async def get_network_allowlist(school_id: str, admin: AdminDep, services: ServicesDep) -> Any:
    """The platform admin, or this school's admin (read only)."""
    if admin.role != "platform":
        admin.require_school(school_id)
    return await services.allowlists.view(school_id)


@router.get("/v1/schools/{school_id}/audit", responses=_PROBLEMS)
async def audit_log(
    school_id: str,
    admin: AdminDep,
    services: ServicesDep,
    after_seq: int = Query(0, ge=0, le=BIGINT_MAX),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """Sealed entries after ``after_seq``, then the newest ones not sealed yet (``seq`` null)."""
    admin.require_school(school_id)
    return {"data": await services.audit.read(school_id, after_seq, limit)}


@router.get("/v1/schools/{school_id}/audit/verify", responses=_PROBLEMS)
async def audit_verify(
    school_id: str,
    admin: AdminDep,
    services: ServicesDep,
    head_seq: int | None = Query(
        None, ge=0, le=BIGINT_MAX, description="`head.seq` of a verify result kept earlier"
    ),
    head_hash: str | None = Query(
        None, pattern="^[0-9a-f]{64}$", description="`head.hash` of the same result"
    ),
) -> dict[str, Any]:
    """Walks the chain; with a head kept from an earlier answer, also checks that the chain
    still holds it (a deleted tail shows even if the head row was put back)."""
    admin.require_school(school_id)
    if (head_seq is None) != (head_hash is None):
        raise Unprocessable("validation_error", "head_seq and head_hash go together")
    known = (head_seq, head_hash) if head_seq is not None and head_hash is not None else None
    return await services.audit.verify(school_id, known)
