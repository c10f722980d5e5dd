"""Field encryption (AES-GCM envelope encryption) and keyed hashes.

Each encrypted value gets its own random data key (DEK); the DEK is wrapped with the master key
(KEK). Rotating the master key re-wraps DEKs without touching the data. Ciphertexts are bound to
a context string (``aad``) -- e.g. ``provider_settings/<school>/<adapter>`` -- so a database
editor cannot move a secret from one row to another.

Keyed hashes (card numbers, request fingerprints, the audit chain) use keys derived with HKDF
from the master key given at first start (``hash_root``), so they stay stable across rotations.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["DecryptionError", "Keyring"]

_VERSION = "v1"


class DecryptionError(Exception):
    """Ciphertext is malformed, was tampered with, or is bound to another context."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kid(key: bytes) -> str:
    return hashlib.sha256(b"campuspay-kek" + key).hexdigest()[:12]


@dataclass
class Keyring:
    """The master key (and older ones still able to unwrap), plus the root for keyed hashes."""

    current: bytes
    previous: list[bytes] = field(default_factory=list)
    hash_root: bytes | None = None

    def __post_init__(self) -> None:
        for key in [self.current, *self.previous]:
            if len(key) != 32:
                raise ValueError("master keys are 32 bytes")
        if self.hash_root is None:
            self.hash_root = self.current
        self._keks = {_kid(k): k for k in [self.current, *self.previous]}
        self._derived: dict[str, bytes] = {}

    @classmethod
    def from_b64(cls, current: str, previous: list[str] | None = None) -> Keyring:
        """``previous`` oldest first; the oldest key of all roots the keyed hashes."""
        old = [base64.b64decode(p) for p in previous or []]
        return cls(base64.b64decode(current), old, hash_root=old[0] if old else None)

    @staticmethod
    def generate() -> str:
        return base64.b64encode(os.urandom(32)).decode()

    def derive(self, purpose: str) -> bytes:
        if purpose not in self._derived:
            assert self.hash_root is not None
            hkdf = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"campuspay/" + purpose.encode()
            )
            self._derived[purpose] = hkdf.derive(self.hash_root)
        return self._derived[purpose]

    def keyed_hash(self, purpose: str, value: str | bytes) -> str:
        data = value.encode() if isinstance(value, str) else value
        return hmac.new(self.derive(purpose), data, hashlib.sha256).hexdigest()

    def encrypt(self, plaintext: str, aad: str) -> str:
        dek = AESGCM.generate_key(bit_length=256)
        wrap_nonce, data_nonce = os.urandom(12), os.urandom(12)
        wrapped = AESGCM(self.current).encrypt(wrap_nonce, dek, aad.encode())
        ciphertext = AESGCM(dek).encrypt(data_nonce, plaintext.encode(), aad.encode())
        parts = [_VERSION, _kid(self.current), _b64(wrap_nonce + wrapped), _b64(data_nonce + ciphertext)]
        return ".".join(parts)

    def decrypt(self, token: str, aad: str) -> str:
        try:
            version, kid, wrapped_b64, data_b64 = token.split(".")
            if version != _VERSION:
                raise DecryptionError(f"unknown ciphertext version {version!r}")
            kek = self._keks.get(kid)
            if kek is None:
                raise DecryptionError("ciphertext was wrapped with a master key this keyring does not hold")
            wrapped, data = _unb64(wrapped_b64), _unb64(data_b64)
            dek = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], aad.encode())
            return AESGCM(dek).decrypt(data[:12], data[12:], aad.encode()).decode()
        except (ValueError, InvalidTag) as exc:
            raise DecryptionError("ciphertext does not decrypt in this context") from exc

    def rewrap(self, token: str, aad: str) -> str:
        """Re-wrap the data key under the current master key; the data itself is untouched."""
        version, kid, wrapped_b64, data_b64 = token.split(".")
        if kid == _kid(self.current):
            return token
        kek = self._keks.get(kid)
        if kek is None:
            raise DecryptionError("unknown master key")
        wrapped = _unb64(wrapped_b64)
        try:
            dek = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], aad.encode())
        except InvalidTag as exc:
            raise DecryptionError("ciphertext does not decrypt in this context") from exc
        nonce = os.urandom(12)
        rewrapped = AESGCM(self.current).encrypt(nonce, dek, aad.encode())
        return ".".join([version, _kid(self.current), _b64(nonce + rewrapped), data_b64])
