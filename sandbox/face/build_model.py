"""Build the face cloud's default model, models/sandbox-encoder.onnx (needs the `onnx` dev extra).

    .venv/bin/python -m sandbox.face.build_model [OUTPUT]

It is a SANDBOX ENCODER, NOT A FACE RECOGNISER. It has a real face model's contract — input
`[1, 3, 112, 112]` float32 (RGB, scaled (x - 127.5) / 128), output `[1, 128]` float32 — and a
plain linear pipeline fitted to the project's own synthetic faces (sandbox/face/synthetic.py):

    InstanceNormalization (per channel: brightness and contrast drop out)
    -> AveragePool 8x8 (a 3x14x14 thumbnail: sensor noise and a pixel of misalignment drop out)
    -> Flatten -> Gemm to 128 values

The Gemm is Fisher's linear discriminant over thumbnails of many synthetic students, several
captures each (whiten what varies between captures of one student, keep the directions along
which students differ most, scale them to equal spread), turned by a fixed random rotation into
128 values. So it maps synthetic faces to vectors that separate by student; on photographs of
people it means nothing. Fitting is deterministic (fixed names and seeds); the same numpy and
BLAS give the same file. Replace it with a real ArcFace/SFace model through FaceConfig.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from sandbox.face.config import DEFAULT_MODEL_PATH
from sandbox.face.synthetic import FACE_SIZE, synthetic_face

__all__ = ["build", "fit", "thumbnails"]

FIT_SCHOOL = "sandbox-encoder-fit"  # a face group no test uses, so fitted faces are never test faces
POOL = 8
DISCRIMINANTS = 96  # directions kept; more separate students better but tolerate captures worse
EMBEDDING_DIM = 128
WITHIN_REGULARISER = 1e-2  # of the mean within-student variance, added before whitening
EPSILON = 1e-5  # InstanceNormalization's
SEED = 112
OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.10

Floats = npt.NDArray[np.float64]


def thumbnails(images: npt.NDArray[np.uint8]) -> Floats:
    """What the graph computes before its Gemm, in numpy: [n, 112, 112, 3] uint8 -> [n, 588]."""
    x = (images.astype(np.float64) - 127.5) / 128.0
    x = x.transpose(0, 3, 1, 2)  # n, 3, H, W
    mean = x.mean(axis=(2, 3), keepdims=True)
    var = x.var(axis=(2, 3), keepdims=True)
    x = (x - mean) / np.sqrt(var + EPSILON)
    n, c, side = x.shape[0], x.shape[1], FACE_SIZE // POOL
    pooled: Floats = x.reshape(n, c, side, POOL, side, POOL).mean(axis=(3, 5)).reshape(n, -1)
    return pooled


def fit(students: int, captures: int) -> tuple[Floats, Floats]:
    """(mean thumbnail, projection [588, 128]) fitted on `students` synthetic faces."""
    if students < 2 or captures < 2:
        raise ValueError("fitting needs at least 2 students and 2 captures of each")
    feats = np.stack(
        [
            thumbnails(np.stack([synthetic_face(FIT_SCHOOL, f"fit-{s:04d}", c) for c in range(captures)]))
            for s in range(students)
        ]
    )  # students, captures, dims
    dims = feats.shape[2]
    mean = feats.mean(axis=(0, 1))
    centres = feats.mean(axis=1)
    within = feats - centres[:, None, :]
    s_within = np.einsum("scd,sce->de", within, within) / (students * captures)
    s_between = np.cov((centres - mean).T, bias=True)
    s_within += WITHIN_REGULARISER * np.trace(s_within) / dims * np.eye(dims)

    w_values, w_vectors = np.linalg.eigh(s_within)
    whiten = w_vectors / np.sqrt(w_values)
    b_values, b_vectors = np.linalg.eigh(whiten.T @ s_between @ whiten)
    count = min(DISCRIMINANTS, students - 1)  # n students span at most n - 1 directions
    keep = np.argsort(b_values)[::-1][:count]
    discriminants = whiten @ b_vectors[:, keep] / np.sqrt(b_values[keep])
    rotation, _ = np.linalg.qr(np.random.default_rng(SEED).standard_normal((EMBEDDING_DIM, EMBEDDING_DIM)))
    projection: Floats = discriminants @ rotation[:count]
    return mean, projection


def build(students: int = 400, captures: int = 8) -> onnx.ModelProto:
    mean, projection = fit(students, captures)
    weights = projection.astype(np.float32)
    bias = (-(mean @ projection)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(np.ones(3, np.float32), "norm_scale"),
        numpy_helper.from_array(np.zeros(3, np.float32), "norm_bias"),
        numpy_helper.from_array(weights, "projection"),
        numpy_helper.from_array(bias, "projection_bias"),
    ]
    nodes = [
        helper.make_node(
            "InstanceNormalization", ["input", "norm_scale", "norm_bias"], ["normalised"], epsilon=EPSILON
        ),
        helper.make_node(
            "AveragePool", ["normalised"], ["thumbnail"], kernel_shape=[POOL, POOL], strides=[POOL, POOL]
        ),
        helper.make_node("Flatten", ["thumbnail"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "projection", "projection_bias"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "campuspay-sandbox-encoder",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, FACE_SIZE, FACE_SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, EMBEDDING_DIM])],
        initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="campuspay sandbox/face/build_model.py",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string="CampusPay sandbox encoder: NOT a face recogniser. Separates the project's "
        f"synthetic test faces only. Input [1,3,{FACE_SIZE},{FACE_SIZE}] RGB (x-127.5)/128, "
        f"output [1,{EMBEDDING_DIM}].",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {"purpose": "sandbox encoder, not a face recogniser", "fitted_on": f"{students} synthetic students"},
    )
    onnx.checker.check_model(model)
    return model


def main(argv: list[str]) -> None:
    target = Path(argv[0]) if argv else DEFAULT_MODEL_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build(), str(target))
    sys.stdout.write(f"wrote {target} ({target.stat().st_size} bytes)\n")


if __name__ == "__main__":
    main(sys.argv[1:])
