"""Admin API for face payment's preconditions: guardians, notices, consents, enrolments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.deps import AdminDep, ServicesDep
from gateway.api.schemas import (
    ConsentIn,
    ConsentOut,
    EnrollmentIn,
    EnrollmentOut,
    GuardianIn,
    GuardianOut,
    NoticeIn,
    NoticeOut,
    Problem,
)
from gateway.errors import Unprocessable

__all__ = ["router"]

router = APIRouter(tags=["consent"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    s: {"model": Problem, "content": {"application/problem+json": {}}} for s in (401, 404, 409, 422)
}


def _actor(admin: AdminDep) -> str:
    return f"{admin.role}:{admin.key_id}"


@router.post(
    "/v1/schools/{school_id}/guardians", status_code=201, response_model=GuardianOut, responses=_PROBLEMS
)
async def add_guardian(school_id: str, body: GuardianIn, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return await services.consents.add_guardian(
        school_id,
        student_id=body.student_id,
        external_ref=body.external_ref,
        relation=body.relation,
        name=body.name,
        actor=_actor(admin),
    )


@router.post(
    "/v1/schools/{school_id}/consent-notices", status_code=201, response_model=NoticeOut, responses=_PROBLEMS
)
async def add_notice(school_id: str, body: NoticeIn, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    fields = body.model_dump(exclude={"version", "content", "standalone"})
    return await services.consents.add_notice(
        school_id,
        version=body.version,
        content=body.content,
        standalone=body.standalone,
        fields=fields,
        actor=_actor(admin),
    )


@router.post(
    "/v1/schools/{school_id}/consents", status_code=201, response_model=ConsentOut, responses=_PROBLEMS
)
async def give_consent(school_id: str, body: ConsentIn, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return await services.consents.give_consent(
        school_id,
        student_id=body.student_id,
        signer_type=body.signer.type,
        guardian_id=body.signer.guardian_id,
        notice_id=body.notice_id,
        notice_version=body.notice_version,
        notice_hash=body.notice_hash,
        scope=body.scope,
        ends_at=body.ends_at,
        actor=_actor(admin),
    )


@router.get("/v1/schools/{school_id}/consents/{consent_id}", response_model=ConsentOut, responses=_PROBLEMS)
async def get_consent(school_id: str, consent_id: str, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return await services.consents.get_consent(school_id, consent_id)


@router.post(
    "/v1/schools/{school_id}/consents/{consent_id}/withdraw",
    response_model=ConsentOut,
    responses=_PROBLEMS,
    summary="Withdraw consent: one call; face stops, deletion starts",
)
async def withdraw_consent(school_id: str, consent_id: str, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return await services.consents.withdraw(school_id, consent_id, _actor(admin))


@router.post(
    "/v1/schools/{school_id}/enrollments", status_code=201, response_model=EnrollmentOut, responses=_PROBLEMS
)
async def enroll(school_id: str, body: EnrollmentIn, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    if (
        body.provider not in services.registry
        or "face" not in services.registry.capabilities(body.provider).methods
    ):
        raise Unprocessable("unknown_adapter", f"{body.provider!r} is not a face-payment adapter")
    return await services.consents.enroll(
        school_id,
        student_id=body.student_id,
        provider=body.provider,
        provider_user_id=body.provider_user_id,
        agreement_no=body.agreement_no,
        consent_id=body.consent_id,
        actor=_actor(admin),
    )


@router.get(
    "/v1/schools/{school_id}/enrollments/{enrollment_id}", response_model=EnrollmentOut, responses=_PROBLEMS
)
async def get_enrollment(school_id: str, enrollment_id: str, admin: AdminDep, services: ServicesDep) -> Any:
    admin.require_school(school_id)
    return await services.consents.get_enrollment(school_id, enrollment_id)


@router.delete(
    "/v1/schools/{school_id}/enrollments/{enrollment_id}",
    status_code=202,
    response_model=EnrollmentOut,
    responses=_PROBLEMS,
    summary="Delete an enrolment here and at the provider (retried until done)",
)
async def delete_enrollment(
    school_id: str, enrollment_id: str, admin: AdminDep, services: ServicesDep
) -> Any:
    admin.require_school(school_id)
    await services.consents.get_enrollment(school_id, enrollment_id)
    return await services.consents.delete_enrollment(school_id, enrollment_id, "requested", _actor(admin))
