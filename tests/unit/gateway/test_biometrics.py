"""COMPLIANCE rule 11 over the whole body (gateway.protection.biometrics): images by their magic
bytes and data: URIs, templates as arrays of numbers, anywhere; a real face SDK's values pass."""

from __future__ import annotations

import base64
import json
import random
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gateway.errors import Unprocessable
from gateway.protection import biometrics
from gateway.protection.biometrics import image_format, reject_biometric_payload
from sandbox.face.images import encode_png, resize
from sandbox.face.synthetic import synthetic_face
from tests.face_sdk_values import (
    CSDN_TERMINAL_PARAMS,
    LIQUN_FTOKEN,
    LIQUN_TERMINAL_PARAMS,
    LIQUN_ZIM_ID,
    LIQUN_ZIM_INIT_CLIENT_DATA,
    ZIM_META_INFO,
)

_BODY_BYTES = random.Random(11).randbytes(1500)  # what follows a header: compressed image data


def _png() -> bytes:
    """A real face: the sandbox's synthetic face crop as a PNG file."""
    return encode_png(resize(synthetic_face("school-demo", "stu_alice"), 32))


# The first bytes of each format as its specification lays them out, then the file's body.
IMAGES: dict[str, bytes] = {
    "png": _png(),
    "jpeg-jfif": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + _BODY_BYTES,
    "jpeg-exif": b"\xff\xd8\xff\xe1\x2f\xfeExif\x00\x00MM\x00*" + _BODY_BYTES,
    "gif87a": b"GIF87a\x70\x00\x70\x00\xf7\x00\x00" + _BODY_BYTES,
    "gif89a": b"GIF89a\x70\x00\x70\x00\xf7\x00\x00" + _BODY_BYTES,
    "bmp": b"BM" + struct.pack("<IHHIIiiHH", 37686, 0, 0, 54, 40, 112, 112, 1, 24) + _BODY_BYTES,
    "webp": b"RIFF" + struct.pack("<I", 4000) + b"WEBPVP8 " + struct.pack("<I", 3988) + _BODY_BYTES,
    "heic": struct.pack(">I", 24) + b"ftypheic\x00\x00\x00\x00mif1heic" + _BODY_BYTES,
    "avif": struct.pack(">I", 28) + b"ftypavif\x00\x00\x00\x00avifmif1miaf" + _BODY_BYTES,
    "tiff-le": b"II*\x00\x08\x00\x00\x00" + _BODY_BYTES,
    "tiff-be": b"MM\x00*\x00\x00\x00\x08" + _BODY_BYTES,
    "jpeg2000-jp2": b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00\x00\x14ftypjp2 " + _BODY_BYTES,
    "jpeg2000-codestream": b"\xff\x4f\xff\x51\x00\x2f\x00\x00" + _BODY_BYTES,
    "jpeg-xl": b"\x00\x00\x00\x0cJXL \r\n\x87\n\x00\x00\x00\x14ftypjxl " + _BODY_BYTES,
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ENCODINGS: dict[str, Callable[[bytes], str]] = {
    "base64": _b64,
    "base64-urlsafe": lambda d: base64.urlsafe_b64encode(d).decode(),
    "base64-mime-lines": lambda d: base64.encodebytes(d).decode(),  # a newline every 76 characters
    "base64-leading-space": lambda d: "\n  " + _b64(d),
    "data-uri": lambda d: "data:image/png;base64," + _b64(d),
    "data-uri-octet-stream": lambda d: "data:application/octet-stream;base64," + _b64(d),
    "data-uri-with-params": lambda d: "DATA:text/plain;charset=utf-8;name=x.bin;base64," + _b64(d),
    "data-uri-inside-text": lambda d: "face: data:;base64," + _b64(d),
}

# Where an image may hide in a payment body (key -> how to put it there).
PLACES: dict[str, Callable[[dict[str, Any], str], None]] = {
    "terminal_params": lambda b, v: b.update(terminal_params=v),
    "description": lambda b, v: b.update(description=v),
    "credential": lambda b, v: b.update(credential={"face_token": v}),
    "unknown-key": lambda b, v: b.update(metadata={"capture": v}),
    "deep-in-arrays": lambda b, v: b.update(metadata=[[{"frames": [[[v]]]}]]),
    "a-key": lambda b, v: b.update(metadata={v: 1}),
    "json-in-terminal_params": lambda b, v: b.update(terminal_params=json.dumps({"faceImage": v})),
    "json-in-json-in-terminal_params": lambda b, v: b.update(
        terminal_params=json.dumps({"ext": json.dumps({"bioData": [v]})})
    ),
    "offline-record": lambda b, v: b.update(records=[{"terminal_seq": 1, "store_id": v}]),
}


def _payment(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchant_order_id": "ord-1",
        "amount": 1250,
        "currency": "CNY",
        "method": "face",
        "credential": {"face_token": LIQUN_FTOKEN},
        "store_id": "sto_1",
    }
    body.update(fields)
    return body


def _refused(body: Any) -> str:
    with pytest.raises(Unprocessable) as refused:
        reject_biometric_payload(body)
    assert refused.value.code == "biometric_data_not_accepted"
    assert refused.value.status == 422
    return str(refused.value.detail)


@pytest.mark.parametrize("name", list(IMAGES))
def test_every_format_is_known_by_its_magic_bytes(name: str) -> None:
    assert image_format(IMAGES[name]) is not None
    assert image_format(IMAGES[name][:24]) is not None  # what 32 base64 characters decode to


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("name", list(IMAGES))
def test_an_image_in_terminal_params_is_refused_in_every_encoding(name: str, encoding: str) -> None:
    detail = _refused(_payment(terminal_params=ENCODINGS[encoding](IMAGES[name])))
    assert detail.startswith("terminal_params looks like an image")


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("name", ["png", "jpeg-jfif", "webp", "heic"])
def test_an_image_is_refused_wherever_it_is(name: str, place: str) -> None:
    body = _payment()
    PLACES[place](body, _b64(IMAGES[name]))
    _refused(body)


def test_the_answer_names_the_place_never_the_value() -> None:
    image = _b64(IMAGES["png"])
    detail = _refused(_payment(metadata=[{"frames": [image]}]))
    assert detail.startswith("metadata[0].frames[0] looks like an image (png)")
    assert image[:8] not in detail


@pytest.mark.parametrize(
    "text",
    [
        "data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg'/>",  # not base64 at all
        "data:image/jpeg;base64,",  # a data: URI of an image type is refused whatever follows
        "lunch for stu_1, photo data:IMAGE/png;base64,AAAA",
        "pos=7&img=" + _b64(IMAGES["png"]),  # the fixed opening of a PNG, inside a longer string
        "frame=" + _b64(IMAGES["jpeg-jfif"]),
        "gif: " + _b64(IMAGES["gif89a"]),
    ],
)
def test_data_uris_and_embedded_openings_are_refused(text: str) -> None:
    _refused(_payment(description=text))


TEMPLATE = (np.random.default_rng(7).standard_normal(128) / np.sqrt(128)).tolist()  # an L2-ish embedding

TEMPLATES: dict[str, dict[str, Any]] = {
    "floats-anywhere": {"metadata": {"face": TEMPLATE}},
    "512-floats": {"metadata": [TEMPLATE * 4]},
    "64-ints (pixels)": {"metadata": {"pixels": list(range(64))}},
    "8x8-matrix": {"metadata": {"patch": [list(range(8)) for _ in range(8)]}},
    "in-json-text-in-terminal_params": {"terminal_params": json.dumps({"feature": TEMPLATE})},
    "credential-short-vector": {"credential": {"face_token": [0.12, 0.5, -0.33]}},
    "credential-one-number-in-a-list": {"credential": {"face_token": "fp12345678", "x": [0.5]}},
    "credential-vector-as-text": {"credential": {"face_token": "0.12,0.5,-0.33,0.91"}},
    "credential-vector-as-json-text": {"credential": {"face_token": "[0.12, 0.5, -3.3e-1]"}},
    "credential-numbers-in-an-object": {"credential": {"face_token": {"dims": 3, "v": "x"}}},
    "credential-is-a-vector": {"credential": [0.1, 0.2, 0.3]},
    "credential-card-no-as-vector": {"method": "card", "credential": {"card_no": [3, 1, 0, 0]}},
    "credential-template-key": {"credential": {"face_token": "fp12345678", "embedding": "abc"}},
    "credential-long-string (raw float32 base64)": {
        "credential": {"face_token": _b64(np.asarray(TEMPLATE, dtype=np.float32).tobytes())}
    },
}


@pytest.mark.parametrize("case", list(TEMPLATES))
def test_templates_are_refused(case: str) -> None:
    assert "template" in _refused(_payment(**TEMPLATES[case]))


# -- what must pass -------------------------------------------------------------------------------


def _random_tokens() -> list[str]:
    """Long random tokens in both base64 alphabets (fixed seeds: the same tokens every run)."""
    tokens = []
    for seed in range(300):
        raw = random.Random(seed).randbytes(64 + seed * 10)
        tokens.append(base64.b64encode(raw).decode())
        tokens.append(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    return tokens


REAL_SDK_VALUES = {
    "liqun-terminal_params": LIQUN_TERMINAL_PARAMS,
    "csdn-terminal_params": CSDN_TERMINAL_PARAMS,
    "zim-meta-info": ZIM_META_INFO,
    "zim-init-client-data": LIQUN_ZIM_INIT_CLIENT_DATA,
    "zim-id": LIQUN_ZIM_ID,
    "terminal-type-only": '{"terminalType":"IOT"}',
}


@pytest.mark.parametrize("name", list(REAL_SDK_VALUES))
def test_a_real_face_sdk_terminal_params_passes(name: str) -> None:
    value = REAL_SDK_VALUES[name]
    reject_biometric_payload(_payment(terminal_params=value))
    reject_biometric_payload(_payment(description=value[:200], metadata={"sdk": value}))


def test_long_random_tokens_pass() -> None:
    for token in _random_tokens():
        reject_biometric_payload(_payment(terminal_params=token, metadata={token: [token]}))


@pytest.mark.parametrize(
    "body",
    [
        _payment(),
        _payment(method="card", credential={"card_no": "4749463800000000", "pin": "123456"}),
        _payment(description="Lunch: rice, soup and 2 buns; metadata: a,b"),
        _payment(description="BM 1234 IIXX MM tray 5"),
        _payment(description="see https://school.example/menu.png"),
        _payment(metadata={"counts": list(range(63)), "ids": ["a"] * 500}),  # 63 numbers: no template
        {"records": [{"terminal_seq": i, "amount": 500, "card_no": "31000001"} for i in range(500)]},
        [1, 2, 3],
        None,
        "",
    ],
)
def test_ordinary_bodies_pass(body: Any) -> None:
    reject_biometric_payload(body)


# -- bounded work ---------------------------------------------------------------------------------


def test_only_a_bounded_prefix_of_each_string_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    real = base64.b64decode

    def spy(data: Any, *args: Any, **kwargs: Any) -> bytes:
        decoded.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(biometrics.base64, "b64decode", spy)
    megabyte = _b64(random.Random(5).randbytes(768 * 1024))
    reject_biometric_payload(_payment(terminal_params=megabyte, metadata=[megabyte, "x" + megabyte]))
    assert decoded and max(decoded) <= 32
    # and an image is still found by its first 32 characters, whatever follows
    _refused(_payment(terminal_params=_b64(IMAGES["webp"])[:32] + "!" * 1_000_000))


def test_no_nesting_depth_exhausts_the_stack() -> None:
    deep: Any = [_b64(IMAGES["png"])]
    for _ in range(20_000):
        deep = [deep]
    _refused({"metadata": deep})
    shallow: Any = "fine"
    for _ in range(20_000):
        shallow = {"x": shallow}
    reject_biometric_payload(shallow)


@pytest.mark.parametrize(
    "body",
    [
        {"description": "data:" + "a" * 60_000},
        {"description": ("data:" + "a" * 60 + ";") * 1000},
        {"description": "data:" + ";x" * 30_000 + ","},
        {"credential": {"face_token": "1" + " " * 60_000 + "x"}},
        {"credential": {"face_token": "1" + " ," * 60 + "x"}},
        {"terminal_params": "[" * 20_000},
    ],
)
def test_inputs_built_to_make_patterns_backtrack_are_judged_in_one_pass(body: dict[str, Any]) -> None:
    # (a quadratic search would run into the test timeout here, not fail an assertion)
    try:
        reject_biometric_payload(_payment(**body))
    except Unprocessable as refused:
        assert refused.code == "biometric_data_not_accepted"
