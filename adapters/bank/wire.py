"""The UnionPay-style bank gateway (全渠道 5.1.0) on the wire: form encoding, the three signing
modes, and response verification through the bank's certificate chain.

Written from /work/shared/PROTOCOLS.md ("UnionPay-style bank gateway") and docs/bank-protocol.md,
and checked against tests/contract/vectors/bank.json -- never against the sandbox's own code.

The rules, in one place:

* **Content** (what is signed): every field except ``signature``; empty values dropped; keys
  sorted by byte order; ``key=value`` joined with ``&`` using the raw, unencoded values.
* **signMethod 01** (certificate): ``digest`` = lowercase hex SHA-256 of the content's UTF-8
  bytes; ``signature`` = base64 of SHA256withRSA (PKCS#1 v1.5) over the UTF-8 bytes of that
  hex digest (two hashes). ``certId`` = the decimal serial number of the signing certificate.
* **signMethod 11**: ``signature`` = hex SHA-256 of ``content + "&" + hexSHA256(secureKey)``.
* **signMethod 12**: the same with SM3.
* **Responses** signed with 01 carry the bank's signing certificate in ``signPubKeyCert``. It is
  trusted only if it chains leaf -> intermediate -> root to the configured trust anchors (each
  signature checked with its issuer's key, issuer and subject names matching, CA basic
  constraints on the issuers), every certificate in the chain is within its validity period,
  and its subject names the bank. Only then is the signature checked with its key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

__all__ = [
    "CERT_FIELD",
    "SIGNATURE_FIELD",
    "SIGN_METHODS",
    "BankSubject",
    "CertificateRejected",
    "InvalidKey",
    "ResponseNotVerified",
    "TrustAnchors",
    "certificate_id",
    "content_string",
    "decode_form",
    "encode_form",
    "hex_digest",
    "load_certificate",
    "load_private_key",
    "sign",
    "sign_01",
    "sign_keyed",
    "verify_chain",
    "verify_fields",
]

SIGNATURE_FIELD = "signature"
CERT_FIELD = "signPubKeyCert"
SIGN_CERT = "01"
SIGN_SHA256 = "11"
SIGN_SM3 = "12"
SIGN_METHODS = frozenset({SIGN_CERT, SIGN_SHA256, SIGN_SM3})
MIN_RSA_BITS = 2048


class InvalidKey(ValueError):
    """A key or certificate from the configuration cannot be used. Never contains key material."""


class CertificateRejected(Exception):
    """The certificate in a response does not chain to the trust anchors, is outside its
    validity period, or does not name the bank."""


class ResponseNotVerified(Exception):
    """A response or notification is unsigned, wrongly signed, signed with an untrusted
    certificate, or malformed. Never a success."""


# --------------------------------------------------------------------------- form encoding


def encode_form(fields: Mapping[str, str]) -> str:
    """``application/x-www-form-urlencoded`` (UTF-8, ``urlencode``: space as ``+``), keys sorted,
    empty values dropped."""
    return urlencode(sorted((k, v) for k, v in fields.items() if v))


def decode_form(body: bytes | str) -> dict[str, str]:
    """Form-decode a body strictly (``parse_qsl``): a pair without ``=`` or a repeated key is an
    error; empty values are dropped, as the receiver must before verifying."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    fields: dict[str, str] = {}
    if not text.strip():
        return fields
    for key, value in parse_qsl(text.strip(), keep_blank_values=True, strict_parsing=True, errors="strict"):
        if key in fields:
            raise ValueError(f"field {key!r} repeated")
        fields[key] = value
    return {k: v for k, v in fields.items() if v}


# --------------------------------------------------------------------------- signing


def content_string(fields: Mapping[str, str]) -> str:
    """Sorted raw ``k=v&…`` of every non-empty field except ``signature``."""
    items = sorted((k, v) for k, v in fields.items() if k != SIGNATURE_FIELD and v is not None and v != "")
    # Python sorts str by code point, which for UTF-8 is the same as byte order.
    return "&".join(f"{k}={v}" for k, v in items)


def hex_digest(data: str, algorithm: str = "sha256") -> str:
    """Lowercase hex SHA-256 (``sha256``) or SM3 (``sm3``) of the UTF-8 bytes of ``data``."""
    raw = data.encode("utf-8")
    if algorithm == "sha256":
        return hashlib.sha256(raw).hexdigest()
    if algorithm == "sm3":
        h = hashes.Hash(hashes.SM3())
        h.update(raw)
        return h.finalize().hex()
    raise ValueError(f"unknown digest {algorithm!r}")


def sign_01(fields: Mapping[str, str], private_key: rsa.RSAPrivateKey) -> str:
    digest = hex_digest(content_string(fields))
    raw = private_key.sign(digest.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def sign_keyed(fields: Mapping[str, str], secure_key: str, sign_method: str) -> str:
    algorithm = {SIGN_SHA256: "sha256", SIGN_SM3: "sm3"}.get(sign_method)
    if algorithm is None:
        raise ValueError(f"signMethod {sign_method!r} is not a keyed digest")
    return hex_digest(content_string(fields) + "&" + hex_digest(secure_key, algorithm), algorithm)


def sign(
    fields: Mapping[str, str],
    *,
    sign_method: str,
    private_key: rsa.RSAPrivateKey | None = None,
    secure_key: str | None = None,
) -> str:
    if sign_method == SIGN_CERT:
        if private_key is None:
            raise ValueError("signMethod 01 needs the private key")
        return sign_01(fields, private_key)
    if sign_method in (SIGN_SHA256, SIGN_SM3):
        if not secure_key:
            raise ValueError(f"signMethod {sign_method} needs the secure key")
        return sign_keyed(fields, secure_key, sign_method)
    raise ValueError(f"unknown signMethod {sign_method!r}")


# --------------------------------------------------------------------------- keys and certificates


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError, UnsupportedAlgorithm):
        raise InvalidKey("the merchant private key is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidKey("the merchant private key must be RSA")
    if key.key_size < MIN_RSA_BITS:
        raise InvalidKey(f"the merchant private key must have at least {MIN_RSA_BITS} bits")
    return key


def load_certificate(pem: str, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.strip().encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise InvalidKey(f"the {what} is not a PEM X.509 certificate") from None


def certificate_id(cert: x509.Certificate) -> str:
    """``certId``: the decimal serial number of the certificate."""
    return str(cert.serial_number)


@dataclass(frozen=True)
class BankSubject:
    """What the bank's signing certificate must name: its subject's CN and (if set) O."""

    common_name: str
    organization: str | None = None


@dataclass(frozen=True)
class TrustAnchors:
    """The bank's root CA and intermediate CA, as configured (never taken from a response)."""

    root: x509.Certificate
    intermediate: x509.Certificate


def _single_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) else None


def _within_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateRejected(f"the {what} certificate is outside its validity period")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
    except x509.ExtensionNotFound:
        return False
    return isinstance(constraints, x509.BasicConstraints) and constraints.ca


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    if cert.issuer != issuer.subject:
        raise CertificateRejected(f"the {what} certificate's issuer does not match its CA's subject")
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise CertificateRejected(f"the {what} certificate's signature does not verify") from None


def verify_chain(
    leaf: x509.Certificate,
    anchors: TrustAnchors,
    subject: BankSubject,
    *,
    now: datetime | None = None,
) -> None:
    """Accept ``leaf`` as the bank's signing certificate, or raise ``CertificateRejected``.

    leaf -> intermediate -> root, where intermediate and root are the configured anchors: each
    signature verified with the issuer's public key, each issuer name equal to its CA's subject,
    both CAs with ``basicConstraints CA=TRUE``, the root self-signed, every certificate within its
    validity period at ``now``, the leaf not a CA, and the leaf's subject CN (and O, if
    configured) exactly the bank's."""
    moment = now if now is not None else datetime.now(UTC)
    root, intermediate = anchors.root, anchors.intermediate
    for cert, what in ((root, "root"), (intermediate, "intermediate")):
        if not _is_ca(cert):
            raise CertificateRejected(f"the {what} certificate is not a CA")
    _issued_by(root, root, "root")
    _issued_by(intermediate, root, "intermediate")
    _issued_by(leaf, intermediate, "bank signing")
    if _is_ca(leaf):
        raise CertificateRejected("the bank signing certificate must not be a CA")
    try:
        usage = leaf.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    except x509.ExtensionNotFound:
        usage = None
    if isinstance(usage, x509.KeyUsage) and not (usage.digital_signature or usage.content_commitment):
        raise CertificateRejected("the bank signing certificate is not for signatures")
    for cert, what in ((root, "root"), (intermediate, "intermediate"), (leaf, "bank signing")):
        _within_validity(cert, moment, what)
    cn = _single_attr(leaf.subject, NameOID.COMMON_NAME)
    if cn != subject.common_name:
        raise CertificateRejected("the bank signing certificate does not name the bank")
    if subject.organization is not None:
        if _single_attr(leaf.subject, NameOID.ORGANIZATION_NAME) != subject.organization:
            raise CertificateRejected("the bank signing certificate does not name the bank")
    if not isinstance(leaf.public_key(), rsa.RSAPublicKey):
        raise CertificateRejected("the bank signing certificate's key is not RSA")


# --------------------------------------------------------------------------- verification


def _verify_01(fields: Mapping[str, str], cert: x509.Certificate) -> None:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ResponseNotVerified("the signing certificate's key is not RSA")
    try:
        raw = base64.b64decode(fields[SIGNATURE_FIELD], validate=True)
    except (binascii.Error, ValueError):
        raise ResponseNotVerified("signature is not base64") from None
    digest = hex_digest(content_string(fields))
    try:
        key.verify(raw, digest.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise ResponseNotVerified("signature does not verify") from None


def verify_fields(
    fields: Mapping[str, str],
    *,
    sign_method: str,
    anchors: TrustAnchors | None = None,
    subject: BankSubject | None = None,
    secure_key: str | None = None,
    now: datetime | None = None,
) -> x509.Certificate | None:
    """Verify a parsed response or notification signed with ``sign_method`` (the method we
    expect; a message that names another one is rejected, never downgraded). Returns the bank's
    certificate for 01. Raises ``ResponseNotVerified``."""
    signature = fields.get(SIGNATURE_FIELD, "")
    if not signature:
        raise ResponseNotVerified("the message is not signed")
    if fields.get("signMethod", "") != sign_method:
        raise ResponseNotVerified("the message is signed with another signMethod")
    if sign_method == SIGN_CERT:
        if anchors is None or subject is None:
            raise ResponseNotVerified("no trust anchors to verify signMethod 01 with")
        pem = fields.get(CERT_FIELD, "")
        if not pem:
            raise ResponseNotVerified("the message carries no signPubKeyCert")
        try:
            cert = x509.load_pem_x509_certificate(pem.strip().encode("ascii"))
        except (ValueError, TypeError, UnicodeEncodeError):
            raise ResponseNotVerified("signPubKeyCert is not a PEM certificate") from None
        try:
            verify_chain(cert, anchors, subject, now=now)
        except CertificateRejected as exc:
            raise ResponseNotVerified(str(exc)) from None
        if fields.get("certId", "") != certificate_id(cert):
            raise ResponseNotVerified("certId is not the serial of signPubKeyCert")
        _verify_01(fields, cert)
        return cert
    if sign_method in (SIGN_SHA256, SIGN_SM3):
        if not secure_key:
            raise ResponseNotVerified("no secure key to verify with")
        expected = sign_keyed(fields, secure_key, sign_method)
        if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
            raise ResponseNotVerified("signature does not verify")
        return None
    raise ResponseNotVerified("unknown signMethod")
