"""The sandbox Alipay's gateway.do: parameters, RSA2 verification, signed response bytes, errors,
app registration, fault rules. Over httpx.ASGITransport, with the sandbox's real face cloud."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

from sandbox.control import SimulatedDrop
from tests.sdk.alipay_kit import (
    GATEWAY,
    AlipayTestClient,
    content_to_sign,
    face_token,
    load_public,
    new_key,
    public_pem,
    raw_node,
    rsa2_sign,
    rsa2_verifies,
)

pytestmark = pytest.mark.unit


@pytest.fixture
async def alipay(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[AlipayTestClient]:
    values = (await client.get("/_control/test-values")).json()
    yield AlipayTestClient(client, load_public(values["alipay"]["alipay_public_key"]))
    await app.state.alipay.aclose()


async def events(client: httpx.AsyncClient, **query: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await client.get("/_control/events", params=query)).json()["events"]
    return found


# --- responses: shape and exact-bytes signatures -------------------------------------------------


async def test_response_sign_covers_the_exact_bytes_of_the_node(alipay: AlipayTestClient) -> None:
    answer = await alipay.pay("T1", 1250, await face_token(alipay.http), subject="午餐 lunch")
    assert answer.code == "10000" and answer.verified
    # The node is emitted compactly, in UTF-8 (no \u escapes), followed by "sign".
    assert answer.raw.startswith('{"alipay_trade_pay_response":{"code":"10000","msg":"Success"')
    assert answer.raw.index('"sign":"') > answer.raw.index("}")
    node = raw_node(answer.raw, "alipay_trade_pay_response")
    assert answer.raw == f'{{"alipay_trade_pay_response":{node},"sign":"{answer.sign}"}}'
    assert answer.sign is not None
    assert rsa2_verifies(alipay.alipay_public_key, node.encode(), answer.sign)
    # A re-serialisation of the parsed node is not what was signed, when it differs by one byte.
    assert not rsa2_verifies(alipay.alipay_public_key, json.dumps(answer.node).encode(), answer.sign)


async def test_non_ascii_values_are_signed_as_utf8(alipay: AlipayTestClient) -> None:
    token = await face_token(alipay.http)
    await alipay.pay("T-中文", 100, token, subject="午餐")
    answer = await alipay.call("alipay.trade.query", {"out_trade_no": "T-中文"})
    assert answer.verified and '"out_trade_no":"T-中文"' in answer.raw


# --- parameters: GET, POST, merging ---------------------------------------------------------------


async def test_get_with_everything_in_the_query_string(alipay: AlipayTestClient) -> None:
    answer = await alipay.call("alipay.trade.query", {"out_trade_no": "nope"}, style="get")
    assert (answer.code, answer.sub_code, answer.verified) == ("40004", "ACQ.TRADE_NOT_EXIST", True)


async def test_post_with_everything_in_the_form_body(alipay: AlipayTestClient) -> None:
    params = alipay.params("alipay.trade.query", {"out_trade_no": "nope"})
    response = await alipay.http.post(
        GATEWAY, content=urlencode(params), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    answer = alipay.parse(response, "alipay.trade.query")
    assert (answer.sub_code, answer.verified) == ("ACQ.TRADE_NOT_EXIST", True)


async def test_query_string_and_form_body_are_merged_before_verifying(alipay: AlipayTestClient) -> None:
    # The official SDK's split: common parameters (and sign) in the query, biz_content in the body.
    answer = await alipay.call("alipay.trade.query", {"out_trade_no": "nope"}, style="post")
    assert (answer.sub_code, answer.verified) == ("ACQ.TRADE_NOT_EXIST", True)
    params = alipay.params("alipay.trade.query", {"out_trade_no": "nope"})
    # The query string wins a key given twice: a body that disagrees is ignored.
    response = await alipay.http.post(
        GATEWAY + "?" + urlencode(params),
        content=urlencode({"biz_content": '{"out_trade_no":"other"}', "method": "alipay.trade.pay"}),
        headers={"content-type": "application/x-www-form-urlencoded;charset=utf-8"},
    )
    assert alipay.parse(response, "alipay.trade.query").sub_code == "ACQ.TRADE_NOT_EXIST"


async def test_empty_values_are_left_out_of_the_string_to_sign(alipay: AlipayTestClient) -> None:
    params = alipay.params("alipay.trade.query", {"out_trade_no": "nope"})
    params["app_auth_token"] = ""  # signed without it (empty), then sent empty: still verifies
    answer = alipay.parse(await alipay.send(params), "alipay.trade.query")
    assert answer.sub_code == "ACQ.TRADE_NOT_EXIST"


async def test_sign_type_is_part_of_the_string_to_sign(alipay: AlipayTestClient) -> None:
    params = alipay.params("alipay.trade.query", {"out_trade_no": "nope"})
    without = {k: v for k, v in params.items() if k != "sign"}
    without.pop("sign_type")
    params["sign"] = rsa2_sign(alipay.private_key, content_to_sign(without))  # signed without it
    answer = alipay.parse(await alipay.send(params), "alipay.trade.query")
    assert (answer.code, answer.sub_code) == ("40002", "isv.invalid-signature")


# --- gateway errors ---------------------------------------------------------------------------


async def test_a_bad_signature_is_refused_and_shows_the_string_the_gateway_verified(
    alipay: AlipayTestClient,
) -> None:
    params = alipay.params("alipay.trade.query", {"out_trade_no": "T1"})
    params["timestamp"] = "2020-01-01 00:00:00"  # altered after signing
    answer = alipay.parse(await alipay.send(params), "alipay.trade.query")
    assert (answer.code, answer.node["msg"], answer.sub_code) == (
        "40002",
        "Invalid Arguments",
        "isv.invalid-signature",
    )
    assert answer.verified  # Alipay signs its refusals too
    assert "timestamp=2020-01-01 00:00:00&amp;version=1.0" in answer.node["sub_msg"]


async def test_a_signature_by_another_key_is_refused(alipay: AlipayTestClient) -> None:
    other = AlipayTestClient(alipay.http, alipay.alipay_public_key, private_key=new_key())
    answer = await other.call("alipay.trade.query", {"out_trade_no": "T1"})
    assert answer.sub_code == "isv.invalid-signature"


@pytest.mark.parametrize(
    ("change", "code", "sub_code"),
    [
        ({"sign": None}, "40001", "isv.missing-signature"),
        ({"sign_type": None}, "40001", "isv.missing-signature-type"),
        ({"sign_type": "RSA"}, "40002", "isv.invalid-signature-type"),
        ({"timestamp": None}, "40001", "isv.missing-timestamp"),
        ({"timestamp": "2024/01/01 10:00"}, "40002", "isv.invalid-timestamp"),
        ({"version": None}, "40001", "isv.missing-version"),
        ({"charset": "GBK"}, "40002", "isv.invalid-charset"),
        ({"format": "XML"}, "40002", "isv.invalid-format"),
        ({"encrypt_type": "AES"}, "40002", "isv.invalid-encrypt-type"),
    ],
)
async def test_common_parameter_errors(
    alipay: AlipayTestClient, change: dict[str, str | None], code: str, sub_code: str
) -> None:
    params = alipay.params("alipay.trade.query", {"out_trade_no": "T1"})
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    if "sign" in params:
        params["sign"] = rsa2_sign(alipay.private_key, content_to_sign(params))
    answer = alipay.parse(await alipay.send(params), "alipay.trade.query")
    assert (answer.node_name, answer.code, answer.sub_code) == ("alipay_trade_query_response", code, sub_code)
    assert answer.node["msg"] == {"40001": "Missing Required Arguments", "40002": "Invalid Arguments"}[code]
    assert answer.verified


async def test_missing_or_unknown_app_id_answers_unsigned(alipay: AlipayTestClient) -> None:
    params = alipay.params("alipay.trade.query", {"out_trade_no": "T1"})
    unknown = alipay.parse(await alipay.send({**params, "app_id": "2021009999999999"}), "alipay.trade.query")
    assert (unknown.code, unknown.sub_code, unknown.sign) == ("40002", "isv.invalid-app-id", None)
    assert unknown.node["sub_msg"] == "无效的AppID参数"
    response = await alipay.send({k: v for k, v in params.items() if k != "app_id"})
    document = response.json()
    assert document == {
        "alipay_trade_query_response": {
            "code": "40001",
            "msg": "Missing Required Arguments",
            "sub_code": "isv.missing-app-id",
            "sub_msg": "缺少AppID参数",
        }
    }


async def test_missing_or_unknown_method_answers_error_response(alipay: AlipayTestClient) -> None:
    params = alipay.params("alipay.trade.query", {"out_trade_no": "T1"})
    document = (await alipay.send({k: v for k, v in params.items() if k != "method"})).json()
    assert document["error_response"]["sub_code"] == "isv.missing-method" and "sign" not in document
    document = (await alipay.send(alipay.params("alipay.trade.nope", {}))).json()
    assert document["error_response"]["code"] == "40002"
    assert document["error_response"]["sub_code"] == "isv.invalid-method"


@pytest.mark.parametrize("biz", ["{not json", "[1, 2]", '"text"'])
async def test_malformed_biz_content(alipay: AlipayTestClient, biz: str) -> None:
    answer = await alipay.call("alipay.trade.query", biz)
    assert (answer.code, answer.sub_code, answer.verified) == ("40002", "isv.invalid-parameter", True)


async def test_missing_business_parameters(alipay: AlipayTestClient) -> None:
    trade = await alipay.call("alipay.trade.query", {})
    assert (trade.code, trade.sub_code) == ("40004", "ACQ.INVALID_PARAMETER")
    assert "out_trade_no or trade_no" in trade.node["sub_msg"]
    pay = await alipay.call("alipay.trade.pay", {"out_trade_no": "T1", "total_amount": "1.00"})
    assert pay.sub_code == "ACQ.INVALID_PARAMETER" and pay.node["receipt_amount"] == "0.00"
    other = await alipay.call("zoloz.authentication.customer.ftoken.query", {"biz_type": "1"})
    assert (other.code, other.sub_code) == ("40002", "isv.invalid-parameter")


@pytest.mark.parametrize("amount", ["0", "0.00", "-1.00", "1.234", "abc", "100000000.01", True])
async def test_invalid_amounts(alipay: AlipayTestClient, amount: Any) -> None:
    body = {
        "out_trade_no": "T1",
        "scene": "security_code",
        "auth_code": "fp1",
        "subject": "s",
        "total_amount": amount,
    }
    answer = await alipay.call("alipay.trade.pay", body)
    assert answer.sub_code == "ACQ.INVALID_PARAMETER"


# --- app registration ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["spki", "pkcs1", "bare"])
async def test_registered_app_calls_with_its_own_key(
    client: httpx.AsyncClient, alipay: AlipayTestClient, fmt: str
) -> None:
    key = new_key()
    pem = public_pem(key, "pkcs1" if fmt == "pkcs1" else "spki")
    if fmt == "bare":
        pem = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    response = await client.post("/alipay/apps", json={"app_public_key": pem})
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["app_id"].startswith("2021") and len(created["app_id"]) == 16
    assert created["alipay_public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    app = AlipayTestClient(client, load_public(created["alipay_public_key"]), created["app_id"], key)
    answer = await app.call("alipay.trade.query", {"out_trade_no": "T1"})
    assert (answer.sub_code, answer.verified) == ("ACQ.TRADE_NOT_EXIST", True)
    # The default app's key does not sign for the new app.
    stranger = AlipayTestClient(client, alipay.alipay_public_key, created["app_id"])
    assert (
        await stranger.call("alipay.trade.query", {"out_trade_no": "T1"})
    ).sub_code == "isv.invalid-signature"


@pytest.mark.parametrize(
    "body",
    [{"app_public_key": "not a key"}, {"app_public_key": ""}, {}, {"app_public_key": "x", "extra": 1}],
)
async def test_registration_refuses_bad_keys(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert (await client.post("/alipay/apps", json=body)).status_code == 422


async def test_registration_refuses_keys_under_2048_bits(client: httpx.AsyncClient) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    response = await client.post("/alipay/apps", json={"app_public_key": public_pem(small)})
    assert response.status_code == 422 and "2048" in response.text


async def test_reset_forgets_registered_apps_but_keeps_the_default(
    client: httpx.AsyncClient, alipay: AlipayTestClient
) -> None:
    created = (await client.post("/alipay/apps", json={"app_public_key": public_pem(new_key())})).json()
    await client.post("/_control/reset")
    apps = (await client.get("/_control/alipay/apps")).json()["apps"]
    assert [a["app_id"] for a in apps] == [alipay.app_id]
    assert created["app_id"] != alipay.app_id


# --- fault rules through the shared control plane ------------------------------------------------


async def add_fault(client: httpx.AsyncClient, **rule: Any) -> None:
    response = await client.post("/_control/faults", json={"provider": "alipay", **rule})
    assert response.status_code == 200, response.text


async def test_fault_rules_name_the_method_and_match_out_trade_no(alipay: AlipayTestClient) -> None:
    await add_fault(alipay.http, operation="alipay.trade.pay", action="error_500", match={"order_ref": "T2"})
    token = await face_token(alipay.http)
    assert (await alipay.pay("T1", 100, token)).code == "10000"  # not matched
    response = await alipay.send(alipay.params("alipay.trade.pay", {"out_trade_no": "T2"}))
    assert response.status_code == 500
    assert (await alipay.call("alipay.trade.query", {"out_trade_no": "T2"})).sub_code == "ACQ.TRADE_NOT_EXIST"
    assert (
        await alipay.http.post(
            "/_control/faults", json={"provider": "alipay", "operation": "pay", "action": "delay"}
        )
    ).status_code == 422


async def test_fault_error_after_apply_moves_the_money(alipay: AlipayTestClient) -> None:
    await add_fault(alipay.http, operation="alipay.trade.pay", action="error_500_after_apply")
    params = alipay.params(
        "alipay.trade.pay",
        {
            "out_trade_no": "T1",
            "scene": "security_code",
            "auth_code": await face_token(alipay.http),
            "subject": "s",
            "total_amount": "1.00",
        },
    )
    assert (await alipay.send(params)).status_code == 500
    answer = await alipay.call("alipay.trade.query", {"out_trade_no": "T1"})
    assert answer.node["trade_status"] == "TRADE_SUCCESS"
    faults = await events(alipay.http, provider="alipay", kind="fault")
    assert faults[0]["action"] == "error_500_after_apply" and faults[0]["operation"] == "alipay.trade.pay"


async def test_fault_bad_signature_on_query(alipay: AlipayTestClient) -> None:
    await add_fault(alipay.http, operation="alipay.trade.query", action="bad_signature")
    answer = await alipay.call("alipay.trade.query", {"out_trade_no": "T1"})
    assert answer.sub_code == "ACQ.TRADE_NOT_EXIST" and answer.sign is not None and not answer.verified
    assert (await alipay.call("alipay.trade.query", {"out_trade_no": "T1"})).verified


async def test_fault_drop_after_apply(app: FastAPI, alipay: AlipayTestClient) -> None:
    await add_fault(alipay.http, operation="alipay.trade.pay", action="drop_after_apply")
    biz = {
        "out_trade_no": "T1",
        "scene": "security_code",
        "auth_code": await face_token(alipay.http),
        "subject": "s",
        "total_amount": "1.00",
    }
    with pytest.raises(SimulatedDrop):
        await alipay.send(alipay.params("alipay.trade.pay", biz))
    assert (await alipay.call("alipay.trade.query", {"out_trade_no": "T1"})).node[
        "trade_status"
    ] == "TRADE_SUCCESS"


async def test_faults_never_hit_refused_calls(alipay: AlipayTestClient) -> None:
    await add_fault(alipay.http, operation="*", action="error_500")
    params = alipay.params("alipay.trade.query", {"out_trade_no": "T1"})
    params["sign"] = params["sign"][::-1]
    assert alipay.parse(await alipay.send(params), "alipay.trade.query").sub_code == "isv.invalid-signature"
    assert (await alipay.send(alipay.params("alipay.trade.query", {"out_trade_no": "T1"}))).status_code == 500


# --- event log and absolute-form targets ---------------------------------------------------------


async def test_calls_are_logged_without_keys(alipay: AlipayTestClient) -> None:
    await alipay.pay("T1", 100, await face_token(alipay.http))
    logged = await events(alipay.http, provider="alipay")
    kinds = [e["kind"] for e in logged]
    assert kinds[:4] == ["request", "alipay.call", "alipay.pay", "response"]
    call = logged[1]
    assert call["merchant_id"] == alipay.app_id and call["biz_content"]["out_trade_no"] == "T1"
    assert logged[2]["amount"] == 100 and logged[2]["buyer_id"] == "2088101000000001"
    text = json.dumps(logged)
    assert "PRIVATE KEY" not in text


async def test_absolute_form_request_targets_are_routed(alipay: AlipayTestClient) -> None:
    # What the official Python SDK sends (http.client given the whole URL).
    params = alipay.params("alipay.trade.query", {"out_trade_no": "T1"})
    response = await alipay.http.post(
        "http://sandbox.test/alipay/gateway.do?" + urlencode(params), headers={"content-type": "text/plain"}
    )
    assert response.status_code == 200
    from sandbox.alipay.targets import AbsoluteFormTarget

    seen: dict[str, Any] = {}

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.update(path=scope["path"], raw_path=scope["raw_path"], query=scope["query_string"])

    scope = {
        "type": "http",
        "path": "http://127.0.0.1/alipay/gateway.do",
        "raw_path": b"http://127.0.0.1/alipay/gateway.do",
        "query_string": b"a=1",
    }
    await AbsoluteFormTarget(inner)(scope, None, None)  # type: ignore[arg-type]
    assert seen == {"path": "/alipay/gateway.do", "raw_path": b"/alipay/gateway.do", "query": b"a=1"}
