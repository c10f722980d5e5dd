"""The face encoder: any ONNX model with a face model's shapes, fed as configured, L2-normalised.

The models here are built by the tests with onnx.helper. The probe model averages each input
channel and writes the three means (times 2) into the first three of 512 outputs, so the raw
output shows exactly what the encoder fed the model.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sandbox.control import ControlPlane
from sandbox.face import FaceConfig, FaceProvider
from sandbox.face import build_model as builder
from sandbox.face.config import DEFAULT_MODEL_PATH
from sandbox.face.encoder import EncoderError, FaceEncoder
from sandbox.face.synthetic import synthetic_face

pytestmark = pytest.mark.unit

Dim = int | str


def probe_model(path: Path, shape: list[Dim], out_dim: int = 512) -> Path:
    channels = shape[1] if isinstance(shape[1], int) else 3
    weights = np.zeros((channels, out_dim), np.float32)
    for channel in range(channels):
        weights[channel, channel] = 2.0
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["means"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["means", "weights"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes,
        "probe",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [shape[0], out_dim])],
        [numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def solid(r: int, g: int, b: int, side: int = 112) -> np.ndarray:
    image = np.empty((side, side, 3), np.uint8)
    image[:] = (r, g, b)
    return image


def test_scaling_and_colour_order_are_honoured_and_output_is_normalised(tmp_path: Path) -> None:
    model = probe_model(tmp_path / "probe.onnx", [1, 3, 112, 112])
    image = solid(200, 100, 50)
    cases = [
        (FaceConfig(model_path=model), [(200 - 127.5) / 128, (100 - 127.5) / 128, (50 - 127.5) / 128]),
        (FaceConfig(model_path=model, mean=0, std=255), [200 / 255, 100 / 255, 50 / 255]),
        (FaceConfig(model_path=model, color_order="BGR", mean=0, std=1), [50, 100, 200]),
        (FaceConfig(model_path=model, color_order="BGR", mean=127.5, std=127.5), [-0.6078, -0.2157, 0.5686]),
    ]
    for config, channels in cases:
        encoder = FaceEncoder(config)
        raw = encoder.raw(image)
        assert raw.shape == (512,) and encoder.dimension == 512
        np.testing.assert_allclose(raw[:3], 2 * np.array(channels), rtol=1e-3)
        embedding = encoder.embed(image)
        assert float(np.linalg.norm(embedding)) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(embedding, raw / np.linalg.norm(raw), rtol=1e-5)


def test_the_model_input_size_is_honoured(tmp_path: Path) -> None:
    fixed = FaceEncoder(FaceConfig(model_path=probe_model(tmp_path / "s64.onnx", [1, 3, 64, 64])))
    assert fixed.input_size == 64 and fixed.tensor(solid(1, 2, 3)).shape == (1, 3, 64, 64)
    np.testing.assert_allclose(
        fixed.raw(solid(255, 0, 0, side=200))[:3], 2 * np.array([127.5, -127.5, -127.5]) / 128
    )
    with pytest.raises(EncoderError, match="takes 64"):
        FaceEncoder(FaceConfig(model_path=tmp_path / "s64.onnx", input_size=96))

    symbolic = probe_model(tmp_path / "dyn.onnx", ["batch", 3, "height", "width"])
    assert FaceEncoder(FaceConfig(model_path=symbolic)).input_size == 112
    configured = FaceEncoder(FaceConfig(model_path=symbolic, input_size=96))
    assert configured.tensor(synthetic_face("s", "a")).shape == (1, 3, 96, 96)
    assert configured.embed(synthetic_face("s", "a")).shape == (512,)


def test_unusable_models_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="no face model"):
        FaceEncoder(FaceConfig(model_path=tmp_path / "missing.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(EncoderError, match="cannot load"):
        FaceEncoder(FaceConfig(model_path=tmp_path / "junk.onnx"))
    with pytest.raises(EncoderError, match=r"\[N, 3, S, S\]"):
        FaceEncoder(FaceConfig(model_path=probe_model(tmp_path / "grey.onnx", [1, 1, 112, 112])))
    with pytest.raises(EncoderError, match="square"):
        FaceEncoder(FaceConfig(model_path=probe_model(tmp_path / "wide.onnx", [1, 3, 112, 96])))
    zero = FaceEncoder(
        FaceConfig(model_path=probe_model(tmp_path / "p.onnx", [1, 3, 112, 112]), mean=100, std=1)
    )
    with pytest.raises(EncoderError, match="zero"):
        zero.embed(solid(100, 100, 100))


def test_a_dropped_in_model_runs_the_whole_face_cloud(tmp_path: Path) -> None:
    model = probe_model(tmp_path / "arcface-shaped.onnx", [1, 3, 112, 112])
    cloud = FaceProvider(ControlPlane(), FaceConfig(model_path=model, match_threshold=0.99999)).cloud
    template = cloud.template("2088101000000001")
    assert template is not None and template.shape == (512,)
    token = cloud.identify("school-demo", "pos-1", synthetic_face("school-demo", "stu_alice", 0))
    assert token.user_id == "2088101000000001"


def test_the_default_model_has_a_face_model_contract_and_says_what_it_is() -> None:
    assert DEFAULT_MODEL_PATH.stat().st_size < 1_000_000
    model = onnx.load(str(DEFAULT_MODEL_PATH))
    onnx.checker.check_model(model)

    def dims(value: onnx.ValueInfoProto) -> list[int]:
        return [d.dim_value for d in value.type.tensor_type.shape.dim]

    (given,), (out,) = model.graph.input, model.graph.output
    assert dims(given) == [1, 3, 112, 112] and given.type.tensor_type.elem_type == TensorProto.FLOAT
    assert dims(out) == [1, 128] and out.type.tensor_type.elem_type == TensorProto.FLOAT
    assert "NOT a face recogniser" in model.doc_string
    encoder = FaceEncoder(FaceConfig())
    assert encoder.input_size == 112 and encoder.dimension == 128


def test_the_default_model_separates_synthetic_students_it_never_saw() -> None:
    encoder, config = FaceEncoder(FaceConfig()), FaceConfig()
    students = [f"unseen-{i}" for i in range(30)]
    enrolled = np.stack([encoder.embed(synthetic_face("school-eval", s, 0)) for s in students])
    probes = np.stack([encoder.embed(synthetic_face("school-eval", s, 11)) for s in students])
    similarity = probes @ enrolled.T
    same = np.diag(similarity)
    others = similarity[~np.eye(len(students), dtype=bool)]
    assert same.min() >= config.match_threshold + config.ambiguity_margin
    assert others.max() < config.match_threshold
    assert (similarity.argmax(axis=1) == np.arange(len(students))).all()


def test_build_model_builds_a_checked_deterministic_model() -> None:
    small = builder.build(students=10, captures=3)
    onnx.checker.check_model(small)
    again = builder.build(students=10, captures=3)
    for first, second in itertools.zip_longest(small.graph.initializer, again.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(first), numpy_helper.to_array(second))
    weights = {i.name: numpy_helper.to_array(i) for i in small.graph.initializer}
    assert weights["projection"].shape == (588, 128)
    images = np.stack([synthetic_face("x", "y", 0), synthetic_face("x", "z", 0)])
    assert builder.thumbnails(images).shape == (2, 588)
    with pytest.raises(ValueError):
        builder.fit(students=1, captures=3)
