# ruff: noqa: RUF001  (full-width punctuation is part of Alipay's own strings)
"""The sandbox Alipay's HTTP face: /gateway.do, /apps and the bill files.

Gateway-level checks come in this order, each answering as Alipay does (HTTP 200 always):
method (``error_response``, unsigned), app_id (the method's node, unsigned: with no known app
there is no key relationship to sign under), then, signed with the Alipay key: sign, sign_type,
charset, timestamp, version, format, encrypt_type, the RSA2 signature itself, and biz_content.
Fault rules apply only to calls that got that far.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from sandbox.alipay import trades, wire
from sandbox.alipay.keys import ALIPAY_PUBLIC_KEY_PEM
from sandbox.alipay.notify import AlipayNotifier
from sandbox.alipay.state import AlipayState, App
from sandbox.alipay.trades import Call, Invalid, Outcome
from sandbox.bills import BillFaults
from sandbox.control import ControlPlane
from sandbox.faults import FaultEffect, fault_effect, faulted

if TYPE_CHECKING:
    from sandbox.face.directory import FaceDirectory

PROVIDER = "alipay"
CONTENT_TYPE = "application/json;charset=utf-8"

GATEWAY_SUB_MSG = {
    "isv.missing-method": "缺少方法名参数",
    "isv.invalid-method": "不存在的方法名",
    "isv.missing-app-id": "缺少AppID参数",
    "isv.invalid-app-id": "无效的AppID参数",
    "isv.missing-signature": "缺少签名参数",
    "isv.missing-signature-type": "缺少签名类型参数",
    "isv.invalid-signature-type": "无效的签名类型",
    "isv.invalid-charset": "字符集错误",
    "isv.missing-timestamp": "缺少时间戳参数",
    "isv.invalid-timestamp": "非法的时间戳参数",
    "isv.missing-version": "缺少版本参数",
    "isv.invalid-format": "无效的数据格式",
    "isv.invalid-encrypt-type": "无效的加密类型",
    "isv.invalid-signature": (
        "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为："
    ),
    "isv.invalid-parameter": "参数无效",
}


def gateway_error(code: str, sub_code: str, extra: str = "") -> dict[str, Any]:
    return wire.result(code, sub_code, GATEWAY_SUB_MSG[sub_code] + extra)


def common_problem(params: dict[str, str]) -> dict[str, Any] | None:
    """What is wrong with the common parameters (before the signature is checked), if anything."""
    if not params.get("sign"):
        return gateway_error("40001", "isv.missing-signature")
    sign_type = params.get("sign_type", "")
    if not sign_type:
        return gateway_error("40001", "isv.missing-signature-type")
    if sign_type != "RSA2":
        return gateway_error("40002", "isv.invalid-signature-type")
    charset = params.get("charset", "")
    if charset and charset.lower() not in ("utf-8", "utf8"):
        return gateway_error("40002", "isv.invalid-charset")
    timestamp = params.get("timestamp", "")
    if not timestamp:
        return gateway_error("40001", "isv.missing-timestamp")
    if not wire.valid_timestamp(timestamp):
        return gateway_error("40002", "isv.invalid-timestamp")
    if not params.get("version"):
        return gateway_error("40001", "isv.missing-version")
    fmt = params.get("format", "")
    if fmt and fmt.upper() != "JSON":
        return gateway_error("40002", "isv.invalid-format")
    if params.get("encrypt_type"):  # AES-encrypted biz_content is not supported by the sandbox
        return gateway_error("40002", "isv.invalid-encrypt-type")
    return None


class AppIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app_public_key: str


class AlipayGateway:
    """Everything between the wire and the business rules, for one sandbox's Alipay state."""

    def __init__(self, state: AlipayState, control: ControlPlane, notifier: AlipayNotifier) -> None:
        self.state = state
        self.control = control
        self.notifier = notifier
        self.directory: FaceDirectory | None = None

    def respond(self, node: str, body: dict[str, Any], app: App | None, *, corrupt: bool = False) -> Response:
        key = self.state.alipay_key if app is not None else None
        raw = wire.response_bytes(node, body, key, corrupt_sign=corrupt)
        return Response(raw, headers={"content-type": CONTENT_TYPE})

    async def handle(self, params: dict[str, str], base_url: str) -> Response:
        method = params.get("method", "")
        if not method:
            return self.respond("error_response", gateway_error("40001", "isv.missing-method"), None)
        if method not in trades.METHODS:
            return self.respond("error_response", gateway_error("40002", "isv.invalid-method"), None)
        node = wire.node_name(method)
        app_id = params.get("app_id", "")
        if not app_id:
            return self.respond(node, gateway_error("40001", "isv.missing-app-id"), None)
        app = self.state.apps.get(app_id)
        if app is None:
            return self.respond(node, gateway_error("40002", "isv.invalid-app-id"), None)
        problem = common_problem(params)
        if problem is not None:
            return self.respond(node, problem, app)
        content = wire.string_to_sign(params)
        if not wire.verify(app.public_key, content.encode("utf-8"), params["sign"]):
            shown = content.replace("&", "&amp;")
            return self.respond(node, gateway_error("40002", "isv.invalid-signature", shown), app)
        biz: Any = {}
        if params.get("biz_content"):
            try:
                biz = json.loads(params["biz_content"])
            except ValueError:
                biz = None
            if not isinstance(biz, dict):
                extra = " (biz_content is not a JSON object)"
                return self.respond(node, gateway_error("40002", "isv.invalid-parameter", extra), app)
        self.control.record(PROVIDER, "alipay.call", app_id, method=method, biz_content=biz)

        effect: FaultEffect | None = None
        out_trade_no = biz.get("out_trade_no")
        rule = self.control.take_fault(PROVIDER, method, {"order_ref": out_trade_no})
        if rule is not None:
            effect = fault_effect(rule.action, rule.delay_ms)
            self.control.record(
                PROVIDER,
                "fault",
                app_id,
                operation=method,
                order_ref=out_trade_no,
                rule_id=rule.id,
                action=rule.action,
            )
        call = Call(self.state, app, self.directory, 0.0, params, biz, base_url)
        if method == trades.BILL_METHOD:
            call.faults = BillFaults.take(self.control, PROVIDER, method, app_id)
        if effect is None:
            outcome = await self.apply(method, call)
            return self.respond(node, outcome.body, app, corrupt=outcome.corrupt_sign)
        if effect.lag_s:
            call.hide_recorded_after = self.control.now(PROVIDER) - effect.lag_s
        refusal = gateway_error("40002", "isv.invalid-signature", content.replace("&", "&amp;"))

        def answer(outcome: Outcome, corrupt: bool) -> Response:
            return self.respond(node, outcome.body, app, corrupt=outcome.corrupt_sign or corrupt)

        return await faulted(
            effect,
            apply=lambda: self.apply(method, call),
            answer=answer,
            error=lambda: PlainTextResponse("Internal Server Error", status_code=500),
            refusal=lambda: self.respond(node, refusal, app),
            breaker=self.control.breaker,
            commit=self.control.commit,
            what=f"{PROVIDER} {method}",
        )

    async def apply(self, method: str, call: Call) -> Outcome:
        handler, _ = trades.METHODS[method]
        async with call.app.lock:
            call.now = self.control.now(PROVIDER)
            call.directory = self.directory
            try:
                outcome = handler(call)
            except Invalid as exc:
                outcome = Outcome(trades.invalid(method, exc))
            for kind, fields in outcome.events:
                self.control.record(PROVIDER, kind, call.app.app_id, **fields)
        for notice in outcome.notices:
            self.notifier.notify(notice)
        return outcome


def create_alipay_app(gateway: AlipayGateway) -> FastAPI:
    app = FastAPI(
        title="CampusPay sandbox: Alipay OpenAPI v1",
        version="1",
        description="An Alipay-compatible gateway.do for testing; see docs/alipay-sandbox.md.",
    )

    @app.api_route("/gateway.do", methods=["GET", "POST"], summary="Alipay OpenAPI v1 gateway")
    async def gateway_do(request: Request) -> Response:
        body = await request.body()
        query: bytes = request.scope.get("query_string", b"")
        params = wire.merge_params(query, body, request.headers.get("content-type", ""))
        # Where this gateway.do is reachable, mount prefixes included: bill links sit beside it.
        here = str(request.url.replace(query=""))
        return await gateway.handle(params, here.rsplit("/", 1)[0] + "/")

    @app.post("/apps", summary="Sandbox only: register a test app with its RSA2 public key")
    async def register(request: Request) -> Response:
        try:
            spec = AppIn.model_validate_json(await request.body() or b"{}")
            public_key = wire.load_app_public_key(spec.app_public_key)
        except ValidationError as exc:
            return JSONResponse(
                {"detail": exc.errors(include_url=False, include_input=False)}, status_code=422
            )
        except wire.InvalidAppKey as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        registered = gateway.state.register_app(public_key)
        gateway.control.record(
            PROVIDER, "alipay.app_registered", registered.app_id, seller_id=registered.seller_id
        )
        return JSONResponse(
            {
                "app_id": registered.app_id,
                "seller_id": registered.seller_id,
                "sign_type": "RSA2",
                "alipay_public_key": ALIPAY_PUBLIC_KEY_PEM,
            }
        )

    @app.get("/bills/{token}/{filename}", summary="A bill file, as linked by bill_download_url")
    async def bill(token: str, filename: str) -> Response:
        found = gateway.state.bills.get(token)
        if found is not None and gateway.control.now(PROVIDER) > found.expires_at:
            return PlainTextResponse("this bill link has expired: ask for a new one", status_code=403)
        if found is None:
            return PlainTextResponse(
                "no such bill (the sandbox was reset, or the link is wrong)", status_code=404
            )
        disposition = f"attachment; filename*=UTF-8''{quote(found.filename)}"
        return Response(
            found.content, media_type="application/zip", headers={"content-disposition": disposition}
        )

    return app
