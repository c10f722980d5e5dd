"""E-card adapter: consume, query, reverse, refund over the signed JSON dialect.

Mapping rule: only a verified ``SUCCESS`` or a verified business ``FAIL`` is final. Everything
else -- timeouts, 5xx, ``ERROR`` results, unsigned or wrongly signed answers, conflicts on our
own reference -- is ``UNKNOWN`` and goes to recovery, which queries by the same ``order_ref``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from adapters.base import (
    AdapterConfigError,
    BaseAdapter,
    Capabilities,
    CardCredential,
    Operation,
    Outcome,
    PaymentRequest,
    ProviderConfig,
    ProviderResult,
    ProviderUnreachable,
    RefundRequest,
)
from adapters.ecard.wire import ResponseNotVerified, sign_request, verify_response

__all__ = ["EcardAdapter"]

log = logging.getLogger(__name__)

# Business refusals: the provider verifiably moved nothing.
_FINAL_FAILURES = frozenset(
    {
        "CARD_NOT_FOUND",
        "CARD_LOST",
        "CARD_FROZEN",
        "INSUFFICIENT_BALANCE",
        "PIN_REQUIRED",
        "PIN_INVALID",
        "PIN_LOCKED",
        "ORDER_REVERSED",
        "REFUND_EXCEEDS_AMOUNT",
        "NOT_REFUNDABLE",
        "ORDER_NOT_FOUND",
    }
)
_QUERY_STATUS = {
    "SUCCESS": Outcome.SUCCEEDED,
    "FAILED": Outcome.FAILED,
    "REVERSED": Outcome.REVERSED,
    "NOT_FOUND": Outcome.NOT_FOUND,
}
_SAFE_FIELDS = frozenset(
    {
        "result",
        "code",
        "message",
        "status",
        "order_ref",
        "refund_ref",
        "txn_id",
        "amount",
        "refunded_amount",
        "refunded_total",
        "reversed_amount",
        "paid_at",
        "merchant_id",
    }
)


def _scrub(body: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only fields that carry no secrets, PINs, card numbers or balances."""
    return {k: v for k, v in body.items() if k in _SAFE_FIELDS}


class EcardAdapter(BaseAdapter):
    name: ClassVar[str] = "ecard"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({"card"}),
        funding=frozenset({"ecard_account"}),
        operations=frozenset(
            {Operation.PAY, Operation.QUERY, Operation.CANCEL, Operation.REFUND, Operation.CHECK}
        ),
    )

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config, http)
        try:
            self._merchant = config.credentials["merchant_id"]
            self._secret = config.credentials["secret"]
        except KeyError as exc:
            raise AdapterConfigError(f"ecard credentials need {exc.args[0]!r}") from exc
        parts = urlsplit(config.endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AdapterConfigError("ecard endpoint must be an absolute http(s) URL")
        self._base = config.endpoint.rstrip("/")
        self._base_path = parts.path.rstrip("/")
        self._timeout = float(config.options.get("timeout_seconds", 10.0))

    async def _call(
        self, method: str, path: str, payload: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]] | ProviderResult:
        """One signed round trip: the verified (status, body), or an UNKNOWN result."""
        signed = sign_request(
            merchant_id=self._merchant,
            secret=self._secret,
            method=method,
            path=self._base_path + path,
            payload=payload,
            now=int(time.time()),
        )
        try:
            # httpx's timeouts bound each read, not the whole exchange (and in-process transports
            # ignore them), so the total is bounded here as well.
            async with asyncio.timeout(self._timeout):
                response = await self.http.request(
                    method,
                    self._base + path,
                    content=signed.body or None,
                    headers=signed.headers,
                    timeout=self._timeout,
                )
        except TimeoutError:
            log.warning("ecard %s %s: no answer within %.1f s", method, path, self._timeout)
            return ProviderResult(Outcome.UNKNOWN, code="TIMEOUT", retryable=True)
        except httpx.ConnectError as exc:
            # No connection, so no request bytes reached the provider.
            raise ProviderUnreachable(f"ecard unreachable: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            log.warning("ecard %s %s: transport error %s", method, path, type(exc).__name__)
            return ProviderResult(
                Outcome.UNKNOWN, code="TRANSPORT_ERROR", message=type(exc).__name__, retryable=True
            )
        try:
            body = verify_response(
                secret=self._secret,
                status=response.status_code,
                request_nonce=signed.nonce,
                headers={k.lower(): v for k, v in response.headers.items()},
                body=response.content,
            )
        except ResponseNotVerified as exc:
            log.warning("ecard %s %s: HTTP %s, %s", method, path, response.status_code, exc)
            return ProviderResult(
                Outcome.UNKNOWN, code="UNVERIFIED_RESPONSE", message=str(exc), retryable=True
            )
        log.debug("ecard %s %s: HTTP %s %s", method, path, response.status_code, body.get("result"))
        return response.status_code, body

    @staticmethod
    def _failure_or_unknown(status: int, body: Mapping[str, Any]) -> ProviderResult:
        code = str(body.get("code") or "")
        message = str(body.get("message") or "")
        if body.get("result") == "FAIL" and code in _FINAL_FAILURES:
            return ProviderResult(Outcome.FAILED, code=code, message=message, raw=_scrub(body))
        if status == 401:
            # A signed refusal of our own credentials: nothing was applied.
            return ProviderResult(
                Outcome.FAILED, code=code or "PROVIDER_AUTH", message=message, raw=_scrub(body)
            )
        return ProviderResult(
            Outcome.UNKNOWN,
            code=code or f"HTTP_{status}",
            message=message,
            raw=_scrub(body),
            retryable=status >= 500,
        )

    async def pay(self, request: PaymentRequest) -> ProviderResult:
        if not isinstance(request.credential, CardCredential):
            raise AdapterConfigError("the ecard adapter pays by card only")
        payload: dict[str, Any] = {
            "order_ref": request.reference,
            "card_no": request.credential.card_no,
            "amount": request.amount,
            "currency": request.currency,
            "terminal_id": request.terminal_ref,
            "store_ref": request.store_ref,
        }
        if request.credential.pin is not None:
            payload["pin"] = request.credential.pin
        if request.description:
            payload["description"] = request.description[:128]
        answer = await self._call("POST", "/v1/consume", payload)
        if isinstance(answer, ProviderResult):
            return answer
        status, body = answer
        if status == 200 and body.get("result") == "SUCCESS" and body.get("status") == "SUCCESS":
            return ProviderResult(
                Outcome.SUCCEEDED,
                provider_txn_id=body.get("txn_id"),
                amount=body.get("amount"),
                raw=_scrub(body),
                paid_at=_parse_time(body.get("paid_at")),
            )
        return self._failure_or_unknown(status, body)

    async def query(self, reference: str) -> ProviderResult:
        answer = await self._call("POST", "/v1/query", {"order_ref": reference})
        if isinstance(answer, ProviderResult):
            return answer
        status, body = answer
        outcome = _QUERY_STATUS.get(str(body.get("status")))
        if status == 200 and body.get("result") == "SUCCESS" and outcome is not None:
            return ProviderResult(
                outcome,
                provider_txn_id=body.get("txn_id"),
                amount=body.get("amount"),
                code=body.get("code"),
                raw=_scrub(body),
            )
        return self._failure_or_unknown(status, body)

    async def cancel(self, reference: str) -> ProviderResult:
        answer = await self._call("POST", "/v1/reverse", {"order_ref": reference})
        if isinstance(answer, ProviderResult):
            return answer
        status, body = answer
        if status == 200 and body.get("result") == "SUCCESS":
            # REVERSED: given back (or blocked from ever arriving); FAILED: it never moved money.
            outcome = Outcome.REVERSED if body.get("status") == "REVERSED" else Outcome.FAILED
            return ProviderResult(outcome, amount=body.get("reversed_amount"), raw=_scrub(body))
        return self._failure_or_unknown(status, body)

    async def refund(self, request: RefundRequest) -> ProviderResult:
        payload = {
            "order_ref": request.reference,
            "refund_ref": request.refund_reference,
            "amount": request.amount,
        }
        answer = await self._call("POST", "/v1/refund", payload)
        if isinstance(answer, ProviderResult):
            return answer
        status, body = answer
        if status == 200 and body.get("result") == "SUCCESS":
            return ProviderResult(Outcome.SUCCEEDED, amount=body.get("amount"), raw=_scrub(body))
        return self._failure_or_unknown(status, body)

    async def check(self) -> ProviderResult:
        answer = await self._call("POST", "/v1/ping", {})
        if isinstance(answer, ProviderResult):
            return answer
        status, body = answer
        if status == 200 and body.get("result") == "SUCCESS":
            return ProviderResult(Outcome.SUCCEEDED, raw=_scrub(body))
        return self._failure_or_unknown(status, body)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
