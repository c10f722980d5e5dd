"""Images in and out of the face cloud, with numpy only (no imaging library).

Accepted (after base64): a PNG (8- or 16-bit greyscale, grey+alpha, RGB, RGBA, or 8-bit palette;
not interlaced), or raw RGB bytes of a square image (row-major, 3 bytes a pixel, so 37,632 bytes
for 112x112). Either way at most `MAX_SIDE` pixels a side. Alpha is dropped, greyscale repeated
into three channels. Images are face crops as a terminal's face SDK hands them over (aligned,
roughly square); they are resized to the model's input size, nothing else (no detection, no
alignment).
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import numpy.typing as npt

from sandbox.face.synthetic import Image

__all__ = ["MAX_SIDE", "ImageError", "decode_image", "encode_png", "resize"]

MAX_SIDE = 512
MIN_SIDE = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


class ImageError(ValueError):
    """The bytes are not an image the face cloud accepts; the message says why."""


def decode_image(data: bytes) -> Image:
    """An HxWx3 RGB uint8 array from PNG or raw square RGB bytes."""
    if data.startswith(PNG_SIGNATURE):
        return _decode_png(data)
    side = math.isqrt(len(data) // 3)
    if len(data) % 3 == 0 and side * side * 3 == len(data) and MIN_SIDE <= side <= MAX_SIDE:
        return np.frombuffer(data, dtype=np.uint8).reshape(side, side, 3).copy()
    raise ImageError(
        f"not a PNG, nor raw RGB of a square image {MIN_SIDE}..{MAX_SIDE} pixels a side ({len(data)} bytes)"
    )


def encode_png(image: Image) -> bytes:
    """A plain 8-bit RGB PNG (filter type 0 on every row)."""
    height, width, _ = image.shape
    rows = np.zeros((height, 1 + width * 3), np.uint8)
    rows[:, 1:] = image.reshape(height, width * 3)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + _chunk(b"IEND", b"")
    )


def resize(image: Image, size: int) -> Image:
    """Bilinear resize to sizexsize (pixel centres aligned, edges clamped)."""
    height, width, _ = image.shape
    if (height, width) == (size, size):
        return image

    def axis(n_in: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        pos = np.clip((np.arange(size, dtype=np.float32) + 0.5) * (n_in / size) - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.intp)
        return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)

    y0, y1, fy = axis(height)
    x0, x1, fx = axis(width)
    src = image.astype(np.float32)
    top = src[y0][:, x0] * (1 - fx)[None, :, None] + src[y0][:, x1] * fx[None, :, None]
    bottom = src[y1][:, x0] * (1 - fx)[None, :, None] + src[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]
    resized: Image = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return resized


# --- PNG ---------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    found, pos = [], len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise ImageError("truncated PNG chunk")
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ImageError(f"PNG chunk {kind.decode('latin-1')!r} fails its CRC")
        found.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            return found
    raise ImageError("PNG ends without IEND")


def _decode_png(data: bytes) -> Image:
    chunks = _chunks(data)
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise ImageError("PNG does not start with IHDR")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise ImageError(f"PNG is {width}x{height}; sides must be {MIN_SIDE}..{MAX_SIDE} pixels")
    if colour not in _CHANNELS or depth not in (8, 16) or (colour == 3 and depth != 8) or interlace:
        raise ImageError(f"unsupported PNG (bit depth {depth}, colour type {colour}, interlace {interlace})")
    channels, sample_bytes = _CHANNELS[colour], depth // 8
    bpp = channels * sample_bytes
    stride = width * bpp
    expected = height * (1 + stride)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"), expected + 1)
    except zlib.error as exc:
        raise ImageError(f"PNG image data does not inflate: {exc}") from exc
    if len(raw) != expected:
        raise ImageError(f"PNG image data is {len(raw)} bytes, {expected} expected")

    pixels = _unfilter(raw, height, stride, bpp)
    samples = pixels.reshape(height, width, channels * sample_bytes)
    if sample_bytes == 2:  # big-endian 16-bit samples: keep the high byte
        samples = samples[:, :, 0::2]
    if colour == 3:
        palette = next((body for kind, body in chunks if kind == b"PLTE"), b"")
        table = np.frombuffer(palette, dtype=np.uint8).reshape(-1, 3)
        index = samples[:, :, 0]
        if len(table) == 0 or int(index.max()) >= len(table):
            raise ImageError("PNG palette missing or too short")
        return table[index].copy()
    colours = samples[:, :, :3] if channels >= 3 else np.repeat(samples[:, :, :1], 3, axis=2)
    image: Image = np.ascontiguousarray(colours, dtype=np.uint8)
    return image


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> npt.NDArray[np.uint8]:
    out = np.zeros((height, stride), np.uint8)
    prior = np.zeros(stride, np.int64)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=start + 1).astype(np.int64)
        if kind == 0:
            row = line
        elif kind == 1:  # Sub: running sum, per byte position within a pixel
            row = np.cumsum(line.reshape(-1, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            row = (line + prior) % 256
        elif kind in (3, 4):  # Average, Paeth: each byte depends on the one decoded before it
            row = np.array(_unfilter_serial(kind, line.tolist(), prior.tolist(), bpp), np.int64)
        else:
            raise ImageError(f"PNG row {y} has unknown filter type {kind}")
        out[y] = row
        prior = row
    return out


def _unfilter_serial(kind: int, line: list[int], prior: list[int], bpp: int) -> list[int]:
    row = [0] * len(line)
    for i, value in enumerate(line):
        left = row[i - bpp] if i >= bpp else 0
        up = prior[i]
        if kind == 3:
            row[i] = (value + (left + up) // 2) & 0xFF
            continue
        upper_left = prior[i - bpp] if i >= bpp else 0
        estimate = left + up - upper_left
        dl, du, dul = abs(estimate - left), abs(estimate - up), abs(estimate - upper_left)
        nearest = left if dl <= du and dl <= dul else up if du <= dul else upper_left
        row[i] = (value + nearest) & 0xFF
    return row
