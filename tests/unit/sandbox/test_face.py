"""The sandbox face cloud over HTTP (docs/face-cloud.md): enrol, identify, match outcomes, images."""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sandbox.face import FaceCloud
from sandbox.face.synthetic import synthetic_face

pytestmark = pytest.mark.unit

ALICE, BOB, ZED = "2088101000000001", "2088101000000002", "2088101000000003"
TOKEN = re.compile(r"^fp[A-Za-z0-9]{33}$")


def face_b64(school: str, student: str, capture: int = 0) -> str:
    return base64.b64encode(synthetic_face(school, student, capture).tobytes()).decode()


def cloud_of(app: FastAPI) -> FaceCloud:
    cloud: FaceCloud = app.state.face_cloud
    return cloud


async def enroll(
    client: httpx.AsyncClient, school: str, student: str, image: str, **extra: Any
) -> httpx.Response:
    body = {
        "school": school,
        "student": student,
        "image": image,
        "consent_ref": f"consent-{student}",
        **extra,
    }
    return await client.post("/face/enrollments", json=body)


async def identify(client: httpx.AsyncClient, school: str, image: str, **extra: Any) -> httpx.Response:
    return await client.post(
        "/face/identify", json={"school": school, "device_id": "pos-1", "image": image, **extra}
    )


async def identified_user(app: FastAPI, response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    token = cloud_of(app).lookup_token(response.json()["face_token"])
    assert token is not None
    return token.user_id


async def test_enrolment_creates_a_user_and_agreement_that_identify_finds(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await enroll(client, "school-demo", "stu_new", face_b64("school-demo", "stu_new"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert re.fullmatch(r"2088\d{12}", body["user_id"]) and re.fullmatch(r"2022\d{16}", body["agreement_no"])
    assert (body["school"], body["student"]) == ("school-demo", "stu_new")
    for capture in (1, 2, 3):  # other captures of the same face still match
        answer = await identify(client, "school-demo", face_b64("school-demo", "stu_new", capture))
        assert TOKEN.fullmatch(answer.json()["face_token"])
        assert await identified_user(app, answer) == body["user_id"]
    user = cloud_of(app).user(body["user_id"])
    assert (
        user is not None
        and user.consent_ref == "consent-stu_new"
        and user.agreement_no == body["agreement_no"]
    )


async def test_fixed_users_match_and_strangers_do_not(app: FastAPI, client: httpx.AsyncClient) -> None:
    assert (
        await identified_user(
            app, await identify(client, "school-demo", face_b64("school-demo", "stu_alice", 7))
        )
        == ALICE
    )
    assert (
        await identified_user(
            app, await identify(client, "school-demo", face_b64("school-demo", "stu_bob", 7))
        )
        == BOB
    )
    for student in ("stu_carol", "stu_stranger"):
        response = await identify(client, "school-demo", face_b64("school-demo", student, 1))
        assert response.status_code == 404 and response.json()["code"] == "NO_MATCH"


async def test_matching_is_one_to_n_within_the_school_group_only(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    zed, alice = face_b64("school-other", "stu_zed", 2), face_b64("school-demo", "stu_alice", 2)
    assert (await identify(client, "school-demo", zed)).json()["code"] == "NO_MATCH"
    assert (await identify(client, "school-other", alice)).json()["code"] == "NO_MATCH"
    assert (await identify(client, "school-nowhere", alice)).json()["code"] == "NO_MATCH"
    assert await identified_user(app, await identify(client, "school-other", zed)) == ZED
    # the same student id in two schools is two people, two users
    other = await enroll(client, "school-other", "stu_alice", face_b64("school-other", "stu_alice"))
    assert (
        other.json()["user_id"] != ALICE and cloud_of(app).active_user("school-demo", "stu_alice") is not None
    )


async def test_two_students_with_one_face_are_an_ambiguous_match(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    twin = await enroll(client, "school-demo", "stu_twin", face_b64("school-demo", "stu_alice", 0))
    assert twin.status_code == 200
    response = await identify(client, "school-demo", face_b64("school-demo", "stu_alice", 4))
    assert response.status_code == 409 and response.json()["code"] == "AMBIGUOUS_MATCH"
    # once the twin's enrolment is deleted, alice is alone with her face again
    user_id = twin.json()["user_id"]
    assert (
        await client.delete(f"/face/enrollments/{user_id}", params={"school": "school-demo"})
    ).status_code == 200
    assert (
        await identified_user(
            app, await identify(client, "school-demo", face_b64("school-demo", "stu_alice", 4))
        )
        == ALICE
    )


async def test_a_failed_liveness_check_is_refused(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = face_b64("school-demo", "stu_alice", 1)
    response = await identify(client, "school-demo", alice, liveness=False)
    assert response.status_code == 422 and response.json()["code"] == "LIVENESS_FAILED"
    assert await identified_user(app, await identify(client, "school-demo", alice, liveness=True)) == ALICE


@pytest.mark.parametrize("consent", [{}, {"consent_ref": None}, {"consent_ref": ""}, {"consent_ref": "  "}])
async def test_no_consent_reference_no_enrolment(
    app: FastAPI, client: httpx.AsyncClient, consent: dict[str, Any]
) -> None:
    body = {
        "school": "school-demo",
        "student": "stu_carol",
        "image": face_b64("school-demo", "stu_carol"),
        **consent,
    }
    response = await client.post("/face/enrollments", json=body)
    assert response.status_code == 422 and response.json()["code"] == "CONSENT_REQUIRED"
    assert cloud_of(app).active_user("school-demo", "stu_carol") is None


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"image": "not base64!"}, "INVALID_IMAGE"),
        ({"image": base64.b64encode(b"\x00" * 100).decode()}, "INVALID_IMAGE"),
        ({"image": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()}, "INVALID_IMAGE"),
        ({"school": "school demo"}, "INVALID_REQUEST"),
        ({"student": ""}, "INVALID_REQUEST"),
        ({"colour": "blue"}, "INVALID_REQUEST"),
    ],
)
async def test_malformed_enrolments_are_refused(
    client: httpx.AsyncClient, change: dict[str, Any], code: str
) -> None:
    body = {
        "school": "school-demo",
        "student": "stu_x",
        "image": face_b64("school-demo", "stu_x"),
        "consent_ref": "c",
    }
    response = await client.post("/face/enrollments", json={**body, **change})
    assert response.status_code == 422 and response.json()["code"] == code, response.text
    assert (await client.post("/face/identify", json={"school": "school-demo"})).json()[
        "code"
    ] == "INVALID_REQUEST"


async def test_png_raw_and_data_url_images_are_all_accepted(app: FastAPI, client: httpx.AsyncClient) -> None:
    png = (await client.get("/face/test-faces/school-demo/stu_alice", params={"capture": 3})).content
    raw = (
        await client.get("/face/test-faces/school-demo/stu_alice", params={"capture": 3, "format": "raw"})
    ).content
    assert png.startswith(b"\x89PNG") and len(raw) == 112 * 112 * 3
    for image in (
        base64.b64encode(png).decode(),
        base64.b64encode(raw).decode(),
        "data:image/png;base64," + base64.b64encode(png).decode(),
    ):
        assert await identified_user(app, await identify(client, "school-demo", image)) == ALICE


async def test_test_faces_are_deterministic_per_capture(client: httpx.AsyncClient) -> None:
    def get(capture: int) -> Any:
        return client.get("/face/test-faces/school-demo/stu_bob", params={"capture": capture})

    first, again, other = await get(1), await get(1), await get(2)
    assert first.headers["content-type"] == "image/png"
    assert first.content == again.content and first.content != other.content
    assert (
        await client.get("/face/test-faces/school-demo/stu_bob", params={"capture": -1})
    ).status_code == 422
