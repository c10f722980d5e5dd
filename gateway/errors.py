"""Errors as types carrying their HTTP status and stable ``code``, rendered as RFC 9457 problems.

    ProblemError (status, code)            base; every API error is one of these
    ├── BadRequest          400            idempotency_key_missing, idempotency_key_invalid,
    │                                      malformed_body (written by gateway.api.malformed),
    │                                      on_behalf_of_required
    ├── Unauthorized        401            signature_*, digest_*, nonce_reused, nonce_unverifiable, key_*,
    │                                      device_revoked, token_invalid
    ├── Forbidden           403            forbidden, not_guardian
    ├── NotFound            404            not_found
    ├── MethodNotAllowed    405            method_not_allowed
    ├── RequestTimeout      408            request_timeout (written by the HTTP server, gateway/server.py)
    ├── Conflict            409            duplicate_order, idempotency_key_in_use, cancel_window_closed,
    │                                      not_cancelable, not_refundable, refund_exceeds_amount,
    │                                      provider_refused, ...
    ├── PayloadTooLarge     413            payload_too_large
    ├── Unprocessable       422            validation_error, idempotency_key_reused,
    │                                      biometric_data_not_accepted, routing_invalid,
    │                                      non_face_required, funding_source_required,
    │                                      endpoint_not_allowed, sandbox_credential_in_production,
    │                                      limit_above_ceiling, ...
    ├── TooManyRequests     429            rate_limited
    ├── BadGateway          502            provider_check_failed
    └── Unavailable         503            not_ready, server_busy (written by the HTTP server),
                                           database_unavailable

Every code a client can see is declared once in ``CODES`` so the OpenAPI document lists them.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "CODES",
    "BadGateway",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ProblemError",
    "RequestTimeout",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "problem_body",
]

# code -> (status, title). The one list of every problem code the API emits.
CODES: dict[str, tuple[int, str]] = {
    "idempotency_key_missing": (400, "Idempotency-Key header is required"),
    "idempotency_key_invalid": (400, "Idempotency-Key must be 1-255 visible ASCII characters"),
    "malformed_body": (
        400,
        "The request cannot be read: not UTF-8, not JSON, nested deeper than 32, or a NUL character",
    ),
    "signature_missing": (401, "Request is not signed"),
    "signature_invalid": (401, "Signature does not verify"),
    "signature_malformed": (401, "Signature headers are malformed"),
    "signature_components_missing": (401, "Signature does not cover the required components"),
    "signature_expired": (401, "Signature 'created' is outside the allowed clock skew, or 'expires' passed"),
    "digest_missing": (401, "Content-Digest is required on requests with a body"),
    "digest_mismatch": (401, "Body does not match Content-Digest"),
    "nonce_missing": (401, "Signature has no nonce"),
    "nonce_reused": (401, "Nonce was already used"),
    "nonce_unverifiable": (401, "Nonce cannot be checked for reuse right now; sign the request again"),
    "alg_mismatch": (401, "Signature algorithm is not the one registered for this key"),
    "key_unknown": (401, "Unknown key id"),
    "key_retired": (401, "Key has been retired"),
    "device_revoked": (401, "Device has been revoked"),
    "token_invalid": (401, "Bearer token is missing or invalid"),
    "on_behalf_of_required": (
        400,
        "Guardian paths need CampusPay-On-Behalf-Of: the guardian's id (or a 14-17 student's own id)",
    ),
    "forbidden": (403, "Not allowed for this caller"),
    "not_guardian": (403, "The caller acts for someone who is not this student's guardian"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "duplicate_order": (409, "A payment for this merchant_order_id is already processing or paid"),
    "idempotency_key_in_use": (409, "A request with this Idempotency-Key is still executing"),
    "cancel_window_closed": (409, "The cancel window for this payment has closed"),
    "not_cancelable": (409, "This payment cannot be canceled"),
    "not_refundable": (409, "This payment cannot be refunded"),
    "refund_exceeds_amount": (409, "Refunds would exceed the amount paid"),
    "refund_in_progress": (409, "Another refund of this payment is still being resolved"),
    "key_limit_reached": (409, "A device has at most two active keys"),
    "last_active_key": (409, "A device's last active key cannot be retired; revoke the device instead"),
    "already_exists": (409, "Already exists"),
    "provider_refused": (409, "The provider refused the change; detail gives its reason"),
    "endpoint_disabled": (409, "This webhook endpoint is disabled; enable it first"),
    "event_not_relayed": (409, "This event has no sequence yet; it is delivered within a second"),
    "request_timeout": (408, "The request was not received in time"),
    "payload_too_large": (413, "Request body is too large"),
    "validation_error": (422, "Request is not valid"),
    "idempotency_key_reused": (422, "Idempotency-Key was used with a different request"),
    "biometric_data_not_accepted": (422, "Face payments accept provider face tokens only"),
    "unknown_adapter": (422, "No adapter with that name"),
    "provider_not_configured": (422, "The school has not configured this provider"),
    "endpoint_not_allowed": (422, "This endpoint's address is not allowed in this environment"),
    "sandbox_credential_in_production": (
        422,
        "A credential published for the sandbox is refused in production",
    ),
    "store_unknown": (422, "Unknown store_id"),
    "routing_invalid": (422, "The routing rules are not valid; see reasons"),
    "limit_above_ceiling": (422, "A limit is above the school's ceiling for it"),
    "non_face_required": (422, "Card payment must stay available while face payment is on"),
    "funding_source_required": (422, "A bank co-branded card must be bound to a bank agreement"),
    "funding_source_invalid": (422, "That funding source cannot fund this card"),
    "funding_unsupported": (422, "The adapter does not reach that kind of funding source"),
    "consent_bundled": (422, "A face-consent notice must stand alone, not be bundled into general terms"),
    "notice_incomplete": (422, "The consent notice does not state everything required"),
    "notice_mismatch": (422, "The consent does not name the notice's exact version and hash"),
    "consent_signer_invalid": (422, "The signer does not fit the student's age band"),
    "consent_term_required": (422, "A consent needs a finite end date"),
    "consent_required": (422, "An active consent is required"),
    "notification_rejected": (422, "The provider notification was not accepted"),
    "rate_limited": (429, "Too many requests"),
    "not_ready": (503, "Not ready"),
    "server_busy": (503, "Too many open connections; retry shortly"),
    "database_unavailable": (503, "The gateway cannot reach its database right now; retry shortly"),
    "provider_check_failed": (502, "The provider round trip failed"),
    "internal_error": (500, "Internal error"),
}


def problem_body(
    code: str, detail: str | None = None, *, request_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    status, title = CODES[code]
    body: dict[str, Any] = {
        "type": f"urn:campuspay:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
        "request_id": request_id,
    }
    body.update(extra)
    return body


class ProblemError(Exception):
    """An API error. Subclasses fix the status; ``code`` must be one of ``CODES``."""

    status: ClassVar[int] = 500

    def __init__(
        self,
        code: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        if code not in CODES:
            raise ValueError(f"undeclared problem code {code!r}")
        if CODES[code][0] != self.status:
            raise ValueError(f"code {code!r} is {CODES[code][0]}, not {self.status}")
        super().__init__(detail or CODES[code][1])
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class BadRequest(ProblemError):
    status = 400


class Unauthorized(ProblemError):
    status = 401


class Forbidden(ProblemError):
    status = 403


class NotFound(ProblemError):
    status = 404

    def __init__(self, detail: str | None = None) -> None:
        super().__init__("not_found", detail)


class MethodNotAllowed(ProblemError):
    status = 405


class Conflict(ProblemError):
    status = 409


class RequestTimeout(ProblemError):
    status = 408


class PayloadTooLarge(ProblemError):
    status = 413


class Unprocessable(ProblemError):
    status = 422


class TooManyRequests(ProblemError):
    status = 429


class Unavailable(ProblemError):
    status = 503


class BadGateway(ProblemError):
    status = 502
