"""Face payments: Alipay through the sandbox, consent before any face payment (COMPLIANCE 1, 7,
10-13). The gateway never sees a face; it sees tokens, provider user ids and agreements."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import select

from gateway.store.models import Enrollment, ProviderNotification
from sandbox.alipay.keys import ALIPAY_PRIVATE_KEY_PEM
from sandbox.face.images import encode_png, resize
from sandbox.face.synthetic import synthetic_face
from tests.face_helpers import ALICE, BOB, Face, setup_face
from tests.face_sdk_values import LIQUN_TERMINAL_PARAMS, LIQUN_ZIM_INIT_CLIENT_DATA
from tests.harness import Harness, start_harness
from tests.signing_helpers import assert_problem, idempotency_rows, payment_rows, signed

pytestmark = pytest.mark.integration


@pytest.fixture
async def face(harness: Harness) -> Face:
    return await setup_face(harness)


async def _alice(face: Face) -> dict[str, object]:
    consent = await face.consent("stu_alice")
    await face.enroll("stu_alice", ALICE, str(consent["id"]), agreement_no="20221000000000000001")
    return consent


async def test_consented_student_pays_by_face(face: Face) -> None:
    await _alice(face)
    async with face.h.client() as client:
        paid = await client.create_payment(**face.pay(await face.token("stu_alice"), amount=1200))
    assert paid.status_code == 201
    assert paid.body["status"] == "succeeded" and paid.body["adapter"] == "alipay"
    assert paid.body["student"] == face.students["stu_alice"]
    trades = (await face.h.sandbox.get("/_control/events", params={"provider": "alipay"})).json()["events"]
    assert any(e.get("out_trade_no") == paid.body["provider_reference"] for e in trades)


async def test_no_consent_no_face_payment_but_the_card_works(face: Face) -> None:
    async with face.h.client() as client:
        refused = await client.create_payment(**face.pay(await face.token("stu_bob"), amount=300))
        card = await client.create_payment(**face.h.payment(amount=300, credential={"card_no": "31000002"}))
    assert refused.body["status"] == "failed" and refused.body["failure_code"] == "consent_required"
    assert refused.body["student"] is None or refused.body["student"] == face.students["stu_bob"]
    assert card.body["status"] == "succeeded"


async def test_withdrawal_stops_face_keeps_card_and_deletes_at_the_provider(
    database_url: str, tmp_path: Path
) -> None:
    # The worker is run by hand here, so "refused" is checked before deletion at the provider.
    async with start_harness(database_url=database_url, data_dir=tmp_path, run_workers=False) as h:
        face = await setup_face(h)
        consent = await _alice(face)
        async with h.client() as client:
            before = await client.create_payment(**face.pay(await face.token("stu_alice"), amount=500))
            assert before.body["status"] == "succeeded"
            token = await face.token("stu_alice")
            r = await h.admin("POST", f"/v1/schools/{h.school_id}/consents/{consent['id']}/withdraw", {})
            assert r.json()["status"] == "withdrawn"
            after = await client.create_payment(**face.pay(token, amount=500))
            assert after.body["status"] == "failed" and after.body["failure_code"] == "consent_withdrawn"
            card = await client.create_payment(**h.payment(amount=500))
            assert card.body["status"] == "succeeded"
            assert (await client.get_payment(before.body["id"]))[
                "status"
            ] == "succeeded"  # earlier stays valid
        await h.fault(
            provider="alipay", operation="alipay.commerce.educate.facefeature.delete", action="error_500"
        )  # the first deletion attempt fails: it is retried
        assert await h.services.recovery.run_deletions() == 0
        for _ in range(50):
            if await h.services.recovery.run_deletions():
                break
            await asyncio.sleep(0.1)
        async with h.services.db.transaction() as session:
            rows = (
                await session.execute(select(Enrollment).where(Enrollment.school_id == h.school_id))
            ).scalars()
            assert {e.status for e in rows} == {"deleted"}
        audit = (await h.admin("GET", f"/v1/schools/{h.school_id}/audit")).json()["data"]
        receipt = [e for e in audit if e["action"] == "enrollment.deleted"]
        assert len(receipt) == 1 and receipt[0]["data"]["receipt"]["provider"] == "alipay"
        r = await h.sandbox.post("/face/test-tokens", json={"school": "school-demo", "student": "stu_alice"})
        assert r.status_code != 200  # the provider no longer knows her face


async def test_a_token_from_another_school_is_refused(face: Face) -> None:
    await _alice(face)
    async with face.h.client() as client:
        other = await client.create_payment(**face.pay(await face.token("stu_zed", school="school-other")))
    assert other.body["status"] == "failed" and other.body["failure_code"] == "enrollment_scope"


async def test_a_used_token_cannot_pay_again(face: Face) -> None:
    await _alice(face)
    token = await face.token("stu_alice")
    async with face.h.client() as client:
        first = await client.create_payment(**face.pay(token, amount=100))
        second = await client.create_payment(**face.pay(token, amount=100))
    assert first.body["status"] == "succeeded"
    assert second.body["status"] == "failed" and second.body["failure_code"] == "face_token_used"


async def test_an_expired_token_is_refused(face: Face) -> None:
    await _alice(face)
    token = await face.token("stu_alice")
    await face.h.sandbox.post("/_control/clock", json={"offset_seconds": 600})
    async with face.h.client() as client:
        late = await client.create_payment(**face.pay(token, amount=100))
    assert late.body["status"] == "failed" and late.body["failure_code"] == "face_token_expired"


async def test_biometric_data_is_refused_before_anything_happens(face: Face) -> None:
    from gateway.client import CampusPayError

    async with face.h.client() as client:
        with pytest.raises(CampusPayError) as err:
            await client.create_payment(
                **face.h.payment(method="face", credential={"image": "iVBOR" + "A" * 500})
            )
    assert err.value.status == 422 and err.value.code == "biometric_data_not_accepted"


def _face_png(side: int) -> str:
    """Base64 of a PNG of a (synthetic) face, the kind of crop a terminal's camera produces."""
    return base64.b64encode(encode_png(resize(synthetic_face("school-demo", "stu_alice"), side))).decode()


_TEMPLATE = [round(0.01 * ((i * 37) % 17 - 8), 3) for i in range(128)]  # 128 floats, an embedding's shape

# Rule 11 covers the whole request, not only the credential (issue 7 A5): what a terminal could put
# where the schema has room for text.
BIOMETRIC_ELSEWHERE: dict[str, Any] = {
    "image-in-terminal_params": lambda: {"terminal_params": _face_png(32)},
    "photo-in-description": lambda: {"description": _face_png(112)},
    "data-uri-in-description": lambda: {"description": "data:image/png;base64," + _face_png(16)},
    "image-inside-terminal_params-json": lambda: {
        "terminal_params": json.dumps({"terminalType": "IOT", "faceImage": _face_png(24)})
    },
    "template-inside-terminal_params-json": lambda: {
        "terminal_params": json.dumps({"terminalType": "IOT", "feature": _TEMPLATE})
    },
    "short-vector-as-the-token": lambda: {"credential": {"face_token": [0.12, -0.5, 0.33]}},
}


async def _alipay_calls(h: Harness) -> list[dict[str, Any]]:
    r = await h.sandbox.get("/_control/events", params={"provider": "alipay", "kind": "alipay.call"})
    r.raise_for_status()
    return list(r.json()["events"])


@pytest.mark.parametrize("case", list(BIOMETRIC_ELSEWHERE))
async def test_biometric_data_anywhere_in_the_body_goes_nowhere(
    face: Face, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused 422 before anything: no payment row, no idempotency record, no call to Alipay, not
    in the logs. The same key then pays with the real SDK's signed terminal_params, which reaches
    Alipay unchanged."""
    h = face.h
    assert h.device is not None
    caplog.set_level("DEBUG")
    await _alice(face)
    body = face.pay(await face.token("stu_alice"), amount=650, currency="CNY")
    key, calls_before = str(uuid.uuid4()), len(await _alipay_calls(h))
    refused = {**body, **BIOMETRIC_ELSEWHERE[case]()}
    request = signed(h, h.device, "POST", "/v1/payments", body=refused, idempotency_key=key)
    answer = await h.gateway.send(request)
    problem = assert_problem(answer, 422, "biometric_data_not_accepted")
    assert "iVBOR" not in problem["detail"]
    assert await payment_rows(h, body["merchant_order_id"]) == 0
    assert await idempotency_rows(h, key) == 0
    assert len(await _alipay_calls(h)) == calls_before
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "iVBOR" not in logged

    honest = {**body, "terminal_params": LIQUN_TERMINAL_PARAMS, "description": "lunch"}
    request = signed(h, h.device, "POST", "/v1/payments", body=honest, idempotency_key=key)
    paid = await h.gateway.send(request)
    assert paid.status_code == 201, paid.text
    assert paid.json()["status"] == "succeeded" and "idempotent-replayed" not in paid.headers
    calls = await _alipay_calls(h)
    assert len(calls) > calls_before
    pay_calls = [c for c in calls[calls_before:] if c.get("method") == "alipay.trade.pay"]
    assert [c["biz_content"]["terminal_params"] for c in pay_calls] == [LIQUN_TERMINAL_PARAMS]


async def test_a_long_opaque_sdk_value_is_not_mistaken_for_an_image(face: Face) -> None:
    """3,884 characters of the face SDK's own base64 (zimInitClientData) pass, and go to Alipay."""
    await _alice(face)
    async with face.h.client() as client:
        paid = await client.create_payment(
            **face.pay(await face.token("stu_alice"), amount=300, terminal_params=LIQUN_ZIM_INIT_CLIENT_DATA)
        )
    assert paid.status_code == 201 and paid.body["status"] == "succeeded"
    pay_calls = [c for c in await _alipay_calls(face.h) if c.get("method") == "alipay.trade.pay"]
    assert pay_calls[-1]["biz_content"]["terminal_params"] == LIQUN_ZIM_INIT_CLIENT_DATA


async def test_a_superseded_enrolment_is_an_identity_mismatch(tmp_path: Path) -> None:
    # workers off: the old enrolment's deletion at the provider must not race the payment
    async with start_harness(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", data_dir=tmp_path, run_workers=False
    ) as h:
        face = await setup_face(h)
        consent = await _alice(face)
        old_token = await face.token("stu_alice")
        await face.enroll("stu_alice", BOB, str(consent["id"]))  # the school re-enrolled her as another user
        async with h.client() as client:
            paid = await client.create_payment(**face.pay(old_token, amount=100))
        assert paid.body["status"] == "failed" and paid.body["failure_code"] == "identity_mismatch"


async def test_notifications_are_verified_and_applied_once(face: Face) -> None:
    h = face.h
    await _alice(face)
    async with h.client() as client:
        paid = await client.create_payment(**face.pay(await face.token("stu_alice"), amount=700))
    assert paid.body["status"] == "succeeded"
    form = b"out_trade_no=x&trade_status=TRADE_SUCCESS&sign=AAAA"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    forged = await h.gateway.post(f"/v1/notify/alipay/{h.school_id}", content=form, headers=headers)
    assert forged.status_code == 422 and forged.json()["code"] == "notification_rejected"
    # A school that does not exist, one that has not configured the provider, an adapter nobody
    # has: the very same answer as a forgery at a real school, so the path says nothing about
    # which school ids exist (it answered 404 for those).
    other = await h.admin("POST", "/v1/schools", {"name": "Other School"}, token=h.platform_token)
    assert other.status_code == 201, other.text
    for path in (
        "/v1/notify/alipay/sch_nope",
        f"/v1/notify/alipay/{other.json()['id']}",
        f"/v1/notify/bank/{h.school_id}",
        f"/v1/notify/nosuchpay/{h.school_id}",
    ):
        answer = await h.gateway.post(path, content=form, headers=headers)
        assert answer.status_code == forged.status_code, (path, answer.text)
        assert answer.headers["content-type"] == forged.headers["content-type"]
        assert {k: v for k, v in answer.json().items() if k != "request_id"} == {
            k: v for k, v in forged.json().items() if k != "request_id"
        }, path


def _alipay_form(params: dict[str, str], key_pem: str) -> bytes:
    """A notification form signed as Alipay signs one: RSA2 over the sorted k=v pairs."""
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    content = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    sign = base64.b64encode(key.sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    return urlencode({**params, "sign_type": "RSA2", "sign": sign}).encode()


async def test_a_forged_or_altered_success_changes_nothing(tmp_path: Path) -> None:
    """A notification saying a *processing* payment succeeded: signed by another key, or signed by
    Alipay's key and then altered, is refused, and the payment stays as it was."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with start_harness(database_url=url, data_dir=tmp_path, run_workers=False) as h:
        face = await setup_face(h)
        await _alice(face)
        async with h.client() as client:
            held = (await client.create_payment(**face.pay(await face.token("stu_alice"), amount=1283))).body
            assert held["status"] == "processing"  # 20000 before anything happened
            params = {
                "notify_id": "n-forged-1",
                "notify_type": "trade_status_sync",
                "notify_time": "2026-11-30 12:00:00",
                "app_id": face.app_id,
                "out_trade_no": held["provider_reference"],
                "trade_no": "2026113022001400000000000001",
                "trade_status": "TRADE_SUCCESS",
                "total_amount": "12.83",
                "charset": "utf-8",
                "version": "1.0",
            }
            attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            attacker_pem = attacker.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            genuine = _alipay_form(params, ALIPAY_PRIVATE_KEY_PEM)
            altered = genuine.replace(b"total_amount=12.83", b"total_amount=12.84")
            for body in (_alipay_form(params, attacker_pem), altered):
                r = await h.gateway.post(
                    f"/v1/notify/alipay/{h.school_id}",
                    content=body,
                    headers={"content-type": "application/x-www-form-urlencoded"},
                )
                assert r.status_code == 422 and r.json()["code"] == "notification_rejected"
            assert (await client.get_payment(held["id"]))["status"] == "processing"
            async with h.services.db.transaction() as session:
                rows = (await session.execute(select(ProviderNotification))).scalars().all()
            assert rows == []  # nothing recorded for either
            # the very same form, unaltered and signed by Alipay's key, is taken: the refusals
            # above were for the forgery, not for the form
            r = await h.gateway.post(
                f"/v1/notify/alipay/{h.school_id}",
                content=genuine,
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert r.status_code == 200 and r.text == "success"
            assert (await client.get_payment(held["id"]))["status"] == "succeeded"


async def test_provider_notifications_arrive_verified_and_once(face: Face) -> None:
    h = face.h
    await _alice(face)
    await h.sandbox.post("/_control/alipay/notify-faults", json={"mode": "duplicate"})
    async with h.client() as client:
        paid = await client.create_payment(**face.pay(await face.token("stu_alice"), amount=900))
    assert paid.body["status"] == "succeeded"
    for _ in range(50):
        if not h.sandbox_app.state.alipay.notifier.pending:
            break
        await asyncio.sleep(0.1)
    async with h.services.db.transaction() as session:
        rows = (
            (
                await session.execute(
                    select(ProviderNotification).where(ProviderNotification.school_id == h.school_id)
                )
            )
            .scalars()
            .all()
        )
    # delivered twice (a duplicate), recorded once, and the payment untouched by the repeat
    assert [(r.reference, r.outcome) for r in rows] == [(paid.body["provider_reference"], "succeeded")]
    async with h.client() as client:
        assert (await client.get_payment(paid.body["id"]))["status"] == "succeeded"


@pytest.mark.parametrize(
    ("amount", "final", "charged"),
    [
        (1281, "succeeded", True),  # 10003 user paying: queried until TRADE_SUCCESS
        (1282, "succeeded", True),  # 20000 after the money moved: a query finds TRADE_SUCCESS
        (1283, "failed", False),  # 20000 before anything happened: reversed past the deadline
        (1284, "succeeded", True),  # a response whose sign fails is unknown; a query finds the truth
        (1285, "failed", False),  # ACQ.SYSTEM_ERROR: never paid; cancelled past the deadline
    ],
)
async def test_alipays_unknowns_are_queried_then_cancelled_through_the_gateway(
    face: Face, amount: int, final: str, charged: bool
) -> None:
    await _alice(face)
    async with face.h.client() as client:
        first = await client.create_payment(**face.pay(await face.token("stu_alice"), amount=amount))
        settled = await face.h.wait_settled(client, first.body["id"])
    assert settled["status"] == final, settled
    if final == "failed":
        assert settled["failure_code"] == "outcome_unknown_reversed"
    events = (await face.h.sandbox.get("/_control/events", params={"provider": "alipay"})).json()["events"]
    reference = first.body["provider_reference"]
    paid = [e for e in events if e["kind"] == "alipay.pay" and e.get("out_trade_no") == reference]
    assert bool(paid) is charged, [e["kind"] for e in events]


async def test_a_cancel_alipay_asks_to_retry_is_retried_until_done(face: Face) -> None:
    await _alice(face)
    async with face.h.client() as client:
        paid = (await client.create_payment(**face.pay(await face.token("stu_alice"), amount=1286))).body
        assert paid["status"] == "succeeded"
        await client.cancel_payment(paid["id"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while (now := await client.get_payment(paid["id"]))["status"] != "canceled":
            assert loop.time() < deadline, now
            await asyncio.sleep(0.1)
    assert now["refunded_amount"] == 1286


async def test_past_alipays_cancel_window_a_cancel_is_a_refund_of_the_rest(face: Face) -> None:
    """Alipay cancels only within 24 h (ACQ.TRADE_CANCEL_TIME_OUT after). The gateway then asks
    whether money moved and gives it back by a refund, instead of retrying the cancel forever."""
    await _alice(face)
    async with face.h.client() as client:
        paid = (await client.create_payment(**face.pay(await face.token("stu_alice"), amount=1400))).body
        await face.h.sandbox.post("/_control/clock", json={"offset_seconds": 25 * 3600})  # Alipay's clock
        await client.cancel_payment(paid["id"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while (now := await client.get_payment(paid["id"]))["status"] != "canceled":
            assert loop.time() < deadline, now
            await asyncio.sleep(0.1)
    assert now["refunded_amount"] == 1400
    events = (await face.h.sandbox.get("/_control/events", params={"provider": "alipay"})).json()["events"]
    reference = paid["provider_reference"]
    refunds = [e for e in events if e["kind"] == "alipay.refund" and e.get("out_trade_no") == reference]
    assert [int(str(e["refund_amount"])) for e in refunds] == [1400], refunds  # fen, once
