"""Consent and enrolment for face payment (COMPLIANCE rules 1-4, 7, 9, 10, 12, 13).

The gateway never sees a face: a school enrols a student at the provider's face cloud (which
needs the consent reference), then registers here only the provider's user id and withholding
agreement. Every face payment re-checks the chain token -> provider user -> enrolment ->
consent, whatever the terminal says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.store.db import Database
from gateway.store.models import Consent, ConsentNotice, Enrollment, Guardian, Student, new_id
from gateway.webhooks.outbox import emit

__all__ = ["NOTICE_FIELDS", "ConsentService", "FaceCheck"]

# What a stand-alone face-consent notice must state (rule 4).
NOTICE_FIELDS = ("controller", "contact", "purpose", "method", "retention", "rights", "necessity_impact")
SCOPE = "face_payment"
MAX_TERM = timedelta(days=366 * 6)  # a consent never outlives a school career; "permanent" is refused


@dataclass(frozen=True)
class FaceCheck:
    """The outcome of the consent chain for one face payment: a student, or a refusal code."""

    student_id: str | None
    enrollment: Enrollment | None
    refusal: str | None


class ConsentService:
    def __init__(self, db: Database, keyring: Keyring, *, clock: Callable[[], datetime]) -> None:
        self.db, self.keyring, self.clock = db, keyring, clock

    async def _student(self, session: Any, school_id: str, student_id: str) -> Student:
        student = (
            await session.execute(
                select(Student).where(Student.id == student_id, Student.school_id == school_id)
            )
        ).scalar_one_or_none()
        if student is None:
            raise Unprocessable("validation_error", "no such student in this school")
        return student  # type: ignore[no-any-return]

    async def add_guardian(
        self,
        school_id: str,
        *,
        student_id: str,
        external_ref: str,
        relation: str,
        name: str | None,
        actor: str,
    ) -> Guardian:
        async with self.db.transaction() as session:
            await self._student(session, school_id, student_id)
            guardian = Guardian(
                id=new_id("grd"),
                school_id=school_id,
                student_id=student_id,
                external_ref=external_ref,
                relation=relation,
            )
            if name:
                guardian.name_enc = self.keyring.encrypt(name, aad=f"guardian_name/{guardian.id}")
            session.add(guardian)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="guardian.added",
                object_type="guardian",
                object_id=guardian.id,
                data={"student_id": student_id},
            )
        return guardian

    async def add_notice(
        self,
        school_id: str,
        *,
        version: str,
        content: str,
        standalone: bool,
        fields: dict[str, str],
        actor: str,
    ) -> ConsentNotice:
        if not standalone:
            raise Unprocessable("consent_bundled", "face consent needs its own notice, not general terms")
        missing = [f for f in NOTICE_FIELDS if not (fields.get(f) or "").strip()]
        if missing:
            raise Unprocessable("notice_incomplete", f"the notice must state: {', '.join(missing)}")
        async with self.db.transaction() as session:
            exists = await session.scalar(
                select(ConsentNotice.id).where(
                    ConsentNotice.school_id == school_id, ConsentNotice.version == version
                )
            )
            if exists:
                raise Conflict("already_exists", f"notice version {version!r} exists as {exists}")
            notice = ConsentNotice(
                id=new_id("ntc"),
                school_id=school_id,
                version=version,
                content_hash=hashlib.sha256(content.encode()).hexdigest(),
                fields={f: fields[f] for f in NOTICE_FIELDS},
            )
            session.add(notice)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="notice.added",
                object_type="notice",
                object_id=notice.id,
                data={"version": version, "content_hash": notice.content_hash},
            )
        return notice

    async def give_consent(
        self,
        school_id: str,
        *,
        student_id: str,
        signer_type: str,
        guardian_id: str | None,
        notice_id: str,
        notice_version: str,
        notice_hash: str,
        scope: str,
        ends_at: datetime | None,
        actor: str,
    ) -> Consent:
        now = self.clock()
        if scope != SCOPE:
            raise Unprocessable("validation_error", f"scope must be {SCOPE!r}: face payment at this school")
        if ends_at is None:
            raise Unprocessable(
                "consent_term_required", "every consent has an end date; permanent consent is void"
            )
        if ends_at <= now or ends_at > now + MAX_TERM:
            raise Unprocessable(
                "consent_term_required", "the end date must be in the future and within six years"
            )
        async with self.db.transaction() as session:
            student = await self._student(session, school_id, student_id)
            notice = (
                await session.execute(
                    select(ConsentNotice).where(
                        ConsentNotice.id == notice_id, ConsentNotice.school_id == school_id
                    )
                )
            ).scalar_one_or_none()
            if notice is None or notice.version != notice_version or notice.content_hash != notice_hash:
                raise Unprocessable(
                    "notice_mismatch", "the consent must name the notice's exact version and hash"
                )
            # Rule 2: under 14 the guardian signs; from 14 the student does.
            if student.age_band == "under_14":
                if signer_type != "guardian" or guardian_id is None:
                    raise Unprocessable("consent_signer_invalid", "a guardian signs for a student under 14")
                guardian = (
                    await session.execute(
                        select(Guardian).where(Guardian.id == guardian_id, Guardian.student_id == student.id)
                    )
                ).scalar_one_or_none()
                if guardian is None:
                    raise Unprocessable(
                        "consent_signer_invalid", "the signer is not a registered guardian of this student"
                    )
            elif signer_type != "student":
                raise Unprocessable(
                    "consent_signer_invalid", "a student aged 14 or over signs their own consent"
                )
            consent = Consent(
                id=new_id("cns"),
                school_id=school_id,
                student_id=student.id,
                signer_type=signer_type,
                guardian_id=guardian_id if signer_type == "guardian" else None,
                notice_id=notice.id,
                scope=scope,
                ends_at=ends_at,
                created_at=now,
            )
            session.add(consent)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="consent.given",
                object_type="consent",
                object_id=consent.id,
                data={
                    "student_id": student.id,
                    "signer_type": signer_type,
                    "notice_version": notice.version,
                    "ends_at": ends_at.isoformat(),
                },
            )
        return consent

    async def get_consent(self, school_id: str, consent_id: str) -> Consent:
        async with self.db.transaction(readonly=True) as session:
            consent = (
                await session.execute(
                    select(Consent).where(Consent.id == consent_id, Consent.school_id == school_id)
                )
            ).scalar_one_or_none()
        if consent is None:
            raise NotFound("no such consent")
        return consent

    async def withdraw(self, school_id: str, consent_id: str, actor: str) -> Consent:
        """Rule 7: one call. Face payments stop at once; deletion at the provider starts."""
        now = self.clock()
        async with self.db.transaction() as session:
            consent = (
                await session.execute(
                    select(Consent)
                    .where(Consent.id == consent_id, Consent.school_id == school_id)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if consent is None:
                raise NotFound("no such consent")
            if consent.status == "withdrawn":
                return consent
            consent.status, consent.withdrawn_at = "withdrawn", now
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="consent.withdrawn",
                object_type="consent",
                object_id=consent.id,
                data={"student_id": consent.student_id},
            )
            emit(
                session,
                school_id=school_id,
                event_type="consent.withdrawn",
                data={"consent_id": consent.id, "student": consent.student_id},
            )
            await self._schedule_deletion(
                session, school_id, now, "consent_withdrawn", Enrollment.consent_id == consent.id, actor
            )
        return consent

    async def _schedule_deletion(
        self, session: Any, school_id: str, now: datetime, reason: str, where: Any, actor: str
    ) -> list[str]:
        rows = list(
            (
                await session.execute(
                    select(Enrollment).where(
                        Enrollment.school_id == school_id, Enrollment.status == "active", where
                    )
                )
            ).scalars()
        )
        for enrollment in rows:
            enrollment.status, enrollment.deletion_reason, enrollment.next_delete_at = "deleting", reason, now
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="enrollment.deleting",
                object_type="enrollment",
                object_id=enrollment.id,
                data={"reason": reason, "provider": enrollment.provider},
            )
        return [e.id for e in rows]

    async def enroll(
        self,
        school_id: str,
        *,
        student_id: str,
        provider: str,
        provider_user_id: str,
        agreement_no: str | None,
        consent_id: str,
        actor: str,
    ) -> Enrollment:
        now = self.clock()
        async with self.db.transaction() as session:
            await self._student(session, school_id, student_id)
            consent = (
                await session.execute(
                    select(Consent).where(Consent.id == consent_id, Consent.school_id == school_id)
                )
            ).scalar_one_or_none()
            if consent is None or consent.student_id != student_id:
                raise Unprocessable("consent_required", "enrolment needs this student's consent")
            if consent.status != "active" or consent.ends_at <= now:
                raise Unprocessable("consent_required", "the consent is withdrawn or has ended")
            notice = await session.get(ConsentNotice, consent.notice_id)
            if notice is None or any(not notice.fields.get(f) for f in NOTICE_FIELDS):
                raise Unprocessable(
                    "notice_incomplete", "the consent's notice does not state everything required"
                )
            taken = await session.scalar(
                select(Enrollment.id).where(
                    Enrollment.school_id == school_id,
                    Enrollment.provider == provider,
                    Enrollment.provider_user_id == provider_user_id,
                    Enrollment.status == "active",
                )
            )
            if taken:
                raise Conflict("already_exists", f"provider user is already enrolled as {taken}")
            # A new enrolment replaces the student's previous one at this provider, which is deleted there.
            await self._schedule_deletion(
                session,
                school_id,
                now,
                "superseded",
                (Enrollment.student_id == student_id) & (Enrollment.provider == provider),
                actor,
            )
            enrollment = Enrollment(
                id=new_id("enr"),
                school_id=school_id,
                student_id=student_id,
                provider=provider,
                provider_user_id=provider_user_id,
                agreement_no=agreement_no,
                consent_id=consent.id,
                created_at=now,
            )
            session.add(enrollment)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="enrollment.created",
                object_type="enrollment",
                object_id=enrollment.id,
                data={"student_id": student_id, "provider": provider, "consent_id": consent.id},
            )
        return enrollment

    async def get_enrollment(self, school_id: str, enrollment_id: str) -> Enrollment:
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(Enrollment).where(
                        Enrollment.id == enrollment_id, Enrollment.school_id == school_id
                    )
                )
            ).scalar_one_or_none()
        if row is None:
            raise NotFound("no such enrollment")
        return row

    async def delete_enrollment(
        self, school_id: str, enrollment_id: str, reason: str, actor: str
    ) -> Enrollment:
        async with self.db.transaction() as session:
            await self._schedule_deletion(
                session, school_id, self.clock(), reason, Enrollment.id == enrollment_id, actor
            )
        return await self.get_enrollment(school_id, enrollment_id)

    async def check_face(self, school_id: str, provider: str, provider_user_id: str) -> FaceCheck:
        """Rules 1, 7, 13: the provider user must be actively enrolled here under a live consent."""
        now = self.clock()
        async with self.db.transaction(readonly=True) as session:
            rows = list(
                (
                    await session.execute(
                        select(Enrollment)
                        .where(
                            Enrollment.school_id == school_id,
                            Enrollment.provider == provider,
                            Enrollment.provider_user_id == provider_user_id,
                        )
                        .order_by(Enrollment.created_at.desc())
                    )
                ).scalars()
            )
            if not rows:
                return FaceCheck(None, None, "consent_required")
            enrollment = rows[0]
            if enrollment.status != "active":
                if enrollment.deletion_reason == "superseded":
                    # the student re-enrolled as another provider user: this face is not the enrolled one
                    return FaceCheck(enrollment.student_id, None, "identity_mismatch")
                if enrollment.deletion_reason == "consent_withdrawn":
                    return FaceCheck(enrollment.student_id, None, "consent_withdrawn")
                return FaceCheck(enrollment.student_id, None, "consent_required")
            consent = await session.get(Consent, enrollment.consent_id)
        if consent is None or consent.student_id != enrollment.student_id:
            return FaceCheck(enrollment.student_id, None, "identity_mismatch")
        if consent.status == "withdrawn":
            return FaceCheck(enrollment.student_id, None, "consent_withdrawn")
        if consent.scope != SCOPE or consent.ends_at <= now:
            return FaceCheck(enrollment.student_id, None, "consent_required")
        return FaceCheck(enrollment.student_id, enrollment, None)

    async def deletions_due(self, limit: int = 50) -> list[Enrollment]:
        async with self.db.transaction() as session:
            return list(
                (
                    await session.execute(
                        select(Enrollment)
                        .where(Enrollment.status == "deleting", Enrollment.next_delete_at <= self.clock())
                        .limit(limit)
                    )
                ).scalars()
            )

    async def deletion_done(self, enrollment: Enrollment, receipt: dict[str, Any], actor: str) -> None:
        async with self.db.transaction() as session:
            result = await session.execute(
                update(Enrollment)
                .where(Enrollment.id == enrollment.id, Enrollment.status == "deleting")
                .values(status="deleted", deleted_at=self.clock(), next_delete_at=None)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return
            await audit.append(
                session,
                self.keyring,
                chain=enrollment.school_id,
                actor=actor,
                action="enrollment.deleted",
                object_type="enrollment",
                object_id=enrollment.id,
                data={
                    "provider": enrollment.provider,
                    "reason": enrollment.deletion_reason,
                    "receipt": receipt,
                },
            )
            emit(
                session,
                school_id=enrollment.school_id,
                event_type="enrollment.deleted",
                data={
                    "enrollment_id": enrollment.id,
                    "student": enrollment.student_id,
                    "reason": enrollment.deletion_reason,
                },
            )

    async def deletion_retry(self, enrollment: Enrollment, backoff: timedelta) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(Enrollment)
                .where(Enrollment.id == enrollment.id)
                .values(next_delete_at=self.clock() + backoff, delete_attempts=Enrollment.delete_attempts + 1)
            )
