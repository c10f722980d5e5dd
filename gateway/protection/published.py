"""Credentials, keys and certificates this repository publishes for its sandbox, by fingerprint.

Anything signed with a published key, or by a published secret, could have been made by anyone,
so production refuses them wherever a credential is configured: provider settings (e-card
secret, bank secure keys and PKI, Alipay keys) and device keys (the signing test vectors).

The gateway keeps fingerprints only and imports nothing from the sandbox, which stays an
independent implementation. tests/unit/gateway/test_published.py derives the fingerprints again
from sandbox/, tests/contract/vectors/ and docs/ and fails when this list and they differ.

Two kinds of fingerprint:

- ``spki-sha256:<hex>``: SHA-256 of the DER SubjectPublicKeyInfo of a key or certificate's
  public key, so a private key, its public key and its certificates all match one entry, in any
  encoding the adapters accept (PEM, PKCS#1 or PKCS#8, or a bare base64 DER body);
- ``sha256:<hex>``: SHA-256 of a secret string (surrounding white space removed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from gateway.errors import Unprocessable
from gateway.settings import Environment

__all__ = ["PUBLISHED", "fingerprints", "published_in", "refuse_published"]

PUBLISHED: dict[str, str] = {
    # secrets (sandbox/testvalues.py, docs/test-values.md, tests/contract/vectors/)
    "sha256:6a32b7aa687b7919840dae15d672e573dcaf202e57374ecef9695e85fee434ec": "sandbox e-card secret",
    "sha256:9b5c8979e769dd8072fd93b60a95bb775f8a29f33eb4585e41a8265b29e73ec5": "sandbox bank key (11)",
    "sha256:2c4d02493bc601cfa6e07f6fd4db431e1ef0de2d53d612d3b5d043218206322d": "sandbox bank key (12)",
    "sha256:c9e40a6e5306e7ba8c6af38ff50410728ee79c4115a62b42d63e5662308e99d0": "signing vector HMAC",
    # the sandbox Alipay (sandbox/alipay/keys.py)
    "spki-sha256:3e768d29383d8bfc259786a5c0a99b9d96f988de3449ce04b3b4a6024ff090fb": "sandbox Alipay key",
    "spki-sha256:3571717ef57f99176b6aee5005b14e4870c2675cfee06bf1d805d3551811e173": "sandbox Alipay app",
    # Alipay test vectors (tests/contract/vectors/alipay.json)
    "spki-sha256:b8dfc4016b0728a42f7a04ffb0d687ca2ad1b0c32b60a1016d336b8f78bff929": "Alipay vector app",
    "spki-sha256:c24928267bcfb629e9d8953134fcd820975ea9c59ccf2aa034baf142d41dd2df": "Alipay vector key",
    # the sandbox bank's test PKI (sandbox/bank/pki/)
    "spki-sha256:d1194f2e0023e1d1cc651e3bfaf616ea14d6471f08cd549632050ad5c014d047": "sandbox bank root CA",
    "spki-sha256:6db5110eb2d31bdda1c7ac4c93e5b4837994062f516258e03986fa77a5036a25": "sandbox bank sub CA",
    "spki-sha256:b679f60b18743ac86385e4088d5fcdb68a1692707bc5fb40bd8f2c5d137c1568": "sandbox bank signer",
    "spki-sha256:d77a626eb85f1167b27708387d46701c44b227adfc36bce77f05cb36e7f49582": "sandbox bank expired",
    "spki-sha256:a29a8a04f0df001242a7bcbe4a59180b622ee6219db291ad5c4cfec4a9012429": "sandbox bank subject",
    "spki-sha256:451a2a594cfc34f233cbe55bff750e25e2bc1e9ab86f6b2f89f3a8ba9c78c442": "sandbox other root",
    "spki-sha256:b9266494ef4d14f9e901e91364bd338c1975c0d22cf96cb5356bd1a6b67e339c": "sandbox other signer",
    "spki-sha256:97a1b3fe7165a519b2db8e2994dfe36ef5a6c96df2077ea453774a2cd34a7ce6": "sandbox bank merchant",
    # device signing test vectors (tests/contract/vectors/signing.json, docs/signing.md)
    "spki-sha256:22f2e61c75085f6aaa7f5af07c2bee8574a0b22b96db14b9aec9c8353b6389c7": "signing vector key",
}

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


def _public_key(der: bytes) -> PublicKeyTypes | None:
    try:
        return x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        pass
    try:
        return serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        pass
    try:
        return serialization.load_der_private_key(der, password=None).public_key()
    except (ValueError, TypeError):
        return None


def _spki(der: bytes) -> str | None:
    public = _public_key(der)
    if public is None:
        return None
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "spki-sha256:" + hashlib.sha256(spki).hexdigest()


def _der_bodies(value: str) -> list[bytes]:
    blocks = [m.group(2) for m in _PEM.finditer(value)]
    if not blocks and len(value) >= 64 and _BASE64.fullmatch(value):
        blocks = [value]  # a bare base64 body, as the Alipay adapter accepts keys
    bodies = []
    for block in blocks:
        try:
            bodies.append(base64.b64decode("".join(block.split()), validate=True))
        except (binascii.Error, ValueError):
            continue
    return bodies


def fingerprints(value: str) -> set[str]:
    """Every fingerprint ``value`` carries: its own, and one per key or certificate in it."""
    found = {"sha256:" + hashlib.sha256(value.strip().encode()).hexdigest()}
    for der in _der_bodies(value):
        spki = _spki(der)
        if spki is not None:
            found.add(spki)
    return found


def published_in(values: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(field, what it is)`` for each value that holds published material."""
    hits = []
    for field, value in sorted(values.items()):
        for fp in sorted(fingerprints(value)):
            if fp in PUBLISHED:
                hits.append((field, PUBLISHED[fp]))
                break
    return hits


def refuse_published(env: Environment, values: dict[str, str], what: str) -> None:
    """Production refuses any value holding a credential this repository publishes."""
    if env is not Environment.PRODUCTION:
        return
    hits = published_in(values)
    if hits:
        field, name = hits[0]
        raise Unprocessable(
            "sandbox_credential_in_production",
            f"{what}.{field} is the {name}, published in the CampusPay repository: anyone can sign with it",
        )
