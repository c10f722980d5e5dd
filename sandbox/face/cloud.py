"""The face cloud's state and rules: per-school groups, enrolments, 1:N identification, face tokens.

`FaceCloud` implements `sandbox.face.directory.FaceDirectory`, which the sandbox Alipay calls to
resolve and use up face tokens. Methods never await, so under asyncio each runs as one step.

Errors (FaceError, each with an HTTP status and a stable code):

    INVALID_REQUEST   422  the body or query does not fit the API
    INVALID_IMAGE     422  not base64 of a PNG or raw RGB square image (see images.py)
    CONSENT_REQUIRED  422  enrolment without a consent reference
    LIVENESS_FAILED   422  the terminal's liveness check said no
    NO_MATCH          404  nobody in the school's group is similar enough
    AMBIGUOUS_MATCH   409  two students of the group are both similar, too close to tell apart
    USER_NOT_ENROLLED 404  a test token for a student with no (live) enrolment in the group
    USER_NOT_FOUND    404  no such user in that school's group
    INTERNAL_ERROR    500  only when a fault rule asks for it
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sandbox.face.config import FaceConfig
from sandbox.face.directory import FaceToken, FaceUser
from sandbox.face.encoder import Embedding, FaceEncoder
from sandbox.face.synthetic import Image, synthetic_face
from sandbox.face.vault import SealedTemplate, TemplateVault
from sandbox.testvalues import FACE_USERS

__all__ = ["TOKEN_ALPHABET", "TOKEN_TTL_S", "FaceCloud", "FaceError"]

PROVIDER = "face"
TOKEN_TTL_S = 300
TOKEN_ALPHABET = string.ascii_letters + string.digits
TOKEN_MEMORY = 100_000  # tokens remembered (oldest forgotten first), expired or not
Recorder = Callable[..., Any]


class FaceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class _Enrolment:
    user: FaceUser
    template: SealedTemplate | None  # None once deleted


class FaceCloud:
    """All face groups of one sandbox. `now` is the sandbox clock, `record` its event log."""

    def __init__(
        self,
        config: FaceConfig,
        now: Callable[[], float],
        record: Recorder,
        encoder: FaceEncoder | None = None,
    ) -> None:
        self.config = config
        self.encoder = encoder if encoder is not None else FaceEncoder(config)
        self._now = now
        self._record = record
        self._vault = TemplateVault()
        self._users: dict[str, _Enrolment] = {}
        self._groups: dict[str, dict[str, str]] = {}  # school -> student -> live user_id
        self._tokens: dict[str, FaceToken] = {}
        self.reset()

    def now(self) -> float:
        """The sandbox clock (Unix seconds), as tokens are issued and expire by it."""
        return self._now()

    def reset(self) -> None:
        """Forget everything, then enrol the fixed test users (sandbox.testvalues.FACE_USERS)."""
        self._users.clear()
        self._groups.clear()
        self._tokens.clear()
        for fixed in FACE_USERS:
            if fixed.user_id is not None and fixed.agreement_no is not None and fixed.consent_ref:
                user = FaceUser(
                    fixed.user_id, fixed.school, fixed.student, fixed.agreement_no, fixed.consent_ref
                )
                self._store(user, self.encoder.embed(synthetic_face(fixed.school, fixed.student, 0)))

    # --- enrolment -------------------------------------------------------------------------------
    def enroll(self, school: str, student: str, image: Image, consent_ref: str | None) -> FaceUser:
        """A new provider user and withholding agreement for the student; any older one is deleted."""
        if not consent_ref or not consent_ref.strip():
            raise FaceError(422, "CONSENT_REQUIRED", "no consent reference, no enrolment")
        template = self.encoder.embed(image)
        user = FaceUser(self._new_id("2088", 12), school, student, self._new_agreement_no(), consent_ref)
        previous = self._groups.get(school, {}).get(student)
        if previous is not None:
            self._delete(self._users[previous], reason="re-enrolled")
        self._store(user, template)
        self._record(
            PROVIDER,
            "face.enrolled",
            school,
            student=student,
            user_id=user.user_id,
            agreement_no=user.agreement_no,
            consent_ref=consent_ref,
            image_pixels=int(image.shape[0] * image.shape[1]),
            replaced_user_id=previous,
        )
        return user

    def active_user(self, school: str, student: str) -> FaceUser | None:
        user_id = self._groups.get(school, {}).get(student)
        return self._users[user_id].user if user_id is not None else None

    def group(self, school: str) -> list[FaceUser]:
        """The live (not deleted) users of a school's face group."""
        return [self._users[user_id].user for user_id in self._groups.get(school, {}).values()]

    def template(self, user_id: str) -> Embedding | None:
        """The decrypted template of a live user (for matching, and for tests)."""
        enrolment = self._users.get(user_id)
        if enrolment is None or enrolment.template is None:
            return None
        user = enrolment.user
        return self._vault.open(enrolment.template, school=user.school, user_id=user.user_id)

    def sealed_template(self, user_id: str) -> SealedTemplate | None:
        """The template as stored: ciphertext only."""
        enrolment = self._users.get(user_id)
        return enrolment.template if enrolment is not None else None

    # --- identification --------------------------------------------------------------------------
    def scores(self, school: str, image: Image) -> list[tuple[float, FaceUser]]:
        """Cosine similarity of the image to every live user of the school's group, best first."""
        probe = self.encoder.embed(image)
        scored = []
        for user in self.group(school):
            template = self.template(user.user_id)
            if template is not None and template.shape == probe.shape:
                scored.append((float(np.dot(template, probe)), user))
        return sorted(scored, key=lambda pair: pair[0], reverse=True)

    def identify(self, school: str, device_id: str, image: Image, *, liveness: bool = True) -> FaceToken:
        """1:N within the school's group only: a face token for the one student the image shows."""
        size = int(image.shape[0] * image.shape[1])
        if not liveness:
            self._identified(school, device_id, size, "LIVENESS_FAILED")
            raise FaceError(422, "LIVENESS_FAILED", "the terminal's liveness check failed")
        scored = self.scores(school, image)
        best = scored[0] if scored else None
        runner_up = scored[1] if len(scored) > 1 else None
        threshold, margin = self.config.match_threshold, self.config.ambiguity_margin
        if best is None or best[0] < threshold:
            self._identified(school, device_id, size, "NO_MATCH", best=best)
            raise FaceError(404, "NO_MATCH", f"no student of {school!r} matches this face")
        if runner_up is not None and runner_up[0] >= threshold and best[0] - runner_up[0] < margin:
            self._identified(school, device_id, size, "AMBIGUOUS_MATCH", best=best, runner_up=runner_up)
            raise FaceError(409, "AMBIGUOUS_MATCH", "two students of the group match this face too closely")
        self._identified(school, device_id, size, "MATCHED", best=best, runner_up=runner_up)
        return self.mint_token(best[1], source="identify", device_id=device_id)

    def _identified(
        self,
        school: str,
        device_id: str,
        image_pixels: int,
        outcome: str,
        best: tuple[float, FaceUser] | None = None,
        runner_up: tuple[float, FaceUser] | None = None,
    ) -> None:
        self._record(
            PROVIDER,
            "face.identify",
            school,
            device_id=device_id,
            image_pixels=image_pixels,
            outcome=outcome,
            best_user_id=best[1].user_id if best else None,
            score=round(best[0], 4) if best else None,
            runner_up_score=round(runner_up[0], 4) if runner_up else None,
        )

    # --- tokens ----------------------------------------------------------------------------------
    def mint_token(self, user: FaceUser, *, source: str, device_id: str | None = None) -> FaceToken:
        now = self.now()
        value = "fp" + "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(33))
        token = FaceToken(value, user.school, user.user_id, now, now + TOKEN_TTL_S, None)
        self._tokens[value] = token
        while len(self._tokens) > TOKEN_MEMORY:
            del self._tokens[next(iter(self._tokens))]
        self._record(
            PROVIDER,
            "face.token_minted",
            user.school,
            face_token=value,
            user_id=user.user_id,
            student=user.student,
            source=source,
            device_id=device_id,
            expires_at=token.expires_at,
        )
        return token

    def test_token(self, school: str, student: str) -> FaceToken:
        """The contract's shortcut: a face token for an enrolled student, no image needed."""
        user = self.active_user(school, student)
        if user is None:
            raise FaceError(404, "USER_NOT_ENROLLED", f"{student!r} is not enrolled in face group {school!r}")
        return self.mint_token(user, source="test_token")

    # --- FaceDirectory ---------------------------------------------------------------------------
    def lookup_token(self, token: str) -> FaceToken | None:
        """The token as issued (None if never issued); expiry and use are the caller's to judge."""
        return self._tokens.get(token)

    def use_token(self, token: str, trade_key: str) -> bool:
        """Mark the token used by `trade_key`. True if now (or already) used by that same trade.

        False for an unknown token, one used by another trade, or an unused one whose user was
        deleted. Expiry is not checked here: the caller judges it first (a retry of the same
        trade after expiry still answers True).
        """
        found = self._tokens.get(token)
        if found is None:
            return False
        if found.used_by is not None:
            return found.used_by == trade_key
        user = self.user(found.user_id)
        if user is None or user.deleted:
            return False
        self._tokens[token] = replace(found, used_by=trade_key)
        self._record(PROVIDER, "face.token_used", found.school, face_token=token, trade_key=trade_key)
        return True

    def user(self, user_id: str) -> FaceUser | None:
        enrolment = self._users.get(user_id)
        return enrolment.user if enrolment is not None else None

    def delete_user(self, school: str, user_id: str) -> bool:
        """Delete an enrolment (template included). True if it existed in that school (deleted
        now or before: a retried deletion is acknowledged again)."""
        enrolment = self._users.get(user_id)
        if enrolment is None or enrolment.user.school != school:
            return False
        self._delete(enrolment, reason="requested")
        return True

    # --- internals -------------------------------------------------------------------------------
    def _store(self, user: FaceUser, template: Embedding) -> None:
        sealed = self._vault.seal(template, school=user.school, user_id=user.user_id)
        self._users[user.user_id] = _Enrolment(user, sealed)
        self._groups.setdefault(user.school, {})[user.student] = user.user_id

    def _delete(self, enrolment: _Enrolment, *, reason: str) -> None:
        user = enrolment.user
        already = user.deleted
        if not already:
            enrolment.user = replace(user, deleted=True)
            enrolment.template = None
            group = self._groups.get(user.school, {})
            if group.get(user.student) == user.user_id:
                del group[user.student]
        self._record(
            PROVIDER,
            "face.deleted",
            user.school,
            user_id=user.user_id,
            student=user.student,
            reason=reason,
            already_deleted=already,
        )

    def _new_id(self, prefix: str, digits: int) -> str:
        while True:
            candidate = prefix + "".join(secrets.choice(string.digits) for _ in range(digits))
            if candidate not in self._users:
                return candidate

    def _new_agreement_no(self) -> str:
        taken = {enrolment.user.agreement_no for enrolment in self._users.values()}
        while True:
            candidate = "2022" + "".join(secrets.choice(string.digits) for _ in range(16))
            if candidate not in taken:
                return candidate
