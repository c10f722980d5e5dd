"""The bank's HTTP face: backTransReq.do, queryTrans.do, merchant registration (docs/bank-protocol.md).

Between the wire and the ledger: form parsing, merchant identification, signature checks, field
validation, idempotency, fault rules, magic amounts, signed answers and notifications.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from sandbox.bank import settlement, wire
from sandbox.bank.ledger import RESP_MSG, Ledger, Outcome, parse_token_data
from sandbox.bank.notify import BankNotifier
from sandbox.bank.state import BankState, Merchant, Txn, beijing
from sandbox.bills import BillFaults
from sandbox.control import ControlPlane
from sandbox.faults import FaultEffect, fault_effect, faulted
from sandbox.testvalues import BANK_TR_ID, bank_magic_amount

PROVIDER = "bank"
BACK_TRANS_PATH = "/gateway/api/backTransReq.do"
QUERY_PATH = "/gateway/api/queryTrans.do"
FILE_PATH = "/gateway/api/fileTransRequest.do"

# (txnType, txnSubType, bizType) → operation name (also the fault-rule operation)
BACK_TRANS_OPERATIONS = {
    ("79", "00", "000902"): "agreement",
    ("01", "01", "000902"): "consume",
    ("31", "00", "000902"): "void",
    ("04", "00", "000902"): "refund",
}
QUERY_OPERATIONS = {("00", "00", "000000"): "query"}
FILE_OPERATIONS = {("76", "01", "000000"): "file_transfer"}  # the settlement file (settlement.py)
OPERATIONS = frozenset(
    {*BACK_TRANS_OPERATIONS.values(), *QUERY_OPERATIONS.values(), *FILE_OPERATIONS.values()}
)

COMMON_REQUIRED = ("version", "encoding", "merId", "txnType", "txnSubType", "bizType", "accessType")
REQUIRED: dict[str, tuple[str, ...]] = {
    "agreement": ("channelType", "orderId", "txnTime", "accNo", "tokenPayData", "reqReserved"),
    "consume": ("channelType", "orderId", "txnTime", "txnAmt", "currencyCode", "backUrl", "tokenPayData"),
    "void": ("channelType", "orderId", "txnTime", "origQryId", "txnAmt", "currencyCode", "backUrl"),
    "refund": ("channelType", "orderId", "txnTime", "origQryId", "txnAmt", "currencyCode", "backUrl"),
    "query": ("orderId", "txnTime"),
    "file_transfer": ("txnTime", "settleDate", "fileType"),
}
ECHO = (
    "version",
    "encoding",
    "merId",
    "txnType",
    "txnSubType",
    "bizType",
    "accessType",
    "channelType",
    "orderId",
    "txnTime",
    "txnAmt",
    "currencyCode",
    "origQryId",
    "reqReserved",
    "settleDate",
    "fileType",
)
NOTIFY_ECHO = tuple(k for k in ECHO if k != "origQryId")
PATTERNS = {
    "merId": re.compile(r"[0-9A-Za-z]{15}"),
    "orderId": re.compile(r"[0-9A-Za-z]{8,32}"),
    "txnTime": re.compile(r"[0-9]{14}"),
    "txnAmt": re.compile(r"[1-9][0-9]{0,11}"),
    "accNo": re.compile(r"[0-9]{12,19}"),
    "origQryId": re.compile(r"[0-9]{21}"),
    "backUrl": re.compile(r"https?://\S+"),
    "settleDate": re.compile(r"(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])"),
    "fileType": re.compile(r"00"),
}
FIXED = {"version": "5.1.0", "encoding": "UTF-8", "accessType": "0", "currencyCode": "156"}
# Which certificate answers a 01 merchant, by variant; any variant but "ok" corrupts a keyed mode.
Variant = Literal["ok", "corrupt", "expired", "wrong_subject", "other_root"]
CERT_STEMS: dict[str, str] = {
    "ok": "bank-sign",
    "corrupt": "bank-sign",
    "expired": "bank-sign-expired",
    "wrong_subject": "bank-sign-wrong-subject",
    "other_root": "bank-sign-other-root",
}
MAGIC_VARIANTS: dict[str, Variant] = {
    "bad_signature": "corrupt",
    "expired_cert": "expired",
    "wrong_subject_cert": "wrong_subject",
    "other_root_cert": "other_root",
}


def sign(merchant: Merchant, fields: dict[str, str], variant: Variant = "ok") -> dict[str, str]:
    """The fields as the bank sends them: signed in the merchant's mode."""
    out = {k: v for k, v in fields.items() if v != ""}
    out["signMethod"] = merchant.sign_method
    if merchant.sign_method == "01":
        stem = CERT_STEMS[variant]
        out["certId"] = str(wire.pki_cert(stem).serial_number)
        out["signPubKeyCert"] = wire.pki_text(f"{stem}.pem")
        signature = wire.rsa_signature(wire.pki_key(stem), wire.sign_content(out))
        out["signature"] = wire.corrupt(signature) if variant == "corrupt" else signature
    else:
        assert merchant.secure_key is not None
        signature = wire.keyed_signature(merchant.sign_method, wire.sign_content(out), merchant.secure_key)
        out["signature"] = signature if variant == "ok" else wire.corrupt(signature)
    return out


def form_response(fields: dict[str, str], status: int = 200) -> Response:
    return Response(wire.encode_form(fields), status_code=status, media_type=wire.FORM_TYPE)


def valid_time(value: str) -> bool:
    try:
        datetime.strptime(value, "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True


def check_fields(operation: str, fields: dict[str, str]) -> str | None:
    """None, or the respCode (13 missing, 10 malformed) the fields earn."""
    if any(name not in fields for name in REQUIRED[operation]):
        return "13"
    for name, value in FIXED.items():
        if name in fields and fields[name] != value:
            return "10"
    for name, pattern in PATTERNS.items():
        if name in fields and not pattern.fullmatch(fields[name]):
            return "10"
    if not valid_time(fields["txnTime"]):
        return "10"
    if operation not in ("query", "file_transfer") and fields["channelType"] not in ("07", "08"):
        return "10"
    if operation in ("agreement", "consume"):
        token_data = parse_token_data(fields["tokenPayData"])
        if token_data is None or "trId" not in token_data:
            return "10"
        if operation == "consume" and "token" not in token_data:
            return "10"
    if operation == "consume" and "accNo" in fields:
        return "10"  # token payments never carry the account number
    if operation == "agreement" and len(fields["reqReserved"]) > 64:
        return "10"
    return None


class MerchantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sign_method: Literal["01", "11", "12"]
    cert_pem: str | None = None
    secure_key: str | None = Field(default=None, min_length=16)
    mer_id: str | None = Field(default=None, pattern=r"^[0-9A-Za-z]{15}$")
    tr_id: str = Field(default=BANK_TR_ID, pattern=r"^[0-9]{11}$")


class BankGateway:
    def __init__(self, state: BankState, control: ControlPlane, notifier: BankNotifier) -> None:
        self.state = state
        self.control = control
        self.notifier = notifier
        self.ledger = Ledger(state)

    # --- answers -------------------------------------------------------------------------------
    def answer(
        self,
        merchant: Merchant | None,
        request: dict[str, str],
        code: str,
        extras: dict[str, str] | None = None,
        variant: Variant = "ok",
    ) -> Response:
        fields = {k: request[k] for k in ECHO if k in request}
        fields.update(extras or {})
        fields.update(respCode=code, respMsg=RESP_MSG[code])
        if merchant is None:  # nothing to sign with: this one answer is unsigned
            if "signMethod" in request:
                fields["signMethod"] = request["signMethod"]
            return form_response(fields)
        return form_response(sign(merchant, fields, variant))

    def notification(self, merchant: Merchant, txn: Txn, *, forged: bool = False) -> dict[str, str]:
        """The signed notification of a transaction; `forged`: signed by someone not the bank
        (a well-formed certificate of another root, or a wrong secure key)."""
        fields = {k: txn.notify_fields[k] for k in NOTIFY_ECHO if k in txn.notify_fields}
        fields.update(respCode="00", respMsg=RESP_MSG["00"], queryId=txn.query_id, **txn.extras)
        if txn.orig_query_id:
            fields["origQryId"] = txn.orig_query_id
        if forged:
            return sign(merchant, fields, "other_root" if merchant.sign_method == "01" else "corrupt")
        return sign(merchant, fields)

    # --- the pipeline --------------------------------------------------------------------------
    def authenticate(self, fields: dict[str, str]) -> Merchant | str:
        """The merchant the message verifiably comes from, or the respCode to refuse with."""
        merchant = self.state.merchants.get(fields.get("merId", ""))
        if merchant is None:
            return "13" if "merId" not in fields else "31"
        return merchant

    def verifies(self, merchant: Merchant, fields: dict[str, str]) -> bool:
        signature = fields.get("signature", "")
        if not signature or fields.get("signMethod") != merchant.sign_method:
            return False
        content = wire.sign_content(fields)
        if merchant.sign_method == "01":
            assert merchant.cert is not None
            return fields.get("certId") == merchant.cert_id and wire.rsa_verifies(
                merchant.cert, content, signature
            )
        assert merchant.secure_key is not None
        return wire.keyed_verifies(merchant.sign_method, content, merchant.secure_key, signature)

    async def handle(self, request: Request, operations: dict[tuple[str, str, str], str]) -> Response:
        raw = await request.body()
        try:
            fields = wire.parse_form(raw)
        except wire.MalformedForm:
            return self.answer(None, {}, "10")
        found = self.authenticate(fields)
        if isinstance(found, str):
            return self.answer(None, fields, found)
        merchant = found
        if not self.verifies(merchant, fields):
            return self.answer(merchant, fields, "11")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return self.answer(merchant, fields, "10")
        if any(name not in fields for name in COMMON_REQUIRED):
            return self.answer(merchant, fields, "13")
        operation = operations.get((fields["txnType"], fields["txnSubType"], fields["bizType"]))
        if operation is None:
            return self.answer(merchant, fields, "10")
        code = check_fields(operation, fields)
        if code is not None:
            return self.answer(merchant, fields, code)
        if operation == "file_transfer":
            return self.file_transfer(merchant, fields)
        return await self.run(merchant, operation, fields)

    def file_transfer(self, merchant: Merchant, fields: dict[str, str]) -> Response:
        """The settlement file of one settleDate (sandbox/bank/settlement.py); bill faults only."""
        now = beijing(self.control.now(PROVIDER))
        day = settlement.settle_day(fields["settleDate"], now)
        if day is None:
            return self.answer(merchant, fields, "10")
        faults = BillFaults.take(self.control, PROVIDER, "file_transfer", merchant.mer_id)
        found = settlement.settlement_file(self.state, merchant, day, now, faults)
        if found is None:
            return self.answer(merchant, fields, "98")
        self.control.record(
            PROVIDER,
            "bank.settlement_file",
            merchant.mer_id,
            settle_day=day.isoformat(),
            file=found["fileName"],
        )
        return self.answer(merchant, fields, "00", found)

    async def run(self, merchant: Merchant, operation: str, fields: dict[str, str]) -> Response:
        effect: FaultEffect | None = None
        variant: Variant = "ok"
        processing = False
        source: dict[str, Any] = {}
        rule = self.control.take_fault(PROVIDER, operation, {"order_ref": fields["orderId"]})
        if rule is not None:
            effect = fault_effect(rule.action, rule.delay_ms)
            source = {"rule_id": rule.id, "action": rule.action}
        elif operation == "consume" and (magic := bank_magic_amount(int(fields["txnAmt"]))):
            source = {"magic_ending": magic.ending, "action": magic.action}
            if magic.action == "processing":
                processing = True
            elif magic.action in MAGIC_VARIANTS:
                variant = MAGIC_VARIANTS[magic.action]
            else:
                effect = fault_effect(magic.action, magic.delay_ms)
        if source:
            self.control.record(
                PROVIDER,
                "bank.fault",
                merchant.mer_id,
                operation=operation,
                order_ref=fields["orderId"],
                **source,
            )
        effect = effect or FaultEffect()
        hide_after = self.control.now(PROVIDER) - effect.lag_s if effect.lag_s else None

        async def apply() -> Outcome:
            return self.apply(
                merchant, operation, fields, processing=processing, hide_recorded_after=hide_after
            )

        def answer(outcome: Outcome, corrupt: bool) -> Response:
            return self.answer(
                merchant, fields, outcome.resp_code, outcome.extras, "corrupt" if corrupt else variant
            )

        return await faulted(
            effect,
            apply=apply,
            answer=answer,
            error=lambda: Response("Internal Server Error", status_code=500, media_type="text/plain"),
            refusal=lambda: self.answer(merchant, fields, "11"),
            breaker=self.control.breaker,
            commit=self.control.commit,
            what=f"{PROVIDER} {operation}",
        )

    def apply(
        self,
        merchant: Merchant,
        operation: str,
        fields: dict[str, str],
        *,
        processing: bool,
        hide_recorded_after: float | None = None,
    ) -> Outcome:
        now = beijing(self.control.now(PROVIDER))
        existing = self.ledger.existing(merchant, fields) if operation != "query" else None
        if existing is not None:
            outcome = (
                self.ledger.answer_of(existing)
                if self.ledger.same_details(existing, fields)
                else Outcome("12")
            )
        elif operation == "agreement":
            outcome = self.ledger.open_agreement(merchant, fields, now)
        elif operation == "consume":
            outcome = self.ledger.consume(merchant, fields, now, processing=processing)
        elif operation == "void":
            outcome = self.ledger.void(merchant, fields, now)
        elif operation == "refund":
            outcome = self.ledger.refund(merchant, fields, now)
        else:
            outcome = self.ledger.query(merchant, fields, now, hide_recorded_after)
        for kind, event in outcome.events:
            self.control.record(PROVIDER, kind, merchant.mer_id, **event)
        txn = outcome.notify
        if txn is not None and txn.back_url:
            self.notifier.notify(
                merchant.mer_id,
                txn.back_url,
                self.notification(merchant, txn),
                lambda: self.notification(merchant, txn, forged=True),
            )
        return outcome

    # --- sandbox-only merchant registration ----------------------------------------------------
    def register(self, body: MerchantIn) -> dict[str, Any]:
        mer_id = body.mer_id or self.state.new_mer_id()
        if mer_id in self.state.merchants:
            raise HTTPException(409, f"merchant {mer_id!r} exists")
        if body.sign_method == "01":
            if body.cert_pem is None or body.secure_key is not None:
                raise HTTPException(422, "signMethod 01 takes cert_pem (and no secure_key)")
            try:
                cert = wire.load_cert(body.cert_pem)
            except ValueError as exc:
                raise HTTPException(422, f"cert_pem: {exc}") from exc
            merchant = Merchant(mer_id, "01", tr_id=body.tr_id, cert=cert)
        else:
            if body.secure_key is None or body.cert_pem is not None:
                raise HTTPException(422, f"signMethod {body.sign_method} takes secure_key (and no cert_pem)")
            merchant = Merchant(mer_id, body.sign_method, tr_id=body.tr_id, secure_key=body.secure_key)
        self.state.merchants[mer_id] = merchant
        self.control.record(PROVIDER, "bank.merchant", mer_id, sign_method=merchant.sign_method)
        return {
            "mer_id": mer_id,
            "sign_method": merchant.sign_method,
            "cert_id": merchant.cert_id,
            "tr_id": merchant.tr_id,
        }


def create_bank_app(gateway: BankGateway) -> FastAPI:
    app = FastAPI(
        title="CampusPay sandbox: UnionPay-style bank gateway",
        version="1",
        description="docs/bank-protocol.md, as the sandbox implements it.",
    )

    def route(operations: dict[tuple[str, str, str], str]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await gateway.handle(request, operations)

        return endpoint

    app.add_api_route(BACK_TRANS_PATH, route(BACK_TRANS_OPERATIONS), methods=["POST"], include_in_schema=True)
    app.add_api_route(QUERY_PATH, route(QUERY_OPERATIONS), methods=["POST"], include_in_schema=True)
    app.add_api_route(FILE_PATH, route(FILE_OPERATIONS), methods=["POST"], include_in_schema=True)

    @app.post("/merchants")
    async def register(body: MerchantIn) -> dict[str, Any]:
        return gateway.register(body)

    return app
