"""Images in the face cloud: the PNG/raw decoder, the resizer and the synthetic test faces.

PNGs are written here by a small reference encoder that uses every filter type, as real
encoders (libpng, browsers) do, so the decoder is tested against more than its own encoder.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from sandbox.face.images import ImageError, decode_image, encode_png, resize
from sandbox.face.synthetic import synthetic_face

pytestmark = pytest.mark.unit


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def filtered(rows: list[bytes], bpp: int) -> bytes:
    """Each row filtered with type (row number % 5): None, Sub, Up, Average, Paeth."""
    out, prior = bytearray(), bytes(len(rows[0]))
    for y, row in enumerate(rows):
        kind = y % 5
        out.append(kind)
        for i, value in enumerate(row):
            left = row[i - bpp] if i >= bpp else 0
            up, upper_left = prior[i], prior[i - bpp] if i >= bpp else 0
            predictor = [0, left, up, (left + up) // 2, paeth(left, up, upper_left)][kind]
            out.append((value - predictor) % 256)
        prior = row
    return bytes(out)


def png(
    samples: np.ndarray, colour: int, depth: int = 8, palette: bytes | None = None, interlace: int = 0
) -> bytes:
    height, width = samples.shape[:2]
    dtype = ">u2" if depth == 16 else np.uint8
    rows = [samples[y].astype(dtype).tobytes() for y in range(height)]
    bpp = max(1, len(rows[0]) // width)
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    body = chunk(b"IHDR", header) + (chunk(b"PLTE", palette) if palette else b"")
    data = zlib.compress(filtered(rows, bpp))
    return (
        b"\x89PNG\r\n\x1a\n"
        + body
        + chunk(b"IDAT", data[:10])
        + chunk(b"IDAT", data[10:])
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def face() -> np.ndarray:
    return synthetic_face("school-demo", "stu_alice", 1)[:40, :24]  # not square: PNGs need not be


def test_rgb_and_rgba_pngs_with_every_filter_type(face: np.ndarray) -> None:
    np.testing.assert_array_equal(decode_image(png(face, colour=2)), face)
    alpha = np.full((*face.shape[:2], 1), 77, np.uint8)
    np.testing.assert_array_equal(decode_image(png(np.concatenate([face, alpha], axis=2), colour=6)), face)
    wide = face.astype(np.uint16) * 256 + 7  # 16-bit: the high byte is the 8-bit value
    np.testing.assert_array_equal(decode_image(png(wide, colour=2, depth=16)), face)


def test_greyscale_and_palette_pngs(face: np.ndarray) -> None:
    grey = face[:, :, 1]
    expected = np.repeat(grey[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(decode_image(png(grey, colour=0)), expected)
    with_alpha = np.stack([grey, np.full_like(grey, 9)], axis=2)
    np.testing.assert_array_equal(decode_image(png(with_alpha, colour=4)), expected)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255]], np.uint8)
    index = (np.arange(face.shape[0] * face.shape[1]) % 3).reshape(face.shape[:2]).astype(np.uint8)
    decoded = decode_image(png(index, colour=3, palette=palette.tobytes()))
    np.testing.assert_array_equal(decoded, palette[index])


def test_own_png_and_raw_rgb_round_trip() -> None:
    image = synthetic_face("school-demo", "stu_bob", 2)
    encoded = encode_png(image)
    assert encoded.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(decode_image(encoded), image)
    np.testing.assert_array_equal(decode_image(image.tobytes()), image)  # 112 * 112 * 3 raw bytes


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00" * 100, "not a PNG"),
        (bytes(3 * 4 * 4), "not a PNG"),  # raw, but 4x4 is too small
        (bytes(3 * 600 * 600), "not a PNG"),  # raw, but too big
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "CRC|truncated|IHDR"),
    ],
)
def test_what_is_not_an_accepted_image(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        decode_image(data)


def test_malformed_pngs_are_refused(face: np.ndarray) -> None:
    good = png(face, colour=2)
    corrupt = bytearray(good)
    corrupt[40] ^= 0xFF  # inside the first IDAT: its CRC no longer holds
    with pytest.raises(ImageError, match="CRC"):
        decode_image(bytes(corrupt))
    with pytest.raises(ImageError, match="IEND"):
        decode_image(good[: -len(chunk(b"IEND", b""))])
    with pytest.raises(ImageError, match="unsupported"):
        decode_image(png(face, colour=2, interlace=1))
    with pytest.raises(ImageError, match="sides"):
        decode_image(png(np.zeros((600, 10, 3), np.uint8), colour=2))
    short = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 20, 8, 2, 0, 0, 0))
    with pytest.raises(ImageError, match="bytes"):
        decode_image(short + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match="inflate"):
        decode_image(short + chunk(b"IDAT", b"not zlib") + chunk(b"IEND", b""))


def test_resize_is_bilinear_and_keeps_flat_colours() -> None:
    flat = np.full((200, 150, 3), (10, 20, 30), np.uint8)
    assert (resize(flat, 112) == np.array([10, 20, 30], np.uint8)).all()
    ramp = np.repeat(np.repeat(np.arange(0, 256, 64, dtype=np.uint8)[None, :, None], 4, axis=0), 3, axis=2)
    assert resize(ramp, 8)[0, :, 0].tolist() == [0, 16, 48, 80, 112, 144, 176, 192]
    image = synthetic_face("a", "b")
    assert resize(image, 112) is image


def test_synthetic_faces_are_deterministic_and_differ_per_capture_and_student() -> None:
    first = synthetic_face("school-demo", "stu_alice", 0)
    assert first.shape == (112, 112, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, synthetic_face("school-demo", "stu_alice", 0))
    other_capture = synthetic_face("school-demo", "stu_alice", 1).astype(int)
    other_student = synthetic_face("school-demo", "stu_bob", 0).astype(int)
    other_school = synthetic_face("school-other", "stu_alice", 0).astype(int)
    capture_change = np.abs(other_capture - first).mean()
    assert 0 < capture_change < 15
    assert np.abs(other_student - first).mean() > 2 * capture_change
    assert np.abs(other_school - first).mean() > 2 * capture_change
