"""E-card adapter: consume, query, reverse, refund over the signed JSON dialect.

Mapping rule: only a verified ``SUCCESS`` or a verified business ``FAIL`` is final. Everything
else -- timeouts, 5xx, ``ERROR`` results, unsigned or wrongly signed answers, conflicts on our
own reference -- is ``UNKNOWN`` and goes to recovery, which queries by the same ``order_ref``.
A refusal of the request itself (401 signature, timestamp or merchant; 422; 429) is
``UNKNOWN`` with ``refused`` set, never ``FAILED``: it is not about the order (codes.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Literal, TypeVar, cast
from urllib.parse import urlsplit

import httpx

from adapters.base import (
    AdapterConfigError,
    BaseAdapter,
    BillNotReady,
    BillRow,
    BillUnavailable,
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
from adapters.ecard.codes import PAYMENT_FAILURES, request_refusal
from adapters.ecard.statement import parse_statement
from adapters.ecard.types import (
    MAX_OFFLINE_RECORDS,
    BlacklistChange,
    CardReplacement,
    CardStatus,
    CardStatusChange,
    EcardRefused,
    EcardRequestInvalid,
    EcardUnverified,
    OfflineRecord,
    OfflineResult,
    SubsidyWallet,
)
from adapters.ecard.wire import ResponseNotVerified, sign_request, verify_response, verify_signature

__all__ = ["EcardAdapter"]

T = TypeVar("T")
_CARD_NO = re.compile(r"[0-9]{8,19}")
_OFFLINE_KINDS = frozenset({"posted", "duplicate", "held_for_review", "rejected"})

log = logging.getLogger(__name__)

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
            {
                Operation.PAY,
                Operation.QUERY,
                Operation.CANCEL,
                Operation.REFUND,
                Operation.CHECK,
                Operation.BILLS,
            }
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
            code = _unverified_code(response.content)
            refusal = request_refusal(response.status_code, code)
            if refusal is not None:
                # most likely a refusal (MERCHANT_UNKNOWN is never signed), but unproven
                return ProviderResult.refusal(
                    refusal[0], code or f"HTTP_{response.status_code}", str(exc), nothing_applied=False
                )
            return ProviderResult(
                Outcome.UNKNOWN, code="UNVERIFIED_RESPONSE", message=str(exc), retryable=True
            )
        log.debug("ecard %s %s: HTTP %s %s", method, path, response.status_code, body.get("result"))
        return response.status_code, body

    @staticmethod
    def _failure_or_unknown(status: int, body: Mapping[str, Any]) -> ProviderResult:
        code = str(body.get("code") or "")
        message = str(body.get("message") or "")
        if body.get("result") == "FAIL" and code in PAYMENT_FAILURES:
            return ProviderResult(Outcome.FAILED, code=code, message=message, raw=_scrub(body))
        refusal = request_refusal(status, code)
        if refusal is not None:
            # A signed refusal of our request (credentials, clock, ...): news about the request,
            # none about the order, which it neither charged nor reversed nor refunded.
            kind, nothing_applied = refusal
            return ProviderResult.refusal(
                kind, code or f"HTTP_{status}", message, nothing_applied=nothing_applied, raw=_scrub(body)
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

    # --- reconciliation ---------------------------------------------------------------------

    async def download_bill(self, day: date) -> bytes:
        """The daily statement of ``day`` (the e-card system's own day, UTC+8): a signed
        ``POST /v1/statement``, answered by signed CSV (``parse_bill`` reads it) or by
        ``FAIL STATEMENT_NOT_READY`` (``BillNotReady``). Anything unverified is
        ``BillUnavailable``: a statement is money evidence, so unsigned bytes are never used."""
        path = "/v1/statement"
        signed = sign_request(
            merchant_id=self._merchant,
            secret=self._secret,
            method="POST",
            path=self._base_path + path,
            payload={"date": day.isoformat()},
            now=int(time.time()),
        )
        try:
            async with asyncio.timeout(self._timeout):
                response = await self.http.post(
                    self._base + path, content=signed.body, headers=signed.headers, timeout=self._timeout
                )
        except TimeoutError:
            raise BillUnavailable("TIMEOUT", "no statement within the timeout") from None
        except httpx.HTTPError as exc:
            raise BillUnavailable("TRANSPORT_ERROR", type(exc).__name__) from exc
        try:
            verify_signature(
                secret=self._secret,
                status=response.status_code,
                request_nonce=signed.nonce,
                headers={k.lower(): v for k, v in response.headers.items()},
                body=response.content,
            )
        except ResponseNotVerified as exc:
            raise BillUnavailable("UNVERIFIED_RESPONSE", str(exc)) from None
        if response.status_code == 200 and response.headers.get("content-type", "").startswith("text/csv"):
            return response.content
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise BillUnavailable(f"HTTP_{response.status_code}", "neither a statement nor an answer")
        code = str(body.get("code") or f"HTTP_{response.status_code}")
        message = str(body.get("message") or "")
        if code == "STATEMENT_NOT_READY":
            raise BillNotReady(code, message)
        raise BillUnavailable(code, message)

    def parse_bill(self, content: bytes) -> Iterator[BillRow]:
        """The statement's lines (adapters/ecard/statement.py)."""
        return parse_statement(content)

    # --- card management and offline records (EcardAdapter only; docs/ecard-protocol.md) ------
    #
    # Each returns only what the provider verifiably said. A verified refusal raises
    # EcardRefused (nothing changed); anything unverifiable raises EcardUnverified (repeat it:
    # every one of these calls is idempotent); no connection raises ProviderUnreachable.

    async def _verified(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        answer = await self._call(method, path, payload)
        if isinstance(answer, ProviderResult):
            raise EcardUnverified(answer.code or "UNKNOWN", answer.message or "")
        status, body = answer
        result, code, message = (
            body.get("result"),
            str(body.get("code") or ""),
            str(body.get("message") or ""),
        )
        if status == 200 and result == "SUCCESS":
            return body
        if result == "FAIL" and status in (200, 409) and code:
            raise EcardRefused(code, message)
        refusal = request_refusal(status, code)
        if result == "ERROR" and code and refusal is not None and refusal[1]:
            raise EcardRefused(code, message, of_request=True)  # signed: nothing applied
        raise EcardUnverified(code or f"HTTP_{status}", message)

    async def report_lost(self, card_no: str) -> CardStatusChange:
        """挂失: the card is refused everywhere at once; the blacklist version goes up."""
        body = await self._verified("POST", "/v1/cards/report-lost", {"card_no": _card_no(card_no)})
        return _status_change(body, card_no, "LOST")

    async def cancel_loss(self, card_no: str) -> CardStatusChange:
        """解挂: a lost card is ACTIVE again (``EcardRefused`` ``CARD_REPLACED`` if it was replaced)."""
        body = await self._verified("POST", "/v1/cards/cancel-loss", {"card_no": _card_no(card_no)})
        return _status_change(body, card_no, "ACTIVE")

    async def replace_card(self, old_card_no: str, new_card_no: str) -> CardReplacement:
        """补卡: the new card takes over the old card's account; the old one stays LOST."""
        payload = {"old_card_no": _card_no(old_card_no), "new_card_no": _card_no(new_card_no)}
        body = await self._verified("POST", "/v1/cards/replace", payload)
        if (body.get("old_card_no"), body.get("new_card_no"), body.get("status")) != (
            old_card_no,
            new_card_no,
            "ACTIVE",
        ):
            raise EcardUnverified("UNEXPECTED_ANSWER", "the answer is not about this replacement")
        return CardReplacement(
            old_card_no=old_card_no,
            new_card_no=new_card_no,
            account_no=_field(body, "account_no", str),
            version=_version(body, "version"),
            changed=_field(body, "changed", bool),
        )

    async def blacklist(self, since_version: int) -> tuple[int, list[BlacklistChange]]:
        """The blacklist version now and every card status change after ``since_version``, oldest
        first. A version lower than ``since_version`` means the provider's list was reset: the
        changes are then the whole list since 0 and the caller rebuilds its cache."""
        if isinstance(since_version, bool) or not isinstance(since_version, int) or since_version < 0:
            raise EcardRequestInvalid("since_version must be an integer >= 0")
        body = await self._verified("POST", "/v1/blacklist", {"since_version": since_version})
        version = _version(body, "version")
        raw_changes = body.get("changes")
        if not isinstance(raw_changes, list):
            raise EcardUnverified("UNEXPECTED_ANSWER", "changes is not a list")
        expected = since_version if version >= since_version else 0
        changes: list[BlacklistChange] = []
        for item in raw_changes:
            if not isinstance(item, dict):
                raise EcardUnverified("UNEXPECTED_ANSWER", "a change is not an object")
            change_version = _version(item, "version")
            expected += 1
            if change_version != expected or change_version > version:
                raise EcardUnverified("UNEXPECTED_ANSWER", "blacklist versions are not consecutive")
            status = item.get("status")
            at = _parse_time(item.get("at"))
            if status not in ("ACTIVE", "LOST") or at is None:
                raise EcardUnverified("UNEXPECTED_ANSWER", "a change has no valid status or time")
            changes.append(
                BlacklistChange(
                    version=change_version,
                    card_no=_field(item, "card_no", str),
                    status=cast(Literal["ACTIVE", "LOST"], status),
                    at=at,
                    reason=_field(item, "reason", str),
                )
            )
        if expected != version:
            raise EcardUnverified("UNEXPECTED_ANSWER", "the changes do not reach the version answered")
        return version, changes

    async def card_status(self, card_no: str) -> CardStatus:
        """Status, account and balances of a card (``EcardRefused`` ``CARD_NOT_FOUND``)."""
        body = await self._verified("GET", f"/v1/cards/{_card_no(card_no)}", None)
        status = body.get("status")
        if body.get("card_no") != card_no or status not in ("ACTIVE", "LOST", "FROZEN"):
            raise EcardUnverified("UNEXPECTED_ANSWER", "the answer is not about this card")
        subsidy = None
        raw_subsidy = body.get("subsidy")
        if raw_subsidy is not None:
            if not isinstance(raw_subsidy, dict):
                raise EcardUnverified("UNEXPECTED_ANSWER", "subsidy is not an object")
            try:
                valid_from = date.fromisoformat(_field(raw_subsidy, "valid_from", str))
                valid_to = date.fromisoformat(_field(raw_subsidy, "valid_to", str))
            except ValueError as exc:
                raise EcardUnverified("UNEXPECTED_ANSWER", "subsidy dates are not ISO dates") from exc
            subsidy = SubsidyWallet(_amount(raw_subsidy, "amount"), valid_from, valid_to)
        replaced_by = body.get("replaced_by")
        pin_locked = body.get("pin_locked", False)
        if not (replaced_by is None or isinstance(replaced_by, str)) or not isinstance(pin_locked, bool):
            raise EcardUnverified("UNEXPECTED_ANSWER", "replaced_by or pin_locked has the wrong type")
        return CardStatus(
            card_no=card_no,
            status=cast(Literal["ACTIVE", "LOST", "FROZEN"], status),
            account_no=_field(body, "account_no", str),
            student_ref=_field(body, "student_ref", str),
            balance=_field(body, "balance", int),
            subsidy=subsidy,
            replaced_by=replaced_by,
            pin_locked=pin_locked,
        )

    async def upload_offline(
        self, terminal_id: str, records: Sequence[OfflineRecord | Mapping[str, Any]]
    ) -> list[OfflineResult]:
        """Uploads up to 500 offline records; one verified result per record, in the same order.
        Re-uploading is safe: a record already stored answers ``duplicate`` with its original
        result, and nothing moves twice. A record may also be given as a mapping with the
        OfflineRecord field names (``occurred_at`` a timezone-aware datetime or ISO 8601 text)."""
        typed = [_as_record(r) for r in records]
        if not 1 <= len(typed) <= MAX_OFFLINE_RECORDS:
            raise EcardRequestInvalid(f"an upload holds 1 to {MAX_OFFLINE_RECORDS} records, not {len(typed)}")
        if not 1 <= len(terminal_id) <= 64:
            raise EcardRequestInvalid("terminal_id must be 1-64 characters")
        payload = {"terminal_id": terminal_id, "records": [_offline_payload(r) for r in typed]}
        body = await self._verified("POST", "/v1/offline/upload", payload)
        raw_results = body.get("results")
        if body.get("terminal_id") != terminal_id or not isinstance(raw_results, list):
            raise EcardUnverified("UNEXPECTED_ANSWER", "the answer is not about this upload")
        if len(raw_results) != len(typed):
            raise EcardUnverified("UNEXPECTED_ANSWER", "not one result per record")
        return [
            _offline_result(i, record, item)
            for i, (record, item) in enumerate(zip(typed, raw_results, strict=True))
        ]


def _card_no(card_no: str) -> str:
    if not isinstance(card_no, str) or not _CARD_NO.fullmatch(card_no):
        raise EcardRequestInvalid("a card number is 8-19 digits")
    return card_no


def _field(body: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = body.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EcardUnverified("UNEXPECTED_ANSWER", f"{key} is missing or not {kind.__name__}")
    return value


def _version(body: Mapping[str, Any], key: str) -> int:
    value = _field(body, key, int)
    if value < 0:
        raise EcardUnverified("UNEXPECTED_ANSWER", f"{key} is negative")
    return value


def _amount(body: Mapping[str, Any], key: str) -> int:
    return _version(body, key)


def _status_change(
    body: Mapping[str, Any], card_no: str, status: Literal["ACTIVE", "LOST"]
) -> CardStatusChange:
    if body.get("card_no") != card_no or body.get("status") != status:
        raise EcardUnverified("UNEXPECTED_ANSWER", f"the answer does not say this card is {status}")
    return CardStatusChange(
        card_no=card_no,
        status=status,
        version=_version(body, "version"),
        changed=_field(body, "changed", bool),
    )


def _as_record(record: OfflineRecord | Mapping[str, Any]) -> OfflineRecord:
    if isinstance(record, OfflineRecord):
        return record
    try:
        occurred = record["occurred_at"]
        if isinstance(occurred, str):
            occurred = datetime.fromisoformat(occurred.replace("Z", "+00:00"))
        made = OfflineRecord(
            terminal_seq=record["terminal_seq"],
            order_ref=record["order_ref"],
            card_no=record["card_no"],
            amount=record["amount"],
            occurred_at=occurred,
            currency=record.get("currency", "CNY"),
            store_ref=record.get("store_ref"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EcardRequestInvalid(
            f"an offline record is incomplete or malformed: {type(exc).__name__}"
        ) from exc
    if not isinstance(made.occurred_at, datetime):
        raise EcardRequestInvalid("occurred_at must be a datetime or ISO 8601 text")
    return made


def _offline_payload(record: OfflineRecord) -> dict[str, Any]:
    if record.occurred_at.tzinfo is None:
        raise EcardRequestInvalid("occurred_at must be timezone-aware")
    payload: dict[str, Any] = {
        "terminal_seq": record.terminal_seq,
        "order_ref": record.order_ref,
        "card_no": record.card_no,
        "amount": record.amount,
        "occurred_at": record.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "currency": record.currency,
    }
    if record.store_ref is not None:
        payload["store_ref"] = record.store_ref
    return payload


def _optional(item: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    value = item.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise EcardUnverified("UNEXPECTED_ANSWER", f"{key} has the wrong type")
    return value


def _offline_result(index: int, record: OfflineRecord, item: Any) -> OfflineResult:
    if not isinstance(item, dict) or item.get("index") != index or item.get("result") not in _OFFLINE_KINDS:
        raise EcardUnverified("UNEXPECTED_ANSWER", f"result {index} is malformed or out of order")
    kind = item["result"]
    seq, ref = item.get("terminal_seq"), item.get("order_ref")
    # We send well-formed sequence numbers, so every result must echo them (and the order_ref).
    if seq != record.terminal_seq or (ref is not None and ref != record.order_ref):
        raise EcardUnverified("UNEXPECTED_ANSWER", f"result {index} is about another record")
    if kind != "posted" and kind != "duplicate" and not isinstance(item.get("reason"), str):
        raise EcardUnverified("UNEXPECTED_ANSWER", f"result {index} has no reason")
    if kind == "posted" and not isinstance(item.get("txn_id"), str):
        raise EcardUnverified("UNEXPECTED_ANSWER", f"posted result {index} has no txn_id")
    original = item.get("original_result")
    if (kind == "duplicate") != (original in ("posted", "held_for_review")):
        raise EcardUnverified("UNEXPECTED_ANSWER", f"result {index}: original_result does not fit")
    if original == "posted" and not isinstance(item.get("txn_id"), str):
        raise EcardUnverified("UNEXPECTED_ANSWER", f"duplicate result {index} has no txn_id")
    return OfflineResult(
        index=index,
        terminal_seq=record.terminal_seq,
        order_ref=record.order_ref,
        result=kind,
        reason=_optional(item, "reason", str),
        txn_id=_optional(item, "txn_id", str),
        amount=_optional(item, "amount", int),
        subsidy_used=_optional(item, "subsidy_used", int),
        balance_used=_optional(item, "balance_used", int),
        original_result=original,
        message=_optional(item, "message", str),
    )


def _unverified_code(content: bytes) -> str:
    """The ``code`` an unverified answer claims, only to sort it (never to decide on it)."""
    try:
        body = json.loads(content)
    except ValueError:
        return ""
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else ""


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
