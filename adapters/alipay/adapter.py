"""Alipay adapter: face payment (刷脸付) and K12 withholding over Alipay OpenAPI v1.

Mapping rule (adapters/base.py): only a *verified* success or a *verified* business failure is
final. A timeout, a transport error, a non-200 status, an unsigned or wrongly signed answer,
``20000``, ``ACQ.SYSTEM_ERROR`` and ``ACQ.CONTEXT_INCONSISTENT`` are ``UNKNOWN``; recovery then
queries with the same ``out_trade_no`` and, past its deadline, cancels it.

``code`` is checked before ``sub_code`` everywhere: the official SDK's ``is_success()`` only
looks at ``sub_code`` and so takes a ``20000`` without a ``sub_code`` for a success.

Mapping table (``code`` / ``sub_code`` / ``trade_status`` -> ``Outcome``):

=========================  ===========================================  ==========================
operation                  Alipay answer (verified)                     outcome
=========================  ===========================================  ==========================
pay                        10000                                        SUCCEEDED
pay                        10003                                        PENDING_USER
pay                        20000, or 40004 ACQ.SYSTEM_ERROR             UNKNOWN (retryable)
pay                        40004 ACQ.TRADE_HAS_SUCCESS                  SUCCEEDED if a query of the
                                                                        same out_trade_no confirms
                                                                        it with the same amount,
                                                                        else UNKNOWN
pay                        40004 ACQ.CONTEXT_INCONSISTENT               UNKNOWN (not retryable)
pay                        40004 any other ACQ.* sub_code               FAILED, code = sub_code
any                        20001 / 40001 / 40002 / 40003 / 40006, or    UNKNOWN, ``refused`` (a
                           40004 ACQ.INVALID_PARAMETER (codes.py)       refusal of the request;
                                                                        nothing_applied when
                                                                        signed)
query                      10000 TRADE_SUCCESS / TRADE_FINISHED         SUCCEEDED
query                      10000 WAIT_BUYER_PAY                         PENDING_USER
query                      10000 TRADE_CLOSED                           REVERSED
query                      40004 ACQ.TRADE_NOT_EXIST                    NOT_FOUND
query                      anything else                                UNKNOWN
cancel                     10000 (retry_flag != Y)                      REVERSED, code = action
cancel                     40004 ACQ.TRADE_CANCEL_TIME_OUT              UNKNOWN, code =
                                                                        CANCEL_UNAVAILABLE (refund)
cancel                     retry_flag = Y, or anything else             UNKNOWN
close                      10000 / 40004 ACQ.TRADE_NOT_EXIST / else     REVERSED / NOT_FOUND /
                                                                        UNKNOWN
refund                     10000 fund_change = Y                        SUCCEEDED
refund                     10000 fund_change != Y                       fastpay.refund.query:
                                                                        REFUND_SUCCESS -> SUCCEEDED,
                                                                        else UNKNOWN (retryable)
refund                     40004 ACQ.SYSTEM_ERROR / 20000               UNKNOWN (retryable)
refund                     40004 ACQ.DISCORDANT_REPEAT_REQUEST or       UNKNOWN (not retryable)
                           ACQ.CONTEXT_INCONSISTENT
refund                     40004 any other ACQ.* sub_code               FAILED, code = sub_code
any                        unsigned, bad signature, non-200, timeout    UNKNOWN
=========================  ===========================================  ==========================

Cancel never answers ``FAILED``: to the gateway a failed reversal means "it never moved money",
which no Alipay refusal to cancel proves. A refusal of the request (our signature, app,
permissions, parameters) is never ``FAILED`` on any operation: it says nothing about the trade.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from adapters.alipay import wire
from adapters.alipay.bills import parse_trade_bill
from adapters.alipay.codes import request_refusal
from adapters.base import (
    CANCEL_UNAVAILABLE,
    AdapterConfigError,
    AdapterError,
    BaseAdapter,
    BillNotReady,
    BillRow,
    BillUnavailable,
    Capabilities,
    FaceCredential,
    IdentificationFailed,
    Operation,
    Outcome,
    PaymentRequest,
    ProviderConfig,
    ProviderEvent,
    ProviderIdentity,
    ProviderResult,
    ProviderUnreachable,
    RefundRequest,
    http_refusal,
)

__all__ = ["AlipayAdapter", "AlipayError", "NotificationRejected"]

log = logging.getLogger(__name__)

SUCCESS = "10000"
USER_PAYING = "10003"
SYSTEM_UNKNOWN = "20000"
BUSINESS_FAILED = "40004"
# 40004 sub_codes that do NOT prove a refusal.
_SYSTEM_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR", "ACQ.SYSTEM_BUSY", "SYSTEM_ERROR"})
# The day's bill is not made yet (Alipay's docs and SDK demos spell it both ways).
_BILL_NOT_READY = frozenset({"isp.bill_not_exist", "bill_not_exist"})
CONTEXT_INCONSISTENT = "ACQ.CONTEXT_INCONSISTENT"
TRADE_HAS_SUCCESS = "ACQ.TRADE_HAS_SUCCESS"
TRADE_NOT_EXIST = "ACQ.TRADE_NOT_EXIST"
DISCORDANT_REPEAT_REQUEST = "ACQ.DISCORDANT_REPEAT_REQUEST"

_TRADE_STATUS = {
    "TRADE_SUCCESS": Outcome.SUCCEEDED,
    "TRADE_FINISHED": Outcome.SUCCEEDED,
    "WAIT_BUYER_PAY": Outcome.PENDING_USER,
    "TRADE_CLOSED": Outcome.REVERSED,  # unpaid and closed, or refunded in full: nothing held
}

FACE_TO_FACE = "FACE_TO_FACE_PAYMENT"
WITHHOLDING = "GENERAL_WITHHOLDING"
DEFAULT_SUBJECT = "CampusPay"
DEFAULT_TIMEOUT = 10.0
# The face group a token was issued in: not part of Alipay's published ftoken.query answer, a
# documented extension of the CampusPay sandbox. Absent from the real Alipay -> group is None.
GROUP_FIELDS = ("group_id",)

# Fields that may appear in ProviderResult.raw / ProviderEvent.raw. Face tokens (auth_code),
# keys and signatures are never among them; buyer_logon_id is masked.
_SAFE_FIELDS = frozenset(
    {
        "code",
        "msg",
        "sub_code",
        "sub_msg",
        "trade_no",
        "out_trade_no",
        "trade_status",
        "total_amount",
        "receipt_amount",
        "buyer_pay_amount",
        "invoice_amount",
        "point_amount",
        "refund_fee",
        "send_back_fee",
        "fund_change",
        "gmt_payment",
        "send_pay_date",
        "gmt_refund_pay",
        "gmt_create",
        "gmt_close",
        "gmt_refund",
        "action",
        "retry_flag",
        "out_request_no",
        "out_biz_no",
        "refund_status",
        "refund_amount",
        "notify_id",
        "notify_time",
        "notify_type",
        "app_id",
        "seller_id",
        "buyer_user_id",
        "buyer_id",
        "buyer_open_id",
        "store_id",
        "terminal_id",
        "bill_date",
        "buyer_logon_id",
    }
)
_MASKED_FIELDS = frozenset({"buyer_logon_id"})


class AlipayError(AdapterError):
    """An Alipay call that must move no money gave no usable answer: a timeout, a transport
    error, an unsigned or wrongly signed reply, ``20000`` / ``ACQ.SYSTEM_ERROR``, or a reply
    missing what it must carry. Nothing final can be concluded; the caller may retry.
    ``code`` says which (``TIMEOUT``, ``UNVERIFIED_RESPONSE``, a ``sub_code``, ...)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"alipay {code}: {message}" if message else f"alipay {code}")
        self.code = code


class NotificationRejected(AlipayError):
    """A notification that is unsigned, altered, for another app, or malformed: ignore it
    (answer anything but ``success``) and change nothing."""


def _mask(value: str) -> str:
    if len(value) < 8:
        return "***"
    return f"{value[:3]}***{value[-2:]}"


def _scrub(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only fields that carry no secrets, face tokens or full buyer logon ids."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key not in _SAFE_FIELDS or not isinstance(value, str | int | float | bool):
            continue
        out[key] = _mask(str(value)) if key in _MASKED_FIELDS else value
    return out


def _str(node: Mapping[str, Any], key: str) -> str:
    value = node.get(key)
    return value if isinstance(value, str) else ""


def _amount(node: Mapping[str, Any], key: str) -> int | None:
    try:
        return wire.yuan_to_fen(_str(node, key))
    except ValueError:
        return None


def _beijing_time(value: str) -> datetime | None:
    try:
        local = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return local.replace(tzinfo=wire.BEIJING).astimezone(UTC)


def _message(node: Mapping[str, Any]) -> str:
    return _str(node, "sub_msg") or _str(node, "msg")


def _unknown(node: Mapping[str, Any], *, retryable: bool = True, code: str | None = None) -> ProviderResult:
    return ProviderResult(
        Outcome.UNKNOWN,
        code=code or _str(node, "sub_code") or _str(node, "code") or "UNKNOWN",
        message=_message(node),
        retryable=retryable,
        raw=_scrub(node),
    )


def _failed(node: Mapping[str, Any]) -> ProviderResult:
    return ProviderResult(
        Outcome.FAILED,
        code=_str(node, "sub_code") or _str(node, "code"),
        message=_message(node),
        raw=_scrub(node),
    )


def _unverified_node(body: bytes, method: str) -> dict[str, Any]:
    """What an unverified answer claims, only to sort it (never to decide on it)."""
    try:
        _, raw, _ = wire.locate_response_node(body, method)
        node = json.loads(raw)
    except (wire.ResponseNotVerified, ValueError):
        return {}
    return node if isinstance(node, dict) else {}


def _is_business_refusal(node: Mapping[str, Any]) -> bool:
    """A verified 40004 whose sub_code names a business reason (not a system error)."""
    sub = _str(node, "sub_code")
    return (
        _str(node, "code") == BUSINESS_FAILED
        and sub.startswith("ACQ.")
        and sub not in _SYSTEM_SUB_CODES
        and sub not in (CONTEXT_INCONSISTENT, TRADE_HAS_SUCCESS, DISCORDANT_REPEAT_REQUEST)
    )


class AlipayAdapter(BaseAdapter):
    """Alipay OpenAPI v1 (``gateway.do``), RSA2.

    Settings (``ProviderConfig``):

    * ``endpoint``: the gateway URL, e.g. ``https://openapi.alipay.com/gateway.do`` or the
      sandbox's ``http://127.0.0.1:8090/alipay/gateway.do``.
    * ``credentials``: ``app_id``; ``app_private_key`` (PEM PKCS#1 or PKCS#8, or the bare base64
      body); ``alipay_public_key`` (PEM SubjectPublicKeyInfo or the bare body); optionally
      ``app_auth_token`` (acting for a merchant; also accepted from ``options``).
    * ``options``: ``notify_url``; ``face_group`` (the school's face group at Alipay);
      ``timeout_seconds`` (whole exchange, default 10); ``product_code`` (default
      ``FACE_TO_FACE_PAYMENT``); ``subject`` (default ``CampusPay``); ``identify_biz_type``
      (``biz_type`` of ``zoloz.authentication.customer.ftoken.query``, default ``"1"``).

    Unusable settings raise ``AdapterConfigError`` at construction. Parsed keys are cached per
    key text (``wire.load_private_key``), so building an adapter per call costs no RSA parsing.
    """

    name: ClassVar[str] = "alipay"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({"face"}),
        funding=frozenset({"alipay_account"}),
        operations=frozenset(
            {
                Operation.PAY,
                Operation.QUERY,
                Operation.CANCEL,
                Operation.REFUND,
                Operation.CLOSE,
                Operation.IDENTIFY,
                Operation.BILLS,
                Operation.DELETE_ENROLLMENT,
                Operation.CHECK,
            }
        ),
        currencies=frozenset({"CNY"}),
        notifications=True,
    )

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config, http)
        creds, options = config.credentials, config.options
        for required in ("app_id", "app_private_key", "alipay_public_key"):
            if not creds.get(required):
                raise AdapterConfigError(f"alipay credentials need {required!r}")
        self._app_id = creds["app_id"]
        try:
            self._private_key = wire.load_private_key(creds["app_private_key"])
        except wire.InvalidKey as exc:
            raise AdapterConfigError(f"alipay app_private_key: {exc}") from None
        try:
            self._alipay_key = wire.load_public_key(creds["alipay_public_key"])
        except wire.InvalidKey as exc:
            raise AdapterConfigError(f"alipay alipay_public_key: {exc}") from None
        parts = urlsplit(config.endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise AdapterConfigError("alipay endpoint must be an absolute http(s) URL without a query")
        self._endpoint = config.endpoint
        try:
            self._timeout = float(options.get("timeout_seconds", DEFAULT_TIMEOUT))
        except (TypeError, ValueError):
            raise AdapterConfigError("alipay timeout_seconds must be a number") from None
        if not self._timeout > 0:
            raise AdapterConfigError("alipay timeout_seconds must be positive")
        self._notify_url = self._optional_str(options, "notify_url")
        self._face_group = self._optional_str(options, "face_group")
        self._app_auth_token = creds.get("app_auth_token") or self._optional_str(options, "app_auth_token")
        self._product_code = self._optional_str(options, "product_code") or FACE_TO_FACE
        self._subject = self._optional_str(options, "subject") or DEFAULT_SUBJECT
        self._identify_biz_type = self._optional_str(options, "identify_biz_type") or "1"

    @staticmethod
    def _optional_str(options: Mapping[str, Any], key: str) -> str | None:
        value = options.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise AdapterConfigError(f"alipay option {key!r} must be a string")
        return value

    # -- one round trip ---------------------------------------------------------------------

    async def _call(
        self, method: str, biz: Mapping[str, Any], *, notify: bool = False
    ) -> dict[str, Any] | ProviderResult:
        """One signed call: the verified response node, or an UNKNOWN result saying why not."""
        request = wire.build_request(
            private_key=self._private_key,
            app_id=self._app_id,
            method=method,
            biz_content=biz,
            timestamp=wire.beijing_timestamp(),
            notify_url=self._notify_url if notify else None,
            app_auth_token=self._app_auth_token,
        )
        url = f"{self._endpoint}?{request.query}"
        try:
            # httpx's timeouts bound each read, not the whole exchange (and in-process transports
            # ignore them), so the total is bounded here as well.
            async with asyncio.timeout(self._timeout):
                response = await self.http.post(
                    url, content=request.body, headers=request.headers, timeout=self._timeout
                )
                body = response.content
        except TimeoutError:
            log.warning("alipay %s: no answer within %.1f s", method, self._timeout)
            return ProviderResult(Outcome.UNKNOWN, code="TIMEOUT", retryable=True)
        except httpx.ConnectError as exc:
            # No connection, so no request bytes reached Alipay.
            raise ProviderUnreachable(f"alipay unreachable: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            log.warning("alipay %s: transport error %s", method, type(exc).__name__)
            return ProviderResult(
                Outcome.UNKNOWN, code="TRANSPORT_ERROR", message=type(exc).__name__, retryable=True
            )
        if response.status_code != 200:
            log.warning("alipay %s: HTTP %s", method, response.status_code)
            code = f"HTTP_{response.status_code}"
            refused = http_refusal(response.status_code)
            if refused is not None:  # from something in front of Alipay, unsigned: proves nothing
                return ProviderResult.refusal(refused, code, nothing_applied=False)
            return ProviderResult(Outcome.UNKNOWN, code=code, retryable=response.status_code >= 500)
        try:
            verified = wire.verify_response(body, method, self._alipay_key)
        except wire.ResponseNotVerified as exc:
            log.warning("alipay %s: %s", method, exc)
            claimed = _unverified_node(body, method)
            refused = request_refusal(_str(claimed, "code"), _str(claimed, "sub_code"))
            if refused is not None:  # e.g. isv.invalid-app-id, which Alipay cannot sign
                code = _str(claimed, "sub_code") or _str(claimed, "code")
                return ProviderResult.refusal(refused, code, str(exc), nothing_applied=False)
            return ProviderResult(
                Outcome.UNKNOWN, code="UNVERIFIED_RESPONSE", message=str(exc), retryable=True
            )
        node = verified.node
        code, sub = _str(node, "code"), _str(node, "sub_code")
        log.debug("alipay %s: %s code=%s sub_code=%s", method, verified.node_name, code, sub)
        refused = request_refusal(code, sub)
        if refused is not None:
            # Alipay verifiably refused our request before processing it: news about the
            # request (keys, app, permissions, parameters), none about the trade.
            return ProviderResult.refusal(
                refused, sub or code, _message(node), nothing_applied=True, raw=_scrub(node)
            )
        return node

    @staticmethod
    def _wrong_trade(node: Mapping[str, Any], reference: str) -> bool:
        """A signed answer about another trade (a replayed response): never evidence for ours."""
        echoed = _str(node, "out_trade_no")
        return bool(echoed) and echoed != reference

    # -- payments ---------------------------------------------------------------------------

    async def pay(self, request: PaymentRequest) -> ProviderResult:
        """``alipay.trade.pay`` with the face token as ``auth_code`` (``scene=security_code``).

        With ``request.agreement_no`` it is a K12 withholding charge under the guardian's
        agreement (``product_code=GENERAL_WITHHOLDING``). Safe to repeat: Alipay keys the trade on
        ``out_trade_no`` = ``request.reference``; a repeat with identical details returns the
        same trade, different details ``ACQ.CONTEXT_INCONSISTENT`` (-> UNKNOWN, never final)."""
        if not isinstance(request.credential, FaceCredential):
            raise AdapterConfigError("the alipay adapter pays by face token only")
        if request.currency != "CNY":
            return ProviderResult(
                Outcome.FAILED, code="CURRENCY_NOT_SUPPORTED", message=f"{request.currency} is not CNY"
            )
        try:
            total = wire.fen_to_yuan(request.amount)
        except ValueError:
            return ProviderResult(Outcome.FAILED, code="INVALID_AMOUNT", message="amount must be >= 0 fen")
        biz: dict[str, Any] = {
            "out_trade_no": request.reference,
            "scene": "security_code",
            "auth_code": request.credential.face_token,
            "product_code": self._product_code,
            "total_amount": total,
            "subject": (request.description or self._subject)[:256],
            "store_id": request.store_ref,
            "terminal_id": request.terminal_ref,
        }
        if request.terminal_params:
            biz["terminal_params"] = request.terminal_params
        if request.agreement_no:
            biz["product_code"] = WITHHOLDING
            biz["agreement_params"] = {"agreement_no": request.agreement_no}
            biz["business_params"] = {"iot_pay_action": "local_face_pay"}
        answer = await self._call("alipay.trade.pay", biz, notify=True)
        if isinstance(answer, ProviderResult):
            return answer
        node = answer
        code, sub = _str(node, "code"), _str(node, "sub_code")
        if self._wrong_trade(node, request.reference):
            return _unknown(node, code="TRADE_MISMATCH")
        if code == SUCCESS:
            amount = _amount(node, "total_amount")
            if amount is not None and amount != request.amount:
                return _unknown(node, retryable=False, code="AMOUNT_MISMATCH")
            return ProviderResult(
                Outcome.SUCCEEDED,
                provider_txn_id=_str(node, "trade_no") or None,
                amount=request.amount,
                raw=_scrub(node),
                paid_at=_beijing_time(_str(node, "gmt_payment")),
            )
        if code == USER_PAYING:
            return ProviderResult(
                Outcome.PENDING_USER,
                provider_txn_id=_str(node, "trade_no") or None,
                code=USER_PAYING,
                message=_message(node),
                retryable=True,
                raw=_scrub(node),
            )
        if code == BUSINESS_FAILED and sub == TRADE_HAS_SUCCESS:
            # "Already paid": true for *this* trade only if a query of our out_trade_no agrees.
            confirmed = await self.query(request.reference)
            if confirmed.outcome is Outcome.SUCCEEDED and confirmed.amount == request.amount:
                return confirmed
            return _unknown(node, code=TRADE_HAS_SUCCESS)
        if code == BUSINESS_FAILED and sub == CONTEXT_INCONSISTENT:
            # Our reference was used with other details: the original's fate is not this answer.
            return _unknown(node, retryable=False)
        if _is_business_refusal(node):
            return _failed(node)
        return _unknown(node)

    async def query(self, reference: str) -> ProviderResult:
        """``alipay.trade.query`` by ``out_trade_no``: the source of truth after an unknown."""
        answer = await self._call("alipay.trade.query", {"out_trade_no": reference})
        if isinstance(answer, ProviderResult):
            return answer
        node = answer
        code, sub = _str(node, "code"), _str(node, "sub_code")
        if self._wrong_trade(node, reference):
            return _unknown(node, code="TRADE_MISMATCH")
        if code == SUCCESS:
            outcome = _TRADE_STATUS.get(_str(node, "trade_status"))
            if outcome is None:
                return _unknown(node, code=_str(node, "trade_status") or "NO_TRADE_STATUS")
            return ProviderResult(
                outcome,
                provider_txn_id=_str(node, "trade_no") or None,
                amount=_amount(node, "total_amount"),
                code=_str(node, "trade_status"),
                raw=_scrub(node),
                paid_at=_beijing_time(_str(node, "send_pay_date")) if outcome is Outcome.SUCCEEDED else None,
            )
        if code == BUSINESS_FAILED and sub == TRADE_NOT_EXIST:
            return ProviderResult(Outcome.NOT_FOUND, code=sub, message=_message(node), raw=_scrub(node))
        # A failed *query* says nothing about the payment.
        return _unknown(node)

    async def cancel(self, reference: str) -> ProviderResult:
        """``alipay.trade.cancel``: unpaid -> closed, paid -> refunded in full (within 24 h).

        ``REVERSED`` (``code`` = Alipay's ``action``) once Alipay confirms; ``retry_flag=Y`` or
        anything unverified -> ``UNKNOWN`` (retry with the same reference). Never ``FAILED``."""
        answer = await self._call("alipay.trade.cancel", {"out_trade_no": reference})
        if isinstance(answer, ProviderResult):
            return answer
        node = answer
        if self._wrong_trade(node, reference):
            return _unknown(node, code="TRADE_MISMATCH")
        if _str(node, "retry_flag").upper() == "Y":
            return _unknown(node, code=_str(node, "sub_code") or "RETRY", retryable=True)
        if _str(node, "code") == SUCCESS:
            return ProviderResult(
                Outcome.REVERSED,
                provider_txn_id=_str(node, "trade_no") or None,
                code=_str(node, "action") or None,
                raw=_scrub(node),
            )
        if _str(node, "code") == BUSINESS_FAILED and _str(node, "sub_code") == "ACQ.TRADE_CANCEL_TIME_OUT":
            # past Alipay's 24 h: nothing was cancelled, and the gateway must refund instead
            return _unknown(node, code=CANCEL_UNAVAILABLE, retryable=False)
        return _unknown(node, retryable=_str(node, "sub_code") in _SYSTEM_SUB_CODES)

    async def close(self, reference: str) -> ProviderResult:
        """``alipay.trade.close``: close an unpaid trade so it can never be paid.

        ``REVERSED`` when closed, ``NOT_FOUND`` for an unknown ``out_trade_no``, ``UNKNOWN``
        otherwise (including a refusal because the trade is already paid: use ``cancel``)."""
        answer = await self._call("alipay.trade.close", {"out_trade_no": reference})
        if isinstance(answer, ProviderResult):
            return answer
        node = answer
        if self._wrong_trade(node, reference):
            return _unknown(node, code="TRADE_MISMATCH")
        if _str(node, "code") == SUCCESS:
            return ProviderResult(
                Outcome.REVERSED, provider_txn_id=_str(node, "trade_no") or None, raw=_scrub(node)
            )
        if _str(node, "code") == BUSINESS_FAILED and _str(node, "sub_code") == TRADE_NOT_EXIST:
            return ProviderResult(Outcome.NOT_FOUND, code=TRADE_NOT_EXIST, raw=_scrub(node))
        return _unknown(node, retryable=_str(node, "sub_code") in _SYSTEM_SUB_CODES)

    async def refund(self, request: RefundRequest) -> ProviderResult:
        """``alipay.trade.refund`` with ``out_request_no`` = ``refund_reference``.

        Retries reuse the same ``out_request_no``, so Alipay refunds at most once. A ``10000``
        with ``fund_change=Y`` is a success. ``fund_change=N`` is ambiguous -- Alipay answers it
        both to a repeat of a refund already made and to one not (yet) carried out -- so it is
        settled with ``alipay.trade.fastpay.refund.query`` (``refund_status=REFUND_SUCCESS``)."""
        try:
            amount = wire.fen_to_yuan(request.amount)
        except ValueError:
            return ProviderResult(Outcome.FAILED, code="INVALID_AMOUNT", message="amount must be >= 0 fen")
        biz: dict[str, Any] = {
            "out_trade_no": request.reference,
            "out_request_no": request.refund_reference,
            "refund_amount": amount,
        }
        if request.reason:
            biz["refund_reason"] = request.reason[:256]
        answer = await self._call("alipay.trade.refund", biz)
        if isinstance(answer, ProviderResult):
            return answer
        node = answer
        code, sub = _str(node, "code"), _str(node, "sub_code")
        if self._wrong_trade(node, request.reference):
            return _unknown(node, code="TRADE_MISMATCH")
        if code == SUCCESS:
            if _str(node, "fund_change").upper() == "Y":
                return ProviderResult(
                    Outcome.SUCCEEDED,
                    provider_txn_id=_str(node, "trade_no") or None,
                    amount=request.amount,
                    raw=_scrub(node),
                )
            return await self.refund_query(request.reference, request.refund_reference, request.amount)
        if code == BUSINESS_FAILED and sub in (DISCORDANT_REPEAT_REQUEST, CONTEXT_INCONSISTENT):
            # Our refund reference was used with another amount: this answer is not its fate.
            return _unknown(node, retryable=False)
        if _is_business_refusal(node):
            return _failed(node)
        return _unknown(node)

    async def refund_query(
        self, reference: str, refund_reference: str, amount: int | None = None
    ) -> ProviderResult:
        """``alipay.trade.fastpay.refund.query``: ``SUCCEEDED`` only for ``REFUND_SUCCESS`` (and,
        when ``amount`` is given, that amount); otherwise ``UNKNOWN`` -- Alipay documents an
        empty answer as "not refunded (yet): retry the refund with the same out_request_no"."""
        answer = await self._call(
            "alipay.trade.fastpay.refund.query",
            {"out_trade_no": reference, "out_request_no": refund_reference},
        )
        if isinstance(answer, ProviderResult):
            return answer
        node = answer
        if self._wrong_trade(node, reference):
            return _unknown(node, code="TRADE_MISMATCH")
        echoed = _str(node, "out_request_no")
        if echoed and echoed != refund_reference:
            return _unknown(node, code="REFUND_MISMATCH")
        if _str(node, "code") == SUCCESS and _str(node, "refund_status") == "REFUND_SUCCESS":
            refunded = _amount(node, "refund_amount")
            if amount is not None and refunded is not None and refunded != amount:
                return _unknown(node, retryable=False, code="AMOUNT_MISMATCH")
            return ProviderResult(
                Outcome.SUCCEEDED,
                provider_txn_id=_str(node, "trade_no") or None,
                amount=refunded if refunded is not None else amount,
                raw=_scrub(node),
            )
        if _str(node, "code") == SUCCESS:
            return _unknown(node, code="REFUND_NOT_CONFIRMED")
        return _unknown(node)

    async def check(self) -> ProviderResult:
        """A signed round trip: query an ``out_trade_no`` that cannot exist and accept a
        *verified* ``ACQ.TRADE_NOT_EXIST`` as proof that endpoint, app id and both keys work."""
        answer = await self._call("alipay.trade.query", {"out_trade_no": "cpcheck" + secrets.token_hex(12)})
        if isinstance(answer, ProviderResult):
            return answer
        node = answer
        code, sub = _str(node, "code"), _str(node, "sub_code")
        if code == SUCCESS or (code == BUSINESS_FAILED and sub == TRADE_NOT_EXIST):
            return ProviderResult(Outcome.SUCCEEDED, code=sub or code, raw=_scrub(node))
        return _unknown(node)  # a refusal of app id, keys or permissions came back from _call

    # -- face -------------------------------------------------------------------------------

    async def identify(self, face_token: str) -> ProviderIdentity:
        """``zoloz.authentication.customer.ftoken.query`` (``ftoken``, ``biz_type``) -> the Alipay
        user (``uid``) behind a face token, and the face group it was issued in when the provider
        says so (``group_id``, a CampusPay sandbox extension; the real answer does not carry it).

        Identification happens before any money moves, so an answer that proves nothing must
        make the gateway refuse the payment as *retryable*, never as a face refusal:

        * a verified business refusal (``40004`` with a sub_code) -> ``IdentificationFailed``
          with Alipay's sub_code (expired, used, unknown token, user deleted, ...);
        * no connection -> ``ProviderUnreachable``;
        * anything else (timeout, unverified answer, ``20000``, system error, a success without
          ``uid``, a refused request) -> ``AlipayError`` (an ``AdapterError``).

        The face token is sent to Alipay and nowhere else: never logged, never in an error.
        ``biz_type`` defaults to ``"1"`` (the published example value); its meaning is unverified.
        """
        biz = {"ftoken": face_token, "biz_type": self._identify_biz_type}
        answer = await self._call("zoloz.authentication.customer.ftoken.query", biz)
        if isinstance(answer, ProviderResult):
            raise AlipayError(answer.code or "UNKNOWN", answer.message or "no verified answer")
        node = answer
        code, sub = _str(node, "code"), _str(node, "sub_code")
        if code == SUCCESS:
            uid = _str(node, "uid") or _str(node, "user_id")
            if not uid:
                raise AlipayError("NO_UID", "ftoken.query succeeded without a uid")
            group = next((_str(node, f) for f in GROUP_FIELDS if _str(node, f)), None)
            return ProviderIdentity(user_id=uid, group=group)
        if code == BUSINESS_FAILED and sub and sub not in _SYSTEM_SUB_CODES and not sub.startswith("isp."):
            raise IdentificationFailed(sub, _message(node))
        raise AlipayError(sub or code or "UNKNOWN", _message(node))

    async def delete_enrollment(self, provider_user_id: str) -> ProviderResult:
        """``alipay.commerce.educate.facefeature.delete`` for ``provider_user_id`` in the
        configured ``face_group``: ``SUCCEEDED`` once Alipay confirms, or says verified that
        there is no such face user (``FACE_USER_NOT_EXIST``); ``FAILED`` with its sub_code on
        another verified refusal, ``UNKNOWN`` otherwise (retry).

        The education face APIs' exact semantics are **unverified** (PROTOCOLS.md). The request
        carries ``group_id`` (a field of the official SDK's
        ``AlipayCommerceEducateFacefeatureDeleteModel``) and ``user_id`` (what the CampusPay
        sandbox reads; the SDK model has no such field, only ``biz_id`` and
        ``scenic_face_info``). That the call removes the templates and that the user can no
        longer pay by face is what the sandbox implements, not what a primary source confirmed."""
        if not self._face_group:
            raise AdapterConfigError("alipay option 'face_group' is needed to delete an enrolment")
        biz = {"group_id": self._face_group, "user_id": provider_user_id}
        answer = await self._call("alipay.commerce.educate.facefeature.delete", biz)
        if isinstance(answer, ProviderResult):
            return answer
        node = answer
        code, sub = _str(node, "code"), _str(node, "sub_code")
        if code == SUCCESS:
            return ProviderResult(Outcome.SUCCEEDED, raw=_scrub(node))
        if code == BUSINESS_FAILED and sub == "FACE_USER_NOT_EXIST":
            # nothing of this user is left at the provider: what a deletion is for. Retrying a
            # verified "no such user" would never end (e.g. after the provider purged it itself).
            return ProviderResult(Outcome.SUCCEEDED, code=sub, raw=_scrub(node))
        if code == BUSINESS_FAILED and sub and sub not in _SYSTEM_SUB_CODES:
            return _failed(node)
        return _unknown(node)

    # -- reconciliation ---------------------------------------------------------------------

    async def download_bill(self, day: date) -> bytes:
        """The day's trade bill (``day`` is a Beijing date, Alipay's own):
        ``alipay.data.dataservice.bill.downloadurl.query`` (``bill_type=trade``), then the file
        behind ``bill_download_url`` at once (Alipay's link expires in 30 s), returned as
        fetched (a zip of GBK CSVs; ``parse_bill`` reads it). ``isp.bill_not_exist`` raises
        ``BillNotReady``; any other failure ``BillUnavailable``."""
        biz = {"bill_type": "trade", "bill_date": day.isoformat()}
        answer = await self._call("alipay.data.dataservice.bill.downloadurl.query", biz)
        if isinstance(answer, ProviderResult):
            raise BillUnavailable(answer.code or "UNKNOWN", answer.message or "no verified answer")
        node = answer
        if _str(node, "code") != SUCCESS:
            sub = _str(node, "sub_code") or _str(node, "code") or "UNKNOWN"
            if sub.lower() in _BILL_NOT_READY:
                raise BillNotReady(sub, _message(node))
            raise BillUnavailable(sub, _message(node))
        url = _str(node, "bill_download_url")
        if urlsplit(url).scheme not in ("http", "https"):
            raise BillUnavailable("NO_BILL_URL", "answer carries no usable bill_download_url")
        try:
            async with asyncio.timeout(self._timeout):
                response = await self.http.get(url, timeout=self._timeout)
                content = response.content
        except TimeoutError:
            raise BillUnavailable("TIMEOUT", "bill download timed out") from None
        except httpx.HTTPError as exc:
            raise BillUnavailable("TRANSPORT_ERROR", type(exc).__name__) from exc
        if response.status_code != 200:
            raise BillUnavailable(f"HTTP_{response.status_code}", "bill download failed")
        return content

    def parse_bill(self, content: bytes) -> Iterator[BillRow]:
        """The trade bill's detail lines (adapters/alipay/bills.py)."""
        return parse_trade_bill(content)

    # -- notifications ----------------------------------------------------------------------

    async def parse_notification(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify an asynchronous notification on its raw form body (``sign`` and ``sign_type``
        removed, empty values dropped, sorted, raw ``k=v&…``; RSA2 with Alipay's key), check it
        is for this app, and say what it reports. ``dedupe_key`` is ``notify_id`` (Alipay repeats
        notifications until answered ``success``). Raises ``NotificationRejected``."""
        try:
            form = wire.verify_notification(body, self._alipay_key)
        except wire.NotificationNotVerified as exc:
            raise NotificationRejected("UNVERIFIED_NOTIFICATION", str(exc)) from None
        if form.get("app_id") != self._app_id:
            raise NotificationRejected("APP_MISMATCH", "notification is for another app")
        notify_id, reference = form.get("notify_id", ""), form.get("out_trade_no", "")
        if not notify_id or not reference:
            raise NotificationRejected("MALFORMED", "notification lacks notify_id or out_trade_no")
        outcome = _TRADE_STATUS.get(form.get("trade_status", ""), Outcome.UNKNOWN)
        amount: int | None = None
        if form.get("total_amount"):
            try:
                amount = wire.yuan_to_fen(form["total_amount"])
            except ValueError:
                raise NotificationRejected("MALFORMED", "total_amount is not an amount") from None
        log.debug("alipay notification %s: %s", form.get("notify_type", ""), form.get("trade_status", ""))
        return ProviderEvent(
            reference=reference,
            outcome=outcome,
            provider_txn_id=form.get("trade_no") or None,
            amount=amount,
            dedupe_key=notify_id,
            raw=_scrub(form),
        )
