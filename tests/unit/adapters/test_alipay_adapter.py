"""AlipayAdapter against a scripted Alipay gateway over respx.

The fake gateway checks each request's RSA2 signature and signs each answer with the official
SDK's own functions (``alipay.aop.api.util.SignatureUtils``), not with adapters/alipay/wire.py,
using the fixed TEST keys of tests/contract/vectors/alipay.json. Tests against the real sandbox
(``sandbox/alipay`` over ASGI) are in test_alipay_sandbox.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import respx
from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2, verify_with_rsa

from adapters.alipay import AlipayAdapter, AlipayError, NotificationRejected, wire
from adapters.base import (
    AdapterConfigError,
    BillNotReady,
    BillUnavailable,
    CardCredential,
    FaceCredential,
    IdentificationFailed,
    Outcome,
    PaymentRequest,
    ProviderConfig,
    ProviderIdentity,
    ProviderUnreachable,
    RefundRequest,
)
from adapters.registry import default_registry

V: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "contract" / "vectors" / "alipay.json").read_text(encoding="utf-8")
)
ENDPOINT = "https://openapi.alipay.test/gateway.do"
APP_ID = "2021000000000001"


def body_of(pem: str) -> str:
    return "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))


APP_PUBLIC_BODY = body_of(V["app_public_key"])
ALIPAY_PRIVATE_BODY = body_of(V["alipay_private_key"])

Answer = dict[str, Any] | bytes | httpx.Response | Exception
Script = Callable[[dict[str, Any]], Answer]


def signed_body(method: str, node: dict[str, Any] | str) -> bytes:
    """``{"<method>_response": node, "sign": …}`` with the SDK signing the node's exact text."""
    text = node if isinstance(node, str) else json.dumps(node, ensure_ascii=False, separators=(",", ":"))
    name = method.replace(".", "_") + "_response"
    sign = sign_with_rsa2(ALIPAY_PRIVATE_BODY, text, "utf-8")
    return ('{"' + name + '":' + text + ',"sign":"' + sign + '"}').encode("utf-8")


def signed_notification(params: dict[str, str]) -> dict[str, str]:
    content = get_sign_content({k: v for k, v in params.items() if k not in ("sign", "sign_type") and v})
    return {**params, "sign": sign_with_rsa2(ALIPAY_PRIVATE_BODY, content, "utf-8"), "sign_type": "RSA2"}


@dataclass
class Call:
    params: dict[str, str]  # query string and form body, merged
    biz: dict[str, Any]

    @property
    def method(self) -> str:
        return self.params["method"]


@dataclass
class FakeAlipay:
    """``script[method]`` answers each call: a node dict (signed), raw bytes (sent as is), an
    ``httpx.Response``, or an exception to raise (e.g. ``httpx.ConnectError``)."""

    script: dict[str, Script] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    router: respx.Router = field(default_factory=lambda: respx.Router(assert_all_called=False))

    def __post_init__(self) -> None:
        self.router.post(url__startswith=ENDPOINT).mock(side_effect=self._handle)

    def on(self, method: str, answer: Answer | Script) -> None:
        self.script[method] = answer if callable(answer) else (lambda _biz: answer)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.router.handler))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.url.query.decode("ascii"), keep_blank_values=True))
        assert request.headers["content-type"] == "application/x-www-form-urlencoded;charset=utf-8"
        form = dict(parse_qsl(request.content.decode("ascii"), keep_blank_values=True))
        assert set(form) <= {"biz_content"}, "only biz_content travels in the body"
        params.update(form)
        sign = params.pop("sign")
        # The app's signature, checked with the SDK's verifier over the SDK's string to sign.
        assert verify_with_rsa(APP_PUBLIC_BODY, get_sign_content(params).encode(), sign), "bad request sign"
        assert params["app_id"] == APP_ID and params["sign_type"] == "RSA2" and params["charset"] == "utf-8"
        biz = json.loads(params.get("biz_content", "{}"))
        self.calls.append(Call(params, biz))
        answer = self.script[params["method"]](biz)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        if isinstance(answer, bytes):
            return httpx.Response(200, content=answer, headers={"content-type": "text/html;charset=utf-8"})
        return httpx.Response(
            200,
            content=signed_body(params["method"], answer),
            headers={"content-type": "text/html;charset=utf-8"},
        )


def config(**options: Any) -> ProviderConfig:
    return ProviderConfig(
        endpoint=ENDPOINT,
        credentials={
            "app_id": APP_ID,
            "app_private_key": V["app_private_key"],
            "alipay_public_key": V["alipay_public_key"],
        },
        options={"timeout_seconds": 2.0, "face_group": "grp_school_demo", **options},
    )


# ---------------------------------------------------------------------------------------------

pytestmark = pytest.mark.unit
TOKEN = "fp0593e8d5c136277f13fd5bc36c13a7db7"
FULL_LOGON_ID = "15901825620"


def face_request(amount: int = 1250, **changes: Any) -> PaymentRequest:
    fields: dict[str, Any] = {
        "reference": "pay_01HZX-1",
        "amount": amount,
        "currency": "CNY",
        "method": "face",
        "credential": FaceCredential(TOKEN),
        "store_ref": "store_canteen_1",
        "terminal_ref": "dev_42",
        "description": "午餐 套餐A",
        "terminal_params": '{"terminalType":"IOT","bizTid":"0123"}',
    }
    fields.update(changes)
    return PaymentRequest(**fields)


def paid_node(amount: str = "12.50", **extra: Any) -> dict[str, Any]:
    return {
        "code": "10000",
        "msg": "Success",
        "out_trade_no": "pay_01HZX-1",
        "trade_no": "2025030122001446881000012345",
        "total_amount": amount,
        "buyer_logon_id": FULL_LOGON_ID,
        "buyer_user_id": "2088102177846880",
        "gmt_payment": "2025-03-01 12:30:06",
        **extra,
    }


def refused(sub_code: str, code: str = "40004", **extra: Any) -> dict[str, Any]:
    return {"code": code, "msg": "Business Failed", "sub_code": sub_code, "sub_msg": "refused", **extra}


def trade(status: str, amount: str = "12.50") -> dict[str, Any]:
    return {
        "code": "10000",
        "msg": "Success",
        "out_trade_no": "pay_01HZX-1",
        "trade_no": "2025030122001446881000012345",
        "trade_status": status,
        "total_amount": amount,
        "send_pay_date": "2025-03-01 12:30:06",
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeAlipay]:
    yield FakeAlipay()


@pytest.fixture
async def adapter(fake: FakeAlipay) -> AsyncIterator[AlipayAdapter]:
    async with fake.client() as http:
        yield AlipayAdapter(config(notify_url="https://pay.school.example/v1/notify/alipay/sch_1"), http)


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["app_id", "app_private_key", "alipay_public_key"])
async def test_missing_credentials_are_config_errors(missing: str) -> None:
    base = config()
    creds = {k: v for k, v in base.credentials.items() if k != missing}
    async with httpx.AsyncClient() as http:
        with pytest.raises(AdapterConfigError, match=missing):
            AlipayAdapter(ProviderConfig(base.endpoint, creds, base.options), http)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("app_private_key", "MIIBroken"),
        ("alipay_public_key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"),
        ("alipay_public_key", V["app_private_key"]),  # a private key where the public one belongs
    ],
)
async def test_unusable_keys_are_config_errors_that_never_echo_the_key(key: str, value: str) -> None:
    base = config()
    async with httpx.AsyncClient() as http:
        with pytest.raises(AdapterConfigError) as info:
            AlipayAdapter(ProviderConfig(base.endpoint, {**base.credentials, key: value}, base.options), http)
    assert body_of(value)[:40] not in str(info.value)


@pytest.mark.parametrize(
    ("endpoint", "options"),
    [
        ("openapi.alipay.com/gateway.do", {}),
        ("ftp://openapi.alipay.com/gateway.do", {}),
        ("https://openapi.alipay.com/gateway.do?charset=utf-8", {}),
        (ENDPOINT, {"timeout_seconds": "soon"}),
        (ENDPOINT, {"timeout_seconds": 0}),
        (ENDPOINT, {"notify_url": 42}),
    ],
)
async def test_unusable_settings_are_config_errors(endpoint: str, options: dict[str, Any]) -> None:
    base = config()
    async with httpx.AsyncClient() as http:
        with pytest.raises(AdapterConfigError):
            AlipayAdapter(ProviderConfig(endpoint, base.credentials, {**base.options, **options}), http)


async def test_bare_key_bodies_are_accepted_and_parsed_keys_are_shared() -> None:
    base = config()
    creds = {
        "app_id": APP_ID,
        "app_private_key": body_of(V["app_private_key"]),
        "alipay_public_key": body_of(V["alipay_public_key"]),
    }
    async with httpx.AsyncClient() as http:
        one = AlipayAdapter(ProviderConfig(base.endpoint, creds, base.options), http)
        two = AlipayAdapter(ProviderConfig(base.endpoint, creds, base.options), http)
    assert one._private_key is two._private_key  # parsed once, cached by text


def test_registered_under_its_name() -> None:
    registry = default_registry(plugins=False)
    assert "alipay" in registry
    assert registry.capabilities("alipay") is AlipayAdapter.capabilities
    assert "face" in AlipayAdapter.capabilities.methods and AlipayAdapter.capabilities.notifications


# -- pay ------------------------------------------------------------------------------------


async def test_face_pay_sends_what_alipay_expects(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    fake.on("alipay.trade.pay", paid_node())
    result = await adapter.pay(face_request())
    assert result.outcome is Outcome.SUCCEEDED
    assert result.amount == 1250 and result.provider_txn_id == "2025030122001446881000012345"
    assert result.paid_at == datetime(2025, 3, 1, 4, 30, 6, tzinfo=UTC)
    (call,) = fake.calls
    assert call.biz == {
        "out_trade_no": "pay_01HZX-1",
        "scene": "security_code",
        "auth_code": TOKEN,
        "product_code": "FACE_TO_FACE_PAYMENT",
        "total_amount": "12.50",
        "subject": "午餐 套餐A",
        "store_id": "store_canteen_1",
        "terminal_id": "dev_42",
        "terminal_params": '{"terminalType":"IOT","bizTid":"0123"}',
    }
    assert call.params["notify_url"] == "https://pay.school.example/v1/notify/alipay/sch_1"
    assert call.params["format"] == "JSON" and call.params["version"] == "1.0"
    stamp = datetime.strptime(call.params["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=wire.BEIJING)
    assert abs((stamp - datetime.now(UTC)).total_seconds()) < 60  # Beijing time, not UTC
    assert result.raw["buyer_logon_id"] == "159***20"


async def test_k12_withholding_pay(fake: FakeAlipay) -> None:
    fake.on("alipay.trade.pay", paid_node())
    async with fake.client() as http:
        adapter = AlipayAdapter(config(app_auth_token="202503BB0123456789"), http)
        result = await adapter.pay(face_request(agreement_no="20255301000000123456", description=None))
    assert result.outcome is Outcome.SUCCEEDED
    (call,) = fake.calls
    assert call.biz["product_code"] == "GENERAL_WITHHOLDING"
    assert call.biz["agreement_params"] == {"agreement_no": "20255301000000123456"}
    assert call.biz["business_params"] == {"iot_pay_action": "local_face_pay"}
    assert call.biz["auth_code"] == TOKEN and call.biz["scene"] == "security_code"
    assert call.biz["subject"] == "CampusPay"
    assert call.params["app_auth_token"] == "202503BB0123456789"
    assert "notify_url" not in call.params  # none configured


@pytest.mark.parametrize(
    "sub_code",
    [
        "ACQ.BUYER_BALANCE_NOT_ENOUGH",
        "ACQ.PAYMENT_AUTH_CODE_INVALID",
        "ACQ.AGREEMENT_NOT_EXIST",
        "ACQ.AGREEMENT_INVALID",
        "ACQ.USER_FACE_PAYMENT_SWITCH_OFF",
        "ACQ.PAYMENT_REQUEST_HAS_RISK",
        "ACQ.TRADE_HAS_CLOSE",
    ],
)
async def test_business_refusals_are_final_failures(
    fake: FakeAlipay, adapter: AlipayAdapter, sub_code: str
) -> None:
    fake.on("alipay.trade.pay", refused(sub_code, out_trade_no="pay_01HZX-1"))
    result = await adapter.pay(face_request())
    assert result.outcome is Outcome.FAILED and result.code == sub_code


@pytest.mark.parametrize(
    ("node", "retryable"),
    [
        ({"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error"}, True),
        ({"code": "20000", "msg": "Service Currently Unavailable"}, True),  # no sub_code: not a success
        (refused("ACQ.SYSTEM_ERROR"), True),
        (refused("ACQ.CONTEXT_INCONSISTENT"), False),
        ({"code": "40004", "msg": "Business Failed"}, True),  # a refusal that names no reason
        ({"code": "99999", "msg": "?"}, True),
    ],
)
async def test_unknowns_are_never_final(
    fake: FakeAlipay, adapter: AlipayAdapter, node: dict[str, Any], retryable: bool
) -> None:
    fake.on("alipay.trade.pay", node)
    result = await adapter.pay(face_request())
    assert result.outcome is Outcome.UNKNOWN and result.retryable is retryable


async def test_user_paying_is_pending(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    fake.on(
        "alipay.trade.pay",
        {"code": "10003", "msg": "order success pay inprocess", "out_trade_no": "pay_01HZX-1"},
    )
    result = await adapter.pay(face_request())
    assert result.outcome is Outcome.PENDING_USER


@pytest.mark.parametrize(
    ("query", "outcome"),
    [
        (trade("TRADE_SUCCESS"), Outcome.SUCCEEDED),
        (trade("TRADE_SUCCESS", amount="99.00"), Outcome.UNKNOWN),  # our reference, another amount
        (refused("ACQ.TRADE_NOT_EXIST"), Outcome.UNKNOWN),
        (trade("WAIT_BUYER_PAY"), Outcome.UNKNOWN),
    ],
)
async def test_trade_has_success_is_believed_only_after_a_query(
    fake: FakeAlipay, adapter: AlipayAdapter, query: dict[str, Any], outcome: Outcome
) -> None:
    fake.on("alipay.trade.pay", refused("ACQ.TRADE_HAS_SUCCESS"))
    fake.on("alipay.trade.query", query)
    result = await adapter.pay(face_request())
    assert result.outcome is outcome
    assert [c.method for c in fake.calls] == ["alipay.trade.pay", "alipay.trade.query"]
    assert fake.calls[1].biz == {"out_trade_no": "pay_01HZX-1"}


@pytest.mark.parametrize(
    "answer",
    [
        b'{"alipay_trade_pay_response":{"code":"10000","msg":"Success","out_trade_no":"pay_01HZX-1"}}',
        signed_body("alipay.trade.pay", paid_node()).replace(b"12.50", b"12.51", 1),
        signed_body("alipay.trade.query", paid_node()),  # a genuine answer to another method
        b"<html>502 Bad Gateway</html>",
        httpx.Response(502, content=b"bad gateway"),
        httpx.Response(200, content=b""),
    ],
)
async def test_unverified_answers_are_unknown(
    fake: FakeAlipay, adapter: AlipayAdapter, answer: Answer
) -> None:
    fake.on("alipay.trade.pay", answer)
    result = await adapter.pay(face_request())
    assert result.outcome is Outcome.UNKNOWN


async def test_an_answer_about_another_trade_is_unknown(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    fake.on("alipay.trade.pay", paid_node(out_trade_no="someone_else"))
    assert (await adapter.pay(face_request())).outcome is Outcome.UNKNOWN
    fake.on("alipay.trade.pay", paid_node(amount="1.00"))
    assert (await adapter.pay(face_request())).outcome is Outcome.UNKNOWN


async def test_transport_failures(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    fake.on("alipay.trade.pay", httpx.ConnectError("refused"))
    with pytest.raises(ProviderUnreachable):
        await adapter.pay(face_request())
    fake.on("alipay.trade.pay", httpx.ReadError("reset"))
    result = await adapter.pay(face_request())
    assert result.outcome is Outcome.UNKNOWN and result.code == "TRANSPORT_ERROR"


async def test_the_whole_exchange_is_bounded() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as http:
        adapter = AlipayAdapter(config(timeout_seconds=0.05), http)
        result = await adapter.pay(face_request())
    assert result.outcome is Outcome.UNKNOWN and result.code == "TIMEOUT" and result.retryable


async def test_pay_refuses_what_it_cannot_send(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    with pytest.raises(AdapterConfigError):
        await adapter.pay(face_request(credential=CardCredential("31000001"), method="card"))
    result = await adapter.pay(face_request(currency="USD"))
    assert result.outcome is Outcome.FAILED and result.code == "CURRENCY_NOT_SUPPORTED"
    assert fake.calls == []


# -- query, cancel, close -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "outcome"),
    [
        (trade("TRADE_SUCCESS"), Outcome.SUCCEEDED),
        (trade("TRADE_FINISHED"), Outcome.SUCCEEDED),
        (trade("WAIT_BUYER_PAY"), Outcome.PENDING_USER),
        (trade("TRADE_CLOSED"), Outcome.REVERSED),
        (trade("SOMETHING_NEW"), Outcome.UNKNOWN),
        (refused("ACQ.TRADE_NOT_EXIST"), Outcome.NOT_FOUND),
        (refused("ACQ.SYSTEM_ERROR"), Outcome.UNKNOWN),
        (refused("ACQ.INVALID_PARAMETER"), Outcome.UNKNOWN),  # a failed query says nothing of the payment
        ({"code": "20000", "msg": "Service Currently Unavailable"}, Outcome.UNKNOWN),
    ],
)
async def test_query_mapping(
    fake: FakeAlipay, adapter: AlipayAdapter, node: dict[str, Any], outcome: Outcome
) -> None:
    fake.on("alipay.trade.query", node)
    result = await adapter.query("pay_01HZX-1")
    assert result.outcome is outcome
    if outcome is Outcome.SUCCEEDED:
        assert result.amount == 1250 and result.paid_at is not None


@pytest.mark.parametrize(
    ("node", "outcome", "code"),
    [
        (
            {
                "code": "10000",
                "msg": "Success",
                "out_trade_no": "pay_01HZX-1",
                "retry_flag": "N",
                "action": "refund",
            },
            Outcome.REVERSED,
            "refund",
        ),
        (
            {
                "code": "10000",
                "msg": "Success",
                "out_trade_no": "pay_01HZX-1",
                "retry_flag": "N",
                "action": "close",
            },
            Outcome.REVERSED,
            "close",
        ),
        (refused("ACQ.SYSTEM_ERROR", retry_flag="Y"), Outcome.UNKNOWN, "ACQ.SYSTEM_ERROR"),
        ({"code": "10000", "msg": "Success", "retry_flag": "Y"}, Outcome.UNKNOWN, "RETRY"),
        (
            refused("ACQ.REASON_TRADE_BEEN_FREEZEN", retry_flag="N"),
            Outcome.UNKNOWN,
            "ACQ.REASON_TRADE_BEEN_FREEZEN",
        ),
        (refused("ACQ.TRADE_NOT_EXIST"), Outcome.UNKNOWN, "ACQ.TRADE_NOT_EXIST"),
        # past 24 h: verifiably not cancelled; the gateway queries and refunds instead
        (refused("ACQ.TRADE_CANCEL_TIME_OUT", retry_flag="N"), Outcome.UNKNOWN, "CANCEL_UNAVAILABLE"),
    ],
)
async def test_cancel_mapping(
    fake: FakeAlipay, adapter: AlipayAdapter, node: dict[str, Any], outcome: Outcome, code: str
) -> None:
    fake.on("alipay.trade.cancel", node)
    result = await adapter.cancel("pay_01HZX-1")
    assert result.outcome is outcome and result.code == code
    assert result.outcome is not Outcome.FAILED  # to the gateway FAILED would mean "never moved money"
    if code == "RETRY" or code == "ACQ.SYSTEM_ERROR":
        assert result.retryable
    if code == "CANCEL_UNAVAILABLE":
        assert not result.retryable


@pytest.mark.parametrize(
    ("node", "outcome"),
    [
        ({"code": "10000", "msg": "Success", "out_trade_no": "pay_01HZX-1"}, Outcome.REVERSED),
        (refused("ACQ.TRADE_NOT_EXIST"), Outcome.NOT_FOUND),
        (refused("ACQ.TRADE_STATUS_ERROR"), Outcome.UNKNOWN),
    ],
)
async def test_close_mapping(
    fake: FakeAlipay, adapter: AlipayAdapter, node: dict[str, Any], outcome: Outcome
) -> None:
    fake.on("alipay.trade.close", node)
    assert (await adapter.close("pay_01HZX-1")).outcome is outcome


# -- refund ---------------------------------------------------------------------------------


def refund_request(amount: int = 300) -> RefundRequest:
    return RefundRequest(reference="pay_01HZX-1", refund_reference="rf_1", amount=amount, reason="饭菜退回")


def refunded(fund_change: str, total: str = "3.00") -> dict[str, Any]:
    return {
        "code": "10000",
        "msg": "Success",
        "out_trade_no": "pay_01HZX-1",
        "trade_no": "2025030122001446881000012345",
        "refund_fee": total,
        "fund_change": fund_change,
        "buyer_logon_id": FULL_LOGON_ID,
    }


async def test_refund_with_money_moved(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    fake.on("alipay.trade.refund", refunded("Y"))
    result = await adapter.refund(refund_request())
    assert result.outcome is Outcome.SUCCEEDED and result.amount == 300
    (call,) = fake.calls
    assert call.biz == {
        "out_trade_no": "pay_01HZX-1",
        "out_request_no": "rf_1",
        "refund_amount": "3.00",
        "refund_reason": "饭菜退回",
    }


@pytest.mark.parametrize(
    ("confirmation", "outcome"),
    [
        (
            {
                "code": "10000",
                "msg": "Success",
                "out_trade_no": "pay_01HZX-1",
                "out_request_no": "rf_1",
                "refund_amount": "3.00",
                "refund_status": "REFUND_SUCCESS",
            },
            Outcome.SUCCEEDED,
        ),
        (
            {"code": "10000", "msg": "Success", "out_trade_no": "pay_01HZX-1", "out_request_no": "rf_1"},
            Outcome.UNKNOWN,
        ),
        (
            {
                "code": "10000",
                "msg": "Success",
                "out_trade_no": "pay_01HZX-1",
                "out_request_no": "rf_1",
                "refund_amount": "5.00",
                "refund_status": "REFUND_SUCCESS",
            },
            Outcome.UNKNOWN,
        ),
        (
            {
                "code": "10000",
                "msg": "Success",
                "out_request_no": "rf_other",
                "refund_status": "REFUND_SUCCESS",
            },
            Outcome.UNKNOWN,
        ),
        (refused("ACQ.SYSTEM_ERROR"), Outcome.UNKNOWN),
    ],
)
async def test_fund_change_n_is_settled_by_a_refund_query(
    fake: FakeAlipay, adapter: AlipayAdapter, confirmation: dict[str, Any], outcome: Outcome
) -> None:
    """fund_change=N answers both a repeat of a refund already made (success) and a refund not
    carried out (yet): only fastpay.refund.query's REFUND_SUCCESS makes it a success."""
    fake.on("alipay.trade.refund", refunded("N"))
    fake.on("alipay.trade.fastpay.refund.query", confirmation)
    result = await adapter.refund(refund_request())
    assert result.outcome is outcome
    assert fake.calls[1].method == "alipay.trade.fastpay.refund.query"
    assert fake.calls[1].biz == {"out_trade_no": "pay_01HZX-1", "out_request_no": "rf_1"}
    if outcome is Outcome.UNKNOWN:
        assert result.outcome is not Outcome.FAILED


@pytest.mark.parametrize(
    ("node", "outcome"),
    [
        (refused("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"), Outcome.FAILED),
        (refused("ACQ.TRADE_NOT_EXIST"), Outcome.FAILED),
        (refused("ACQ.SELLER_BALANCE_NOT_ENOUGH"), Outcome.FAILED),
        (refused("ACQ.DISCORDANT_REPEAT_REQUEST"), Outcome.UNKNOWN),
        (refused("ACQ.CONTEXT_INCONSISTENT"), Outcome.UNKNOWN),
        (refused("ACQ.SYSTEM_ERROR"), Outcome.UNKNOWN),
        ({"code": "20000", "msg": "Service Currently Unavailable"}, Outcome.UNKNOWN),
    ],
)
async def test_refund_refusals(
    fake: FakeAlipay, adapter: AlipayAdapter, node: dict[str, Any], outcome: Outcome
) -> None:
    fake.on("alipay.trade.refund", node)
    result = await adapter.refund(refund_request())
    assert result.outcome is outcome
    if outcome is Outcome.FAILED:
        assert result.code == node["sub_code"]


# -- identify, enrolment deletion, bills, check -----------------------------------------------


async def test_identify(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    fake.on(
        "zoloz.authentication.customer.ftoken.query",
        {"code": "10000", "msg": "Success", "uid": "2088102177846880", "group_id": "grp_school_demo"},
    )
    identity = await adapter.identify(TOKEN)
    assert identity == ProviderIdentity(user_id="2088102177846880", group="grp_school_demo")
    (call,) = fake.calls
    assert call.biz == {"ftoken": TOKEN, "biz_type": "1"}


async def test_identify_without_a_group_leaves_it_unknown(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    fake.on(
        "zoloz.authentication.customer.ftoken.query",
        {"code": "10000", "msg": "Success", "uid": "2088000000000001"},
    )
    assert await adapter.identify(TOKEN) == ProviderIdentity("2088000000000001", None)


async def test_a_verified_refusal_of_the_token(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    fake.on("zoloz.authentication.customer.ftoken.query", refused("FTOKEN_EXPIRED"))
    with pytest.raises(IdentificationFailed) as info:
        await adapter.identify(TOKEN)
    assert info.value.code == "FTOKEN_EXPIRED"
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    "answer",
    [
        {"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error"},
        refused("ACQ.SYSTEM_ERROR"),
        {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-app-id"},
        {"code": "10000", "msg": "Success"},  # a success that names nobody
        b'{"zoloz_authentication_customer_ftoken_query_response":{"code":"10000","uid":"2088"}}',  # unsigned
        httpx.ReadError("reset"),
    ],
)
async def test_identify_unknowns_are_adapter_errors_not_refusals(
    fake: FakeAlipay, adapter: AlipayAdapter, answer: Answer
) -> None:
    fake.on("zoloz.authentication.customer.ftoken.query", answer)
    with pytest.raises(AlipayError) as info:
        await adapter.identify(TOKEN)
    assert not isinstance(info.value, IdentificationFailed)
    assert TOKEN not in str(info.value)


async def test_identify_with_no_connection_is_unreachable(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    fake.on("zoloz.authentication.customer.ftoken.query", httpx.ConnectError("refused"))
    with pytest.raises(ProviderUnreachable):
        await adapter.identify(TOKEN)


async def test_delete_enrollment(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    fake.on("alipay.commerce.educate.facefeature.delete", {"code": "10000", "msg": "Success"})
    assert (await adapter.delete_enrollment("2088102177846880")).outcome is Outcome.SUCCEEDED
    assert fake.calls[0].biz == {"group_id": "grp_school_demo", "user_id": "2088102177846880"}
    fake.on("alipay.commerce.educate.facefeature.delete", refused("USER_NOT_EXIST"))
    result = await adapter.delete_enrollment("2088102177846880")
    assert result.outcome is Outcome.FAILED and result.code == "USER_NOT_EXIST"
    # verified "no such face user": nothing is left to delete, so it is done (not retried forever)
    fake.on("alipay.commerce.educate.facefeature.delete", refused("FACE_USER_NOT_EXIST"))
    gone = await adapter.delete_enrollment("2088102177846880")
    assert gone.outcome is Outcome.SUCCEEDED and gone.code == "FACE_USER_NOT_EXIST"
    fake.on(
        "alipay.commerce.educate.facefeature.delete",
        {"code": "20000", "msg": "Service Currently Unavailable"},
    )
    assert (await adapter.delete_enrollment("2088102177846880")).outcome is Outcome.UNKNOWN


async def test_delete_enrollment_needs_the_face_group(fake: FakeAlipay) -> None:
    base = config()
    async with fake.client() as http:
        adapter = AlipayAdapter(ProviderConfig(base.endpoint, base.credentials, {}), http)
        with pytest.raises(AdapterConfigError, match="face_group"):
            await adapter.delete_enrollment("2088102177846880")


async def test_download_bill(fake: FakeAlipay, adapter: AlipayAdapter) -> None:
    url = "https://dwbillcenter.alipay.test/downloadBillFile.resource?bizType=trade&fileType=csv.zip"
    fake.on(
        "alipay.data.dataservice.bill.downloadurl.query",
        {"code": "10000", "msg": "Success", "bill_download_url": url},
    )
    fake.router.get(url).mock(return_value=httpx.Response(200, content=b"PK\x03\x04zip"))
    assert await adapter.download_bill(date(2025, 3, 1)) == b"PK\x03\x04zip"
    assert fake.calls[0].biz == {"bill_type": "trade", "bill_date": "2025-03-01"}
    fake.on("alipay.data.dataservice.bill.downloadurl.query", refused("isp.bill_not_exist"))
    with pytest.raises(BillNotReady, match="bill_not_exist"):
        await adapter.download_bill(date(2025, 3, 2))
    fake.on("alipay.data.dataservice.bill.downloadurl.query", refused("isv.invalid-bill-type"))
    with pytest.raises(BillUnavailable) as refusal:
        await adapter.download_bill(date(2025, 3, 3))
    assert not isinstance(refusal.value, BillNotReady)  # a refusal is not "come back later"


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (refused("ACQ.TRADE_NOT_EXIST"), Outcome.SUCCEEDED),
        # a refusal of the request (here the app id): never final (tests/unit/adapters/test_refusals.py)
        ({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-app-id"}, Outcome.UNKNOWN),
        ({"code": "20000", "msg": "Service Currently Unavailable"}, Outcome.UNKNOWN),
        (
            b'{"alipay_trade_query_response":{"code":"40004","sub_code":"ACQ.TRADE_NOT_EXIST"}}',
            Outcome.UNKNOWN,
        ),
    ],
)
async def test_check(fake: FakeAlipay, adapter: AlipayAdapter, answer: Answer, outcome: Outcome) -> None:
    fake.on("alipay.trade.query", answer)
    assert (await adapter.check()).outcome is outcome


# -- notifications ----------------------------------------------------------------------------


def notification(**changes: str) -> dict[str, str]:
    params = {k: v for k, v in V["notification"]["params"].items() if k not in ("sign", "sign_type")}
    params.update(changes)
    return signed_notification(params)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("TRADE_SUCCESS", Outcome.SUCCEEDED),
        ("TRADE_FINISHED", Outcome.SUCCEEDED),
        ("WAIT_BUYER_PAY", Outcome.PENDING_USER),
        ("TRADE_CLOSED", Outcome.REVERSED),
        ("SOMETHING_NEW", Outcome.UNKNOWN),
    ],
)
async def test_notification_mapping(adapter: AlipayAdapter, status: str, outcome: Outcome) -> None:
    body = urlencode(notification(trade_status=status, buyer_logon_id=FULL_LOGON_ID)).encode()
    event = await adapter.parse_notification(body, {"content-type": "application/x-www-form-urlencoded"})
    assert event.outcome is outcome
    assert event.reference == "pay_01HZX-1"
    assert event.dedupe_key == "2025030100222123006046881234567890"
    assert event.amount == 1250 and event.provider_txn_id == "2025030122001446881000012345"
    assert FULL_LOGON_ID not in repr(event)


async def test_the_committed_vector_notification_is_accepted(adapter: AlipayAdapter) -> None:
    body = urlencode(V["notification"]["params"]).encode()
    assert (await adapter.parse_notification(body, {})).outcome is Outcome.SUCCEEDED


@pytest.mark.parametrize(
    "body",
    [
        urlencode({**notification(), "total_amount": "0.01"}).encode(),
        urlencode({**notification(), "sign": "AAAA"}).encode(),
        urlencode({k: v for k, v in notification().items() if k != "sign"}).encode(),
        urlencode(notification(app_id="2021000000009999")).encode(),  # genuine, but for another app
        urlencode(notification(notify_id="")).encode(),
        urlencode(notification(total_amount="12.5.0")).encode(),
        b"\xff\xfe",
        b"",
    ],
)
async def test_forged_altered_or_foreign_notifications_are_rejected(
    adapter: AlipayAdapter, body: bytes
) -> None:
    with pytest.raises(NotificationRejected):
        await adapter.parse_notification(body, {})


# -- scrubbing --------------------------------------------------------------------------------


async def test_secrets_never_reach_logs_results_or_errors(
    fake: FakeAlipay, adapter: AlipayAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.on("alipay.trade.pay", paid_node())
    fake.on("alipay.trade.query", trade("TRADE_SUCCESS") | {"buyer_logon_id": FULL_LOGON_ID})
    fake.on("alipay.trade.refund", refunded("Y"))
    fake.on("zoloz.authentication.customer.ftoken.query", refused("FTOKEN_USED"))
    shown: list[Any] = [
        await adapter.pay(face_request()),
        await adapter.pay(face_request(agreement_no="20255301000000123456")),
        await adapter.query("pay_01HZX-1"),
        await adapter.refund(refund_request()),
        face_request(),
    ]
    with pytest.raises(IdentificationFailed) as info:
        await adapter.identify(TOKEN)
    shown.append(info.value)
    fake.on("alipay.trade.pay", b"garbage " + TOKEN.encode())
    shown.append(await adapter.pay(face_request()))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    text = repr(shown) + str(info.value) + repr(adapter.__dict__.get("config"))
    secrets = [
        TOKEN,
        FULL_LOGON_ID,
        body_of(V["app_private_key"])[100:160],
        *body_of(V["app_private_key"]).split(),
    ]
    for secret in secrets:
        assert secret not in logged, f"{secret[:8]}… logged"
        assert secret not in repr(shown), f"{secret[:8]}… in a result"
    assert TOKEN not in text
