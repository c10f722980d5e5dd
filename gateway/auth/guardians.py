"""Who a guardian-path call acts for (CONTRACT "Roles and headers").

The school's parent app calls with its API key and names, in ``CampusPay-On-Behalf-Of``, the
guardian it acts for -- or the student's own id, where a student of 14-17 (or an adult
student) acts for themself. A guardian who is not that student's is refused 403
``not_guardian``; a student of another school is not found (404), as everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from gateway.auth.tokens import AdminPrincipal
from gateway.errors import BadRequest, Forbidden, NotFound
from gateway.store.db import Database
from gateway.store.models import Guardian, Student

__all__ = ["ON_BEHALF_OF", "GuardianAuthorizer", "GuardianCaller"]

ON_BEHALF_OF = "CampusPay-On-Behalf-Of"
# Age bands whose students may act for themselves: 14-17 by PIPL art. 31 (consent is theirs),
# adults because nobody else can.
SELF_ACTING_BANDS = frozenset({"14_17", "adult"})


@dataclass(frozen=True)
class GuardianCaller:
    """A guardian-path caller: the key that called and the person it acts for."""

    principal: AdminPrincipal
    on_behalf_of: str  # grd_… or the student's own id

    @property
    def actor(self) -> str:
        """The audit actor (the key); the entry's data names ``on_behalf_of`` as well."""
        return f"{self.principal.role}:{self.principal.key_id}"


class GuardianAuthorizer:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def authorize(
        self, principal: AdminPrincipal, school_id: str, student_id: str, acting: str | None
    ) -> GuardianCaller:
        principal.require_guardian_path(school_id)
        acting = (acting or "").strip()
        if not acting:
            raise BadRequest("on_behalf_of_required", f"{ON_BEHALF_OF} is required on guardian paths")
        async with self.db.transaction(readonly=True) as session:
            student = (
                await session.execute(
                    select(Student).where(Student.id == student_id, Student.school_id == school_id)
                )
            ).scalar_one_or_none()
            if student is None:
                raise NotFound("no such student")
            if acting == student.id:
                if student.age_band not in SELF_ACTING_BANDS:
                    raise Forbidden("not_guardian", "a student under 14 is represented by a guardian")
                return GuardianCaller(principal, acting)
            guardian = (
                await session.execute(
                    select(Guardian.id).where(
                        Guardian.id == acting,
                        Guardian.school_id == school_id,
                        Guardian.student_id == student.id,
                    )
                )
            ).scalar_one_or_none()
        if guardian is None:
            raise Forbidden("not_guardian", f"{acting!r} is not a registered guardian of this student")
        return GuardianCaller(principal, acting)
