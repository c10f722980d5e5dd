"""Synthetic test faces: one deterministic "person" per (school, student), many captures each.

A face is a 112x112 RGB image (the aligned-crop size face models take): a background, hair, an
oval face with a seeded complexion pattern, eyes, brows, nose and mouth, all placed and coloured
from a seed derived from the school and the student. A *capture* of that face adds what a camera
adds — a pixel of misalignment, a brightness change and sensor noise — seeded by the capture
number, so two captures of one student differ slightly but still match, and two students don't.
These are drawings, not photographs of anyone: they exist so the face cloud can be exercised
with real images end to end.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

__all__ = ["FACE_SIZE", "Image", "synthetic_face"]

FACE_SIZE = 112
COMPLEXION_CELLS = 10  # the complexion pattern's grid: most of a face's identity lives here

Image = npt.NDArray[np.uint8]  # HxWx3, RGB
_Floats = npt.NDArray[np.float32]
_Mask = npt.NDArray[np.bool_]

_YY, _XX = np.mgrid[0:FACE_SIZE, 0:FACE_SIZE].astype(np.float32)


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()[:8], "big")


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> _Mask:
    inside: _Mask = ((_XX - cx) / rx) ** 2 + ((_YY - cy) / ry) ** 2 <= 1.0
    return inside


def _smooth_field(rng: np.random.Generator, cells: int) -> _Floats:
    """A cellsxcells grid of standard normals, bilinearly stretched over the image."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    pos = np.linspace(0, cells - 1, FACE_SIZE, dtype=np.float32)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, cells - 1)
    frac = pos - lo
    rows = grid[lo] * (1 - frac)[:, None] + grid[hi] * frac[:, None]
    field: _Floats = rows[:, lo] * (1 - frac)[None, :] + rows[:, hi] * frac[None, :]
    return field


def _draw(rng: np.random.Generator) -> _Floats:
    """The student's face, before any camera effect (float RGB, 0-255 scale)."""
    img = np.empty((FACE_SIZE, FACE_SIZE, 3), np.float32)
    img[:] = 110 + rng.uniform(-25, 25, 3) + (_YY[..., None] - 56) * 0.2  # backdrop, lit from above
    cx, cy = 56 + rng.uniform(-3, 3), 60 + rng.uniform(-3, 3)
    rx, ry = rng.uniform(30, 36), rng.uniform(38, 45)

    hair = rng.uniform(20, 200) * np.array([1.0, rng.uniform(0.6, 0.9), rng.uniform(0.3, 0.7)])
    hair_top = _ellipse(cx, cy - rng.uniform(4, 10), rx + rng.uniform(3, 7), ry + rng.uniform(2, 6))
    img[hair_top & (_YY < cy + rng.uniform(-5, 15))] = hair

    face = _ellipse(cx, cy, rx, ry)
    tone = rng.uniform(120, 235)
    skin = np.array([tone, tone * rng.uniform(0.7, 0.85), tone * rng.uniform(0.55, 0.75)])
    complexion = np.stack([_smooth_field(rng, COMPLEXION_CELLS) for _ in range(3)], axis=-1)
    img[face] = (skin + complexion * rng.uniform(14, 22))[face]

    eye_y, eye_dx, eye_r = cy - ry * rng.uniform(0.12, 0.28), rx * rng.uniform(0.35, 0.5), rng.uniform(4, 6.5)
    iris = rng.uniform(20, 160, 3)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        img[_ellipse(ex, eye_y, eye_r * 1.4, eye_r)] = 235
        img[_ellipse(ex + rng.uniform(-1, 1), eye_y, eye_r * 0.6, eye_r * 0.6)] = iris
        brow = _ellipse(ex, eye_y - eye_r - rng.uniform(3, 6), eye_r * 1.6, rng.uniform(1.2, 3))
        img[brow] = hair * 0.7

    nose = _ellipse(cx, cy + ry * rng.uniform(0.05, 0.2), rng.uniform(3, 6), rng.uniform(6, 11)) & face
    img[nose] *= 0.85
    lips = np.array([rng.uniform(140, 210), rng.uniform(40, 90), rng.uniform(50, 100)])
    img[_ellipse(cx, cy + ry * rng.uniform(0.4, 0.6), rng.uniform(8, 16), rng.uniform(2, 5))] = lips
    return img


def _capture(img: _Floats, rng: np.random.Generator) -> _Floats:
    """What a camera adds: up to a pixel of misalignment, a brightness change, sensor noise."""
    dy, dx = (int(v) for v in rng.integers(-1, 2, 2))
    shifted = np.roll(img, (dy, dx), axis=(0, 1))
    noisy = shifted * rng.uniform(0.95, 1.05) + rng.uniform(-6, 6) + rng.normal(0, 3, img.shape)
    return noisy.astype(np.float32)


def synthetic_face(school: str, student: str, capture: int = 0) -> Image:
    """Capture number `capture` of the synthetic face of `student` in `school` (112x112 RGB).

    The same arguments always give the same pixels; capture 0 is what the fixed test users were
    enrolled with.
    """
    face = _draw(np.random.default_rng(_seed("face", school, student)))
    shot = _capture(face, np.random.default_rng(_seed("capture", school, student, str(capture))))
    image: Image = np.clip(np.rint(shot), 0, 255).astype(np.uint8)
    return image
