"""What the sandbox's Alipay needs from the sandbox's face cloud (one sandbox, shared state).

The face cloud (sandbox/face) implements ``FaceDirectory``; the Alipay gateway
(sandbox/alipay) only calls these methods, so the two providers stay separate modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["FaceDirectory", "FaceToken", "FaceUser"]


@dataclass(frozen=True)
class FaceUser:
    user_id: str  # Alipay-style buyer id: "2088" + 12 digits
    school: str  # the provider-side face group (one per school)
    student: str  # the school's student reference given at enrolment
    agreement_no: str  # the guardian's withholding agreement for this student
    consent_ref: str
    deleted: bool = False


@dataclass(frozen=True)
class FaceToken:
    token: str  # "fp" + 33 characters
    school: str  # the face group the token was issued in
    user_id: str
    issued_at: float  # sandbox clock, unix seconds
    expires_at: float
    used_by: str | None  # the out_trade_no of the trade that used it up, if any


class FaceDirectory(Protocol):
    def lookup_token(self, token: str) -> FaceToken | None:
        """The token as issued (None if never issued). Expiry and use are the caller's to judge."""
        ...

    def use_token(self, token: str, trade_key: str) -> bool:
        """Mark the token used by ``trade_key``. True if now (or already) used by that same trade."""
        ...

    def user(self, user_id: str) -> FaceUser | None: ...

    def delete_user(self, school: str, user_id: str) -> bool:
        """Delete an enrolment (templates included). True if it existed in that school."""
        ...
