"""The sandbox bank (docs/bank-protocol.md) over ASGI, with a client written from the document:
signing in every mode, the certificate chain of answers, agreements, consume, query, void, refund,
idempotency and notifications.

The client here signs and verifies with plain hashlib/cryptography (never sandbox code).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
PKI = ROOT / "sandbox" / "bank" / "pki"
VECTORS: dict[str, Any] = json.loads((ROOT / "tests/contract/vectors/bank.json").read_text(encoding="utf-8"))
BACK = "/bank/gateway/api/backTransReq.do"
QUERY = "/bank/gateway/api/queryTrans.do"
BACK_URL = "http://merchant.test/bank-notify"
TR_ID = "62000000001"
MER = {"01": "777290058110001", "11": "777290058110011", "12": "777290058110012"}
KEYS = {"11": VECTORS["sign_method_11"]["secure_key"], "12": VECTORS["sign_method_12"]["secure_key"]}
TOKENS = {"01": "6299990000000000101", "11": "6299990000000001101", "12": "6299990000000001201"}
ALICE_ACC = "6216610200000000012"
BEIJING = timezone(timedelta(hours=8))
_order_seq = itertools.count(1)


# --- the protocol, from the document -----------------------------------------------------------


def content(fields: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "signature" and v != "")


def sm3_hex(data: bytes) -> str:
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize().hex()


def keyed(mode: str, text: str, key: str) -> str:
    h = (lambda b: hashlib.sha256(b).hexdigest()) if mode == "11" else sm3_hex
    return h((text + "&" + h(key.encode("utf-8"))).encode("utf-8"))


def pem_cert(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((PKI / name).read_bytes())


def merchant_key() -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key((PKI / "merchant.key.pem").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def sign_request(mode: str, fields: dict[str, str], key: str | None = None) -> dict[str, str]:
    out = {k: v for k, v in fields.items() if v != ""}
    out["signMethod"] = mode
    if mode == "01":
        out["certId"] = VECTORS["merchant_cert_id"]
        digest = hashlib.sha256(content(out).encode("utf-8")).hexdigest().encode("utf-8")
        raw = merchant_key().sign(digest, padding.PKCS1v15(), hashes.SHA256())
        out["signature"] = base64.b64encode(raw).decode("ascii")
    else:
        out["signature"] = keyed(mode, content(out), key or KEYS[mode])
    return out


def response_problem(mode: str, fields: dict[str, str], key: str | None = None) -> str | None:
    """None when the answer verifies as docs/bank-protocol.md says, else what fails."""
    signature = fields.get("signature")
    if not signature:
        return "unsigned"
    if mode != "01":
        return None if keyed(mode, content(fields), key or KEYS[mode]) == signature else "signature"
    cert = x509.load_pem_x509_certificate(fields["signPubKeyCert"].encode("ascii"))
    root, inter = pem_cert("root-ca.pem"), pem_cert("intermediate-ca.pem")
    try:
        cert.verify_directly_issued_by(inter)
        inter.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return "chain"
    now = datetime.now(UTC)
    if any(not (c.not_valid_before_utc <= now <= c.not_valid_after_utc) for c in (cert, inter, root)):
        return "validity"
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if [a.value for a in cn] != ["CampusPay Sandbox Bank Signing"] or [a.value for a in org] != [
        "CampusPay Sandbox Bank"
    ]:
        return "subject"
    if fields.get("certId") != str(cert.serial_number):
        return "certId"
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    digest = hashlib.sha256(content(fields).encode("utf-8")).hexdigest().encode("utf-8")
    try:
        public_key.verify(base64.b64decode(signature), digest, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "signature"
    return None


def parse(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))


def now_txn_time() -> str:
    return datetime.now(BEIJING).strftime("%Y%m%d%H%M%S")


def new_order_id() -> str:
    return f"T{int(time.time())}{next(_order_seq):06d}"


class BankClient:
    """A merchant of the sandbox bank in one sign mode."""

    def __init__(self, client: httpx.AsyncClient, mode: str = "01") -> None:
        self.client = client
        self.mode = mode
        self.mer_id = MER[mode]
        self.token = TOKENS[mode]

    def base(self, txn_type: str, sub: str, biz: str = "000902", **extra: str) -> dict[str, str]:
        fields = {
            "version": "5.1.0",
            "encoding": "UTF-8",
            "merId": self.mer_id,
            "txnType": txn_type,
            "txnSubType": sub,
            "bizType": biz,
            "accessType": "0",
            "orderId": new_order_id(),
            "txnTime": now_txn_time(),
        }
        if biz != "000000":
            fields["channelType"] = "07"
        fields.update(extra)
        return fields

    async def send(
        self, path: str, fields: dict[str, str], *, signed: dict[str, str] | None = None, verify: bool = True
    ) -> dict[str, str]:
        body = urlencode(signed if signed is not None else sign_request(self.mode, fields))
        response = await self.client.post(
            path, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/x-www-form-urlencoded")
        answer = parse(response.content)
        if verify:
            assert response_problem(self.mode, answer) is None, answer
        return answer

    def consume_fields(self, amount: int, token: str | None = None, **extra: str) -> dict[str, str]:
        fields = {
            "txnAmt": str(amount),
            "currencyCode": "156",
            "backUrl": BACK_URL,
            "tokenPayData": f"{{token={token or self.token}&trId={TR_ID}}}",
        }
        return self.base("01", "01", **{**fields, **extra})

    async def consume(self, amount: int, token: str | None = None, **extra: str) -> dict[str, str]:
        return await self.send(BACK, self.consume_fields(amount, token, **extra))

    async def open(self, acc_no: str, payer_ref: str, tr_id: str = TR_ID) -> dict[str, str]:
        fields = self.base(
            "79", "00", accNo=acc_no, tokenPayData=f"{{trId={tr_id}&tokenType=01}}", reqReserved=payer_ref
        )
        return await self.send(BACK, fields)

    async def void(self, orig: dict[str, str], amount: int | None = None) -> dict[str, str]:
        fields = self.base(
            "31",
            "00",
            origQryId=orig["queryId"],
            txnAmt=str(amount if amount is not None else orig["txnAmt"]),
            currencyCode="156",
            backUrl=BACK_URL,
        )
        return await self.send(BACK, fields)

    async def refund(self, orig: dict[str, str], amount: int) -> dict[str, str]:
        fields = self.base(
            "04",
            "00",
            origQryId=orig["queryId"],
            txnAmt=str(amount),
            currencyCode="156",
            backUrl=BACK_URL,
        )
        return await self.send(BACK, fields)

    async def query(self, order_id: str, txn_time: str) -> dict[str, str]:
        return await self.send(QUERY, self.base("00", "00", "000000", orderId=order_id, txnTime=txn_time))


class Receiver:
    """The merchant's backUrl: records every notification, answers from a script."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.statuses: list[int] = []
        self.app = FastAPI()

        @self.app.post("/bank-notify")
        async def notify(request: Request) -> Response:
            assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
            self.received.append(parse(await request.body()))
            return PlainTextResponse("ok", status_code=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def bank_app(app: FastAPI, client: httpx.AsyncClient, receiver: Receiver) -> AsyncIterator[FastAPI]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app)) as into_merchant:
        app.state.bank.notify_client = into_merchant
        await client.post("/_control/bank/notify-schedule", json={"scale": 0.001})
        yield app
        await app.state.bank.aclose()


@pytest.fixture
def bank(bank_app: FastAPI, client: httpx.AsyncClient) -> BankClient:
    return BankClient(client)


async def until(check: Callable[[], Awaitable[bool] | bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if await result if isinstance(result, Awaitable) else result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def events(client: httpx.AsyncClient, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await client.get("/_control/events", params={"kind": kind})).json()[
        "events"
    ]
    return found


async def balance(client: httpx.AsyncClient, acc_no: str = ALICE_ACC) -> int:
    value: int = (await client.get(f"/_control/bank/accounts/{acc_no}")).json()["balance"]
    return value


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["01", "11", "12"])
async def test_each_sign_mode_pays_and_answers_verifiably(
    bank_app: FastAPI, client: httpx.AsyncClient, mode: str
) -> None:
    merchant = BankClient(client, mode)
    before = await balance(client)
    answer = await merchant.consume(1250, reqReserved="午餐 stu_alice")
    assert answer["respCode"] == "00", answer
    assert answer["signMethod"] == mode
    assert len(answer["queryId"]) == 21
    assert answer["reqReserved"] == "午餐 stu_alice"
    assert answer["settleAmt"] == "1250"
    assert await balance(client) == before - 1250
    if mode == "01":
        assert answer["certId"] == VECTORS["bank_cert_id"]
        assert answer["signPubKeyCert"] == (PKI / "bank-sign.pem").read_text()
    else:
        assert "certId" not in answer and "signPubKeyCert" not in answer


@pytest.mark.parametrize("mode", ["01", "11", "12"])
async def test_the_committed_request_vectors_verify(
    bank_app: FastAPI, client: httpx.AsyncClient, mode: str
) -> None:
    vector = VECTORS[f"sign_method_{mode}"]["request"]
    # signed here the way the document says, the vector's signature comes out; the bank takes it
    assert sign_request(mode, vector["fields"])["signature"] == vector["signature"]
    assert content(vector["fields"]) == vector["content"]
    answer = await BankClient(client, mode).send(BACK, {}, signed=parse(vector["form_body"].encode("ascii")))
    assert answer["respCode"] == "00", answer


@pytest.mark.parametrize("mode", ["01", "11", "12"])
def test_the_committed_response_vectors_verify(mode: str) -> None:
    vector = VECTORS[f"sign_method_{mode}"]["response"]
    fields = parse(vector["form_body"].encode("ascii"))
    assert content(fields) == vector["content"]
    assert response_problem(mode, fields) is None  # 01: chain, validity, subject and key too


def test_the_sandbox_signs_like_the_vectors() -> None:
    from sandbox.bank.gateway import sign
    from sandbox.bank.state import BankState

    state = BankState()
    for mode in ("01", "11", "12"):
        vector = VECTORS[f"sign_method_{mode}"]["response"]
        fields = {k: v for k, v in vector["fields"].items() if k not in ("certId", "signPubKeyCert")}
        assert sign(state.merchants[MER[mode]], fields)["signature"] == vector["signature"], mode


@pytest.mark.parametrize("mode", ["01", "11", "12"])
async def test_requests_that_do_not_verify_are_refused(
    bank_app: FastAPI, client: httpx.AsyncClient, mode: str
) -> None:
    merchant = BankClient(client, mode)
    before = await balance(client)
    fields = merchant.consume_fields(300)
    tampered = sign_request(mode, fields)
    tampered["txnAmt"] = "1"
    assert (await merchant.send(BACK, fields, signed=tampered))["respCode"] == "11"
    missing = sign_request(mode, fields)
    del missing["signature"]
    assert (await merchant.send(BACK, fields, signed=missing))["respCode"] == "11"
    other_mode = "11" if mode != "11" else "12"
    wrong_mode = sign_request(other_mode, fields, key=KEYS.get(mode, KEYS["11"]))
    assert (await merchant.send(BACK, fields, signed=wrong_mode))["respCode"] == "11"
    assert await balance(client) == before
    # nothing was recorded: the same orderId still goes through
    assert (await merchant.send(BACK, fields))["respCode"] == "00"


async def test_a_wrong_cert_id_is_refused(bank: BankClient, client: httpx.AsyncClient) -> None:
    fields = bank.consume_fields(300)
    fields["certId"] = "12345"
    signed = sign_request("01", fields)
    signed["certId"] = "12345"
    digest = hashlib.sha256(content(signed).encode()).hexdigest().encode()
    signed["signature"] = base64.b64encode(
        merchant_key().sign(digest, padding.PKCS1v15(), hashes.SHA256())
    ).decode()
    assert (await bank.send(BACK, fields, signed=signed))["respCode"] == "11"


async def test_unknown_merchant_is_answered_unsigned(bank: BankClient) -> None:
    fields = bank.consume_fields(300)
    fields["merId"] = "777290058999999"
    answer = await bank.send(BACK, fields, verify=False)
    assert answer["respCode"] == "31"
    assert "signature" not in answer


async def test_malformed_and_missing_fields(bank: BankClient) -> None:
    assert (await bank.send(BACK, bank.consume_fields(300, version="5.0.0")))["respCode"] == "10"
    assert (await bank.send(BACK, bank.consume_fields(300, currencyCode="840")))["respCode"] == "10"
    assert (await bank.send(BACK, bank.consume_fields(300, accNo=ALICE_ACC)))["respCode"] == "10"
    assert (await bank.send(BACK, bank.consume_fields(300, txnTime="20251340000000")))["respCode"] == "10"
    no_url = bank.consume_fields(300)
    del no_url["backUrl"]
    assert (await bank.send(BACK, no_url))["respCode"] == "13"
    assert (await bank.send(BACK, bank.base("02", "00")))["respCode"] == "10"


async def test_agreement_consume_query_void(bank: BankClient, client: httpx.AsyncClient) -> None:
    opened = await bank.open("6216610200000000046", "stu_new")
    assert opened["respCode"] == "00", opened
    assert opened["accNo"] == "621661*********0046"
    token_data = dict(part.split("=", 1) for part in opened["tokenPayData"].strip("{}").split("&"))
    token = token_data["token"]
    assert len(token) == 19 and token_data["trId"] == TR_ID
    again = await bank.open("6216610200000000046", "stu_new")
    assert again["tokenPayData"] == opened["tokenPayData"]  # the same agreement, a new order
    other = await bank.open("6216610200000000046", "stu_other")
    assert other["tokenPayData"] != opened["tokenPayData"]

    agreement = (await client.get(f"/_control/bank/agreements/{token}")).json()
    assert agreement["payer_ref"] == "stu_new" and agreement["acc_no"].endswith("0046")
    log = await events(client, "bank.agreement")
    assert log[-1]["acc_last4"] == "0046"
    assert "6216610200000000046" not in json.dumps(log)

    before = await balance(client, "6216610200000000046")
    fields = bank.consume_fields(2000, token=token)
    paid = await bank.send(BACK, fields)
    assert paid["respCode"] == "00"
    assert await balance(client, "6216610200000000046") == before - 2000
    found = await bank.query(fields["orderId"], fields["txnTime"])
    assert found["respCode"] == "00" and found["origRespCode"] == "00"
    assert found["queryId"] == paid["queryId"] and found["origTxnType"] == "01"
    assert (await bank.query(fields["orderId"], "20200101000000"))["respCode"] == "34"
    assert (await bank.query("NOSUCHORDER01", fields["txnTime"]))["respCode"] == "34"

    voided = await bank.void(paid)
    assert voided["respCode"] == "00" and voided["origQryId"] == paid["queryId"]
    assert await balance(client, "6216610200000000046") == before
    assert (await bank.void(paid))["respCode"] == "35"  # once only
    assert (await bank.refund(paid, 100))["respCode"] == "35"  # voided: nothing to refund
    debits = await events(client, "bank.debit")
    assert debits[-1]["acc_last4"] == "0046" and debits[-1]["amount"] == 2000
    assert (await events(client, "bank.void"))[-1]["orig_query_id"] == paid["queryId"]


async def test_agreement_refusals(bank: BankClient, client: httpx.AsyncClient) -> None:
    assert (await bank.open("6216610200000009999", "stu_x"))["respCode"] == "61"
    assert (await bank.open("6216610200000000038", "stu_x"))["respCode"] == "63"
    assert (await bank.open(ALICE_ACC, "stu_x", tr_id="62000000999"))["respCode"] == "40"
    assert (await bank.consume(100, token="6299990000000000999"))["respCode"] == "40"
    assert (await bank.consume(100, token=TOKENS["11"]))["respCode"] == "40"  # another merchant's
    assert (await bank.consume(100, token="6299990000000000103"))["respCode"] == "63"  # frozen
    assert (await bank.consume(600, token="6299990000000000102"))["respCode"] == "64"  # 500 fen left
    await client.delete(f"/_control/bank/agreements/{TOKENS['01']}")
    assert (await bank.consume(100))["respCode"] == "40"


async def test_declines_are_recorded_and_queryable(bank: BankClient) -> None:
    fields = bank.consume_fields(600, token="6299990000000000102")
    declined = await bank.send(BACK, fields)
    assert declined["respCode"] == "64" and "queryId" in declined
    found = await bank.query(fields["orderId"], fields["txnTime"])
    assert found["respCode"] == "00" and found["origRespCode"] == "64"


async def test_void_only_on_the_same_day_and_for_the_whole_amount(
    bank: BankClient, client: httpx.AsyncClient
) -> None:
    paid = await bank.consume(1000)
    assert (await bank.void(paid, amount=999))["respCode"] == "36"
    await client.post("/_control/clock", json={"offset_seconds": 86_400})
    assert (await bank.void(paid))["respCode"] == "35"
    assert (await bank.refund(paid, 1000))["respCode"] == "00"  # refund instead


async def test_partial_refunds_up_to_the_amount(bank: BankClient, client: httpx.AsyncClient) -> None:
    before = await balance(client)
    paid = await bank.consume(1000)
    first = await bank.refund(paid, 400)
    assert first["respCode"] == "00" and first["origQryId"] == paid["queryId"]
    assert (await bank.refund(paid, 601))["respCode"] == "36"
    assert (await bank.refund(paid, 600))["respCode"] == "00"
    assert (await bank.refund(paid, 1))["respCode"] == "36"
    assert await balance(client) == before
    assert (await bank.void(paid))["respCode"] == "35"  # refunded: no void
    order = (await client.get(f"/_control/bank/merchants/{bank.mer_id}/orders/{paid['orderId']}")).json()
    assert order["refunded"] == 1000
    assert [e["refunded_total"] for e in await events(client, "bank.refund")] == [400, 1000]


async def test_idempotency_on_order_id(bank: BankClient, client: httpx.AsyncClient) -> None:
    before = await balance(client)
    fields = bank.consume_fields(700)
    first = await bank.send(BACK, fields)
    second = await bank.send(BACK, fields)
    assert first["respCode"] == second["respCode"] == "00"
    assert first["queryId"] == second["queryId"]
    assert await balance(client) == before - 700
    changed = dict(fields, txnAmt="701")
    assert (await bank.send(BACK, changed))["respCode"] == "12"
    assert await balance(client) == before - 700
    assert len(await events(client, "bank.debit")) == 1


async def test_notifications_are_signed_and_retried_until_200(
    bank: BankClient, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    paid = await bank.consume(1500, reqReserved="stu_alice")
    await until(lambda: len(receiver.received) == 3)
    note = receiver.received[-1]
    assert response_problem("01", note) is None
    assert (
        note["respCode"] == "00" and note["queryId"] == paid["queryId"] and note["orderId"] == paid["orderId"]
    )
    assert note["txnAmt"] == "1500" and note["reqReserved"] == "stu_alice"
    assert receiver.received[0] == note  # retries repeat the same fields
    log = await events(client, "bank.notify")
    assert [e["status"] for e in log] == [500, 503, 200] and log[-1]["delivered"]

    refunded = await bank.refund(paid, 500)
    await until(lambda: len(receiver.received) == 4)
    assert receiver.received[-1]["origQryId"] == paid["queryId"]
    assert receiver.received[-1]["queryId"] == refunded["queryId"]


@pytest.mark.parametrize("mode", ["11", "12"])
async def test_keyed_notifications(
    bank_app: FastAPI, client: httpx.AsyncClient, receiver: Receiver, mode: str
) -> None:
    await BankClient(client, mode).consume(100)
    await until(lambda: len(receiver.received) == 1)
    assert response_problem(mode, receiver.received[0]) is None


async def test_notifications_give_up_after_five_attempts(
    bank: BankClient, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.statuses = [500] * 10
    await bank.consume(100)
    await until(lambda: len(receiver.received) == 5)

    async def gave_up() -> bool:
        return bool(await events(client, "bank.notify_gave_up"))

    await until(gave_up)
    assert len(receiver.received) == 5


async def test_register_merchants(client: httpx.AsyncClient, bank_app: FastAPI) -> None:
    created = (
        await client.post("/bank/merchants", json={"sign_method": "11", "secure_key": "k" * 20})
    ).json()
    merchant = BankClient(client, "11")
    merchant.mer_id = created["mer_id"]
    fields = merchant.base("79", "00", accNo=ALICE_ACC, tokenPayData=f"{{trId={TR_ID}}}", reqReserved="stu_z")
    opened = await merchant.send(BACK, fields, signed=sign_request("11", fields, key="k" * 20), verify=False)
    assert opened["respCode"] == "00"
    assert response_problem("11", opened, key="k" * 20) is None
    cert = (PKI / "merchant.pem").read_text()
    response = await client.post("/bank/merchants", json={"sign_method": "01", "cert_pem": cert})
    assert response.json()["cert_id"] == VECTORS["merchant_cert_id"]
    bad = await client.post("/bank/merchants", json={"sign_method": "01", "cert_pem": "nope"})
    assert bad.status_code == 422
    dup = await client.post(
        "/bank/merchants", json={"sign_method": "12", "secure_key": "x" * 16, "mer_id": MER["01"]}
    )
    assert dup.status_code == 409


async def test_test_values_serve_the_bank_table(client: httpx.AsyncClient) -> None:
    from sandbox.testvalues import BANK_ACCOUNTS, BANK_AGREEMENTS, BANK_MAGIC_AMOUNTS

    values = (await client.get("/_control/test-values")).json()["bank"]
    assert [m["mer_id"] for m in values["merchants"]] == list(MER.values())
    assert values["merchants"][0]["cert_id"] == VECTORS["merchant_cert_id"]
    assert values["root_ca_pem"] == (PKI / "root-ca.pem").read_text()
    docs = (ROOT / "docs" / "test-values.md").read_text(encoding="utf-8")
    for account in BANK_ACCOUNTS:
        assert f"`{account.acc_no}`" in docs and f"| {account.balance} |" in docs
    for agreement in BANK_AGREEMENTS:
        assert f"`{agreement.token}`" in docs
    for magic in BANK_MAGIC_AMOUNTS:
        assert f"| {magic.ending} | bank |" in docs
    for mer_id in MER.values():
        assert f"`{mer_id}`" in docs


async def test_reset_restores_everything(bank: BankClient, client: httpx.AsyncClient) -> None:
    before = await balance(client)
    fields = bank.consume_fields(900)
    paid = await bank.send(BACK, fields)
    await client.delete(f"/_control/bank/agreements/{TOKENS['01']}")
    await client.post(
        "/bank/merchants", json={"sign_method": "11", "secure_key": "k" * 20, "mer_id": "ABCDEFGHIJKLMNO"}
    )
    assert (await client.post("/_control/reset")).status_code == 200
    assert await balance(client) == before
    assert (await client.get(f"/_control/bank/agreements/{TOKENS['01']}")).json()["active"]
    assert (await bank.query(fields["orderId"], fields["txnTime"]))["respCode"] == "34"
    merchants = (await client.get("/_control/bank/merchants")).json()["merchants"]
    assert [m["mer_id"] for m in merchants] == list(MER.values())
    assert paid["respCode"] == "00"
