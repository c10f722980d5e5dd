"""COMPLIANCE rule 11: the gateway never accepts, stores or forwards face images or templates.

One function, ``reject_biometric_payload``, judges a device request's whole parsed JSON body
(every string, key and array at any depth: ``credential``, ``terminal_params``,
``description``, offline records, whatever is there). It runs once for every device request,
right after the signature check and before validation, logging, storage or any call out
(gateway.api.deps.authenticate_device), so a terminal that sends an image gets
``biometric_data_not_accepted`` and the image goes nowhere.

What counts as biometric data (decision 0019, "Biometric detection", says why):

- **An image, anywhere.** A string whose start is base64 (standard or URL-safe alphabet) of a
  JPEG, PNG, GIF, BMP, WebP, TIFF, JPEG 2000, JPEG XL or ISO-media (HEIF, AVIF) file, judged by
  the file's magic bytes after decoding the first 32 characters only; a ``data:`` URI of an
  ``image/`` type or whose base64 content is such a file, wherever it sits in the string; the
  long fixed base64 openings of PNG, JPEG/JFIF and GIF files inside a longer string; and all of
  this inside JSON carried in a string (``terminal_params`` is JSON text for Alipay's SDK).
- **A template, anywhere.** An array of 64 or more numbers (face embeddings are 128 to 512
  floats), counted with the numbers of the arrays directly inside it (a matrix of pixels).
- **In the credential**, which only ever holds short tokens: a key named like image or template
  data, any number inside an array or object, a string of numbers (``"0.12,0.5,…"``), and any
  string longer than a face token (128 characters: base64 of a raw template has no magic).

Everything else passes, in particular an SDK's opaque signed ``terminal_params`` (JSON or base64
of a signed envelope, which decodes to no image signature) and long random tokens.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from gateway.errors import Unprocessable

__all__ = ["image_format", "reject_biometric_payload"]

_SUSPECT_KEYS = frozenset(
    {
        "image",
        "images",
        "photo",
        "picture",
        "face_image",
        "image_base64",
        "imagedata",
        "image_data",
        "img",
        "vector",
        "embedding",
        "embeddings",
        "template",
        "feature",
        "features",
        "face_feature",
        "biometric",
    }
)
_NOT_TOKENS = frozenset({"card_no", "pin"})  # digits by their own rules; never image data
_MAX_TOKEN = 128  # the longest face token (gateway.api.schemas.FaceCredentialIn)
_TEMPLATE_MIN = 64  # numbers in one array; face embeddings are 128-512
_PREFIX_CHARS = 32  # base64 characters decoded per string: 24 bytes, the longest signature is 12
_EMBEDDED_JSON_DEPTH = 2  # JSON in a string in JSON in a string; deeper is not followed
_URLSAFE = str.maketrans("-_", "+/")

# Openings of image files as base64 text that cannot occur by chance (11+ fixed characters, or
# 8 for GIF): found anywhere in a string, e.g. after "img=" in a form-encoded blob.
_EMBEDDED_SIGNATURES = (
    ("png", "iVBORw0KGgo"),
    ("jpeg", "/9j/4AAQSkZJRg"),
    ("gif", "R0lGODlh"),
    ("gif", "R0lGODdh"),
)
# data:[<media type>][;param=value]...[;base64],<data> (RFC 2397), not the tail of "metadata:".
# Only the scheme is found by pattern; the header up to its comma is read by hand (bounded), so
# no string makes the search backtrack.
_DATA_SCHEME = re.compile(r"(?<![a-z0-9])data:", re.IGNORECASE)
_MAX_DATA_HEADER = 256
# three or more numbers separated by commas, semicolons or spaces, maybe in brackets (applied to
# strings of at most _MAX_TOKEN characters; each separator has one way to match)
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_NUMBER_LIST = re.compile(rf"\s*\[?\s*{_NUMBER}(?:(?:\s*[,;]\s*|\s+){_NUMBER}){{2,}}\s*\]?\s*")
# ISO base media files (HEIF/HEIC, AVIF; also MP4/MOV, i.e. video) start with an ``ftyp`` box.
_JPEG2000 = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_JPEG_XL = b"\x00\x00\x00\x0cJXL \r\n\x87\n"


def image_format(data: bytes) -> str | None:
    """The image format whose magic bytes ``data`` starts with, if any."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        return "heif/avif (iso media)"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if data.startswith((_JPEG2000, b"\xff\x4f\xff\x51")):
        return "jpeg2000"
    # JPEG XL by its container box only: its bare codestream opens with two bytes (FF 0A), which
    # one random token in 65,536 would start with
    if data.startswith(_JPEG_XL):
        return "jpeg-xl"
    # "BM" alone is two letters of text; a BMP header also has four reserved zero bytes at 6..9
    if data[:2] == b"BM" and data[6:10] == b"\x00\x00\x00\x00":
        return "bmp"
    return None


def _decoded_prefix(text: str) -> bytes:
    """The bytes the start of ``text`` encodes, if it is base64; else b"". Only a bounded prefix
    is decoded, so a megabyte string costs the same as a short one."""
    head = "".join(text[: _PREFIX_CHARS * 2].split())[:_PREFIX_CHARS].translate(_URLSAFE)
    head = head[: len(head) - len(head) % 4]
    if len(head) < 4:
        return b""
    try:
        return base64.b64decode(head, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _image_in_text(text: str) -> str | None:
    """What image ``text`` carries (its format), if any."""
    found = image_format(_decoded_prefix(text))
    if found:
        return found
    if ":" in text:
        for match in _DATA_SCHEME.finditer(text):
            comma = text.find(",", match.end(), match.end() + _MAX_DATA_HEADER)
            if comma < 0:
                continue
            header = text[match.end() : comma].lower()
            if header.startswith("image/"):
                return header.split(";", 1)[0]
            if header.endswith(";base64"):
                found = image_format(_decoded_prefix(text[comma + 1 :]))
                if found:
                    return found
    for name, signature in _EMBEDDED_SIGNATURES:
        if signature in text:
            return name
    return None


def _embedded_json(text: str) -> Any:
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers_in(array: list[Any]) -> int:
    """Numbers in the array and in the arrays directly inside it (rows of a matrix)."""
    count = 0
    for item in array:
        if _is_number(item):
            count += 1
        elif isinstance(item, list):
            count += sum(1 for x in item if _is_number(x))
    return count


def _holds_a_number(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if _is_number(item):
            return True
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


# A place in the body as a linked list, (parent, key), so going one level deeper costs the same
# at any depth; spelled out ("records[3].store_id") only for the answer.
_Path = tuple[Any, str | int] | None


def _where(path: _Path) -> str:
    parts: list[str | int] = []
    while path is not None:
        path, part = path
        parts.append(part)
    out = ""
    for part in reversed(parts):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "body"


def _refuse(path: _Path, what: str) -> Unprocessable:
    # Names the place and the kind, never the value (it is the very data that must go nowhere).
    return Unprocessable(
        "biometric_data_not_accepted",
        f"{_where(path)} looks like {what}: send the provider face token from the terminal's face "
        "SDK, never image or template data; this request was not stored",
    )


def _not_a_token(value: Any, *, digits: bool = False) -> str | None:
    """Why a credential value is template or image data rather than a token, if it is
    (``digits``: a card number or PIN, whose own rules judge its string)."""
    if isinstance(value, list | dict) and _holds_a_number(value):
        return "a face template (numbers in a credential)"
    if isinstance(value, str) and not digits:
        if len(value) > _MAX_TOKEN:
            return f"image or template data (over {_MAX_TOKEN} characters; a face token is shorter)"
        if _NUMBER_LIST.fullmatch(value):
            return "a face template (a list of numbers)"
    return None


def _credential_problem(credential: Any) -> tuple[_Path, str] | None:
    here: _Path = (None, "credential")
    if not isinstance(credential, dict):
        found = _not_a_token(credential)
        return None if found is None else (here, found)
    for key, value in credential.items():
        if key.lower() in _SUSPECT_KEYS:
            return (here, key), "image or template data (by its name)"
        found = _not_a_token(value, digits=key in _NOT_TOKENS)
        if found is not None:
            return (here, key), found
    return None


def reject_biometric_payload(body: Any) -> None:
    """Raise 422 ``biometric_data_not_accepted`` if the parsed JSON ``body`` carries a face
    image or template anywhere; return quietly otherwise."""
    if isinstance(body, dict) and "credential" in body:
        problem = _credential_problem(body["credential"])
        if problem is not None:
            raise _refuse(*problem)
    # Iterative, so no nesting depth can exhaust the stack; every node is visited once.
    stack: list[tuple[Any, _Path, int]] = [(body, None, 0)]
    while stack:
        value, path, embedded = stack.pop()
        if isinstance(value, str):
            if len(value) < 4:
                continue
            found = _image_in_text(value)
            if found:
                raise _refuse(path, f"an image ({found})")
            if embedded < _EMBEDDED_JSON_DEPTH:
                inner = _embedded_json(value)
                if isinstance(inner, dict | list):
                    stack.append((inner, path, embedded + 1))
        elif isinstance(value, dict):
            for key, item in value.items():
                stack.append((key, path, embedded))
                stack.append((item, (path, key), embedded))
        elif isinstance(value, list):
            if _numbers_in(value) >= _TEMPLATE_MIN:
                raise _refuse(path, f"a face template (an array of {_TEMPLATE_MIN} or more numbers)")
            stack.extend((item, (path, index), embedded) for index, item in enumerate(value))
