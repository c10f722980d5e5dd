"""CampusPay POS client: signed requests, idempotent money calls, safe retries.

This module is self-contained on purpose: it imports only the standard library, ``httpx``,
``cryptography``, ``http_message_signatures`` and ``tenacity``, so a POS vendor can copy this
one file into a terminal's code base. ``docs/signing.md`` describes the same rules for other
languages, with test vectors.

Every device request is signed with RFC 9421 HTTP Message Signatures (label ``sig1``):

- covered components, in this order: ``"@method"``, ``"@target-uri"``, then
  ``"content-digest"`` when the request has a body, then ``"idempotency-key"`` when that header
  is sent;
- parameters, in this order: ``created``, ``keyid``, ``alg`` (``ed25519`` or ``hmac-sha256``),
  ``nonce`` (fresh and random for every request, including every retry);
- ``Content-Digest: sha-256=:<base64>:`` (RFC 9530) on every request with a non-empty body;
- ``@target-uri`` is the gateway's *public* base URL (``scheme://host[:port]``) plus the path
  and query exactly as sent.

Quick start::

    async with CampusPayClient.from_demo(".campuspay/demo.json") as pay:
        result = await pay.create_payment(
            merchant_order_id="ord-0001", amount=1250, method="card",
            credential={"card_no": "8800000000000001"}, store_id="store_1",
        )
        print(result.status_code, result.body["status"])

Errors::

    CampusPayError        an RFC 9457 problem answer (4xx, or 5xx after the retries ran out)
    httpx.TransportError  the network failed on every attempt; the outcome of a money call is
                          unknown: retry later with the same idempotency key, or look the order
                          up with list_payments(merchant_order_id)
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

__all__ = [
    "SIGNATURE_LABEL",
    "CampusPayClient",
    "CampusPayError",
    "DeviceCredentials",
    "Result",
    "generate_ed25519_keypair",
    "new_idempotency_key",
    "new_nonce",
    "sign_request",
]

SIGNATURE_LABEL: Final = "sig1"
"""The signature label the gateway looks for in ``Signature-Input`` and ``Signature``."""

_ALGORITHMS: Final[dict[str, type[algorithms.HTTPSignatureAlgorithm]]] = {
    "ed25519": algorithms.ED25519,
    "hmac-sha256": algorithms.HMAC_SHA256,
}

# Network failures after which the request may or may not have reached the gateway. Retrying
# them is safe only because a retry carries the same Idempotency-Key (see CampusPayClient).
# UnsupportedProtocol / LocalProtocolError are programming errors: retrying cannot help.
_RETRYABLE_TRANSPORT_ERRORS: Final = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def generate_ed25519_keypair() -> tuple[str, str]:
    """Create a device key pair.

    Returns ``(private_key_pem, public_key_pem)``: the private key as unencrypted PKCS#8 PEM
    (keep it on the terminal), the public key as SubjectPublicKeyInfo PEM (give it to the school
    admin, who registers it with ``POST /v1/schools/{school_id}/devices``).
    """
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private_pem, public_pem


def new_nonce() -> str:
    """A fresh signature nonce: 32 URL-safe characters (192 random bits)."""
    return secrets.token_urlsafe(24)


def new_idempotency_key() -> str:
    """A fresh Idempotency-Key (a random UUID, 36 visible ASCII characters)."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class DeviceCredentials:
    """What a terminal signs with: its key id, the algorithm registered for it, and the key.

    ``alg`` is ``"ed25519"`` (``private_key_pem`` is required: PKCS#8 PEM) or ``"hmac-sha256"``
    (``secret`` is required: the ``hsk_…`` string exactly as the gateway issued it; its UTF-8
    bytes are the HMAC key). Keys never appear in ``repr()``.
    """

    key_id: str
    alg: str
    private_key_pem: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    device_id: str | None = None
    _signing_key: ed25519.Ed25519PrivateKey | bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.key_id:
            raise ValueError("key_id is required")
        key: ed25519.Ed25519PrivateKey | bytes
        if self.alg == "ed25519":
            if not self.private_key_pem:
                raise ValueError("alg 'ed25519' needs private_key_pem")
            loaded = serialization.load_pem_private_key(self.private_key_pem.encode("ascii"), password=None)
            if not isinstance(loaded, ed25519.Ed25519PrivateKey):
                raise ValueError("private_key_pem is not an Ed25519 private key")
            key = loaded
        elif self.alg == "hmac-sha256":
            if not self.secret:
                raise ValueError("alg 'hmac-sha256' needs secret")
            key = self.secret.encode("utf-8")
        else:
            raise ValueError(f"unsupported alg {self.alg!r}: use 'ed25519' or 'hmac-sha256'")
        object.__setattr__(self, "_signing_key", key)

    @classmethod
    def from_demo(cls, path: str | Path, alg: str = "ed25519") -> DeviceCredentials:
        """Read the first device registered with ``alg`` from a ``demo.json`` file.

        ``campuspay serve --demo`` writes that file into its data directory.
        """
        demo = _read_demo(path)
        for device in demo.get("devices", []):
            if device.get("alg") == alg:
                return cls(
                    key_id=device["key_id"],
                    alg=alg,
                    private_key_pem=device.get("private_key_pem"),
                    secret=device.get("secret"),
                    device_id=device.get("device_id"),
                )
        raise LookupError(f"{path}: no device with alg {alg!r}")


@dataclass(frozen=True)
class Result:
    """The answer to a money-moving call (create, cancel, refund).

    ``status_code`` is 201 (final), 202 (payment still ``processing``: poll ``get_payment`` or
    wait for the webhook; do not start a new order for the same sale) or 200.
    ``replayed`` is true when the gateway answered from its idempotency store
    (``Idempotent-Replayed: true``), i.e. an earlier attempt with the same key had already run.
    ``idempotency_key`` is the key the call used.
    """

    status_code: int
    body: dict[str, Any]
    replayed: bool
    idempotency_key: str = ""


class CampusPayError(Exception):
    """The gateway refused the request with an RFC 9457 problem (``application/problem+json``).

    ``code`` is the stable snake_case code to branch on (``duplicate_order``,
    ``idempotency_key_reused``, …). An error answer that is not a problem document (a proxy's
    HTML 502, say) gets code ``unexpected_response``. Note that a payment refused by policy or
    by the provider is *not* an error: it is a ``failed`` payment with a ``failure_code``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.body: dict[str, Any] = dict(body or {})
        super().__init__(f"{status} {code}: {detail or title}")

    @property
    def request_id(self) -> str | None:
        """The gateway's request id, to quote to support."""
        value = self.body.get("request_id")
        return value if isinstance(value, str) else None

    @classmethod
    def from_response(cls, response: httpx.Response) -> CampusPayError:
        """Build the error from a non-2xx response (problem+json or not)."""
        body = _json_or_none(response)
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            title = body.get("title")
            detail = body.get("detail")
            return cls(
                response.status_code,
                body["code"],
                title if isinstance(title, str) else response.reason_phrase,
                detail if isinstance(detail, str) else None,
                body,
            )
        return cls(
            response.status_code,
            "unexpected_response",
            response.reason_phrase,
            response.text[:500] or None,
            body if isinstance(body, dict) else None,
        )


@dataclass
class _SignableRequest:
    """The view of a request ``http_message_signatures`` signs: ``@target-uri`` comes from ``url``."""

    method: str
    url: str
    headers: httpx.Headers


def _public_origin(public_base_url: str) -> str:
    parts = urllib.parse.urlsplit(public_base_url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError(f"public_base_url must be scheme://host[:port], got {public_base_url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def sign_request(
    request: httpx.Request,
    creds: DeviceCredentials,
    *,
    public_base_url: str | None = None,
    created: int | None = None,
    nonce: str | None = None,
) -> None:
    """Sign ``request`` in place: set ``Content-Digest`` (when it has a body), ``Signature-Input``
    and ``Signature``, replacing any earlier ones.

    ``public_base_url`` is the gateway's public ``scheme://host[:port]`` when the terminal
    reaches it through a proxy or another name (the gateway's ``CAMPUSPAY_PUBLIC_BASE_URL``);
    by default the request's own URL is used. ``created`` (unix seconds) and ``nonce`` are fixed
    only to reproduce test vectors: a real request must use the current time and a fresh nonce,
    which is the default. The body must be in memory (``content=`` bytes); sign *after* the body
    is final and send exactly those bytes.
    """
    target = request.url.raw_path.decode("ascii")
    if public_base_url is None:
        origin = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
    else:
        origin = _public_origin(public_base_url)
    body = request.read()
    for name in ("content-digest", "signature-input", "signature"):
        if name in request.headers:
            del request.headers[name]
    covered = ["@method", "@target-uri"]
    if body:
        covered.append("content-digest")
    if "idempotency-key" in request.headers:
        covered.append("idempotency-key")
    signer = HTTPMessageSigner(
        signature_algorithm=_ALGORITHMS[creds.alg],
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={creds.key_id: creds._signing_key}),
    )
    signer.sign(
        _SignableRequest(request.method, origin + target, request.headers),
        key_id=creds.key_id,
        created=dt.datetime.fromtimestamp(int(time.time()) if created is None else created, tz=dt.UTC),
        nonce=new_nonce() if nonce is None else nonce,
        label=SIGNATURE_LABEL,
        covered_component_ids=tuple(covered),
        # Given the body, the library adds Content-Digest (covered where listed above). The
        # contract digests only non-empty bodies; the library's verifier accepts that too.
        body=body if body else None,
    )


class _RetryableResponse(Exception):
    """Carries a response that deserves another attempt through tenacity's retry loop."""

    def __init__(self, response: httpx.Response, retry_after: float | None) -> None:
        super().__init__(response.status_code)
        self.response = response
        self.retry_after = retry_after


class CampusPayClient:
    """Async client for the CampusPay POS API, used as ``async with CampusPayClient(...) as pay``.

    Every attempt is signed afresh (new ``created`` and ``nonce``: the gateway refuses a nonce it
    has seen, so a retry can never reuse the previous attempt's signature).

    **Retries and idempotency.** Each money-moving call (create, cancel, refund) carries an
    ``Idempotency-Key`` -- a new UUID unless you pass one -- and every retry of that call sends
    the *same* key and the *same* body bytes. The gateway stores the first outcome under the key,
    so a retry either replays that outcome or, while the first attempt still runs, answers 409
    ``idempotency_key_in_use``; it never executes the payment twice. That is what makes it safe
    to retry after the cases where we cannot know whether the gateway acted:

    - a transport error (connect/read timeout, connection reset, connection closed mid-answer);
    - a 5xx answer;
    - 429 (rate limited; ``Retry-After`` is honoured, capped at ``retry_after_cap``);
    - 409 ``idempotency_key_in_use`` (``Retry-After`` honoured, capped);
    - 401 ``nonce_unverifiable`` (the gateway could not check the nonce for reuse, e.g. while
      its Redis is unreachable, and ran nothing; ``Retry-After`` honoured, the retry re-signed).

    Anything else -- 4xx business answers such as 409 ``duplicate_order``, 422 validation or
    ``idempotency_key_reused``, 402, 401 -- is final and raised as :class:`CampusPayError` after
    one attempt: repeating the same request could only get the same answer. Between attempts
    the client waits with exponential backoff and full jitter. After ``max_retries`` retries the
    last answer is raised (or the last transport error propagates): the outcome is then unknown,
    and the terminal should retry later *with the same key* (pass ``idempotency_key=``; keys are
    kept at least 24 h) or look the order up with :meth:`list_payments` -- never start a new
    order for the same sale.

    GETs are retried the same way (they are safe). A raw :meth:`request` ``POST`` is retried only
    when it carries an idempotency key.

    Keep ``timeout`` above the gateway's synchronous budget (20 s by default): a payment that
    takes longer is answered with 202 ``processing`` rather than left hanging.
    """

    def __init__(
        self,
        base_url: str,
        creds: DeviceCredentials,
        *,
        public_base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff_initial: float = 0.25,
        backoff_max: float = 8.0,
        retry_after_cap: float = 10.0,
    ) -> None:
        """Create a client.

        ``base_url`` is where the terminal sends requests; ``public_base_url`` (optional) is the
        gateway's public ``scheme://host[:port]`` used in signatures when it differs (a proxy in
        between). ``transport`` replaces the network (tests pass ``httpx.ASGITransport``).
        ``max_retries`` counts retries after the first attempt. ``backoff_initial`` /
        ``backoff_max`` shape the exponential backoff (seconds); ``retry_after_cap`` bounds how
        long a ``Retry-After`` is honoured.
        """
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if public_base_url is not None:
            _public_origin(public_base_url)  # fail at construction, not on the first payment
        self.creds = creds
        self.public_base_url = public_base_url
        self.max_retries = max_retries
        self.retry_after_cap = retry_after_cap
        self._backoff = wait_random_exponential(multiplier=backoff_initial, max=backoff_max)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/json", "User-Agent": "campuspay-python-client"},
        )

    @classmethod
    def from_demo(cls, path: str | Path, alg: str = "ed25519", **kw: Any) -> CampusPayClient:
        """A client for the demo school from ``demo.json`` (its ``base_url`` and a device of ``alg``).

        Extra keyword arguments go to the constructor (``public_base_url``, ``transport``, …).
        """
        demo = _read_demo(path)
        return cls(demo["base_url"], DeviceCredentials.from_demo(path, alg), **kw)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- POS API ---------------------------------------------------------------------------

    async def create_payment(
        self,
        *,
        merchant_order_id: str,
        amount: int,
        method: str,
        credential: Mapping[str, Any],
        store_id: str,
        currency: str = "CNY",
        description: str | None = None,
        terminal_params: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result:
        """Pay: ``POST /v1/payments``.

        ``amount`` is integer fen; ``method`` is ``"face"`` (``credential={"face_token": …}``)
        or ``"card"`` (``credential={"card_no": …, "pin": …}``, PIN optional). Returns 201 with a
        final payment (``succeeded`` or ``failed`` with a ``failure_code`` -- a refusal is not an
        exception) or 202 with ``processing``. Raises :class:`CampusPayError` (e.g. 409
        ``duplicate_order``, 422 validation).
        """
        payload: dict[str, Any] = {
            "merchant_order_id": merchant_order_id,
            "amount": amount,
            "currency": currency,
            "method": method,
            "credential": dict(credential),
            "store_id": store_id,
        }
        if description is not None:
            payload["description"] = description
        if terminal_params is not None:
            payload["terminal_params"] = terminal_params
        return await self._money("/v1/payments", payload, idempotency_key)

    async def get_payment(self, payment_id: str) -> dict[str, Any]:
        """One payment: ``GET /v1/payments/{id}``."""
        return await self._get(f"/v1/payments/{_segment(payment_id)}")

    async def list_payments(self, merchant_order_id: str) -> dict[str, Any]:
        """This device's payments for one order id: ``GET /v1/payments?merchant_order_id=…``.

        Returns the gateway's JSON object; should it answer with a bare JSON array, the array is
        returned as ``{"data": [...]}``.
        """
        return await self._get("/v1/payments", params={"merchant_order_id": merchant_order_id})

    async def cancel_payment(self, payment_id: str, *, idempotency_key: str | None = None) -> Result:
        """Reverse a payment before the store's day ends: ``POST /v1/payments/{id}/cancel``.

        Sent without a body. Raises :class:`CampusPayError` 409 ``cancel_window_closed`` or
        ``not_cancelable``.
        """
        return await self._money(f"/v1/payments/{_segment(payment_id)}/cancel", None, idempotency_key)

    async def refund_payment(
        self,
        payment_id: str,
        *,
        amount: int,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result:
        """Refund all or part (``amount`` in fen): ``POST /v1/payments/{id}/refunds``."""
        payload: dict[str, Any] = {"amount": amount}
        if reason is not None:
            payload["reason"] = reason
        return await self._money(f"/v1/payments/{_segment(payment_id)}/refunds", payload, idempotency_key)

    async def get_refund(self, refund_id: str) -> dict[str, Any]:
        """One refund: ``GET /v1/refunds/{id}``."""
        return await self._get(f"/v1/refunds/{_segment(refund_id)}")

    # -- low level ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        idempotency_key: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one signed request, with retries; return the final response whatever its status.

        ``json`` is serialised once (compact, UTF-8) and the same bytes are sent on every
        attempt. Each attempt is signed with a fresh ``created`` and ``nonce``. Retries follow
        the class rules and happen only for ``GET``/``HEAD`` or when ``idempotency_key`` is set.
        """
        method = method.upper()
        body = _dump_json(json) if json is not None else b""
        headers: dict[str, str] = {}
        if body:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        retry_allowed = method in ("GET", "HEAD") or idempotency_key is not None

        async def attempt() -> httpx.Response:
            req = self._http.build_request(method, path, content=body or None, headers=headers, params=params)
            sign_request(req, self.creds, public_base_url=self.public_base_url)
            response = await self._http.send(req)
            if retry_allowed:
                retry_after = self._retry_after(response)
                if retry_after is not None:
                    raise _RetryableResponse(response, retry_after if retry_after >= 0 else None)
            return response

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1 if retry_allowed else 1),
            wait=self._wait,
            retry=retry_if_exception(
                lambda exc: isinstance(exc, (_RetryableResponse, *_RETRYABLE_TRANSPORT_ERRORS))
            ),
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except _RetryableResponse as exhausted:
            return exhausted.response

    def _retry_after(self, response: httpx.Response) -> float | None:
        """``None``: final answer. Otherwise retry: the server's ``Retry-After`` in seconds, or
        ``-1`` meaning "no hint, use backoff"."""
        status = response.status_code
        in_use = status == 409 and _problem_code(response) == "idempotency_key_in_use"
        # refused before anything ran: a signature made a second later can be checked
        unverifiable = status == 401 and _problem_code(response) == "nonce_unverifiable"
        if not (status >= 500 or status == 429 or in_use or unverifiable):
            return None
        hint = _parse_retry_after(response.headers.get("retry-after"))
        return -1.0 if hint is None else hint

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _RetryableResponse) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry_after_cap)
        return float(self._backoff(state))

    async def _money(self, path: str, payload: dict[str, Any] | None, idempotency_key: str | None) -> Result:
        key = idempotency_key or new_idempotency_key()
        try:
            response = await self.request("POST", path, json=payload, idempotency_key=key)
        except httpx.TransportError as exc:
            exc.add_note(f"outcome unknown: retry with idempotency_key={key!r}")
            raise
        if not response.is_success:
            raise CampusPayError.from_response(response)
        return Result(
            status_code=response.status_code,
            body=_json_object(response),
            replayed=response.headers.get("idempotent-replayed", "").lower() == "true",
            idempotency_key=key,
        )

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        response = await self.request("GET", path, params=params)
        if not response.is_success:
            raise CampusPayError.from_response(response)
        return _json_object(response)


# -- helpers -------------------------------------------------------------------------------------


def _read_demo(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a demo.json object")
    return data


def _dump_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _segment(value: str) -> str:
    # An id is one path segment: "../" or "?" in it must not change which resource is addressed.
    return urllib.parse.quote(value, safe="")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    body = _json_or_none(response)
    if isinstance(body, dict):
        return body
    if isinstance(body, list):
        return {"data": body}
    raise CampusPayError(
        response.status_code,
        "unexpected_response",
        "the gateway did not answer with JSON",
        response.text[:500],
    )


def _problem_code(response: httpx.Response) -> str | None:
    # Read "code" from any JSON error body, not only problem+json: deciding whether to retry
    # must not depend on a proxy preserving the media type.
    body = _json_or_none(response)
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date), else None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
