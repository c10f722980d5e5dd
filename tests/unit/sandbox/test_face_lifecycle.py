"""The face cloud's face tokens, deletion, reset, test values and event log, over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sandbox.testvalues import FACE_USERS

from .test_face import ALICE, BOB, TOKEN, ZED, cloud_of, enroll, face_b64, identified_user, identify

pytestmark = pytest.mark.unit


async def test_test_tokens_for_enrolled_test_students_only(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await client.post("/face/test-tokens", json={"school": "school-demo", "student": "stu_alice"})
    assert response.status_code == 200 and set(response.json()) == {"face_token"}
    token = cloud_of(app).lookup_token(response.json()["face_token"])
    assert token is not None and TOKEN.fullmatch(token.token)
    assert (token.school, token.user_id, token.used_by, token.expires_at - token.issued_at) == (
        "school-demo",
        ALICE,
        None,
        300,
    )
    for school, student in (
        ("school-demo", "stu_carol"),
        ("school-demo", "stu_zed"),
        ("school-x", "stu_alice"),
    ):
        refused = await client.post("/face/test-tokens", json={"school": school, "student": student})
        assert refused.status_code == 404 and refused.json()["code"] == "USER_NOT_ENROLLED"


async def test_tokens_expire_after_five_minutes_of_sandbox_time(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    minted = await client.post("/face/test-tokens", json={"school": "school-demo", "student": "stu_bob"})
    face_token = minted.json()["face_token"]
    assert (await client.get(f"/_control/face/tokens/{face_token}")).json()["expired"] is False
    await client.post("/_control/clock", json={"offset_seconds": 299})
    assert (await client.get(f"/_control/face/tokens/{face_token}")).json()["expired"] is False
    await client.post("/_control/clock", json={"offset_seconds": 301})
    state = (await client.get(f"/_control/face/tokens/{face_token}")).json()
    assert state["expired"] is True and state["user_id"] == BOB and state["used_by"] is None
    token = cloud_of(app).lookup_token(face_token)
    assert token is not None and token.expires_at < app.state.control.now()  # still known, judged expired
    assert (await client.get("/_control/face/tokens/fpUnknown")).status_code == 404


async def test_re_enrolling_replaces_the_user(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await enroll(client, "school-demo", "stu_alice", face_b64("school-demo", "stu_alice", 9))
    new_id = response.json()["user_id"]
    assert new_id != ALICE
    old = await client.get(f"/face/enrollments/{ALICE}", params={"school": "school-demo"})
    assert old.json()["deleted"] is True and cloud_of(app).template(ALICE) is None
    assert (
        await identified_user(
            app, await identify(client, "school-demo", face_b64("school-demo", "stu_alice", 1))
        )
        == new_id
    )
    minted = await client.post("/face/test-tokens", json={"school": "school-demo", "student": "stu_alice"})
    assert await identified_user(app, minted) == new_id


async def test_deleting_an_enrolment(app: FastAPI, client: httpx.AsyncClient) -> None:
    cloud = cloud_of(app)
    minted = (
        await client.post("/face/test-tokens", json={"school": "school-demo", "student": "stu_alice"})
    ).json()
    wrong_school = await client.delete(f"/face/enrollments/{ALICE}", params={"school": "school-other"})
    assert wrong_school.status_code == 404 and wrong_school.json()["code"] == "USER_NOT_FOUND"
    response = await client.delete(f"/face/enrollments/{ALICE}", params={"school": "school-demo"})
    assert response.json() == {"deleted": True, "user_id": ALICE, "school": "school-demo"}
    assert (
        await client.delete(f"/face/enrollments/{ALICE}", params={"school": "school-demo"})
    ).status_code == 200
    assert (await identify(client, "school-demo", face_b64("school-demo", "stu_alice", 1))).json()[
        "code"
    ] == "NO_MATCH"
    again = await client.post("/face/test-tokens", json={"school": "school-demo", "student": "stu_alice"})
    assert again.json()["code"] == "USER_NOT_ENROLLED"
    token = cloud.lookup_token(minted["face_token"])
    user = cloud.user(ALICE)
    assert token is not None and user is not None and user.deleted and cloud.sealed_template(ALICE) is None
    assert cloud.use_token(minted["face_token"], "trade-1") is False  # a deleted user pays nothing
    by_post = await client.post(f"/face/enrollments/{BOB}/delete", params={"school": "school-demo"})
    assert by_post.status_code == 200 and cloud.group("school-demo") == []
    assert (
        await client.delete("/face/enrollments/2088999999999999", params={"school": "school-demo"})
    ).status_code == 404
    assert (await client.delete(f"/face/enrollments/{ZED}")).json()[
        "code"
    ] == "INVALID_REQUEST"  # school required


async def test_reset_restores_the_fixed_users(app: FastAPI, client: httpx.AsyncClient) -> None:
    cloud = cloud_of(app)
    minted = (
        await client.post("/face/test-tokens", json={"school": "school-demo", "student": "stu_bob"})
    ).json()
    await client.delete(f"/face/enrollments/{ALICE}", params={"school": "school-demo"})
    await enroll(client, "school-demo", "stu_carol", face_b64("school-demo", "stu_carol"))
    assert (await client.post("/_control/reset")).status_code == 200
    fixed = {(u.school, u.student): u for u in FACE_USERS if u.enrolled}
    assert {
        (u.school, u.student) for school in ("school-demo", "school-other") for u in cloud.group(school)
    } == set(fixed)
    for (school, student), expected in fixed.items():
        user = cloud.active_user(school, student)
        assert user is not None and not user.deleted
        assert (user.user_id, user.agreement_no, user.consent_ref) == (
            expected.user_id,
            expected.agreement_no,
            expected.consent_ref,
        )
    assert cloud.lookup_token(minted["face_token"]) is None
    assert (
        await identified_user(
            app, await identify(client, "school-demo", face_b64("school-demo", "stu_alice", 2))
        )
        == ALICE
    )


async def test_test_values_list_the_face_users(client: httpx.AsyncClient) -> None:
    face = (await client.get("/_control/test-values")).json()["face"]
    assert face == [
        {
            "school": u.school,
            "student": u.student,
            "user_id": u.user_id,
            "agreement_no": u.agreement_no,
            "consent_ref": u.consent_ref,
            "enrolled": u.enrolled,
            "test_face": f"/face/test-faces/{u.school}/{u.student}",
        }
        for u in FACE_USERS
    ]
    assert [(u["school"], u["student"], u["enrolled"]) for u in face] == [
        ("school-demo", "stu_alice", True),
        ("school-demo", "stu_bob", True),
        ("school-demo", "stu_carol", False),
        ("school-other", "stu_zed", True),
    ]
    group = (await client.get("/_control/face/groups/school-demo")).json()
    assert [u["user_id"] for u in group["users"]] == [ALICE, BOB]


async def test_event_log_keeps_face_events_but_never_images(client: httpx.AsyncClient) -> None:
    image = face_b64("school-demo", "stu_new")
    user_id = (await enroll(client, "school-demo", "stu_new", image)).json()["user_id"]
    await identify(client, "school-demo", face_b64("school-demo", "stu_new", 1))
    await client.post("/face/test-tokens", json={"school": "school-demo", "student": "stu_bob"})
    await client.delete(f"/face/enrollments/{user_id}", params={"school": "school-demo"})
    events = (await client.get("/_control/events", params={"provider": "face"})).json()["events"]
    kinds = [e["kind"] for e in events if e["kind"].startswith("face.")]
    assert kinds == [
        "face.enrolled",
        "face.identify",
        "face.token_minted",
        "face.token_minted",
        "face.deleted",
    ]
    assert {e["merchant_id"] for e in events} == {"school-demo"}
    logged = json.dumps(events)
    assert image[:200] not in logged and face_b64("school-demo", "stu_new", 1)[:200] not in logged
    first = events[0]
    assert first["kind"] == "request" and first["body"]["image"] == {
        "omitted": "image",
        "base64_chars": len(image),
    }
    identified = next(e for e in events if e["kind"] == "face.identify")
    assert identified["outcome"] == "MATCHED" and identified["image_pixels"] == 112 * 112


async def test_fault_rules_reach_face_operations(client: httpx.AsyncClient) -> None:
    rule = {"provider": "face", "operation": "test_token", "action": "error_500"}
    assert (await client.post("/_control/faults", json=rule)).status_code == 200
    body = {"school": "school-demo", "student": "stu_bob"}
    failed = await client.post("/face/test-tokens", json=body)
    assert failed.status_code == 500 and failed.json()["code"] == "INTERNAL_ERROR"
    assert (await client.post("/face/test-tokens", json=body)).status_code == 200
    bad = await client.post("/_control/faults", json={**rule, "operation": "pay"})
    assert bad.status_code == 422


@pytest.mark.parametrize("doc", ["test-values.md", "face-cloud.md"])
def test_docs_list_every_face_user(doc: str) -> None:
    lines = (Path(__file__).resolve().parents[3] / "docs" / doc).read_text(encoding="utf-8").splitlines()
    for user in FACE_USERS:
        facts = [f"`{user.school}`", f"`{user.student}`"]
        if user.enrolled:
            facts += [f"`{user.user_id}`", f"`{user.agreement_no}`", f"`{user.consent_ref}`", "| yes"]
        else:
            facts += ["| no"]
        assert any(all(fact in line for fact in facts) for line in lines), f"{user.student} missing or stale"
