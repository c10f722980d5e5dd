"""Admin bearer tokens: the platform token and per-school API keys, stored as SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from gateway.errors import Forbidden, Unauthorized
from gateway.store.db import Database
from gateway.store.models import ApiKey

__all__ = ["GUARDIAN_PATH_ROLES", "AdminPrincipal", "TokenAuthenticator", "hash_token", "new_token"]

# Roles that reach the guardian paths (CONTRACT "Roles and headers"), always with
# CampusPay-On-Behalf-Of.
GUARDIAN_PATH_ROLES = frozenset({"school_admin"})


def new_token(kind: str) -> str:
    return f"cp_{kind}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AdminPrincipal:
    role: str  # platform | school_admin
    school_id: str | None
    key_id: str

    def require_school(self, school_id: str) -> None:
        """A school admin reaches only its own school; the platform admin creates schools only."""
        if self.role != "school_admin" or self.school_id != school_id:
            # 404, not 403: do not reveal that another school's id exists.
            from gateway.errors import NotFound

            raise NotFound("no such school")

    def require_guardian_path(self, school_id: str) -> None:
        """The guardian paths of its own school: the parent app's ``guardian_app`` key, and
        (until issue 12's key roles replace it) the school-admin key acting on a guardian's
        behalf. Another school's id is not found, as for ``require_school``."""
        if self.role not in GUARDIAN_PATH_ROLES or self.school_id != school_id:
            from gateway.errors import NotFound

            raise NotFound("no such school")

    def require_platform(self) -> None:
        if self.role != "platform":
            raise Forbidden("forbidden", "platform admin token required")


class TokenAuthenticator:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def authenticate(self, authorization: str | None) -> AdminPrincipal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized(
                "token_invalid",
                "Authorization: Bearer <token> required",
                headers={"WWW-Authenticate": 'Bearer realm="campuspay"'},
            )
        token = authorization[7:].strip()
        digest = hash_token(token)
        async with self.db.transaction(readonly=True) as session:
            key = (
                await session.execute(select(ApiKey).where(ApiKey.token_hash == digest))
            ).scalar_one_or_none()
        if key is None or key.revoked_at is not None or not hmac.compare_digest(key.token_hash, digest):
            raise Unauthorized("token_invalid", headers={"WWW-Authenticate": 'Bearer realm="campuspay"'})
        return AdminPrincipal(role=key.role, school_id=key.school_id, key_id=key.id)
