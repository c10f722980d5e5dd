"""adapters/alipay/wire.py against the official ``alipay-sdk-python`` and its committed vectors.

The vectors in tests/contract/vectors/alipay.json were computed once with the SDK's own
functions (``alipay/aop/api/util/SignatureUtils.py``) for a fixed TEST key pair; the tests below
also run the SDK live, so a change on either side is caught.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from alipay.aop.api import DefaultAlipayClient as sdk_client_module
from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.domain.AlipayTradePayModel import AlipayTradePayModel
from alipay.aop.api.request.AlipayTradePayRequest import AlipayTradePayRequest
from alipay.aop.api.response.AlipayTradePayResponse import AlipayTradePayResponse
from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2, verify_with_rsa
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from adapters.alipay import wire

pytestmark = pytest.mark.unit
V: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "contract" / "vectors" / "alipay.json").read_text(encoding="utf-8")
)


def body_of(pem: str) -> str:
    """A PEM key without its armour, as the Alipay console and the official SDK take it."""
    return "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))


APP_PRIVATE = wire.load_private_key(V["app_private_key"])
APP_PUBLIC = wire.load_public_key(V["app_public_key"])
ALIPAY_PRIVATE = wire.load_private_key(V["alipay_private_key"])
ALIPAY_PUBLIC = wire.load_public_key(V["alipay_public_key"])


# -- request signing ------------------------------------------------------------------------


def test_canonical_string_matches_the_vector_and_the_sdk() -> None:
    params = V["request"]["params"]
    ours = wire.canonical_string(params)
    assert ours == V["request"]["string_to_sign"]
    assert ours == get_sign_content(params)  # the SDK, live
    assert "sign_type=RSA2" in ours  # kept for requests


def test_rsa2_signature_matches_the_vector_and_the_sdk() -> None:
    content = V["request"]["string_to_sign"]
    ours = wire.sign(APP_PRIVATE, content)
    assert ours == V["request"]["sign"]  # PKCS#1 v1.5 is deterministic: byte-for-byte equal
    assert ours == sign_with_rsa2(body_of(V["app_private_key"]), content, "utf-8")
    assert "\n" not in ours
    assert verify_with_rsa(body_of(V["app_public_key"]), content.encode(), ours)


def test_canonical_string_drops_empty_values_and_sign_and_sorts_by_bytes() -> None:
    params = {"b": "2", "a": "1", "sign": "xyz", "empty": "", "none": None, "B": "upper", "a_b": "3"}
    assert wire.canonical_string(params) == "B=upper&a=1&a_b=3&b=2"
    # raw values: nothing is URL-encoded in the string to sign
    assert wire.canonical_string({"x": "a b&c=d/中"}) == "x=a b&c=d/中"


def _pkcs8_pem(pem: str) -> str:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    "form",
    ["pkcs1_pem", "pkcs8_pem", "pkcs1_body", "pkcs8_body", "escaped_newlines"],
)
def test_private_key_forms_all_sign_alike(form: str) -> None:
    pem = V["app_private_key"]
    text = {
        "pkcs1_pem": pem,
        "pkcs8_pem": _pkcs8_pem(pem),
        "pkcs1_body": body_of(pem),
        "pkcs8_body": body_of(_pkcs8_pem(pem)),
        "escaped_newlines": pem.replace("\n", "\\n"),
    }[form]
    key = wire.load_private_key(text)
    assert wire.sign(key, V["request"]["string_to_sign"]) == V["request"]["sign"]


@pytest.mark.parametrize("form", ["spki_pem", "spki_body"])
def test_public_key_forms(form: str) -> None:
    text = V["alipay_public_key"] if form == "spki_pem" else body_of(V["alipay_public_key"])
    key = wire.load_public_key(text)
    assert wire.verify(key, V["response"]["node"].encode(), V["response"]["sign"])


@pytest.mark.parametrize(
    "text",
    ["", "not a key", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----", "QUJD"],
)
def test_unusable_private_keys_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(wire.InvalidKey) as info:
        wire.load_private_key(text)
    if text:
        assert text not in str(info.value)


def test_short_and_non_rsa_keys_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = short.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(wire.InvalidKey, match="2048"):
        wire.load_private_key(pem)
    ec_pub = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(wire.InvalidKey, match="not an RSA"):
        wire.load_public_key(ec_pub)


def test_keys_are_parsed_once_per_text() -> None:
    # compared with a fresh first call, not a module-level key: other tests fill the cache too
    private = wire.load_private_key(V["app_private_key"])
    public = wire.load_public_key(V["alipay_public_key"])
    assert wire.load_private_key(V["app_private_key"]) is private
    assert wire.load_public_key(V["alipay_public_key"]) is public


def test_build_request_reproduces_the_vector() -> None:
    p = V["request"]["params"]
    encoded = wire.build_request(
        private_key=APP_PRIVATE,
        app_id=p["app_id"],
        method=p["method"],
        biz_content=json.loads(p["biz_content"]),
        timestamp=p["timestamp"],
        notify_url=p["notify_url"],
    )
    assert encoded.string_to_sign == V["request"]["string_to_sign"]
    assert encoded.params == {**p, "sign": V["request"]["sign"]}
    query = dict(parse_qsl(encoded.query, keep_blank_values=True))
    form = dict(parse_qsl(encoded.body.decode("ascii"), keep_blank_values=True))
    assert set(form) == {"biz_content"} and form["biz_content"] == p["biz_content"]
    assert query == {k: v for k, v in encoded.params.items() if k != "biz_content"}
    assert encoded.headers["Content-Type"] == "application/x-www-form-urlencoded;charset=utf-8"


def test_timestamp_is_beijing_time() -> None:
    assert wire.beijing_timestamp(datetime(2025, 3, 1, 4, 30, 5, tzinfo=UTC)) == "2025-03-01 12:30:05"
    assert wire.beijing_timestamp(datetime(2025, 12, 31, 20, 0, 0, tzinfo=UTC)) == "2026-01-01 04:00:00"
    with pytest.raises(ValueError):
        wire.beijing_timestamp(datetime(2025, 3, 1))


class _Captured:
    url: str = ""
    query: str = ""
    params: dict[str, str]
    headers: dict[str, str]


def test_the_sdk_sends_what_we_send_and_accepts_what_our_server_signs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run the official client end to end with its HTTP call captured: the parameters it signs
    and sends equal ours byte for byte, and its own response parser verifies an answer signed
    by our test "Alipay" exactly as wire.verify_response does."""
    captured = _Captured()
    node = V["response"]["node"]
    answer = (
        '{"alipay_trade_pay_response":' + node + ',"sign":"' + wire.sign(ALIPAY_PRIVATE, node) + '"}'
    ).encode()

    def fake_do_post(
        url: str,
        query_string: str,
        headers: dict[str, str],
        params: dict[str, str],
        charset: str,
        timeout: int,
    ) -> bytes:
        captured.url, captured.query, captured.params, captured.headers = url, query_string, params, headers
        return answer

    monkeypatch.setattr(sdk_client_module, "do_post", fake_do_post)
    config = AlipayClientConfig()
    config.server_url = "https://openapi.alipay.com/gateway.do"
    config.app_id = V["request"]["params"]["app_id"]
    config.app_private_key = body_of(V["app_private_key"])
    config.alipay_public_key = body_of(V["alipay_public_key"])
    config.format = "JSON"
    client = DefaultAlipayClient(config)
    model = AlipayTradePayModel()
    biz = json.loads(V["request"]["params"]["biz_content"])
    for key, value in biz.items():
        setattr(model, key, value)
    request = AlipayTradePayRequest(biz_model=model)
    request.notify_url = V["request"]["params"]["notify_url"]
    text = client.execute(request)
    response = AlipayTradePayResponse()
    response.parse_response_content(text)
    assert response.code == "10000" and response.trade_no == "2025030122001446881000012345"

    sent = dict(parse_qsl(captured.query, keep_blank_values=True))
    sdk_sign = sent.pop("sign")
    ours = wire.build_request(
        private_key=APP_PRIVATE,
        app_id=config.app_id,
        method="alipay.trade.pay",
        biz_content=biz,
        timestamp=sent["timestamp"],
        notify_url=request.notify_url,
    )
    assert {**sent, **captured.params} == {k: v for k, v in ours.params.items() if k != "sign"}
    assert ours.params["sign"] == sdk_sign
    assert dict(parse_qsl(ours.query)) == {**sent, "sign": sdk_sign}
    assert captured.headers["Content-type"] == ours.headers["Content-Type"]
    # the SDK's extraction of the signed node (regexes) and ours (brace matching) agree
    assert json.loads(text) == wire.verify_response(answer, "alipay.trade.pay", ALIPAY_PUBLIC).node
    assert wire.locate_response_node(answer, "alipay.trade.pay")[1].decode() == text


# -- responses ------------------------------------------------------------------------------


def test_the_vector_response_verifies_over_its_exact_raw_node() -> None:
    raw = V["response"]["body"].encode()
    name, node, signature = wire.locate_response_node(raw, "alipay.trade.pay")
    assert name == "alipay_trade_pay_response"
    assert node.decode() == V["response"]["node"]  # braces and escaped quotes inside strings
    assert signature == V["response"]["sign"]
    verified = wire.verify_response(raw, "alipay.trade.pay", ALIPAY_PUBLIC)
    assert verified.node["store_name"] == '食堂 {一楼} "东" 窗口\\'
    assert verify_with_rsa(body_of(V["alipay_public_key"]), node, V["response"]["sign"])  # the SDK agrees


def test_whitespace_around_the_node_is_outside_the_signed_bytes() -> None:
    raw = V["error_response"]["body"].encode()
    assert b"\n" in raw and b" : " in raw
    _, node, _ = wire.locate_response_node(raw, "alipay.trade.pay")
    assert node.decode() == V["error_response"]["node"]
    verified = wire.verify_response(raw, "alipay.trade.pay", ALIPAY_PUBLIC)
    assert verified.node["sub_code"] == "ACQ.BUYER_BALANCE_NOT_ENOUGH"


def test_our_server_signature_verifies_with_the_sdk_and_sdk_signatures_with_ours() -> None:
    node = '{"code":"10000","msg":"Success","out_trade_no":"o1","trade_status":"TRADE_SUCCESS","note":"}{"}'
    ours = wire.sign(ALIPAY_PRIVATE, node)
    assert verify_with_rsa(body_of(V["alipay_public_key"]), node.encode(), ours)
    sdk = sign_with_rsa2(body_of(V["alipay_private_key"]), node, "utf-8")
    raw = ('{"alipay_trade_query_response":' + node + ',"sign":"' + sdk + '"}').encode()
    assert wire.verify_response(raw, "alipay.trade.query", ALIPAY_PUBLIC).node["note"] == "}{"


def _signed(name: str, node: str) -> bytes:
    return ('{"' + name + '":' + node + ',"sign":"' + wire.sign(ALIPAY_PRIVATE, node) + '"}').encode()


@pytest.mark.parametrize("position", [10, 40, 80])
def test_any_altered_byte_fails(position: int) -> None:
    raw = bytearray(V["response"]["body"].encode())
    raw[position] ^= 0x01
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_response(bytes(raw), "alipay.trade.pay", ALIPAY_PUBLIC)


def test_unsigned_and_foreign_answers_are_not_verified() -> None:
    node = '{"code":"10000","msg":"Success"}'
    with pytest.raises(wire.ResponseNotVerified, match="not signed"):
        wire.verify_response(
            b'{"alipay_trade_pay_response":' + node.encode() + b"}", "alipay.trade.pay", ALIPAY_PUBLIC
        )
    # signed by someone else (the app's own key, not Alipay's)
    forged = (
        '{"alipay_trade_pay_response":' + node + ',"sign":"' + wire.sign(APP_PRIVATE, node) + '"}'
    ).encode()
    with pytest.raises(wire.ResponseNotVerified, match="does not verify"):
        wire.verify_response(forged, "alipay.trade.pay", ALIPAY_PUBLIC)
    # a genuine answer to another method is no answer to this one
    with pytest.raises(wire.ResponseNotVerified, match="no alipay_trade_pay_response"):
        wire.verify_response(_signed("alipay_trade_query_response", node), "alipay.trade.pay", ALIPAY_PUBLIC)
    for junk in (b"", b"<html>502</html>", b"[]", b'{"alipay_trade_pay_response":"c2VjcmV0","sign":"x"}'):
        with pytest.raises(wire.ResponseNotVerified):
            wire.verify_response(junk, "alipay.trade.pay", ALIPAY_PUBLIC)


def test_error_response_is_verified_when_there_is_no_method_node() -> None:
    node = '{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id"}'
    verified = wire.verify_response(_signed("error_response", node), "alipay.trade.pay", ALIPAY_PUBLIC)
    assert verified.node_name == "error_response" and verified.node["code"] == "40002"


def test_a_repeated_node_is_refused() -> None:
    good = '{"code":"40004","sub_code":"ACQ.BUYER_BALANCE_NOT_ENOUGH"}'
    evil = '{"code":"10000","msg":"Success"}'
    raw = (
        _signed("alipay_trade_pay_response", good)[:-1]
        + b',"alipay_trade_pay_response":'
        + evil.encode()
        + b"}"
    )
    with pytest.raises(wire.ResponseNotVerified, match="repeats"):
        wire.verify_response(raw, "alipay.trade.pay", ALIPAY_PUBLIC)


def test_a_node_name_inside_a_string_is_not_the_node() -> None:
    node = '{"code":"10000","msg":"Success"}'
    decoy = '"x":"\\"alipay_trade_pay_response\\":{\\"code\\":\\"10000\\"}",'
    raw = (
        "{"
        + decoy
        + '"alipay_trade_pay_response":'
        + node
        + ',"sign":"'
        + wire.sign(ALIPAY_PRIVATE, node)
        + '"}'
    ).encode()
    assert wire.verify_response(raw, "alipay.trade.pay", ALIPAY_PUBLIC).node == {
        "code": "10000",
        "msg": "Success",
    }


def test_response_node_name() -> None:
    assert wire.response_node_name("zoloz.authentication.customer.ftoken.query") == (
        "zoloz_authentication_customer_ftoken_query_response"
    )


# -- notifications --------------------------------------------------------------------------


def _form(params: dict[str, str]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(params).encode("ascii")


def test_the_vector_notification_verifies() -> None:
    params = V["notification"]["params"]
    assert wire.notification_string(params) == V["notification"]["string_to_sign"]
    assert "sign_type" not in wire.notification_string(params)
    form = wire.verify_notification(_form(params), ALIPAY_PUBLIC)
    assert form["subject"] == "午餐 套餐A" and form["trade_status"] == "TRADE_SUCCESS"
    assert verify_with_rsa(
        body_of(V["alipay_public_key"]), wire.notification_string(params).encode(), params["sign"]
    )  # the SDK's verifier agrees with our string to sign


@pytest.mark.parametrize(
    "change",
    [
        {"total_amount": "1250.00"},
        {"trade_status": "TRADE_CLOSED"},
        {"sign": "AAAA"},
        {"sign": ""},
        {"sign_type": "RSA"},
        {"extra": "added"},
    ],
)
def test_altered_notifications_are_refused(change: dict[str, str]) -> None:
    params = {**V["notification"]["params"], **change}
    with pytest.raises(wire.NotificationNotVerified):
        wire.verify_notification(_form(params), ALIPAY_PUBLIC)


def test_an_empty_value_added_to_a_notification_changes_nothing() -> None:
    params = {**V["notification"]["params"], "passback_params": ""}
    assert wire.verify_notification(_form(params), ALIPAY_PUBLIC)["passback_params"] == ""


def test_repeated_notification_fields_are_refused() -> None:
    body = _form(V["notification"]["params"]) + b"&trade_status=TRADE_SUCCESS"
    with pytest.raises(wire.NotificationNotVerified, match="repeats"):
        wire.verify_notification(body, ALIPAY_PUBLIC)


def test_gbk_notifications_are_decoded_by_their_charset() -> None:
    from urllib.parse import urlencode

    params = {"app_id": "1", "charset": "gbk", "notify_id": "n1", "subject": "午餐"}
    params["sign"] = wire.sign(ALIPAY_PRIVATE, wire.notification_string(params))
    body = urlencode(params, encoding="gbk").encode("ascii")
    assert wire.verify_notification(body, ALIPAY_PUBLIC)["subject"] == "午餐"
    with pytest.raises(wire.NotificationNotVerified, match="charset"):
        wire.verify_notification(body.replace(b"charset=gbk", b"charset=ebcdic"), ALIPAY_PUBLIC)


# -- amounts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fen", "yuan"), [(0, "0.00"), (1, "0.01"), (10, "0.10"), (1250, "12.50"), (100_000_000, "1000000.00")]
)
def test_fen_and_yuan(fen: int, yuan: str) -> None:
    assert wire.fen_to_yuan(fen) == yuan
    assert wire.yuan_to_fen(yuan) == fen


@pytest.mark.parametrize("text", ["12.3", "12"])
def test_short_yuan_forms(text: str) -> None:
    assert wire.yuan_to_fen(text) == int(text.replace(".", "")) * (10 if "." in text else 100)


@pytest.mark.parametrize(
    "text", ["", "1.234", "-1.00", "1e3", " 1.00", "1,00", "01.00", ".5", "NaN", "\uff11.00"]
)
def test_malformed_yuan_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        wire.yuan_to_fen(text)


@pytest.mark.parametrize("value", [-1, 1.5, True, "100"])
def test_fen_must_be_a_non_negative_int(value: Any) -> None:
    with pytest.raises(ValueError):
        wire.fen_to_yuan(value)


@given(st.integers(min_value=0, max_value=10**12))
def test_fen_yuan_round_trip(fen: int) -> None:
    assert wire.yuan_to_fen(wire.fen_to_yuan(fen)) == fen


def test_request_url_shape() -> None:
    encoded = wire.build_request(
        private_key=APP_PRIVATE,
        app_id="a",
        method="alipay.trade.query",
        biz_content={"out_trade_no": "o"},
        timestamp="2025-03-01 12:30:05",
    )
    assert "biz_content" not in encoded.query and urlsplit("http://x/?" + encoded.query).query
