"""The face cloud's settings: which embedding model, how to feed it, how strict matching is.

Every field has a documented default (docs/face-cloud.md) and an environment variable, read by
`FaceConfig.from_env()` when the sandbox app is created.

| field | variable | default |
|---|---|---|
| model_path | CAMPUSPAY_SANDBOX_FACE_MODEL | the project's sandbox encoder (models/sandbox-encoder.onnx) |
| input_size | CAMPUSPAY_SANDBOX_FACE_INPUT_SIZE | the model's own input size, or 112 when it declares none |
| color_order | CAMPUSPAY_SANDBOX_FACE_COLOR_ORDER | RGB |
| mean, std | CAMPUSPAY_SANDBOX_FACE_MEAN / _STD | 127.5 / 128: pixels go in as (x - mean) / std |
| match_threshold | CAMPUSPAY_SANDBOX_FACE_MATCH_THRESHOLD | 0.70 (cosine similarity) |
| ambiguity_margin | CAMPUSPAY_SANDBOX_FACE_AMBIGUITY_MARGIN | 0.05 |
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

__all__ = ["DEFAULT_MODEL_PATH", "ENV_PREFIX", "ColorOrder", "FaceConfig"]

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "models" / "sandbox-encoder.onnx"
ENV_PREFIX = "CAMPUSPAY_SANDBOX_FACE_"
ColorOrder = Literal["RGB", "BGR"]
T = TypeVar("T")


@dataclass(frozen=True)
class FaceConfig:
    model_path: Path = DEFAULT_MODEL_PATH
    input_size: int | None = None  # None: the model's declared input size (112 if it declares none)
    color_order: ColorOrder = "RGB"
    mean: float = 127.5
    std: float = 128.0
    match_threshold: float = 0.70  # the best student must reach this cosine similarity
    ambiguity_margin: float = 0.05  # ... and beat any other student above it by at least this much

    def __post_init__(self) -> None:
        if self.input_size is not None and not 16 <= self.input_size <= 1024:
            raise ValueError(f"input_size must be 16..1024, not {self.input_size}")
        if self.color_order not in ("RGB", "BGR"):
            raise ValueError(f"color_order must be RGB or BGR, not {self.color_order!r}")
        if self.std == 0:
            raise ValueError("std must not be 0")
        if not -1.0 < self.match_threshold <= 1.0:
            raise ValueError(f"match_threshold must be in (-1, 1], not {self.match_threshold}")
        if not 0.0 <= self.ambiguity_margin < 2.0:
            raise ValueError(f"ambiguity_margin must be in [0, 2), not {self.ambiguity_margin}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaceConfig:
        """The defaults, overridden by any CAMPUSPAY_SANDBOX_FACE_* variable that is set."""
        env = os.environ if environ is None else environ
        parsers: dict[str, Callable[[str], Any]] = {
            "model_path": Path,
            "input_size": int,
            "color_order": str.upper,
            "mean": float,
            "std": float,
            "match_threshold": float,
            "ambiguity_margin": float,
        }
        given: dict[str, Any] = {}
        for field in fields(cls):
            name = ENV_PREFIX + ("MODEL" if field.name == "model_path" else field.name.upper())
            text = env.get(name, "").strip()
            if text:
                given[field.name] = _parse(name, text, parsers[field.name])
        return cls(**given)


def _parse(name: str, text: str, parser: Callable[[str], T]) -> T:
    try:
        return parser(text)
    except ValueError as exc:
        raise ValueError(f"{name}={text!r}: {exc}") from exc
