"""The face cloud's HTTP bodies (docs/face-cloud.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "DeletedOut",
    "EnrollmentIn",
    "EnrollmentOut",
    "ErrorOut",
    "FaceTokenOut",
    "IdentifyIn",
    "TokenRequestIn",
    "UserOut",
]

MAX_IMAGE_CHARS = 4_000_000  # base64 characters (about 3 MB of image)

Ref = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
ImageB64 = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_IMAGE_CHARS,
        description="base64 (a data: URL prefix is allowed) of a PNG or of raw RGB bytes of a square image",
    ),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrollmentIn(_In):
    school: Ref = Field(description="the face group: the provider-side school id")
    student: Ref = Field(description="the school's (pseudonymous) student reference")
    image: ImageB64
    consent_ref: str | None = Field(
        default=None, max_length=128, description="the guardian's consent record; required (CONSENT_REQUIRED)"
    )


class IdentifyIn(_In):
    school: Ref
    device_id: Ref
    image: ImageB64
    liveness: bool = Field(
        default=True, description="the terminal's liveness verdict; false -> LIVENESS_FAILED"
    )


class TokenRequestIn(_In):
    school: Ref
    student: Ref


class EnrollmentOut(BaseModel):
    user_id: str = Field(description='"2088" + 12 digits')
    agreement_no: str = Field(description='the withholding agreement: "2022" + 16 digits')
    school: str
    student: str


class UserOut(EnrollmentOut):
    deleted: bool


class FaceTokenOut(BaseModel):
    face_token: str = Field(description='"fp" + 33 characters from [A-Za-z0-9]; lives 300 s')


class DeletedOut(BaseModel):
    deleted: bool
    user_id: str
    school: str


class ErrorOut(BaseModel):
    code: str
    message: str
