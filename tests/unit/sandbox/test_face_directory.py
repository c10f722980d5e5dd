"""The face cloud as the sandbox Alipay sees it (FaceDirectory), its templates at rest, its config."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from fastapi import FastAPI

from sandbox import create_sandbox_app
from sandbox.control import ControlPlane
from sandbox.face import FaceCloud, FaceConfig, FaceDirectory, FaceError, FaceProvider, FaceToken, FaceUser
from sandbox.face.config import DEFAULT_MODEL_PATH
from sandbox.face.synthetic import synthetic_face
from sandbox.face.vault import SealedTemplate

pytestmark = pytest.mark.unit

ALICE, BOB, ZED = "2088101000000001", "2088101000000002", "2088101000000003"


@pytest.fixture
def control() -> ControlPlane:
    return ControlPlane()


@pytest.fixture
def cloud(control: ControlPlane) -> FaceCloud:
    return FaceProvider(control, FaceConfig()).cloud


def test_the_sandbox_app_exposes_its_face_cloud_as_a_face_directory() -> None:
    app = create_sandbox_app()
    directory: FaceDirectory = app.state.face_cloud
    assert directory is app.state.control.providers["face"].cloud
    assert directory.user(ALICE) == FaceUser(
        ALICE, "school-demo", "stu_alice", "20221000000000000001", "consent-demo-alice"
    )


def test_lookup_token_returns_the_token_as_issued(cloud: FaceCloud, control: ControlPlane) -> None:
    assert cloud.lookup_token("fp" + "x" * 33) is None
    token = cloud.test_token("school-other", "stu_zed")
    assert cloud.lookup_token(token.token) == token
    assert isinstance(token, FaceToken) and token.school == "school-other" and token.user_id == ZED
    assert (
        token.issued_at == pytest.approx(control.now(), abs=5) and token.expires_at == token.issued_at + 300
    )


def test_use_token_once_per_trade(cloud: FaceCloud, control: ControlPlane) -> None:
    token = cloud.test_token("school-demo", "stu_bob").token
    assert cloud.use_token("fpNeverIssued000000000000000000000000", "trade-1") is False
    assert cloud.use_token(token, "trade-1") is True
    assert cloud.use_token(token, "trade-1") is True  # a retry of the same trade
    assert cloud.use_token(token, "trade-2") is False  # used up
    found = cloud.lookup_token(token)
    assert found is not None and found.used_by == "trade-1"
    used = control.events(kind="face.token_used")
    assert [(e["face_token"], e["trade_key"]) for e in used] == [(token, "trade-1")]


def test_use_token_leaves_expiry_to_the_caller(cloud: FaceCloud, control: ControlPlane) -> None:
    token = cloud.test_token("school-demo", "stu_bob").token
    control.offset_seconds = 3600
    found = cloud.lookup_token(token)
    assert found is not None and found.expires_at < control.now()
    assert cloud.use_token(token, "trade-late") is True


def test_user_and_delete_user(cloud: FaceCloud) -> None:
    assert cloud.user("2088000000009999") is None
    token = cloud.test_token("school-demo", "stu_alice").token
    assert cloud.delete_user("school-other", ALICE) is False  # not in that school's group
    assert cloud.delete_user("school-demo", "2088000000009999") is False
    assert cloud.delete_user("school-demo", ALICE) is True
    assert cloud.delete_user("school-demo", ALICE) is True  # a retried deletion is acknowledged
    user = cloud.user(ALICE)
    assert user is not None and user.deleted and user.school == "school-demo"
    assert cloud.template(ALICE) is None and cloud.sealed_template(ALICE) is None
    found = cloud.lookup_token(token)
    assert found is not None and found.user_id == ALICE  # still found; the user says deleted
    assert cloud.use_token(token, "trade-1") is False
    with pytest.raises(FaceError) as refused:
        cloud.test_token("school-demo", "stu_alice")
    assert refused.value.code == "USER_NOT_ENROLLED"


def test_templates_are_encrypted_at_rest_and_open_only_for_their_user(cloud: FaceCloud) -> None:
    sealed = cloud.sealed_template(ALICE)
    template = cloud.template(ALICE)
    assert isinstance(sealed, SealedTemplate) and template is not None
    plain = template.astype("<f4").tobytes()
    assert len(sealed.ciphertext) == len(plain) + 16 and len(sealed.nonce) == 12
    assert sealed.ciphertext[: len(plain)] != plain and plain[:16] not in sealed.ciphertext
    expected = cloud.encoder.embed(synthetic_face("school-demo", "stu_alice", 0))
    np.testing.assert_allclose(template, expected, atol=1e-6)
    assert float(np.linalg.norm(template)) == pytest.approx(1.0, abs=1e-5)
    vault = cloud._vault
    with pytest.raises(InvalidTag):  # moved onto another user, it does not open
        vault.open(sealed, school="school-demo", user_id=BOB)
    tampered = SealedTemplate(sealed.nonce, bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:])
    with pytest.raises(InvalidTag):
        vault.open(tampered, school="school-demo", user_id=ALICE)
    other = cloud.sealed_template(BOB)
    assert other is not None and other.nonce != sealed.nonce


def test_enrol_and_identify_directly(cloud: FaceCloud) -> None:
    with pytest.raises(FaceError) as no_consent:
        cloud.enroll("school-demo", "stu_carol", synthetic_face("school-demo", "stu_carol"), None)
    assert no_consent.value.code == "CONSENT_REQUIRED" and no_consent.value.status == 422
    carol = cloud.enroll("school-demo", "stu_carol", synthetic_face("school-demo", "stu_carol"), "consent-c")
    token = cloud.identify("school-demo", "pos-9", synthetic_face("school-demo", "stu_carol", 5))
    assert token.user_id == carol.user_id and token.school == "school-demo"
    scores = cloud.scores("school-demo", synthetic_face("school-demo", "stu_carol", 5))
    assert [u.student for _, u in scores[:1]] == ["stu_carol"] and len(scores) == 3
    assert scores[0][0] >= 0.7 > scores[1][0]


def test_thresholds_are_configurable(control: ControlPlane) -> None:
    strict = FaceProvider(control, FaceConfig(match_threshold=0.9999)).cloud
    with pytest.raises(FaceError) as no_match:
        strict.identify("school-demo", "pos-1", synthetic_face("school-demo", "stu_alice", 3))
    assert no_match.value.code == "NO_MATCH"

    twins = FaceProvider(ControlPlane(), FaceConfig(ambiguity_margin=0.0)).cloud
    twin = twins.enroll("school-demo", "stu_twin", synthetic_face("school-demo", "stu_alice", 0), "consent-t")
    probe = synthetic_face("school-demo", "stu_alice", 0)  # the very image both were enrolled with
    assert twins.identify("school-demo", "pos-1", probe).user_id in {
        ALICE,
        twin.user_id,
    }  # no margin: a tie wins


async def test_thresholds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPUSPAY_SANDBOX_FACE_MATCH_THRESHOLD", "0.9999")
    app: FastAPI = create_sandbox_app()
    assert app.state.face_cloud.config.match_threshold == 0.9999
    image = base64.b64encode(synthetic_face("school-demo", "stu_alice", 3).tobytes()).decode()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test"
    ) as client:
        response = await client.post(
            "/face/identify", json={"school": "school-demo", "device_id": "d", "image": image}
        )
    assert response.json()["code"] == "NO_MATCH"


def test_config_from_env_parses_and_validates() -> None:
    assert FaceConfig.from_env({}) == FaceConfig()
    assert FaceConfig().model_path == DEFAULT_MODEL_PATH and DEFAULT_MODEL_PATH.is_file()
    env = {
        "CAMPUSPAY_SANDBOX_FACE_MODEL": "/models/arcface.onnx",
        "CAMPUSPAY_SANDBOX_FACE_INPUT_SIZE": "128",
        "CAMPUSPAY_SANDBOX_FACE_COLOR_ORDER": "bgr",
        "CAMPUSPAY_SANDBOX_FACE_MEAN": "0",
        "CAMPUSPAY_SANDBOX_FACE_STD": "255",
        "CAMPUSPAY_SANDBOX_FACE_MATCH_THRESHOLD": "0.35",
        "CAMPUSPAY_SANDBOX_FACE_AMBIGUITY_MARGIN": "0.02",
    }
    assert FaceConfig.from_env(env) == FaceConfig(
        Path("/models/arcface.onnx"), 128, "BGR", 0.0, 255.0, 0.35, 0.02
    )
    for name, value in (
        ("INPUT_SIZE", "big"),
        ("COLOR_ORDER", "RGBA"),
        ("STD", "0"),
        ("MATCH_THRESHOLD", "2"),
    ):
        with pytest.raises(ValueError):
            FaceConfig.from_env({f"CAMPUSPAY_SANDBOX_FACE_{name}": value})
