"""Face templates at rest: AES-256-GCM under a key that lives only in the sandbox process.

A template is sealed the moment it is computed and opened only to be matched; the associated
data binds each ciphertext to its face group and user, so a sealed template copied onto another
user does not open. The key is random per face cloud (the sandbox keeps all state in memory, so
nothing sealed outlives it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandbox.face.encoder import Embedding

__all__ = ["SealedTemplate", "TemplateVault"]

NONCE_BYTES = 12


@dataclass(frozen=True)
class SealedTemplate:
    nonce: bytes
    ciphertext: bytes  # AES-GCM over the float32 little-endian bytes, 16-byte tag appended


class TemplateVault:
    def __init__(self, key: bytes | None = None) -> None:
        self._aead = AESGCM(key if key is not None else AESGCM.generate_key(bit_length=256))

    @staticmethod
    def _context(school: str, user_id: str) -> bytes:
        return f"campuspay-sandbox-face-template\x00{school}\x00{user_id}".encode()

    def seal(self, template: Embedding, *, school: str, user_id: str) -> SealedTemplate:
        nonce = os.urandom(NONCE_BYTES)
        plain = np.asarray(template, dtype="<f4").tobytes()
        return SealedTemplate(nonce, self._aead.encrypt(nonce, plain, self._context(school, user_id)))

    def open(self, sealed: SealedTemplate, *, school: str, user_id: str) -> Embedding:
        """The template; raises cryptography's InvalidTag if it was altered or moved."""
        plain = self._aead.decrypt(sealed.nonce, sealed.ciphertext, self._context(school, user_id))
        template: Embedding = np.frombuffer(plain, dtype="<f4").astype(np.float32)
        return template
