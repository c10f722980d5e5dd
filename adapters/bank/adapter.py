"""Bank adapter: direct-debit token payments over the UnionPay-style gateway (全渠道 5.1.0).

Written from /work/shared/PROTOCOLS.md and docs/bank-protocol.md; the wire rules are in
``wire.py``. Only an agreement token (``AgreementCredential``) ever reaches this adapter; the full
account number passes through it only once, in ``open_agreement``, and is never logged, stored
or returned.

References. The bank keys an order by ``orderId`` (8-32 ``[0-9A-Za-z]``) *and* asks for the
``txnTime`` of the order in a query, and refuses (``12``) a repeated ``orderId`` whose details,
``txnTime`` included, differ. The adapter is stateless, so both are derived deterministically from
the gateway's reference (``order_id_for`` / ``txn_time_for``): a retry, a query and a cancel of the
same reference always name the same order. ``reqReserved`` carries the gateway reference itself,
so notifications map back to it. Voids and refunds get their own derived order ids
(``V`` for the void of a payment, ``R`` for a refund reference, ``F`` for the full refund a
cancel makes, ``P`` for the payment).

Mapping table (verified answers only; any unsigned, wrongly signed, untrusted-certificate or
mismatched answer, an HTTP status other than 200, a timeout or a transport error is UNKNOWN):

==========  ==========================================================  ======================
operation   bank answer                                                 outcome
==========  ==========================================================  ======================
pay         respCode 00, txnAmt = the amount asked                      SUCCEEDED
pay         03 / 04 / 05                                                UNKNOWN (retryable)
pay         12 (orderId used with other details, e.g. blocked)          UNKNOWN (not retryable)
pay         40 / 63 / 64 / any other code about the payment             FAILED, code = respCode
any         10 / 11 / 13 (the request refused; the bank records         UNKNOWN, ``refused``,
            nothing), 31 (unknown merId: unsigned by the bank's         nothing_applied when
            design), HTTP 401/403/429 (codes.py)                        signed
query       34                                                          NOT_FOUND
query       00, origTxnType 31 (our cancel's block on the orderId)      REVERSED
query       00, origRespCode 00, and the cancel's void or full refund   REVERSED
            completed
query       00, origRespCode 00 otherwise                               SUCCEEDED
query       00, origRespCode 03 / 04 / 05                               UNKNOWN (retryable)
query       00, origRespCode any other code                             FAILED, code = it
query       any other respCode                                          UNKNOWN
cancel      consume succeeded: void 00 (same day)                       REVERSED
cancel      void 35 (not same day / refunded): full refund 00           REVERSED
cancel      full refund 36 (partly refunded): nothing more is sent      UNKNOWN (not retryable)
cancel      no such order (34): blocking void on the orderId -> 35      REVERSED (blocked)
cancel      consume failed (origRespCode a failure)                     FAILED (nothing moved)
cancel      consume 03 / 04 / 05, or anything unverified                UNKNOWN (retryable)
refund      00                                                          SUCCEEDED
refund      35 / 36 / other codes about the refund; the payment absent  FAILED, code = respCode
            or not successful
refund      03 / 04 / 05                                                UNKNOWN (retryable)
refund      12                                                          UNKNOWN (not retryable)
check       a query of a never-used orderId answered 34 (or 00)         SUCCEEDED
check       a verified other code                                       FAILED, code = respCode
            (a refusal of the request: UNKNOWN, ``refused``)
==========  ==========================================================  ======================

Cancel. UnionPay-style banks have no "close": a same-day void (消费撤销) gives the whole amount
back; after that day, or once anything was refunded, the void is refused (``35``) and the cancel
refunds in full (退货). If partial refunds already exist the bank refuses a full refund (``36``)
without saying what remains. The gateway never asks for that: it cancels a partly refunded
payment by refunding exactly the rest (``refund``), since it knows what was refunded. A ``36``
here means refunds made outside the gateway, so the cancel stops with UNKNOWN (not retryable)
for an operator rather than guess at the remainder. For a reference the bank
never saw, the cancel records a void under the payment's own ``orderId`` (refused with ``35`` and
recorded), so a late-arriving consume with that ``orderId`` is refused (``12``) for good.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.bank import wire
from adapters.bank.codes import request_refusal
from adapters.base import (
    AdapterConfigError,
    AdapterError,
    AgreementCredential,
    BaseAdapter,
    Capabilities,
    Operation,
    Outcome,
    PaymentRequest,
    ProviderConfig,
    ProviderEvent,
    ProviderResult,
    ProviderUnreachable,
    RefundRequest,
    http_refusal,
)

__all__ = [
    "AgreementOpened",
    "BankAdapter",
    "BankError",
    "NotificationRejected",
    "order_id_for",
    "txn_time_for",
]

log = logging.getLogger(__name__)

VERSION = "5.1.0"
ENCODING = "UTF-8"
BIZ_TOKEN = "000902"
BIZ_QUERY = "000000"
ACCESS_MERCHANT = "0"
CURRENCY_CNY = "156"
BACK_TRANS_PATH = "/gateway/api/backTransReq.do"
QUERY_PATH = "/gateway/api/queryTrans.do"

TXN_CONSUME = "01"
TXN_VOID = "31"
TXN_REFUND = "04"
TXN_QUERY = "00"
TXN_OPEN = "79"

SUCCESS = "00"
IN_DOUBT = frozenset({"03", "04", "05"})  # timeout, status unknown, being processed: query
DUPLICATE = "12"
NOT_FOUND = "34"
NO_REFUNDABLE = "35"
AMOUNT_MISMATCH = "36"

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
# txnTime of derived orders: a fixed window (see txn_time_for).
_TXN_TIME_BASE = datetime(2025, 1, 1, tzinfo=BEIJING)
_TXN_TIME_SPAN = 365 * 86400
_BLOCKING_ORIG_QRY_ID = "0" * 21  # a queryId no bank issues: the blocking void is refused (35)
DEFAULT_TIMEOUT = 10.0

_SAFE_FIELDS = frozenset(
    {
        "respCode",
        "respMsg",
        "origRespCode",
        "origRespMsg",
        "queryId",
        "origQryId",
        "orderId",
        "txnTime",
        "txnType",
        "txnSubType",
        "origTxnType",
        "txnAmt",
        "currencyCode",
        "settleAmt",
        "settleCurrencyCode",
        "settleDate",
        "traceNo",
        "traceTime",
        "merId",
        "reqReserved",
    }
)


def _scrub(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Only fields without tokens, account numbers, keys or signatures."""
    return {k: v for k, v in fields.items() if k in _SAFE_FIELDS}


def order_id_for(kind: str, key: str) -> str:
    """The bank ``orderId`` for (``kind``, ``key``): ``CP`` + kind + hex, 32 ``[0-9A-Za-z]``.

    ``kind`` is ``P`` (payment, key = the gateway reference), ``V`` (the void of a payment),
    ``R`` (a refund, key = its refund reference), ``F`` (a cancel's full refund), ``K`` (check).
    Deterministic, so every retry names the same order; a 120-bit hash, so different keys
    never meet."""
    prefix = "CP" + kind
    digest = hashlib.sha256(f"{kind}\x00{key}".encode()).hexdigest()
    return prefix + digest[: 32 - len(prefix)]


def txn_time_for(order_id: str) -> str:
    """The ``txnTime`` sent with a derived order: a deterministic instant of 2025 (Beijing time)
    taken from the order id. The bank needs the same ``txnTime`` on every retry and in a query,
    and a stateless adapter has nothing else to remember the first send by; the dialect does not
    compare ``txnTime`` with the bank's clock (docs/bank-protocol.md)."""
    offset = int(hashlib.sha256(f"txnTime\x00{order_id}".encode()).hexdigest()[:12], 16) % _TXN_TIME_SPAN
    return (_TXN_TIME_BASE + timedelta(seconds=offset)).strftime("%Y%m%d%H%M%S")


class BankError(AdapterError):
    """An agreement call gave no usable answer (timeout, unverified, in doubt)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"bank {code}: {message}" if message else f"bank {code}")
        self.code = code


class AgreementRefused(BankError):
    """The bank verifiably refused to open the agreement (``61``, ``63``, ``40``, …)."""


class NotificationRejected(BankError):
    """A notification that is unsigned, wrongly signed, for another merchant or malformed."""


@dataclass(frozen=True)
class AgreementOpened:
    token: str = field(repr=False)
    acc_no_masked: str | None
    payer_ref: str
    query_id: str | None


@dataclass(frozen=True)
class _Answer:
    fields: dict[str, str]

    @property
    def code(self) -> str:
        return self.fields.get("respCode", "")


class BankAdapter(BaseAdapter):
    name: ClassVar[str] = "bank"
    capabilities: ClassVar[Capabilities] = Capabilities(
        methods=frozenset({"card"}),
        funding=frozenset({"bank_agreement"}),
        operations=frozenset(
            {Operation.PAY, Operation.QUERY, Operation.CANCEL, Operation.REFUND, Operation.CHECK}
        ),
        notifications=True,
    )

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config, http)
        creds = config.credentials
        self._mer_id = _required(creds, "mer_id")
        self._sign_method = _required(creds, "sign_method")
        self._tr_id = _required(creds, "tr_id")
        if self._sign_method not in wire.SIGN_METHODS:
            raise AdapterConfigError("bank sign_method must be '01', '11' or '12'")
        self._private_key: rsa.RSAPrivateKey | None = None
        self._cert_id: str | None = None
        self._anchors: wire.TrustAnchors | None = None
        self._subject: wire.BankSubject | None = None
        self._secure_key: str | None = None
        try:
            if self._sign_method == wire.SIGN_CERT:
                self._private_key = wire.load_private_key(_required(creds, "merchant_private_key"))
                cert = wire.load_certificate(_required(creds, "merchant_cert"), "merchant certificate")
                cert_key = cert.public_key()
                if (
                    not isinstance(cert_key, rsa.RSAPublicKey)
                    or cert_key.public_numbers() != self._private_key.public_key().public_numbers()
                ):
                    raise AdapterConfigError("the merchant certificate is not for the merchant private key")
                self._cert_id = wire.certificate_id(cert)
                self._anchors = wire.TrustAnchors(
                    root=wire.load_certificate(_required(creds, "bank_root_ca"), "bank root CA"),
                    intermediate=wire.load_certificate(
                        _required(creds, "bank_intermediate_ca"), "bank intermediate CA"
                    ),
                )
                self._subject = wire.BankSubject(
                    common_name=_required(creds, "bank_subject_cn"),
                    organization=_required(creds, "bank_subject_o"),
                )
            else:
                self._secure_key = _required(creds, "secure_key")
        except wire.InvalidKey as exc:
            raise AdapterConfigError(str(exc)) from None
        parts = urlsplit(config.endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AdapterConfigError("bank endpoint must be an absolute http(s) URL")
        self._base = config.endpoint.rstrip("/")
        back_url = str(config.options.get("back_url") or "")
        if urlsplit(back_url).scheme not in ("http", "https"):
            raise AdapterConfigError("bank options need 'back_url', an absolute http(s) URL")
        self._back_url = back_url
        self._channel = str(config.options.get("channel_type", "07"))
        self._timeout = float(config.options.get("timeout_seconds", DEFAULT_TIMEOUT))

    # ------------------------------------------------------------------ one signed exchange

    def _common(
        self, txn_type: str, txn_sub_type: str, biz_type: str, order_id: str, txn_time: str
    ) -> dict[str, str]:
        fields = {
            "version": VERSION,
            "encoding": ENCODING,
            "signMethod": self._sign_method,
            "merId": self._mer_id,
            "accessType": ACCESS_MERCHANT,
            "txnType": txn_type,
            "txnSubType": txn_sub_type,
            "bizType": biz_type,
            "orderId": order_id,
            "txnTime": txn_time,
        }
        if self._cert_id is not None:
            fields["certId"] = self._cert_id
        return fields

    async def _exchange(self, path: str, fields: dict[str, str]) -> _Answer | ProviderResult:
        """Sign, send, verify. The verified answer (for this merchant and order), or UNKNOWN."""
        fields = {k: v for k, v in fields.items() if v}
        fields["signature"] = wire.sign(
            fields, sign_method=self._sign_method, private_key=self._private_key, secure_key=self._secure_key
        )
        what = f"{fields['txnType']}/{fields['orderId']}"
        try:
            # httpx's timeouts bound each read, not the whole exchange: bound it here.
            async with asyncio.timeout(self._timeout):
                response = await self.http.post(
                    self._base + path,
                    content=wire.encode_form(fields).encode("ascii"),
                    headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
                    timeout=self._timeout,
                )
        except TimeoutError:
            log.warning("bank %s: no answer within %.1f s", what, self._timeout)
            return ProviderResult(Outcome.UNKNOWN, code="TIMEOUT", retryable=True)
        except httpx.ConnectError as exc:
            raise ProviderUnreachable(f"bank unreachable: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            log.warning("bank %s: transport error %s", what, type(exc).__name__)
            return ProviderResult(
                Outcome.UNKNOWN, code="TRANSPORT_ERROR", message=type(exc).__name__, retryable=True
            )
        if response.status_code != 200:
            log.warning("bank %s: HTTP %s", what, response.status_code)
            code = f"HTTP_{response.status_code}"
            refused = http_refusal(response.status_code)
            if refused is not None:  # from something in front of the bank, unsigned: proves nothing
                return ProviderResult.refusal(refused, code, nothing_applied=False)
            return ProviderResult(Outcome.UNKNOWN, code=code, retryable=True)
        try:
            answer = wire.decode_form(response.content)
        except (ValueError, UnicodeDecodeError):
            log.warning("bank %s: answer is not a form", what)
            return ProviderResult(
                Outcome.UNKNOWN, code="UNVERIFIED_RESPONSE", message="malformed", retryable=True
            )
        try:
            wire.verify_fields(
                answer,
                sign_method=self._sign_method,
                anchors=self._anchors,
                subject=self._subject,
                secure_key=self._secure_key,
            )
        except wire.ResponseNotVerified as exc:
            code = answer.get("respCode", "")
            log.warning("bank %s: respCode %s not verified: %s", what, code or "-", exc)
            refused = request_refusal(code)
            if refused is not None:  # 31 is never signed; any refusal unsigned proves nothing
                return ProviderResult.refusal(refused, code, str(exc), nothing_applied=False)
            return ProviderResult(
                Outcome.UNKNOWN,
                code="UNVERIFIED_RESPONSE",
                message=str(exc),
                retryable=True,
                raw={"respCode": code} if code else {},
            )
        if answer.get("merId") != self._mer_id or answer.get("orderId") != fields["orderId"]:
            log.warning("bank %s: the answer is for another merchant or order", what)
            return ProviderResult(Outcome.UNKNOWN, code="MISMATCHED_RESPONSE", retryable=True)
        log.debug("bank %s: respCode %s", what, answer.get("respCode"))
        refused = request_refusal(answer.get("respCode", ""))
        if refused is not None:
            # Signed, for this merchant and order: the bank refused the request and recorded
            # nothing. News about the request, none about the payment.
            return ProviderResult.refusal(
                refused,
                answer["respCode"],
                answer.get("respMsg"),
                nothing_applied=True,
                raw=_scrub(answer),
            )
        return _Answer(answer)

    # ------------------------------------------------------------------ query helpers

    async def _query_order(self, order_id: str) -> _Answer | ProviderResult:
        fields = self._common(TXN_QUERY, "00", BIZ_QUERY, order_id, txn_time_for(order_id))
        return await self._exchange(QUERY_PATH, fields)

    async def _query_payment(self, reference: str) -> _Answer | ProviderResult:
        return await self._query_order(order_id_for("P", reference))

    @staticmethod
    def _unknown_query(answer: _Answer) -> ProviderResult:
        return ProviderResult(
            Outcome.UNKNOWN,
            code=answer.code or "NO_CODE",
            message=answer.fields.get("respMsg"),
            raw=_scrub(answer.fields),
            retryable=True,
        )

    # ------------------------------------------------------------------ operations

    async def pay(self, request: PaymentRequest) -> ProviderResult:
        if not isinstance(request.credential, AgreementCredential):
            raise AdapterConfigError("the bank adapter pays with an agreement token only")
        if request.currency != "CNY":
            return ProviderResult(
                Outcome.FAILED, code="CURRENCY_UNSUPPORTED", message="the bank takes CNY only"
            )
        if request.amount <= 0:
            return ProviderResult(Outcome.FAILED, code="INVALID_AMOUNT")
        order_id = order_id_for("P", request.reference)
        fields = self._common(TXN_CONSUME, "01", BIZ_TOKEN, order_id, txn_time_for(order_id))
        fields.update(
            {
                "channelType": self._channel,
                "txnAmt": str(request.amount),
                "currencyCode": CURRENCY_CNY,
                "backUrl": self._back_url,
                "tokenPayData": f"{{token={request.credential.token}&trId={self._tr_id}}}",
                "reqReserved": request.reference,
            }
        )
        answer = await self._exchange(BACK_TRANS_PATH, fields)
        if isinstance(answer, ProviderResult):
            return answer
        body, code = answer.fields, answer.code
        if code == SUCCESS:
            if body.get("txnAmt") != str(request.amount):
                return ProviderResult(Outcome.UNKNOWN, code="AMOUNT_MISMATCH", raw=_scrub(body))
            return ProviderResult(
                Outcome.SUCCEEDED,
                provider_txn_id=body.get("queryId"),
                amount=request.amount,
                raw=_scrub(body),
            )
        return _failed_or_unknown(body)

    async def query(self, reference: str) -> ProviderResult:
        answer = await self._query_payment(reference)
        if isinstance(answer, ProviderResult):
            return answer
        body, code = answer.fields, answer.code
        if code == NOT_FOUND:
            return ProviderResult(Outcome.NOT_FOUND, code=code, raw=_scrub(body))
        if code != SUCCESS:
            return self._unknown_query(answer)
        if body.get("origTxnType") == TXN_VOID:
            # our cancel's block on an order the bank never saw: it can never charge
            return ProviderResult(Outcome.REVERSED, code="ORDER_BLOCKED", amount=0, raw=_scrub(body))
        orig = body.get("origRespCode", "")
        if body.get("origTxnType", TXN_CONSUME) != TXN_CONSUME or not orig:
            return self._unknown_query(answer)
        if orig in IN_DOUBT:
            return ProviderResult(Outcome.UNKNOWN, code=orig, raw=_scrub(body), retryable=True)
        if orig != SUCCESS:
            return ProviderResult(
                Outcome.FAILED, code=orig, message=body.get("origRespMsg"), raw=_scrub(body)
            )
        amount = _amount(body.get("txnAmt"))
        reversed_ = await self._cancel_completed(reference, amount)
        if isinstance(reversed_, ProviderResult):
            return reversed_
        outcome = Outcome.REVERSED if reversed_ else Outcome.SUCCEEDED
        return ProviderResult(outcome, provider_txn_id=body.get("queryId"), amount=amount, raw=_scrub(body))

    async def _cancel_completed(self, reference: str, amount: int | None) -> bool | ProviderResult:
        """Whether a cancel of this (successful) payment has given everything back: its void
        succeeded, or its full refund did. The cancel takes these steps in this order, so an
        absent step ends the search."""
        for kind in ("V", "F"):
            step = await self._query_order(order_id_for(kind, reference))
            if isinstance(step, ProviderResult):
                return step
            if step.code == NOT_FOUND:
                return False
            state = _step_state(step)
            if state is None:
                return self._unknown_query(step)
            if state == SUCCESS:
                return True
        return False

    async def cancel(self, reference: str) -> ProviderResult:
        answer = await self._query_payment(reference)
        if isinstance(answer, ProviderResult):
            return answer
        body, code = answer.fields, answer.code
        if code == NOT_FOUND:
            return await self._block(reference)
        if code != SUCCESS:
            return self._unknown_query(answer)
        if body.get("origTxnType") == TXN_VOID:
            return ProviderResult(Outcome.REVERSED, code="ORDER_BLOCKED", amount=0, raw=_scrub(body))
        orig = body.get("origRespCode", "")
        if body.get("origTxnType", TXN_CONSUME) != TXN_CONSUME or not orig or orig in IN_DOUBT:
            return ProviderResult(Outcome.UNKNOWN, code=orig or "NO_CODE", raw=_scrub(body), retryable=True)
        if orig != SUCCESS:
            # the consume was refused and is recorded under its orderId: nothing moved, ever
            return ProviderResult(
                Outcome.FAILED, code=orig, message=body.get("origRespMsg"), raw=_scrub(body)
            )
        amount = _amount(body.get("txnAmt"))
        query_id = body.get("queryId", "")
        if amount is None or not query_id:
            return self._unknown_query(answer)
        # 1. same-day void of the whole amount
        void = await self._send_reversal(TXN_VOID, order_id_for("V", reference), query_id, amount, reference)
        if isinstance(void, ProviderResult):
            return void
        if void.code == SUCCESS:
            return ProviderResult(
                Outcome.REVERSED,
                code="VOIDED",
                amount=amount,
                provider_txn_id=void.fields.get("queryId"),
                raw=_scrub(void.fields),
            )
        if void.code != NO_REFUNDABLE:
            return _unknown_step(void)
        # 2. not the same day, or already (partly) refunded: refund in full
        full = await self._send_reversal(
            TXN_REFUND, order_id_for("F", reference), query_id, amount, reference
        )
        if isinstance(full, ProviderResult):
            return full
        if full.code == SUCCESS:
            return ProviderResult(
                Outcome.REVERSED,
                code="REFUNDED",
                amount=amount,
                provider_txn_id=full.fields.get("queryId"),
                raw=_scrub(full.fields),
            )
        if full.code == AMOUNT_MISMATCH:
            # partly refunded by someone other than the gateway (which refunds the rest itself):
            # what remains is not known here, and guessing at it could give back too much
            return ProviderResult(
                Outcome.UNKNOWN, code="PARTLY_REFUNDED", raw=_scrub(full.fields), retryable=False
            )
        # 35 here: voided by an order that is not ours, or no longer a consume -- not proven
        return _unknown_step(full)

    async def _block(self, reference: str) -> ProviderResult:
        """The bank never saw the payment: record a void under its orderId, which the bank refuses
        (``35``) and keeps, so a late consume with that orderId is refused (``12``) for good."""
        order_id = order_id_for("P", reference)
        block = await self._send_reversal(TXN_VOID, order_id, _BLOCKING_ORIG_QRY_ID, 1, reference)
        if isinstance(block, ProviderResult):
            return block
        if block.code == NO_REFUNDABLE:
            return ProviderResult(Outcome.REVERSED, code="ORDER_BLOCKED", amount=0, raw=_scrub(block.fields))
        # 12: the consume arrived in between; anything else: not blocked. Query and cancel again.
        return _unknown_step(block)

    async def _send_reversal(
        self, txn_type: str, order_id: str, orig_qry_id: str, amount: int, reference: str
    ) -> _Answer | ProviderResult:
        fields = self._common(txn_type, "00", BIZ_TOKEN, order_id, txn_time_for(order_id))
        fields.update(
            {
                "channelType": self._channel,
                "origQryId": orig_qry_id,
                "txnAmt": str(amount),
                "currencyCode": CURRENCY_CNY,
                "backUrl": self._back_url,
                "reqReserved": reference,
            }
        )
        return await self._exchange(BACK_TRANS_PATH, fields)

    async def refund(self, request: RefundRequest) -> ProviderResult:
        if request.amount <= 0:
            return ProviderResult(Outcome.FAILED, code="INVALID_AMOUNT")
        answer = await self._query_payment(request.reference)
        if isinstance(answer, ProviderResult):
            return answer
        body, code = answer.fields, answer.code
        if code == NOT_FOUND:
            return ProviderResult(Outcome.FAILED, code="ORIGINAL_NOT_FOUND", raw=_scrub(body))
        if code != SUCCESS:
            return self._unknown_query(answer)
        orig = body.get("origRespCode", "")
        if body.get("origTxnType", TXN_CONSUME) != TXN_CONSUME or not orig or orig in IN_DOUBT:
            if body.get("origTxnType") == TXN_VOID:
                return ProviderResult(Outcome.FAILED, code="ORIGINAL_NOT_PAID", raw=_scrub(body))
            return ProviderResult(Outcome.UNKNOWN, code=orig or "NO_CODE", raw=_scrub(body), retryable=True)
        if orig != SUCCESS or not body.get("queryId"):
            return ProviderResult(Outcome.FAILED, code="ORIGINAL_NOT_PAID", raw=_scrub(body))
        step = await self._send_reversal(
            TXN_REFUND,
            order_id_for("R", request.refund_reference),
            body["queryId"],
            request.amount,
            request.reference,
        )
        if isinstance(step, ProviderResult):
            return step
        if step.code == SUCCESS:
            return ProviderResult(
                Outcome.SUCCEEDED,
                provider_txn_id=step.fields.get("queryId"),
                amount=request.amount,
                raw=_scrub(step.fields),
            )
        return _failed_or_unknown(step.fields)

    async def check(self) -> ProviderResult:
        """A signed query of an order that never existed: a verified ``34`` (or ``00``) proves
        the endpoint, the merchant number, our signature and the bank's."""
        answer = await self._query_order(order_id_for("K", secrets.token_hex(16)))
        if isinstance(answer, ProviderResult):
            return answer
        if answer.code in (NOT_FOUND, SUCCESS):
            return ProviderResult(Outcome.SUCCEEDED, code=answer.code, raw=_scrub(answer.fields))
        if answer.code in IN_DOUBT:
            return self._unknown_query(answer)
        return ProviderResult(
            Outcome.FAILED,
            code=answer.code or "NO_CODE",
            message=answer.fields.get("respMsg"),
            raw=_scrub(answer.fields),
        )

    # ------------------------------------------------------------------ agreements

    async def open_agreement(self, acc_no: str, payer_ref: str) -> AgreementOpened:
        """Open (开通) a direct-debit agreement for ``payer_ref`` on ``acc_no`` and return its
        token. The account number is sent once and never logged or returned (the answer's is
        masked). Raises ``AgreementRefused`` on a verified refusal, ``BankError`` otherwise."""
        order_id = order_id_for("A", secrets.token_hex(16))
        fields = self._common(
            TXN_OPEN, "00", BIZ_TOKEN, order_id, datetime.now(BEIJING).strftime("%Y%m%d%H%M%S")
        )
        fields.update(
            {
                "channelType": self._channel,
                "accNo": acc_no,
                "tokenPayData": f"{{trId={self._tr_id}&tokenType=01}}",
                "reqReserved": payer_ref,
            }
        )
        answer = await self._exchange(BACK_TRANS_PATH, fields)
        if isinstance(answer, ProviderResult):
            raise BankError(answer.code or "UNKNOWN", answer.message or "")
        if answer.code in IN_DOUBT:
            raise BankError(answer.code, "agreement open in doubt")
        if answer.code != SUCCESS:
            raise AgreementRefused(answer.code or "NO_CODE", answer.fields.get("respMsg", ""))
        token = _braced(answer.fields.get("tokenPayData", "")).get("token", "")
        if not token:
            raise BankError("MALFORMED", "the answer carries no token")
        return AgreementOpened(
            token=token,
            acc_no_masked=answer.fields.get("accNo"),
            payer_ref=payer_ref,
            query_id=answer.fields.get("queryId"),
        )

    # ------------------------------------------------------------------ notifications

    async def parse_notification(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify a ``backUrl`` notification like a response (same mode, same chain checks for
        01) and say what it reports. ``reference`` is the gateway reference we sent as
        ``reqReserved`` (checked against the ``orderId`` derived from it); ``dedupe_key`` is the
        bank's ``queryId``. Consume → SUCCEEDED; void, and a cancel's refunds → REVERSED only
        when they return everything (void, full refund); other refunds → UNKNOWN (they do not
        decide the payment; the gateway may query)."""
        try:
            form = wire.decode_form(body)
        except (ValueError, UnicodeDecodeError):
            raise NotificationRejected("MALFORMED", "not a form body") from None
        try:
            wire.verify_fields(
                form,
                sign_method=self._sign_method,
                anchors=self._anchors,
                subject=self._subject,
                secure_key=self._secure_key,
            )
        except wire.ResponseNotVerified as exc:
            raise NotificationRejected("UNVERIFIED_NOTIFICATION", str(exc)) from None
        if form.get("merId") != self._mer_id:
            raise NotificationRejected("MERCHANT_MISMATCH", "notification is for another merchant")
        reference, query_id, order_id = (
            form.get("reqReserved", ""),
            form.get("queryId", ""),
            form.get("orderId", ""),
        )
        txn_type = form.get("txnType", "")
        if not reference or not query_id or not order_id:
            raise NotificationRejected("MALFORMED", "notification lacks reqReserved, queryId or orderId")
        expected = {
            TXN_CONSUME: [order_id_for("P", reference)],
            TXN_VOID: [order_id_for("V", reference)],
        }.get(txn_type)
        if expected is not None and order_id not in expected:
            raise NotificationRejected("MALFORMED", "orderId does not belong to the reference")
        outcome = Outcome.UNKNOWN
        if form.get("respCode") == SUCCESS:
            if txn_type == TXN_CONSUME:
                outcome = Outcome.SUCCEEDED
            elif txn_type == TXN_VOID or order_id == order_id_for("F", reference):
                outcome = Outcome.REVERSED
        log.debug("bank notification txnType %s respCode %s", txn_type, form.get("respCode"))
        return ProviderEvent(
            reference=reference,
            outcome=outcome,
            provider_txn_id=query_id,
            amount=_amount(form.get("txnAmt")),
            dedupe_key=query_id,
            raw=_scrub(form),
        )


def _required(creds: Mapping[str, str], key: str) -> str:
    value = creds.get(key)
    if not value:
        raise AdapterConfigError(f"bank credentials need {key!r}")
    return value


def _amount(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)


def _braced(value: str) -> dict[str, str]:
    """``{k=v&k=v}`` -> dict (``tokenPayData``)."""
    inner = value.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        return {}
    pairs = (p.split("=", 1) for p in inner[1:-1].split("&") if "=" in p)
    return {k: v for k, v in pairs}


def _step_state(answer: _Answer) -> str | None:
    """The final respCode of a void/refund asked about by a query, or None if not final."""
    if answer.code != SUCCESS:
        return None
    orig = answer.fields.get("origRespCode", "")
    if not orig or orig in IN_DOUBT:
        return None
    return orig


def _failed_or_unknown(body: Mapping[str, str]) -> ProviderResult:
    code = body.get("respCode", "")
    message = body.get("respMsg")
    if code in IN_DOUBT:
        return ProviderResult(Outcome.UNKNOWN, code=code, message=message, raw=_scrub(body), retryable=True)
    if code == DUPLICATE or not code:
        # 12: our orderId already stands for other details (blocked by a cancel, or a changed
        # retry): only a query tells what happened. (Refusals of the request never get here.)
        return ProviderResult(Outcome.UNKNOWN, code=code or "NO_CODE", message=message, raw=_scrub(body))
    return ProviderResult(Outcome.FAILED, code=code, message=message, raw=_scrub(body))


def _unknown_step(answer: _Answer) -> ProviderResult:
    return ProviderResult(
        Outcome.UNKNOWN,
        code=answer.code or "NO_CODE",
        message=answer.fields.get("respMsg"),
        raw=_scrub(answer.fields),
        retryable=answer.code in IN_DOUBT or answer.code == DUPLICATE,
    )
