"""The bank's wire format and signatures (docs/bank-protocol.md, "Transport" and "Signing")."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

PKI_DIR = Path(__file__).resolve().parent / "pki"
FORM_TYPE = "application/x-www-form-urlencoded; charset=UTF-8"
SIGN_METHODS = ("01", "11", "12")


class MalformedForm(ValueError):
    """A body that is not a well-formed form (bad UTF-8, a duplicate key)."""


def parse_form(body: bytes) -> dict[str, str]:
    """The fields of a form body, empty values dropped; a duplicate key is malformed."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedForm(str(exc)) from exc
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise MalformedForm(f"duplicate key {key!r}")
        if value != "":
            fields[key] = value
    return fields


def encode_form(fields: dict[str, str]) -> bytes:
    return urlencode(sorted((k, v) for k, v in fields.items() if v != "")).encode("ascii")


def sign_content(fields: dict[str, str]) -> str:
    """Sorted raw `k=v&…` of every non-empty field except `signature`."""
    return "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "signature" and v != "")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sm3_hex(data: bytes) -> str:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize().hex()


def keyed_signature(sign_method: str, content: str, secure_key: str) -> str:
    """signMethod 11 (SHA-256) or 12 (SM3): hex H(content + "&" + hexH(secureKey))."""
    h = sha256_hex if sign_method == "11" else sm3_hex
    return h((content + "&" + h(secure_key.encode("utf-8"))).encode("utf-8"))


def rsa_signature(key: rsa.RSAPrivateKey, content: str) -> str:
    """signMethod 01: base64 SHA256withRSA over the UTF-8 hex SHA-256 of the content."""
    digest = sha256_hex(content.encode("utf-8")).encode("utf-8")
    return base64.b64encode(key.sign(digest, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def rsa_verifies(cert: x509.Certificate, content: str, signature: str) -> bool:
    public_key = cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        digest = sha256_hex(content.encode("utf-8")).encode("utf-8")
        public_key.verify(raw, digest, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def keyed_verifies(sign_method: str, content: str, secure_key: str, signature: str) -> bool:
    return hmac.compare_digest(keyed_signature(sign_method, content, secure_key), signature)


def corrupt(signature: str) -> str:
    """The same signature with its first character changed: well-formed, never verifies."""
    if not signature:
        return "AAAA"
    alphabet = "0123456789abcdef" if all(c in "0123456789abcdef" for c in signature) else "AB"
    first = alphabet[0] if signature[0] != alphabet[0] else alphabet[1]
    return first + signature[1:]


# --- the committed test PKI (sandbox/bank/pki) --------------------------------------------------


@cache
def pki_text(name: str) -> str:
    return (PKI_DIR / name).read_text(encoding="ascii")


@cache
def pki_cert(stem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki_text(f"{stem}.pem").encode("ascii"))


@cache
def pki_key(stem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pki_text(f"{stem}.key.pem").encode("ascii"), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def load_cert(pem: str) -> x509.Certificate:
    """A PEM certificate with an RSA key, or ValueError."""
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise ValueError("the certificate's key is not RSA")
    return cert
