"""Face image -> L2-normalised embedding, through an onnxruntime session over any ONNX model.

The contract is the one ArcFace/SFace-style models share: one image input `[N, 3, S, S]`
(float32, channels first; N may be fixed at 1 or symbolic) and one output `[N, D]`. How pixels
become input values is configuration (`FaceConfig`): the input size S, the colour order and the
scaling `(x - mean) / std`. The output is L2-normalised here, whatever the model does, so cosine
similarity is a dot product.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from sandbox.face.config import FaceConfig
from sandbox.face.images import resize
from sandbox.face.synthetic import FACE_SIZE, Image

__all__ = ["Embedding", "EncoderError", "FaceEncoder"]

Embedding = npt.NDArray[np.float32]


class EncoderError(RuntimeError):
    """The model can't be used as a face encoder, or gave an unusable embedding."""


class FaceEncoder:
    def __init__(self, config: FaceConfig) -> None:
        self.config = config
        if not config.model_path.is_file():
            raise EncoderError(f"no face model at {config.model_path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one small image at a time: threads only add overhead
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session: Any = ort.InferenceSession(
                str(config.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EncoderError(f"cannot load face model {config.model_path}: {exc}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise EncoderError("a face model has exactly one input and at least one output")
        self._input_name: str = inputs[0].name
        self._output_name: str = outputs[0].name
        self.input_size = self._input_size(list(inputs[0].shape), config.input_size)
        declared = outputs[0].shape[-1] if outputs[0].shape else None
        self.dimension: int | None = declared if isinstance(declared, int) else None

    @staticmethod
    def _input_size(shape: list[Any], configured: int | None) -> int:
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise EncoderError(f"face model input must be [N, 3, S, S], not {shape}")
        height, width = shape[2], shape[3]
        if isinstance(height, int) and isinstance(width, int):
            if height != width:
                raise EncoderError(f"face model input must be square, not {height}x{width}")
            if configured is not None and configured != height:
                raise EncoderError(f"input_size {configured} configured, but the model takes {height}")
            return height
        return configured if configured is not None else FACE_SIZE

    def tensor(self, image: Image) -> npt.NDArray[np.float32]:
        """The model input for an RGB image: resized, colour-ordered, scaled, [1, 3, S, S]."""
        pixels = resize(image, self.input_size)
        if self.config.color_order == "BGR":
            pixels = pixels[:, :, ::-1]
        scaled = (pixels.astype(np.float32) - np.float32(self.config.mean)) / np.float32(self.config.std)
        batch: npt.NDArray[np.float32] = np.ascontiguousarray(scaled.transpose(2, 0, 1)[None])
        return batch

    def raw(self, image: Image) -> npt.NDArray[np.float32]:
        """The model's own output for an image, flattened, not normalised."""
        (out,) = self._session.run([self._output_name], {self._input_name: self.tensor(image)})
        vector: npt.NDArray[np.float32] = np.asarray(out, dtype=np.float32).reshape(-1)
        return vector

    def embed(self, image: Image) -> Embedding:
        """The L2-normalised embedding of an RGB image (float32, norm 1)."""
        vector = self.raw(image)
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm < 1e-12:
            raise EncoderError("the face model gave a zero or non-finite embedding")
        embedding: Embedding = (vector / np.float32(norm)).astype(np.float32)
        return embedding
