"""The face cloud's HTTP API under /face (JSON, unsigned: terminals and testers call it directly).

Every answer that is not a success is `{"code": …, "message": …}` with the status of
sandbox.face.cloud's error table. Fault rules (provider "face") apply to the operations in
`OPERATIONS` with the actions in `FACE_ACTIONS` (nothing here is signed, authenticated or queried).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from sandbox.control import ControlPlane
from sandbox.face.cloud import PROVIDER, FaceCloud, FaceError
from sandbox.face.images import ImageError, decode_image, encode_png
from sandbox.face.models import (
    DeletedOut,
    EnrollmentIn,
    EnrollmentOut,
    ErrorOut,
    FaceTokenOut,
    IdentifyIn,
    TokenRequestIn,
    UserOut,
)
from sandbox.face.synthetic import Image, synthetic_face
from sandbox.faults import ALL_ACTIONS, fault_effect, faulted

__all__ = ["FACE_ACTIONS", "OPERATIONS", "create_face_app"]

OPERATIONS = frozenset({"enroll", "identify", "test_token", "delete"})
# Nothing here is signed, authenticated or queried, so those actions would have nothing to do.
FACE_ACTIONS = ALL_ACTIONS - {"bad_signature", "auth_refusal", "query_lag"}
DATA_URL = re.compile(r"^data:[\w./+-]*;base64,")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in (
        (404, "NO_MATCH, USER_NOT_ENROLLED or USER_NOT_FOUND"),
        (409, "AMBIGUOUS_MATCH"),
        (422, "INVALID_REQUEST, INVALID_IMAGE, CONSENT_REQUIRED or LIVENESS_FAILED"),
        (500, "INTERNAL_ERROR (fault rules only)"),
    )
}
REF_PATTERN = r"^[A-Za-z0-9_.:-]+$"
SchoolQuery = Annotated[str, Query(min_length=1, max_length=64, pattern=REF_PATTERN)]
PathRef = Annotated[str, Path(min_length=1, max_length=64, pattern=REF_PATTERN)]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def _validation_message(errors: Any) -> str:
    parts = []
    for item in errors:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", "invalid"))
    return "; ".join(parts) or "malformed request"


def image_from_base64(text: str) -> Image:
    try:
        data = base64.b64decode(DATA_URL.sub("", text.strip()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FaceError(422, "INVALID_IMAGE", f"image is not valid base64: {exc}") from exc
    try:
        return decode_image(data)
    except ImageError as exc:
        raise FaceError(422, "INVALID_IMAGE", str(exc)) from exc


def create_face_app(cloud: FaceCloud, control: ControlPlane) -> FastAPI:
    app = FastAPI(
        title="CampusPay sandbox: face cloud",
        version="1",
        description="Per-school face groups, enrolment with consent, 1:N identify -> face token "
        "(docs/face-cloud.md). The default model is a sandbox encoder, not a face recogniser.",
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return _error(422, "INVALID_REQUEST", _validation_message(exc.errors()))

    @app.exception_handler(FaceError)
    async def refused(request: Request, exc: FaceError) -> Response:
        return _error(exc.status, exc.code, exc.message)

    async def run(operation: str, school: str, apply: Callable[[], BaseModel]) -> Any:
        """Apply an operation inside whatever fault rule targets it."""
        rule = control.take_fault(PROVIDER, operation, {"school": school})
        if rule is None:
            return apply()
        control.record(PROVIDER, "fault", school, operation=operation, rule_id=rule.id, action=rule.action)

        async def applied() -> BaseModel:
            return apply()

        return await faulted(
            fault_effect(rule.action, rule.delay_ms),
            apply=applied,
            answer=lambda result, _corrupt: JSONResponse(result.model_dump(mode="json", by_alias=True)),
            error=lambda: _error(500, "INTERNAL_ERROR", "internal error"),
            refusal=None,  # the face cloud authenticates nobody: FACE_ACTIONS has no auth_refusal
            breaker=control.breaker,
            commit=control.commit,
            what=f"{PROVIDER} {operation}",
        )

    @app.post(
        "/enrollments", response_model=EnrollmentOut, responses=ERRORS, summary="Enrol a student's face"
    )
    async def enroll(body: EnrollmentIn) -> Any:
        def apply() -> EnrollmentOut:
            if not body.consent_ref or not body.consent_ref.strip():
                raise FaceError(422, "CONSENT_REQUIRED", "no consent reference, no enrolment")
            user = cloud.enroll(body.school, body.student, image_from_base64(body.image), body.consent_ref)
            return EnrollmentOut(
                user_id=user.user_id, agreement_no=user.agreement_no, school=user.school, student=user.student
            )

        return await run("enroll", body.school, apply)

    @app.get("/enrollments/{user_id}", response_model=UserOut, responses=ERRORS, summary="An enrolment's ids")
    async def enrolment(user_id: str, school: SchoolQuery) -> Any:
        user = cloud.user(user_id)
        if user is None or user.school != school:
            raise FaceError(404, "USER_NOT_FOUND", f"no user {user_id!r} in face group {school!r}")
        return UserOut(
            user_id=user.user_id,
            agreement_no=user.agreement_no,
            school=user.school,
            student=user.student,
            deleted=user.deleted,
        )

    async def delete(user_id: str, school: str) -> Any:
        def apply() -> DeletedOut:
            if not cloud.delete_user(school, user_id):
                raise FaceError(404, "USER_NOT_FOUND", f"no user {user_id!r} in face group {school!r}")
            return DeletedOut(deleted=True, user_id=user_id, school=school)

        return await run("delete", school, apply)

    @app.delete(
        "/enrollments/{user_id}", response_model=DeletedOut, responses=ERRORS, summary="Delete an enrolment"
    )
    async def delete_enrolment(user_id: str, school: SchoolQuery) -> Any:
        return await delete(user_id, school)

    @app.post(
        "/enrollments/{user_id}/delete",
        response_model=DeletedOut,
        responses=ERRORS,
        summary="Delete an enrolment (for clients that cannot send DELETE)",
    )
    async def delete_enrolment_by_post(user_id: str, school: SchoolQuery) -> Any:
        return await delete(user_id, school)

    @app.post("/identify", response_model=FaceTokenOut, responses=ERRORS, summary="Image -> face token (1:N)")
    async def identify(body: IdentifyIn) -> Any:
        def apply() -> FaceTokenOut:
            image = image_from_base64(body.image)
            token = cloud.identify(body.school, body.device_id, image, liveness=body.liveness)
            return FaceTokenOut(face_token=token.token)

        return await run("identify", body.school, apply)

    @app.post(
        "/test-tokens",
        response_model=FaceTokenOut,
        responses=ERRORS,
        summary="A face token for a test student",
    )
    async def test_token(body: TokenRequestIn) -> Any:
        def apply() -> FaceTokenOut:
            return FaceTokenOut(face_token=cloud.test_token(body.school, body.student).token)

        return await run("test_token", body.school, apply)

    @app.get(
        "/test-faces/{school}/{student}",
        responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}, **ERRORS},
        response_class=Response,
        summary="A synthetic face image of a student (any school and student)",
    )
    async def test_face(
        school: PathRef,
        student: PathRef,
        capture: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        format: Literal["png", "raw"] = "png",
    ) -> Response:
        image = synthetic_face(school, student, capture)
        if format == "raw":
            return Response(image.tobytes(), media_type="application/octet-stream")
        return Response(encode_png(image), media_type="image/png")

    return app
