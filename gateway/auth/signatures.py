"""RFC 9421 device signatures (with RFC 9530 Content-Digest), verified with the maintained
``http-message-signatures`` library.

The verifier, not the message, decides what is acceptable: the key comes from our database by
``keyid``; the algorithm is the one registered for that key (a signature claiming another
``alg`` is refused before any cryptography runs); the covered components must include
``@method`` and ``@target-uri`` (built from CAMPUSPAY_PUBLIC_BASE_URL, so a TLS-terminating
proxy in front does not break signatures), ``content-digest`` when there is a body and
``idempotency-key`` when that header is sent. Each of those headers, and every other header the
signature covers, must come once (gateway.auth.headers).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import http_sf
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from http_message_signatures import (
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from http_message_signatures.digests import ContentDigest

from gateway.auth.headers import SIGNATURE_HEADERS, RequestHeaders
from gateway.errors import Unauthorized

__all__ = ["ALGORITHMS", "SignatureParams", "parse_signature_params", "verify_signature"]

ALGORITHMS: dict[str, Any] = {"ed25519": algorithms.ED25519, "hmac-sha256": algorithms.HMAC_SHA256}
LABEL = "sig1"


@dataclass(frozen=True)
class SignatureParams:
    key_id: str
    alg: str | None
    created: int
    nonce: str | None
    expires: int | None
    components: tuple[str, ...]


@dataclass
class _Message:
    method: str
    url: str
    headers: dict[str, str]


class _Verifier(HTTPMessageVerifier):
    """The library's verifier without its own timestamp checks.

    The library compares ``created`` and ``expires`` with the host's wall clock; the gateway
    checks both against its own clock instead (``check_freshness``, the clock the ``Date``
    header reports), so a second, different notion of "now" must not refuse (or admit) a
    signature.
    """

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


class _OneKey(HTTPSignatureKeyResolver):
    def __init__(self, key_id: str, key: Any) -> None:
        self.key_id, self.key = key_id, key

    def resolve_public_key(self, key_id: str) -> Any:
        return self.key if key_id == self.key_id else None

    def resolve_private_key(self, key_id: str) -> Any:  # pragma: no cover - verification only
        raise KeyError(key_id)


def parse_signature_params(headers: RequestHeaders) -> SignatureParams:
    """Read (without trusting) the parameters of the ``sig1`` signature."""
    headers.require_single(SIGNATURE_HEADERS)
    raw_input, raw_sig = headers.get("signature-input"), headers.get("signature")
    if not raw_input or not raw_sig:
        raise Unauthorized("signature_missing")
    try:
        parsed: Any = http_sf.parse(raw_input.encode(), tltype="dictionary")
    except Exception as exc:
        raise Unauthorized("signature_malformed", "Signature-Input is not a structured dictionary") from exc
    if LABEL not in parsed or len(parsed) != 1:
        raise Unauthorized("signature_malformed", f"expected exactly one signature labelled {LABEL}")
    members, params = parsed[LABEL]
    if not isinstance(members, list):
        raise Unauthorized("signature_malformed", "signature input must be an inner list")
    key_id, created = params.get("keyid"), params.get("created")
    if not isinstance(key_id, str) or type(created) is not int:
        raise Unauthorized("signature_malformed", "keyid and created are required")
    alg, nonce, expires = params.get("alg"), params.get("nonce"), params.get("expires")
    if expires is not None and type(expires) is not int:
        raise Unauthorized("signature_malformed", "expires must be an integer")
    return SignatureParams(
        key_id=key_id,
        alg=alg if isinstance(alg, str) else None,
        created=created,
        nonce=nonce if isinstance(nonce, str) else None,
        expires=expires,
        components=tuple(str(item[0]) for item in members),
    )


def check_freshness(params: SignatureParams, now: dt.datetime, max_skew: int) -> None:
    if abs(now.timestamp() - params.created) > max_skew:
        raise Unauthorized("signature_expired", f"created must be within {max_skew} s of the gateway's clock")
    # The signer may cut the window short (RFC 9421 section 2.3): past ``expires`` it is over,
    # however recent ``created`` is.
    if params.expires is not None and now.timestamp() >= params.expires:
        raise Unauthorized(
            "signature_expired", "the signature's expires time has passed on the gateway's clock"
        )
    if not params.nonce:
        raise Unauthorized("nonce_missing")


def verify_signature(
    *,
    params: SignatureParams,
    registered_alg: str,
    key_material: str,
    method: str,
    target_uri: str,
    headers: RequestHeaders,
    body: bytes,
) -> None:
    """Raise ``Unauthorized`` unless the request carries a valid signature by this key.

    Freshness (``created`` against the gateway's clock) is ``check_freshness``'s job."""
    if params.alg != registered_alg:
        raise Unauthorized("alg_mismatch", f"this key signs with {registered_alg}")
    required = ["@method", "@target-uri"]
    if body:
        required.append("content-digest")
    if "idempotency-key" in headers:
        required.append("idempotency-key")
    missing = [c for c in required if c not in params.components]
    if missing:
        raise Unauthorized("signature_components_missing", f"signature must cover {', '.join(missing)}")
    headers.require_single(c for c in params.components if not c.startswith("@"))
    if body:
        digest = headers.get("content-digest")
        if not digest:
            raise Unauthorized("digest_missing")
        try:
            ContentDigest.verify(digest, body)
        except Exception as exc:
            raise Unauthorized("digest_mismatch") from exc
    if registered_alg == "ed25519":
        key: Any = load_pem_public_key(key_material.encode())
    else:
        key = key_material.encode()
    verifier = _Verifier(
        signature_algorithm=ALGORITHMS[registered_alg], key_resolver=_OneKey(params.key_id, key)
    )
    message = _Message(method=method.upper(), url=target_uri, headers=dict(headers))
    try:
        # Freshness was already checked against the gateway's clock (check_freshness).
        verifier.verify(message, max_age=None, expect_label=None)
    except InvalidSignature as exc:
        raise Unauthorized("signature_invalid") from exc
    except Exception as exc:  # the library raises its base exception for malformed components
        raise Unauthorized("signature_malformed", str(exc)[:200]) from exc
