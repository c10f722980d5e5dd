"""adapters/bank/wire.py: the three signing modes against the committed vectors, and the
certificate chain rules against a PKI this test builds itself (and the sandbox's committed one)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from adapters.bank import wire

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BANK = wire.BankSubject(common_name="Test Bank Signing", organization="Test Bank")


def _name(cn: str, o: str = "Test Bank") -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
    serial: int | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    root_key: rsa.RSAPrivateKey
    root: x509.Certificate
    inter_key: rsa.RSAPrivateKey
    inter: x509.Certificate
    leaf_key: rsa.RSAPrivateKey
    leaf: x509.Certificate

    @property
    def anchors(self) -> wire.TrustAnchors:
        return wire.TrustAnchors(root=self.root, intermediate=self.inter)


_KEYS: list[rsa.RSAPrivateKey] = []


def _keys(n: int) -> list[rsa.RSAPrivateKey]:
    while len(_KEYS) < n:
        _KEYS.append(_key())
    return _KEYS[:n]


def _pki(**leaf_kw: object) -> Pki:
    root_key, inter_key, leaf_key = _keys(3)
    root = _cert(_name("Test Bank Root CA"), root_key, _name("Test Bank Root CA"), root_key, ca=True)
    inter = _cert(_name("Test Bank Intermediate CA"), inter_key, root.subject, root_key, ca=True)
    subject = leaf_kw.pop("subject", _name("Test Bank Signing"))
    assert isinstance(subject, x509.Name)
    leaf = _cert(subject, leaf_key, inter.subject, inter_key, ca=False, **leaf_kw)  # type: ignore[arg-type]
    return Pki(root_key, root, inter_key, inter, leaf_key, leaf)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _signed_01(pki: Pki, cert: x509.Certificate | None = None) -> dict[str, str]:
    fields = {
        "version": "5.1.0",
        "encoding": "UTF-8",
        "signMethod": "01",
        "respCode": "00",
        "respMsg": "成功",
        "orderId": "ref0001",
        "txnAmt": "1000",
        "signPubKeyCert": _pem(cert or pki.leaf),
        "certId": str((cert or pki.leaf).serial_number),
    }
    fields["signature"] = wire.sign_01(fields, pki.leaf_key)
    return fields


# ----------------------------------------------------------------- signing rules from PROTOCOLS.md


def test_content_string_sorts_drops_empty_and_signature() -> None:
    fields = {"b": "2", "a": "1", "signature": "x", "empty": "", "c": "x=y&z"}
    assert wire.content_string(fields) == "a=1&b=2&c=x=y&z"


def test_mode_01_is_rsa_over_the_hex_digest() -> None:
    key = _keys(1)[0]
    fields = {"merId": "777", "txnAmt": "100", "signMethod": "01"}
    signature = wire.sign_01(fields, key)
    hex_digest = hashlib.sha256(b"merId=777&signMethod=01&txnAmt=100").hexdigest()
    key.public_key().verify(
        base64.b64decode(signature), hex_digest.encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_mode_11_and_12_are_keyed_digests() -> None:
    fields = {"merId": "777", "txnAmt": "100"}
    content = "merId=777&txnAmt=100"
    key_hex = hashlib.sha256(b"secret").hexdigest()
    assert (
        wire.sign_keyed(fields, "secret", "11") == hashlib.sha256(f"{content}&{key_hex}".encode()).hexdigest()
    )
    h = hashes.Hash(hashes.SM3())
    h.update(b"secret")
    sm3_key = h.finalize().hex()
    h = hashes.Hash(hashes.SM3())
    h.update(f"{content}&{sm3_key}".encode())
    assert wire.sign_keyed(fields, "secret", "12") == h.finalize().hex()
    # SM3 of "abc" (GB/T 32905-2016 example 1)
    assert wire.hex_digest("abc", "sm3") == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"


def test_keyed_verification_rejects_a_changed_field_and_another_method() -> None:
    fields = {"signMethod": "11", "respCode": "00", "orderId": "o1"}
    fields["signature"] = wire.sign_keyed(fields, "k", "11")
    wire.verify_fields(fields, sign_method="11", secure_key="k")
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields({**fields, "respCode": "01"}, sign_method="11", secure_key="k")
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(fields, sign_method="11", secure_key="other")
    with pytest.raises(wire.ResponseNotVerified):  # never downgraded to what the message says
        wire.verify_fields(fields, sign_method="12", secure_key="k")
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(
            {k: v for k, v in fields.items() if k != "signature"}, sign_method="11", secure_key="k"
        )


def test_form_round_trip_drops_empty_values() -> None:
    fields = {"a": "x y+z&=", "b": "", "c": "中文", "signPubKeyCert": "-----BEGIN\nab+/=\n-----END"}
    encoded = wire.encode_form(fields)
    assert "b=" not in encoded.split("&")
    assert wire.decode_form(encoded.encode()) == {k: v for k, v in fields.items() if v}
    with pytest.raises(ValueError):
        wire.decode_form(b"a=1&a=2")


# ----------------------------------------------------------------- chain verification, own PKI


def test_a_good_chain_and_signature_verify() -> None:
    pki = _pki()
    fields = _signed_01(pki)
    cert = wire.verify_fields(fields, sign_method="01", anchors=pki.anchors, subject=BANK, now=NOW)
    assert cert is not None and cert.serial_number == pki.leaf.serial_number


def test_a_tampered_field_or_signature_is_rejected() -> None:
    pki = _pki()
    fields = _signed_01(pki)
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(
            {**fields, "txnAmt": "1001"}, sign_method="01", anchors=pki.anchors, subject=BANK, now=NOW
        )
    sig = bytearray(base64.b64decode(fields["signature"]))
    sig[5] ^= 1
    bad = {**fields, "signature": base64.b64encode(bytes(sig)).decode()}
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(bad, sign_method="01", anchors=pki.anchors, subject=BANK, now=NOW)
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(
            {**fields, "signature": "not base64!"},
            sign_method="01",
            anchors=pki.anchors,
            subject=BANK,
            now=NOW,
        )


def test_a_certificate_that_does_not_chain_is_rejected() -> None:
    pki = _pki()
    # same names, but signed by a stranger's key: names match, the signature does not
    stranger = _key()
    forged = _cert(pki.leaf.subject, pki.leaf_key, pki.inter.subject, stranger, ca=False)
    with pytest.raises(wire.CertificateRejected, match="signature"):
        wire.verify_chain(forged, pki.anchors, BANK, now=NOW)
    # self-signed leaf naming the bank
    self_signed = _cert(pki.leaf.subject, pki.leaf_key, pki.leaf.subject, pki.leaf_key, ca=False)
    with pytest.raises(wire.CertificateRejected):
        wire.verify_chain(self_signed, pki.anchors, BANK, now=NOW)
    # issued directly by the root, skipping the intermediate
    by_root = _cert(pki.leaf.subject, pki.leaf_key, pki.root.subject, pki.root_key, ca=False)
    with pytest.raises(wire.CertificateRejected):
        wire.verify_chain(by_root, pki.anchors, BANK, now=NOW)
    # signed with a forged cert, the whole message is unverified
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(
            _signed_01(pki, forged), sign_method="01", anchors=pki.anchors, subject=BANK, now=NOW
        )


def test_a_wrong_root_is_rejected() -> None:
    pki = _pki()
    other_root_key = _key()
    other_root = _cert(pki.root.subject, other_root_key, pki.root.subject, other_root_key, ca=True)
    anchors = wire.TrustAnchors(root=other_root, intermediate=pki.inter)
    with pytest.raises(wire.CertificateRejected):
        wire.verify_chain(pki.leaf, anchors, BANK, now=NOW)
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(_signed_01(pki), sign_method="01", anchors=anchors, subject=BANK, now=NOW)


def test_an_intermediate_without_ca_constraints_is_rejected() -> None:
    pki = _pki()
    not_ca = _cert(pki.inter.subject, pki.inter_key, pki.root.subject, pki.root_key, ca=False)
    with pytest.raises(wire.CertificateRejected, match="not a CA"):
        wire.verify_chain(pki.leaf, wire.TrustAnchors(root=pki.root, intermediate=not_ca), BANK, now=NOW)


def test_an_expired_or_not_yet_valid_certificate_is_rejected() -> None:
    expired = _pki(not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(seconds=1))
    with pytest.raises(wire.CertificateRejected, match="validity"):
        wire.verify_chain(expired.leaf, expired.anchors, BANK, now=NOW)
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(
            _signed_01(expired), sign_method="01", anchors=expired.anchors, subject=BANK, now=NOW
        )
    future = _pki(not_before=NOW + timedelta(seconds=1))
    with pytest.raises(wire.CertificateRejected, match="validity"):
        wire.verify_chain(future.leaf, future.anchors, BANK, now=NOW)


def test_a_wrong_subject_is_rejected() -> None:
    wrong_cn = _pki(subject=_name("Evil Signing"))
    with pytest.raises(wire.CertificateRejected, match="name the bank"):
        wire.verify_chain(wrong_cn.leaf, wrong_cn.anchors, BANK, now=NOW)
    wrong_o = _pki(subject=_name("Test Bank Signing", o="Evil Corp"))
    with pytest.raises(wire.CertificateRejected, match="name the bank"):
        wire.verify_chain(wrong_o.leaf, wrong_o.anchors, BANK, now=NOW)
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(
            _signed_01(wrong_cn), sign_method="01", anchors=wrong_cn.anchors, subject=BANK, now=NOW
        )


def test_a_ca_certificate_cannot_sign_as_the_bank() -> None:
    pki = _pki()
    ca_leaf = _cert(pki.leaf.subject, pki.leaf_key, pki.inter.subject, pki.inter_key, ca=True)
    with pytest.raises(wire.CertificateRejected):
        wire.verify_chain(ca_leaf, pki.anchors, BANK, now=NOW)


def test_an_unsigned_or_certless_message_is_rejected() -> None:
    pki = _pki()
    fields = _signed_01(pki)
    for missing in ("signature", "signPubKeyCert"):
        with pytest.raises(wire.ResponseNotVerified):
            wire.verify_fields(
                {k: v for k, v in fields.items() if k != missing},
                sign_method="01",
                anchors=pki.anchors,
                subject=BANK,
                now=NOW,
            )
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(
            {**fields, "signPubKeyCert": "garbage"},
            sign_method="01",
            anchors=pki.anchors,
            subject=BANK,
            now=NOW,
        )


# ----------------------------------------------------------------- the committed vectors

VECTORS = json.loads((ROOT / "tests/contract/vectors/bank.json").read_text(encoding="utf-8"))
PKI_DIR = ROOT / VECTORS["pki"]["dir"]
SANDBOX_BANK = wire.BankSubject(
    common_name=VECTORS["pki"]["bank_subject"]["CN"], organization=VECTORS["pki"]["bank_subject"]["O"]
)


def _pki_cert(name: str) -> x509.Certificate:
    return wire.load_certificate((PKI_DIR / VECTORS["pki"][name]).read_text(encoding="utf-8"))


def _sandbox_anchors(root: str = "root") -> wire.TrustAnchors:
    return wire.TrustAnchors(root=_pki_cert(root), intermediate=_pki_cert("intermediate"))


@pytest.mark.parametrize("mode", ["sign_method_01", "sign_method_11", "sign_method_12"])
@pytest.mark.parametrize("part", ["request", "response"])
def test_vectors_content_signature_and_form_body(mode: str, part: str) -> None:
    vector = VECTORS[mode][part]
    fields: dict[str, str] = vector["fields"]
    assert wire.content_string(fields) == vector["content"]
    signed = {**fields, "signature": vector["signature"]}
    assert wire.encode_form(signed) == vector["form_body"]
    assert wire.decode_form(vector["form_body"].encode()) == signed
    method = fields["signMethod"]
    if method == "01":
        assert wire.hex_digest(vector["content"]) == vector["digest_sha256_hex"]
        if part == "request":
            key = wire.load_private_key(VECTORS["merchant_private_key_pem"])
            # PKCS#1 v1.5 is deterministic: the same key and digest give the same bytes
            assert wire.sign_01(fields, key) == vector["signature"]
            cert = wire.load_certificate(VECTORS["merchant_cert_pem"])
            assert wire.certificate_id(cert) == fields["certId"] == str(VECTORS["merchant_cert_id"])
        else:
            cert = wire.verify_fields(
                signed, sign_method="01", anchors=_sandbox_anchors(), subject=SANDBOX_BANK
            )
            assert cert is not None and wire.certificate_id(cert) == str(VECTORS["bank_cert_id"])
    else:
        algorithm = "sha256" if method == "11" else "sm3"
        assert wire.hex_digest(vector["secure_key"], algorithm) == vector["secure_key_digest_hex"]
        assert wire.sign_keyed(fields, vector["secure_key"], method) == vector["signature"]
        wire.verify_fields(signed, sign_method=method, secure_key=vector["secure_key"])


def test_vector_response_rejected_when_altered_or_wrongly_anchored() -> None:
    vector = VECTORS["sign_method_01"]["response"]
    signed = {**vector["fields"], "signature": vector["signature"]}
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(
            {**signed, "txnAmt": "1251"}, sign_method="01", anchors=_sandbox_anchors(), subject=SANDBOX_BANK
        )
    with pytest.raises(wire.ResponseNotVerified):  # a different certId than the cert's serial
        wire.verify_fields(
            {**signed, "certId": "1"}, sign_method="01", anchors=_sandbox_anchors(), subject=SANDBOX_BANK
        )
    with pytest.raises(wire.ResponseNotVerified):  # trusting only another root
        wire.verify_fields(
            signed, sign_method="01", anchors=_sandbox_anchors("other_root"), subject=SANDBOX_BANK
        )
    with pytest.raises(wire.ResponseNotVerified):  # expecting another bank
        wire.verify_fields(signed, sign_method="01", anchors=_sandbox_anchors(), subject=BANK)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bank_sign_expired", "validity"),
        ("bank_sign_wrong_subject", "name the bank"),
        ("bank_sign_other_root", "issuer"),
    ],
)
def test_committed_bad_certificates_are_rejected(name: str, reason: str) -> None:
    with pytest.raises(wire.CertificateRejected, match=reason):
        wire.verify_chain(_pki_cert(name), _sandbox_anchors(), SANDBOX_BANK)
    # and a response they sign (with their own committed keys) is never verified
    key = wire.load_private_key((PKI_DIR / VECTORS["pki"][name].replace(".pem", ".key.pem")).read_text())
    cert = _pki_cert(name)
    fields = {
        **VECTORS["sign_method_01"]["response"]["fields"],
        "signPubKeyCert": _pem(cert),
        "certId": str(cert.serial_number),
    }
    fields["signature"] = wire.sign_01(fields, key)
    with pytest.raises(wire.ResponseNotVerified):
        wire.verify_fields(fields, sign_method="01", anchors=_sandbox_anchors(), subject=SANDBOX_BANK)


def test_committed_bank_certificate_chains() -> None:
    wire.verify_chain(_pki_cert("bank_sign"), _sandbox_anchors(), SANDBOX_BANK)
    assert wire.certificate_id(_pki_cert("bank_sign")) == str(VECTORS["bank_cert_id"])
