"""The official Alipay Python SDK (``alipay-sdk-python``) against a real sandbox on port 80.

The SDK always connects to port 80 (443 for https) and builds a URL with a port by adding an
int to a str, so the sandbox must sit at a portless URL: this test runs it on 127.0.0.1:80
(root needed). Skipped with the reason when not root or port 80 is busy -- never under CI=true.

Only ``server_url`` differs from production. ``DefaultAlipayClient.execute`` POSTs the common
parameters in the query string and biz_content in a form body (absolute-form request target),
then verifies the sign over the raw response node it locates by regex and string-aware brace
matching, raising ``ResponseException`` when it does not verify.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.sdk.support import NotifyReceiver, mint_face_token, sandbox_values, unavailable

# One sandbox on port 80 per run: under xdist these tests share one worker (`--dist loadgroup`).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("sandbox-port-80")]

try:
    from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
    from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
    from alipay.aop.api.domain.AlipayDataDataserviceBillDownloadurlQueryModel import (
        AlipayDataDataserviceBillDownloadurlQueryModel,
    )
    from alipay.aop.api.domain.AlipayTradeCancelModel import AlipayTradeCancelModel
    from alipay.aop.api.domain.AlipayTradeFastpayRefundQueryModel import AlipayTradeFastpayRefundQueryModel
    from alipay.aop.api.domain.AlipayTradePayModel import AlipayTradePayModel
    from alipay.aop.api.domain.AlipayTradeQueryModel import AlipayTradeQueryModel
    from alipay.aop.api.domain.AlipayTradeRefundModel import AlipayTradeRefundModel
    from alipay.aop.api.domain.ZolozAuthenticationCustomerFtokenQueryModel import (
        ZolozAuthenticationCustomerFtokenQueryModel,
    )
    from alipay.aop.api.exception.Exception import ResponseException
    from alipay.aop.api.request.AlipayDataDataserviceBillDownloadurlQueryRequest import (
        AlipayDataDataserviceBillDownloadurlQueryRequest,
    )
    from alipay.aop.api.request.AlipayTradeCancelRequest import AlipayTradeCancelRequest
    from alipay.aop.api.request.AlipayTradeFastpayRefundQueryRequest import (
        AlipayTradeFastpayRefundQueryRequest,
    )
    from alipay.aop.api.request.AlipayTradePayRequest import AlipayTradePayRequest
    from alipay.aop.api.request.AlipayTradeQueryRequest import AlipayTradeQueryRequest
    from alipay.aop.api.request.AlipayTradeRefundRequest import AlipayTradeRefundRequest
    from alipay.aop.api.request.ZolozAuthenticationCustomerFtokenQueryRequest import (
        ZolozAuthenticationCustomerFtokenQueryRequest,
    )
    from alipay.aop.api.response.AlipayTradeCancelResponse import AlipayTradeCancelResponse
    from alipay.aop.api.response.AlipayTradePayResponse import AlipayTradePayResponse
    from alipay.aop.api.response.AlipayTradeQueryResponse import AlipayTradeQueryResponse
    from alipay.aop.api.response.AlipayTradeRefundResponse import AlipayTradeRefundResponse
    from alipay.aop.api.util.SignatureUtils import verify_with_rsa

    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = f"alipay-sdk-python is not importable ({exc}); install the dev extra"


@pytest.fixture
def official(sandbox_on_port_80: str) -> Any:
    if IMPORT_ERROR is not None:
        unavailable(IMPORT_ERROR)
    values = sandbox_values(sandbox_on_port_80)["alipay"]
    config = AlipayClientConfig()
    config.server_url = f"{sandbox_on_port_80}/alipay/gateway.do"  # the one change from production
    config.app_id = values["default_app"]["app_id"]
    config.app_private_key = values["default_app"]["app_private_key"]
    config.alipay_public_key = values["alipay_public_key"]
    return DefaultAlipayClient(alipay_client_config=config)


def pay_model(out_trade_no: str, token: str, amount: str) -> Any:
    model = AlipayTradePayModel()
    model.out_trade_no = out_trade_no
    model.scene = "security_code"
    model.auth_code = token
    model.product_code = "FACE_TO_FACE_PAYMENT"
    model.subject = "午餐"
    model.total_amount = amount
    model.store_id = "canteen-1"
    model.terminal_id = "pos-1"
    return model


def parsed(response_class: Any, raw: str) -> Any:
    response = response_class()
    response.parse_response_content(raw)
    return response


def test_official_python_sdk_pay_query_refund_cancel(
    official: Any, sandbox_on_port_80: str, notify_receiver: NotifyReceiver
) -> None:
    base = sandbox_on_port_80
    out_trade_no = f"off-{time.time_ns()}"
    request = AlipayTradePayRequest(biz_model=pay_model(out_trade_no, mint_face_token(base), "12.50"))
    request.notify_url = notify_receiver.url
    pay = parsed(AlipayTradePayResponse, official.execute(request))  # raises unless the sign verifies
    assert (pay.code, pay.is_success(), pay.total_amount) == ("10000", True, "12.50")

    notification = notify_receiver.wait_for(lambda n: n.get("out_trade_no") == out_trade_no)
    message = "&".join(
        f"{k}={notification[k]}" for k in sorted(notification) if k not in ("sign", "sign_type")
    )
    alipay_public_key = sandbox_values(base)["alipay"]["alipay_public_key"]
    assert verify_with_rsa(alipay_public_key, message.encode(), notification["sign"])

    query_model = AlipayTradeQueryModel()
    query_model.out_trade_no = out_trade_no
    query = parsed(AlipayTradeQueryResponse, official.execute(AlipayTradeQueryRequest(biz_model=query_model)))
    assert (query.code, query.trade_status, query.trade_no) == ("10000", "TRADE_SUCCESS", pay.trade_no)

    refund_model = AlipayTradeRefundModel()
    refund_model.out_trade_no = out_trade_no
    refund_model.refund_amount = "2.50"
    refund_model.out_request_no = f"{out_trade_no}-r1"
    refund = parsed(
        AlipayTradeRefundResponse, official.execute(AlipayTradeRefundRequest(biz_model=refund_model))
    )
    assert (refund.code, refund.fund_change, refund.refund_fee) == ("10000", "Y", "2.50")

    refund_query_model = AlipayTradeFastpayRefundQueryModel()
    refund_query_model.out_trade_no = out_trade_no
    refund_query_model.out_request_no = f"{out_trade_no}-r1"
    raw = official.execute(AlipayTradeFastpayRefundQueryRequest(biz_model=refund_query_model))
    assert '"refund_status":"REFUND_SUCCESS"' in raw

    cancel_model = AlipayTradeCancelModel()
    cancel_model.out_trade_no = out_trade_no
    cancel = parsed(
        AlipayTradeCancelResponse, official.execute(AlipayTradeCancelRequest(biz_model=cancel_model))
    )
    assert (cancel.code, cancel.action, cancel.retry_flag) == ("10000", "refund", "N")
    query = parsed(AlipayTradeQueryResponse, official.execute(AlipayTradeQueryRequest(biz_model=query_model)))
    assert query.trade_status == "TRADE_CLOSED"

    # is_success() only looks at sub_code: a signed business failure passes the sign check too.
    request = AlipayTradePayRequest(biz_model=pay_model(out_trade_no, mint_face_token(base), "12.50"))
    failed = parsed(AlipayTradePayResponse, official.execute(request))
    assert (failed.code, failed.sub_code, failed.is_success()) == ("40004", "ACQ.TRADE_HAS_CLOSE", False)


def test_official_python_sdk_ftoken_query_and_bill(official: Any, sandbox_on_port_80: str) -> None:
    base = sandbox_on_port_80
    model = ZolozAuthenticationCustomerFtokenQueryModel()
    model.ftoken = mint_face_token(base, "stu_bob")
    model.biz_type = "1"
    raw = official.execute(ZolozAuthenticationCustomerFtokenQueryRequest(biz_model=model))
    assert '"uid":"2088101000000002"' in raw and '"group_id":"school-demo"' in raw

    paid = parsed(
        AlipayTradePayResponse,
        official.execute(
            AlipayTradePayRequest(biz_model=pay_model(f"offb-{time.time_ns()}", model.ftoken, "3.00"))
        ),
    )
    bill_model = AlipayDataDataserviceBillDownloadurlQueryModel()
    bill_model.bill_type = "trade"
    bill_model.bill_date = paid.gmt_payment[:10]
    httpx.post(f"{base}/_control/clock", json={"offset_seconds": 86400}, timeout=10)
    try:
        raw = official.execute(AlipayDataDataserviceBillDownloadurlQueryRequest(biz_model=bill_model))
    finally:
        httpx.post(f"{base}/_control/clock", json={"offset_seconds": 0}, timeout=10)
    assert '"bill_download_url":"http://127.0.0.1/alipay/bills/' in raw


def test_official_python_sdk_rejects_a_bad_response_sign(official: Any, sandbox_on_port_80: str) -> None:
    model = pay_model(f"offbad-{time.time_ns()}", mint_face_token(sandbox_on_port_80), "1.84")  # magic 84
    with pytest.raises(ResponseException, match="sign verify failed"):
        official.execute(AlipayTradePayRequest(biz_model=model))
