"""COMPLIANCE rule 11: the gateway never accepts face images or templates.

Checked on the parsed body before validation, logging or storage, so a terminal that sends
an image gets ``biometric_data_not_accepted`` and the image goes nowhere.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import Unprocessable

__all__ = ["reject_biometric_payload"]

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
_MAX_TOKEN = 128


def _looks_biometric(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) > _MAX_TOKEN or value.startswith(("data:image", "/9j/", "iVBOR"))
    if isinstance(value, list):
        return len(value) >= 16  # a vector, or a list of images
    return isinstance(value, dict)


def reject_biometric_payload(body: Any) -> None:
    if not isinstance(body, dict):
        return
    credential = body.get("credential")
    if not isinstance(credential, dict):
        return
    for key, value in credential.items():
        if key.lower() in _SUSPECT_KEYS or (key != "card_no" and key != "pin" and _looks_biometric(value)):
            raise Unprocessable(
                "biometric_data_not_accepted",
                "send the provider face token from the terminal's face SDK, never image or "
                "template data; this request was not stored",
            )
