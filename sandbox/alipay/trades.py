# ruff: noqa: RUF001  (full-width punctuation is part of Alipay's own strings)
"""The sandbox Alipay's business rules: one function per OpenAPI method.

Plain synchronous functions over the state, called with the app's lock held; each returns an
Outcome: the response node, event-log entries and the notifications to send afterwards.
Where Alipay's exact behaviour is not documented, the choice made is written down in
docs/alipay-sandbox.md ("What is verified and what is chosen").
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sandbox.alipay import bills, wire
from sandbox.alipay.state import AlipayState, App, Refund, Trade, new_trade_no
from sandbox.bills import BillFaults
from sandbox.testvalues import alipay_magic_amount

if TYPE_CHECKING:
    from sandbox.face.directory import FaceDirectory

CANCEL_WINDOW_S = 24 * 3600
FINISHED_AFTER_S = 90 * 24 * 3600  # a paid trade becomes TRADE_FINISHED (no more refunds)
PRODUCTS = ("FACE_TO_FACE_PAYMENT", "GENERAL_WITHHOLDING")
FACE_SCENE = "security_code"
CODE_SCENES = ("bar_code", "wave_code")  # payment-code scenes: a face token is not valid there

SUB_MSG = {
    "ACQ.INVALID_PARAMETER": "参数无效",
    "ACQ.SYSTEM_ERROR": "系统错误",
    "ACQ.PAYMENT_AUTH_CODE_INVALID": "支付失败，获取顾客账户信息失败，请顾客刷新付款码后重新收款",
    "ACQ.BUYER_BALANCE_NOT_ENOUGH": "买家余额不足",
    "ACQ.CONTEXT_INCONSISTENT": "交易信息被篡改",
    "ACQ.TRADE_HAS_SUCCESS": "交易已被支付",
    "ACQ.TRADE_HAS_CLOSE": "交易已经关闭",
    "ACQ.TRADE_NOT_EXIST": "交易不存在",
    "ACQ.TRADE_STATUS_ERROR": "交易状态不合法",
    "ACQ.TRADE_HAS_FINISHED": "交易已完结",
    "ACQ.TRADE_CANCEL_TIME_OUT": "超过撤销时间范围",
    "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL": "退款金额超限",
    "ACQ.AGREEMENT_NOT_EXIST": "协议不存在",
    "ACQ.AGREEMENT_INVALID": "用户协议失效",
    "ACQ.USER_FACE_PAYMENT_SWITCH_OFF": "用户刷脸支付开关关闭",
    "ZOLOZ.FTOKEN_INVALID": "ftoken无效",
    "ZOLOZ.FTOKEN_EXPIRED": "ftoken已过期",
    "ZOLOZ.FTOKEN_USED": "ftoken已使用",
    "FACE_USER_NOT_EXIST": "人脸用户不存在",
    "isv.invalid-parameter": "参数无效",
    "isp.unknow-error": "系统繁忙",
    "isp.bill_not_exist": "账单不存在",
}


class Invalid(Exception):
    """A business parameter is missing or malformed (the message says which, in English)."""


@dataclass
class Notice:
    """A notification to send once the operation's lock is released."""

    url: str
    app_id: str
    out_trade_no: str
    params: dict[str, str]  # unsigned; the notifier adds sign


@dataclass
class Outcome:
    body: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    corrupt_sign: bool = False


@dataclass
class Call:
    """One verified gateway call: who, what, when."""

    state: AlipayState
    app: App
    directory: FaceDirectory | None
    now: float
    params: Mapping[str, str]  # the merged request parameters
    biz: dict[str, Any]  # biz_content, parsed
    base_url: str  # where this sandbox Alipay is reachable, for bill URLs
    hide_recorded_after: float | None = None  # query_lag: trades created later are not found yet
    faults: BillFaults | None = None  # the bill method: the bill_* rules hitting this bill


def fail(sub_code: str, detail: str | None = None, code: str = "40004", **fields: Any) -> dict[str, Any]:
    message = SUB_MSG[sub_code] + (f" ({detail})" if detail else "")
    return wire.result(code, sub_code, message, **fields)


def unknown() -> dict[str, Any]:
    return fail("isp.unknow-error", code="20000")


# --- business parameters ------------------------------------------------------------------------


def text(biz: Mapping[str, Any], name: str, *, required: bool = False, max_len: int = 64) -> str | None:
    value = biz.get(name)
    if value is None or value == "":
        if required:
            raise Invalid(f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid(f"{name} must be a string")
    value = str(value)
    if len(value) > max_len:
        raise Invalid(f"{name} is longer than {max_len} characters")
    return value


def amount(biz: Mapping[str, Any], name: str) -> int:
    if biz.get(name) in (None, ""):
        raise Invalid(f"{name} is required")
    fen = wire.parse_amount(biz[name])
    if fen is None:
        raise Invalid(f"{name} must be yuan with at most 2 decimals, 0.01 to 100000000.00")
    return fen


def obj(biz: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A nested object, given as JSON or as a JSON string (both are seen in the wild)."""
    value = biz.get(name)
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise Invalid(f"{name} is not a JSON object") from None
    if not isinstance(value, dict):
        raise Invalid(f"{name} is not a JSON object")
    return value


def trade_ref(biz: Mapping[str, Any]) -> tuple[str | None, str | None]:
    out_trade_no = text(biz, "out_trade_no")
    trade_no = text(biz, "trade_no")
    if out_trade_no is None and trade_no is None:
        raise Invalid("out_trade_no or trade_no is required")
    return out_trade_no, trade_no


# --- shared pieces -------------------------------------------------------------------------------


def status_of(trade: Trade, now: float) -> str:
    if (
        trade.status == "TRADE_SUCCESS"
        and trade.paid_at is not None
        and now - trade.paid_at > FINISHED_AFTER_S
    ):
        return "TRADE_FINISHED"
    return trade.status


def logon_id(user_id: str | None) -> str | None:
    return f"138****{user_id[-4:]}" if user_id else None


def paid_fields(trade: Trade) -> dict[str, Any]:
    if not trade.was_paid:
        return {}
    paid = wire.yuan(trade.total)
    return {
        "receipt_amount": paid,
        "buyer_pay_amount": paid,
        "point_amount": "0.00",
        "invoice_amount": paid,
        "fund_bill_list": [{"fund_channel": "ALIPAYACCOUNT", "amount": paid}],
    }


def trade_event(trade: Trade, **extra: Any) -> dict[str, Any]:
    return {
        "out_trade_no": trade.out_trade_no,
        "trade_no": trade.trade_no,
        "amount": trade.total,
        "buyer_id": trade.buyer_id,
        "product_code": trade.product_code or None,
        **extra,
    }


def notice(call: Call, trade: Trade, *, refund: Refund | None = None) -> list[Notice]:
    """The trade_status_sync notification for the trade's current state (none without notify_url)."""
    if not trade.notify_url:
        return []
    status = status_of(trade, call.now)
    params: dict[str, Any] = {
        "notify_time": wire.beijing_time(call.now),
        "notify_type": "trade_status_sync",
        "notify_id": secrets.token_hex(17),
        "charset": "utf-8",
        "version": "1.0",
        "sign_type": "RSA2",
        "app_id": trade.app_id,
        "auth_app_id": trade.app_id,
        "seller_id": call.app.seller_id,
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "trade_status": status,
        "subject": trade.subject or None,
        "gmt_create": wire.beijing_time(trade.created_at),
    }
    if trade.total:
        params["total_amount"] = wire.yuan(trade.total)
    if trade.buyer_id:
        params["buyer_id"] = trade.buyer_id
        params["buyer_logon_id"] = logon_id(trade.buyer_id)
    if trade.paid_at is not None:
        paid = wire.yuan(trade.total)
        params.update(
            receipt_amount=paid,
            invoice_amount=paid,
            buyer_pay_amount=paid,
            point_amount="0.00",
            gmt_payment=wire.beijing_time(trade.paid_at),
            # Notifications spell the channel key in camelCase, unlike responses.
            fund_bill_list=json.dumps(
                [{"amount": paid, "fundChannel": "ALIPAYACCOUNT"}], separators=(",", ":")
            ),
        )
    if refund is not None:
        params.update(
            refund_fee=wire.yuan(trade.refunded),
            gmt_refund=wire.beijing_time(refund.at) + f".{int(refund.at * 1000) % 1000:03d}",
        )
        if refund.source == "refund":
            params["out_biz_no"] = refund.out_request_no
    if status == "TRADE_CLOSED" and trade.closed_at is not None:
        params["gmt_close"] = wire.beijing_time(trade.closed_at)
    clean = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    return [Notice(trade.notify_url, trade.app_id, trade.out_trade_no, clean)]


# --- alipay.trade.pay ----------------------------------------------------------------------------


@dataclass
class PayRequest:
    out_trade_no: str
    total: int
    subject: str
    auth_code: str
    scene: str | None
    product_code: str
    agreement_no: str | None
    store_id: str | None
    terminal_id: str | None

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        # What makes "the same trade"; the auth_code is judged separately (TRADE_HAS_SUCCESS).
        return (self.total, self.subject, self.product_code, self.scene, self.agreement_no)


def parse_pay(biz: Mapping[str, Any]) -> PayRequest:
    out_trade_no = text(biz, "out_trade_no", required=True)
    total = amount(biz, "total_amount")
    subject = text(biz, "subject", required=True, max_len=256)
    auth_code = text(biz, "auth_code", required=True)
    scene = text(biz, "scene", max_len=32)
    product_code = text(biz, "product_code", max_len=64) or "FACE_TO_FACE_PAYMENT"
    if product_code not in PRODUCTS:
        raise Invalid(
            f"product_code {product_code} is not signed for this app; use one of {', '.join(PRODUCTS)}"
        )
    if product_code == "FACE_TO_FACE_PAYMENT" and scene is None:
        raise Invalid("scene is required")
    if scene is not None and scene != FACE_SCENE and scene not in CODE_SCENES:
        raise Invalid(f"scene {scene} is not supported")
    agreement_no = None
    if product_code == "GENERAL_WITHHOLDING":
        agreement_no = text(obj(biz, "agreement_params"), "agreement_no", required=True)
    obj(biz, "business_params")  # must be well-formed if given; not otherwise used
    assert out_trade_no is not None and subject is not None and auth_code is not None
    return PayRequest(
        out_trade_no,
        total,
        subject,
        auth_code,
        scene,
        product_code,
        agreement_no,
        text(biz, "store_id"),
        text(biz, "terminal_id"),
    )


def refuse_payer(
    call: Call, req: PayRequest, trade_key: str, *, check_expiry: bool = True
) -> tuple[str, str | None] | str:
    """The buyer's user id, or the (sub_code, detail) refusing this payer."""
    if req.scene in CODE_SCENES:
        return "ACQ.PAYMENT_AUTH_CODE_INVALID", "sandbox: face tokens are only valid with scene=security_code"
    token = call.directory.lookup_token(req.auth_code) if call.directory is not None else None
    if token is None:
        return "ACQ.PAYMENT_AUTH_CODE_INVALID", "sandbox: unknown face token"
    if check_expiry and call.now >= token.expires_at:
        return "ACQ.PAYMENT_AUTH_CODE_INVALID", "sandbox: face token expired"
    if token.used_by is not None and token.used_by != trade_key:
        return "ACQ.PAYMENT_AUTH_CODE_INVALID", "sandbox: face token already used by another trade"
    assert call.directory is not None
    user = call.directory.user(token.user_id)
    if user is None or user.deleted:
        return "ACQ.USER_FACE_PAYMENT_SWITCH_OFF", "sandbox: the face user's enrolment was deleted"
    if req.product_code == "GENERAL_WITHHOLDING":
        if req.agreement_no != user.agreement_no:
            return "ACQ.AGREEMENT_NOT_EXIST", "sandbox: not an agreement of this face user"
        if req.agreement_no in call.state.invalid_agreements:
            return "ACQ.AGREEMENT_INVALID", "sandbox: the agreement was invalidated"
    if call.state.balance(user.user_id) < req.total:
        return "ACQ.BUYER_BALANCE_NOT_ENOUGH", None
    return user.user_id


def _complete(
    call: Call, trade: Trade, req: PayRequest, *, check_expiry: bool
) -> tuple[str, str | None] | None:
    """Charge the buyer and use the token up; the refusal instead, with nothing changed."""
    payer = refuse_payer(call, req, trade.key, check_expiry=check_expiry)
    if isinstance(payer, tuple):
        return payer
    assert call.directory is not None
    if not call.directory.use_token(req.auth_code, trade.key):
        return "ACQ.PAYMENT_AUTH_CODE_INVALID", "sandbox: face token already used by another trade"
    call.state.balances[payer] = call.state.balance(payer) - req.total
    trade.buyer_id = payer
    trade.status = "TRADE_SUCCESS"
    trade.paid_at = call.now
    trade.queries_until_paid = None
    trade.pay_result = wire.result(
        "10000",
        trade_no=trade.trade_no,
        out_trade_no=trade.out_trade_no,
        buyer_logon_id=logon_id(payer),
        buyer_user_id=payer,
        total_amount=wire.yuan(trade.total),
        gmt_payment=wire.beijing_time(call.now),
        **paid_fields(trade),
    )
    return None


def _waiting(trade: Trade) -> dict[str, Any]:
    return wire.result(
        "10003",
        trade_no=trade.trade_no,
        out_trade_no=trade.out_trade_no,
        buyer_logon_id=logon_id(trade.buyer_id),
        buyer_user_id=trade.buyer_id,
        total_amount=wire.yuan(trade.total),
    )


PAY_FAILURE_ZEROES = {
    "buyer_pay_amount": "0.00",
    "invoice_amount": "0.00",
    "point_amount": "0.00",
    "receipt_amount": "0.00",
}


def pay_fail(sub_code: str, detail: str | None = None, **fields: Any) -> dict[str, Any]:
    return fail(sub_code, detail, **fields, **PAY_FAILURE_ZEROES)


def pay(call: Call) -> Outcome:
    req = parse_pay(call.biz)
    magic = alipay_magic_amount(req.total)
    action = magic.action if magic is not None else None
    if action == "unknown_before_apply":
        return Outcome(
            unknown(), [("alipay.pay_unknown", {"out_trade_no": req.out_trade_no, "amount": req.total})]
        )
    existing = call.state.trades.get((call.app.app_id, req.out_trade_no))
    if existing is not None:
        return _pay_again(call, existing, req, action)

    trade = Trade(
        app_id=call.app.app_id,
        out_trade_no=req.out_trade_no,
        trade_no=new_trade_no(call.now),
        status="WAIT_BUYER_PAY",
        created_at=call.now,
        fingerprint=req.fingerprint,
        total=req.total,
        subject=req.subject,
        product_code=req.product_code,
        auth_code=req.auth_code,
        agreement_no=req.agreement_no,
        store_id=req.store_id,
        terminal_id=req.terminal_id,
        notify_url=call.params.get("notify_url") or None,
    )
    payer = refuse_payer(call, req, trade.key)
    if isinstance(payer, tuple):
        sub_code, detail = payer
        event = (
            "alipay.decline",
            {"out_trade_no": req.out_trade_no, "amount": req.total, "sub_code": sub_code},
        )
        # A refusal creates no trade: a query says TRADE_NOT_EXIST and the same out_trade_no may pay again.
        body = unknown() if action == "unknown_after_apply" else pay_fail(sub_code, detail)
        return Outcome(body, [event])
    trade.buyer_id = payer
    if action == "system_error":  # created, never paid
        call.state.add(trade)
        return Outcome(pay_fail("ACQ.SYSTEM_ERROR"), [("alipay.pay_waiting", trade_event(trade, magic=85))])
    if action == "user_paying":
        trade.queries_until_paid = 1
        call.state.add(trade)
        return Outcome(_waiting(trade), [("alipay.pay_waiting", trade_event(trade, magic=81))])
    refusal = _complete(call, trade, req, check_expiry=True)
    if refusal is not None:  # only if the token was used up in between: cannot happen under the lock
        return Outcome(pay_fail(*refusal))
    call.state.add(trade)
    if action == "cancel_retry":
        trade.cancel_failures_left = 1
    assert trade.pay_result is not None
    outcome = Outcome(trade.pay_result, [("alipay.pay", trade_event(trade))], notice(call, trade))
    if action == "unknown_after_apply":
        outcome.body = unknown()
    outcome.corrupt_sign = action == "bad_signature"
    return outcome


def _pay_again(call: Call, trade: Trade, req: PayRequest, action: str | None) -> Outcome:
    """alipay.trade.pay for an out_trade_no this app already used."""
    ref = {"out_trade_no": trade.out_trade_no, "trade_no": trade.trade_no}
    if trade.status == "TRADE_CLOSED":
        return Outcome(pay_fail("ACQ.TRADE_HAS_CLOSE", **ref))
    if trade.fingerprint != req.fingerprint:
        event = ("alipay.decline", {**ref, "amount": req.total, "sub_code": "ACQ.CONTEXT_INCONSISTENT"})
        return Outcome(
            pay_fail("ACQ.CONTEXT_INCONSISTENT", "sandbox: same out_trade_no, other details"), [event]
        )
    if trade.status == "WAIT_BUYER_PAY":
        if action == "system_error":
            return Outcome(pay_fail("ACQ.SYSTEM_ERROR"))
        return Outcome(_waiting(trade))
    if trade.auth_code != req.auth_code:
        # Paid already with another token: the new token is not used. Same buyer -> it is paid.
        return Outcome(pay_fail("ACQ.TRADE_HAS_SUCCESS", buyer_user_id=trade.buyer_id, **ref))
    assert trade.pay_result is not None
    body = unknown() if action == "unknown_after_apply" else trade.pay_result
    return Outcome(body, corrupt_sign=action == "bad_signature")


# --- alipay.trade.query ---------------------------------------------------------------------------


def query(call: Call) -> Outcome:
    out_trade_no, trade_no = trade_ref(call.biz)
    trade = call.state.find(call.app.app_id, out_trade_no, trade_no)
    cutoff = call.hide_recorded_after
    if trade is None or (cutoff is not None and trade.created_at > cutoff):
        return Outcome(fail("ACQ.TRADE_NOT_EXIST", out_trade_no=out_trade_no, trade_no=trade_no))
    outcome = Outcome({})
    if trade.status == "WAIT_BUYER_PAY" and trade.queries_until_paid is not None:
        if trade.queries_until_paid > 0:
            trade.queries_until_paid -= 1
        else:  # magic 81: the buyer confirmed on the phone
            outcome = _confirm(call, trade)
    if trade.fingerprint is None:  # closed by a cancel that came before any pay
        outcome.body = wire.result(
            "10000", trade_no=trade.trade_no, out_trade_no=trade.out_trade_no, trade_status="TRADE_CLOSED"
        )
        return outcome
    outcome.body = wire.result(
        "10000",
        trade_no=trade.trade_no,
        out_trade_no=trade.out_trade_no,
        buyer_logon_id=logon_id(trade.buyer_id),
        buyer_user_id=trade.buyer_id,
        trade_status=status_of(trade, call.now),
        total_amount=wire.yuan(trade.total),
        send_pay_date=wire.beijing_time(trade.paid_at) if trade.paid_at is not None else None,
        store_id=trade.store_id,
        terminal_id=trade.terminal_id,
        **paid_fields(trade),
    )
    return outcome


def _confirm(call: Call, trade: Trade) -> Outcome:
    assert trade.auth_code is not None
    req = PayRequest(
        trade.out_trade_no,
        trade.total,
        trade.subject,
        trade.auth_code,
        FACE_SCENE,
        trade.product_code,
        trade.agreement_no,
        trade.store_id,
        trade.terminal_id,
    )
    refusal = _complete(call, trade, req, check_expiry=False)
    if refusal is not None:
        trade.status = "TRADE_CLOSED"
        trade.closed_at = call.now
        trade.queries_until_paid = None
        event = ("alipay.decline", trade_event(trade, sub_code=refusal[0], after="user_paying"))
        return Outcome({}, [event], notice(call, trade))
    return Outcome({}, [("alipay.pay", trade_event(trade, after="user_paying"))], notice(call, trade))


# --- alipay.trade.cancel / close -----------------------------------------------------------------


def _refund_to_buyer(call: Call, trade: Trade, fen: int) -> None:
    trade.refunded += fen
    if trade.buyer_id is not None:
        call.state.balances[trade.buyer_id] = call.state.balance(trade.buyer_id) + fen


def cancel(call: Call) -> Outcome:
    out_trade_no, trade_no = trade_ref(call.biz)
    trade = call.state.find(call.app.app_id, out_trade_no, trade_no)
    if trade is None:
        if out_trade_no is None or trade_no is not None:
            return Outcome(fail("ACQ.TRADE_NOT_EXIST", retry_flag="N"))
        # Cancel before any pay arrived: record a closed trade, so a late pay cannot succeed.
        trade = call.state.add(
            Trade(
                call.app.app_id,
                out_trade_no,
                new_trade_no(call.now),
                "TRADE_CLOSED",
                call.now,
                closed_at=call.now,
            )
        )
        trade.cancel_action = "close"
        body = wire.result(
            "10000", trade_no=trade.trade_no, out_trade_no=out_trade_no, retry_flag="N", action="close"
        )
        return Outcome(body, [("alipay.cancel", trade_event(trade, action="close", before_pay=True))])
    ref = {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}
    if trade.cancel_failures_left > 0:  # magic 86
        trade.cancel_failures_left -= 1
        return Outcome(
            fail("ACQ.SYSTEM_ERROR", retry_flag="Y"), [("alipay.cancel_failed", trade_event(trade, magic=86))]
        )
    if trade.status == "TRADE_CLOSED":  # a retry, or closed some other way: nothing more to do
        action = trade.cancel_action or ("refund" if trade.was_paid else "close")
        return Outcome(wire.result("10000", **ref, retry_flag="N", action=action))
    if call.now - trade.created_at > CANCEL_WINDOW_S:
        return Outcome(
            fail("ACQ.TRADE_CANCEL_TIME_OUT", "sandbox: older than 24 h, refund it instead", retry_flag="N")
        )
    trade.status = "TRADE_CLOSED"
    trade.closed_at = call.now
    trade.queries_until_paid = None
    if not trade.was_paid:
        trade.cancel_action = "close"
        body = wire.result("10000", **ref, retry_flag="N", action="close")
        return Outcome(body, [("alipay.cancel", trade_event(trade, action="close"))], notice(call, trade))
    back = trade.total - trade.refunded
    _refund_to_buyer(call, trade, back)
    trade.cancel_action = "refund"
    trade.cancel_refund = Refund("", back, call.now, {}, source="cancel")
    body = wire.result(
        "10000", **ref, retry_flag="N", action="refund", gmt_refund_pay=wire.beijing_time(call.now)
    )
    event = ("alipay.cancel", trade_event(trade, action="refund", refunded=back))
    return Outcome(body, [event], notice(call, trade, refund=trade.cancel_refund))


def close(call: Call) -> Outcome:
    out_trade_no, trade_no = trade_ref(call.biz)
    trade = call.state.find(call.app.app_id, out_trade_no, trade_no)
    if trade is None:
        return Outcome(fail("ACQ.TRADE_NOT_EXIST"))
    ref = {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}
    if trade.status == "TRADE_CLOSED":
        return Outcome(wire.result("10000", **ref))
    if trade.status != "WAIT_BUYER_PAY":
        return Outcome(fail("ACQ.TRADE_STATUS_ERROR", "sandbox: a paid trade is refunded, not closed"))
    trade.status = "TRADE_CLOSED"
    trade.closed_at = call.now
    trade.queries_until_paid = None
    return Outcome(wire.result("10000", **ref), [("alipay.close", trade_event(trade))], notice(call, trade))


# --- alipay.trade.refund / fastpay.refund.query --------------------------------------------------


def refund(call: Call) -> Outcome:
    out_trade_no, trade_no = trade_ref(call.biz)
    fen = amount(call.biz, "refund_amount")
    out_request_no = text(call.biz, "out_request_no")
    text(call.biz, "refund_reason", max_len=256)
    trade = call.state.find(call.app.app_id, out_trade_no, trade_no)
    if trade is None:
        return Outcome(fail("ACQ.TRADE_NOT_EXIST"))
    request_no = out_request_no or trade.out_trade_no  # without one, a refund is keyed by the trade
    earlier = trade.refunds.get(request_no)
    if earlier is not None:
        if earlier.amount != fen:
            return Outcome(
                fail("ACQ.CONTEXT_INCONSISTENT", "sandbox: same out_request_no, other refund_amount")
            )
        return Outcome({**earlier.result, "fund_change": "N"})
    status = status_of(trade, call.now)
    if status == "TRADE_CLOSED":
        return Outcome(fail("ACQ.TRADE_HAS_CLOSE"))
    if status == "TRADE_FINISHED":
        return Outcome(fail("ACQ.TRADE_HAS_FINISHED"))
    if status != "TRADE_SUCCESS":
        return Outcome(fail("ACQ.TRADE_STATUS_ERROR", "sandbox: the trade is not paid"))
    if trade.refunded + fen > trade.total:
        left = wire.yuan(trade.total - trade.refunded)
        return Outcome(fail("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", f"sandbox: at most {left} left to refund"))
    _refund_to_buyer(call, trade, fen)
    if trade.refunded == trade.total:
        trade.status = "TRADE_CLOSED"
        trade.closed_at = call.now
    body = wire.result(
        "10000",
        trade_no=trade.trade_no,
        out_trade_no=trade.out_trade_no,
        buyer_logon_id=logon_id(trade.buyer_id),
        buyer_user_id=trade.buyer_id,
        fund_change="Y",
        refund_fee=wire.yuan(trade.refunded),
        send_back_fee=wire.yuan(fen),
        gmt_refund_pay=wire.beijing_time(call.now),
    )
    record = Refund(request_no, fen, call.now, body)
    trade.refunds[request_no] = record
    event = (
        "alipay.refund",
        trade_event(trade, out_request_no=request_no, refund_amount=fen, refunded=trade.refunded),
    )
    return Outcome(body, [event], notice(call, trade, refund=record))


def refund_query(call: Call) -> Outcome:
    out_trade_no, trade_no = trade_ref(call.biz)
    out_request_no = text(call.biz, "out_request_no", required=True)
    assert out_request_no is not None
    trade = call.state.find(call.app.app_id, out_trade_no, trade_no)
    if trade is None:
        return Outcome(fail("ACQ.TRADE_NOT_EXIST"))
    record = trade.refunds.get(out_request_no)
    if record is None:  # Alipay's way of saying "no such refund": success with no refund fields
        return Outcome(wire.result("10000", trade_no=trade.trade_no, out_trade_no=trade.out_trade_no))
    body = wire.result(
        "10000",
        trade_no=trade.trade_no,
        out_trade_no=trade.out_trade_no,
        out_request_no=out_request_no,
        total_amount=wire.yuan(trade.total),
        refund_amount=wire.yuan(record.amount),
        refund_status="REFUND_SUCCESS",
        gmt_refund_pay=wire.beijing_time(record.at),
    )
    return Outcome(body)


# --- zoloz.authentication.customer.ftoken.query -------------------------------------------------


def ftoken_query(call: Call) -> Outcome:
    ftoken = text(call.biz, "ftoken", required=True)
    text(call.biz, "biz_type", max_len=32)
    assert ftoken is not None
    token = call.directory.lookup_token(ftoken) if call.directory is not None else None
    # The real zoloz error codes are not public; the sandbox tells the three refusals apart so a
    # merchant (and CampusPay) can tell a terminal precisely why a face was refused.
    if token is None:
        return Outcome(
            fail("ZOLOZ.FTOKEN_INVALID", "sandbox: unknown face token"),
            [("alipay.ftoken_query", {"found": False})],
        )
    if call.now >= token.expires_at:
        return Outcome(
            fail("ZOLOZ.FTOKEN_EXPIRED", "sandbox: face token expired"),
            [("alipay.ftoken_query", {"found": False, "expired": True})],
        )
    if token.used_by is not None:
        return Outcome(
            fail("ZOLOZ.FTOKEN_USED", "sandbox: face token already used by a trade"),
            [("alipay.ftoken_query", {"found": False, "used": True})],
        )
    assert call.directory is not None
    user = call.directory.user(token.user_id)
    if user is None or user.deleted:
        detail = "sandbox: the face user's enrolment was deleted"
        return Outcome(fail("ZOLOZ.FTOKEN_INVALID", detail), [("alipay.ftoken_query", {"found": False})])
    # group_id is a CampusPay sandbox extension: the face group (school) the token was issued in.
    body = wire.result("10000", uid=user.user_id, group_id=token.school)
    return Outcome(
        body, [("alipay.ftoken_query", {"found": True, "uid": user.user_id, "group_id": token.school})]
    )


# --- alipay.data.dataservice.bill.downloadurl.query ---------------------------------------------


BILL_METHOD = "alipay.data.dataservice.bill.downloadurl.query"
BILL_URL_LIFETIME_S = 30  # Alipay's bill_download_url expires 30 seconds after it is issued


def bill_url(call: Call) -> Outcome:
    bill_type = text(call.biz, "bill_type", required=True, max_len=32)
    bill_date = text(call.biz, "bill_date", required=True, max_len=10)
    assert bill_type is not None and bill_date is not None
    if bill_type not in bills.BILLS:
        raise Invalid(f"sandbox: bill_type is one of {sorted(bills.BILLS)}")
    try:
        if len(bill_date) == 7:
            first = datetime.strptime(bill_date, "%Y-%m").date()
            last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        else:
            first = last = datetime.strptime(bill_date, "%Y-%m-%d").date()
    except ValueError:
        raise Invalid("bill_date must be yyyy-MM-dd or yyyy-MM") from None
    today = wire.beijing(call.now).date()
    if last >= today:
        return Outcome(fail("isp.bill_not_exist", "sandbox: a day's bill exists from the next day on"))
    assert call.faults is not None
    if call.faults.late:
        return Outcome(fail("isp.bill_not_exist", "sandbox: this bill is late (bill_late fault)"))
    rows = bills.day_rows(call.state, call.app, first, last, call.faults)
    filename, content = bills.BILLS[bill_type](call.app, rows, first, last, call.now)
    token = call.state.add_bill(filename, content, call.now + BILL_URL_LIFETIME_S)
    url = f"{call.base_url.rstrip('/')}/bills/{token}/{filename}"
    event = ("alipay.bill", {"bill_date": bill_date, "bill_type": bill_type, "bytes": len(content)})
    return Outcome(wire.result("10000", bill_download_url=url), [event])


# --- alipay.commerce.educate.facefeature.delete ---------------------------------------------------


def facefeature_delete(call: Call) -> Outcome:
    # Exact semantics unverified (PROTOCOLS.md): school_id (or the SDK model's group_id) names the
    # face group, user_id the buyer whose face features and agreement are removed.
    school = text(call.biz, "school_id") or text(call.biz, "group_id")
    user_id = text(call.biz, "user_id", required=True)
    if school is None:
        raise Invalid("school_id is required")
    assert user_id is not None
    fields = {"school_id": school, "user_id": user_id}
    user = call.directory.user(user_id) if call.directory is not None else None
    if user is not None and user.school == school and user.deleted:  # a retry
        return Outcome(wire.result("10000"), [("alipay.enrolment_deleted", {**fields, "already": True})])
    if call.directory is None or not call.directory.delete_user(school, user_id):
        return Outcome(fail("FACE_USER_NOT_EXIST", "sandbox: no such user in that face group"))
    return Outcome(wire.result("10000"), [("alipay.enrolment_deleted", fields)])


Handler = Callable[[Call], Outcome]
Family = Literal["trade", "other"]
METHODS: dict[str, tuple[Handler, Family]] = {
    "alipay.trade.pay": (pay, "trade"),
    "alipay.trade.query": (query, "trade"),
    "alipay.trade.cancel": (cancel, "trade"),
    "alipay.trade.close": (close, "trade"),
    "alipay.trade.refund": (refund, "trade"),
    "alipay.trade.fastpay.refund.query": (refund_query, "trade"),
    "zoloz.authentication.customer.ftoken.query": (ftoken_query, "other"),
    BILL_METHOD: (bill_url, "other"),
    "alipay.commerce.educate.facefeature.delete": (facefeature_delete, "other"),
}


def invalid(method: str, exc: Invalid) -> dict[str, Any]:
    """A business parameter problem, as the method's family reports it."""
    if method == "alipay.trade.pay":
        return pay_fail("ACQ.INVALID_PARAMETER", str(exc))
    if METHODS[method][1] == "trade":
        return fail("ACQ.INVALID_PARAMETER", str(exc))
    return fail("isv.invalid-parameter", str(exc), code="40002")
