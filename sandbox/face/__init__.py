"""The face cloud, provider side (docs/face-cloud.md): face groups, enrolment, identify, face tokens.

`FaceProvider(control).cloud` is the `FaceCloud`, which implements
`sandbox.face.directory.FaceDirectory` for the sandbox Alipay.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.types import ASGIApp

from sandbox.control import ControlPlane
from sandbox.face.cloud import PROVIDER, FaceCloud, FaceError
from sandbox.face.config import FaceConfig
from sandbox.face.directory import FaceDirectory, FaceToken, FaceUser
from sandbox.face.eventlog import FaceEventLog
from sandbox.face.router import FACE_ACTIONS, OPERATIONS, create_face_app

__all__ = ["FaceCloud", "FaceConfig", "FaceDirectory", "FaceError", "FaceProvider", "FaceToken", "FaceUser"]


class FaceProvider:
    """Registers the face cloud with a control plane: its app, operations, reset and test hooks."""

    name = PROVIDER
    operations = OPERATIONS
    actions = FACE_ACTIONS
    query_operations: frozenset[str] = frozenset()
    bill_operations: frozenset[str] = frozenset()

    def __init__(self, control: ControlPlane, config: FaceConfig | None = None) -> None:
        self.cloud = FaceCloud(
            config or FaceConfig.from_env(), now=lambda: control.now(PROVIDER), record=control.record
        )
        self.fastapi_app = create_face_app(self.cloud, control)
        self.app: ASGIApp = FaceEventLog(self.fastapi_app, control, PROVIDER)
        control.register(self)

    async def reset(self) -> None:
        self.cloud.reset()

    def control_router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/groups/{school}")
        async def group(school: str) -> dict[str, Any]:
            """The live users of a face group (ids only: templates never leave the face cloud)."""
            users = sorted(self.cloud.group(school), key=lambda u: u.student)
            return {
                "school": school,
                "users": [
                    {"student": u.student, "user_id": u.user_id, "agreement_no": u.agreement_no}
                    for u in users
                ],
            }

        @router.get("/tokens/{face_token}")
        async def token(face_token: str) -> dict[str, Any]:
            found = self.cloud.lookup_token(face_token)
            if found is None:
                raise HTTPException(404, "no such face token")
            user = self.cloud.user(found.user_id)
            return {
                "face_token": found.token,
                "school": found.school,
                "user_id": found.user_id,
                "issued_at": found.issued_at,
                "expires_at": found.expires_at,
                "expired": self.cloud.now() >= found.expires_at,
                "used_by": found.used_by,
                "user_deleted": user is None or user.deleted,
            }

        return router
