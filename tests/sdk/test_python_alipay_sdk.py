"""python-alipay-sdk (fzlee's ``alipay`` package) against a real sandbox process.

Only the server URL differs from production: the SDK has no public option for it (``debug=True``
picks Alipay's own sandbox), so the test sets ``AliPay._gateway``, the documented way to point it
elsewhere. The SDK sends GET with every parameter in the query string, verifies each response
over the raw node it locates by counting braces (``_verify_and_return_sync_response``) and raises
``AliPayValidationError`` when the sign does not verify; ``verify()`` checks notifications.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.sdk.support import NotifyReceiver, mint_face_token, sandbox_values, unavailable

pytestmark = pytest.mark.e2e

try:
    from alipay import AliPay
    from alipay.exceptions import AliPayValidationError
except ImportError as exc:  # pragma: no cover - depends on the environment
    AliPay = None
    IMPORT_ERROR = (
        f"python-alipay-sdk is not importable ({exc}); install the dev extra. Note: it shares the "
        "`alipay` package directory with alipay-sdk-python, so install it after that one"
    )


@pytest.fixture
def fzlee(sandbox_url: str) -> Any:
    if AliPay is None:
        unavailable(IMPORT_ERROR)
    values = sandbox_values(sandbox_url)["alipay"]
    client = AliPay(
        appid=values["default_app"]["app_id"],
        app_notify_url=None,
        app_private_key_string=values["default_app"]["app_private_key"],
        alipay_public_key_string=values["alipay_public_key"],
        sign_type="RSA2",
    )
    client._gateway = f"{sandbox_url}/alipay/gateway.do"  # the one change from production
    return client


def face_pay_biz(out_trade_no: str, token: str, amount: str, **extra: Any) -> dict[str, Any]:
    return {
        "out_trade_no": out_trade_no,
        "scene": "security_code",
        "auth_code": token,
        "product_code": "FACE_TO_FACE_PAYMENT",
        "subject": "午餐",
        "total_amount": amount,
        **extra,
    }


def test_python_alipay_sdk_pay_query_refund_cancel(
    fzlee: Any, sandbox_url: str, notify_receiver: NotifyReceiver
) -> None:
    out_trade_no = f"fz-{time.time_ns()}"
    token = mint_face_token(sandbox_url)

    # api_alipay_trade_pay only allows bar_code/wave_code scenes, so face pay goes via server_api.
    pay = fzlee.server_api(
        "alipay.trade.pay",
        biz_content=face_pay_biz(out_trade_no, token, "12.50"),
        notify_url=notify_receiver.url,
    )
    assert (pay["code"], pay["out_trade_no"], pay["total_amount"]) == ("10000", out_trade_no, "12.50")

    notification = notify_receiver.wait_for(lambda n: n.get("out_trade_no") == out_trade_no)
    data = {k: v for k, v in notification.items() if k != "sign"}
    assert fzlee.verify(dict(data), notification["sign"]) is True
    assert fzlee.verify({**data, "total_amount": "0.01"}, notification["sign"]) is False

    query = fzlee.api_alipay_trade_query(out_trade_no=out_trade_no)
    assert (query["code"], query["trade_status"]) == ("10000", "TRADE_SUCCESS")

    refund = fzlee.api_alipay_trade_refund(
        refund_amount="2.50", out_trade_no=out_trade_no, out_request_no=f"{out_trade_no}-r1"
    )
    assert (refund["code"], refund["fund_change"], refund["refund_fee"]) == ("10000", "Y", "2.50")
    refund_query = fzlee.api_alipay_trade_fastpay_refund_query(
        out_request_no=f"{out_trade_no}-r1", out_trade_no=out_trade_no
    )
    assert (refund_query["refund_status"], refund_query["refund_amount"]) == ("REFUND_SUCCESS", "2.50")

    cancel = fzlee.api_alipay_trade_cancel(out_trade_no=out_trade_no)
    assert (cancel["code"], cancel["action"], cancel["retry_flag"]) == ("10000", "refund", "N")
    assert fzlee.api_alipay_trade_query(out_trade_no=out_trade_no)["trade_status"] == "TRADE_CLOSED"

    # Business failures are signed too, and pass the SDK's check.
    again = fzlee.server_api("alipay.trade.pay", biz_content=face_pay_biz(out_trade_no, token, "13.00"))
    assert (again["code"], again["sub_code"]) == ("40004", "ACQ.TRADE_HAS_CLOSE")


def test_python_alipay_sdk_withholding_and_ftoken_query(fzlee: Any, sandbox_url: str) -> None:
    alice = next(u for u in sandbox_values(sandbox_url)["face"] if u["student"] == "stu_alice")
    token = mint_face_token(sandbox_url)
    identified = fzlee.server_api(
        "zoloz.authentication.customer.ftoken.query", biz_content={"ftoken": token, "biz_type": "1"}
    )
    assert (identified["uid"], identified["group_id"]) == (alice["user_id"], "school-demo")
    biz = face_pay_biz(
        f"fzw-{time.time_ns()}",
        token,
        "8.00",
        product_code="GENERAL_WITHHOLDING",
        agreement_params={"agreement_no": alice["agreement_no"]},
        business_params={"iot_pay_action": "local_face_pay"},
    )
    pay = fzlee.server_api("alipay.trade.pay", biz_content=biz)
    assert (pay["code"], pay["buyer_user_id"]) == ("10000", alice["user_id"])


def test_python_alipay_sdk_rejects_a_bad_response_sign(fzlee: Any, sandbox_url: str) -> None:
    biz = face_pay_biz(f"fzbad-{time.time_ns()}", mint_face_token(sandbox_url), "1.84")  # magic 84
    with pytest.raises(AliPayValidationError):
        fzlee.server_api("alipay.trade.pay", biz_content=biz)
