"""Regenerate the sandbox bank's TEST PKI in sandbox/bank/pki/ (docs/bank-protocol.md, "Test PKI").

Run `.venv/bin/python sandbox/bank/make_pki.py`. Every key and certificate is replaced (new keys:
tests/contract/vectors/bank.json must then be recomputed). TEST ONLY: never use these anywhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

PKI_DIR = Path(__file__).resolve().parent / "pki"
BANK_O = "CampusPay Sandbox Bank"
BANK_SIGN_CN = "CampusPay Sandbox Bank Signing"
LONG = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2045, 1, 1, tzinfo=UTC))
EXPIRED = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC))


def name(cn: str, org: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        ]
    )


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issue(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    serial: int,
    validity: tuple[datetime, datetime],
    *,
    ca: bool,
    path_length: int | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def write(stem: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
    (PKI_DIR / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (PKI_DIR / f"{stem}.key.pem").write_bytes(key_pem)


def main() -> None:
    PKI_DIR.mkdir(exist_ok=True)
    root_key, inter_key, other_key = new_key(), new_key(), new_key()
    root_name = name("CampusPay Sandbox Bank Root CA", BANK_O)
    inter_name = name("CampusPay Sandbox Bank Intermediate CA", BANK_O)
    other_name = name("Other Sandbox Root CA", "Other Sandbox Trust")
    bank_name = name(BANK_SIGN_CN, BANK_O)
    root = issue(root_name, root_key, root_name, root_key, 1, LONG, ca=True, path_length=1)
    inter = issue(inter_name, inter_key, root_name, root_key, 2, LONG, ca=True, path_length=0)
    other = issue(other_name, other_key, other_name, other_key, 3, LONG, ca=True, path_length=1)
    write("root-ca", root, root_key)
    write("intermediate-ca", inter, inter_key)
    write("other-root-ca", other, other_key)
    leaves = (
        ("bank-sign", bank_name, inter_name, inter_key, 69042905377, LONG),
        ("bank-sign-expired", bank_name, inter_name, inter_key, 69042905378, EXPIRED),
        (
            "bank-sign-wrong-subject",
            name("CampusPay Sandbox Impostor Signing", "Impostor Payments Ltd"),
            inter_name,
            inter_key,
            69042905379,
            LONG,
        ),
        ("bank-sign-other-root", bank_name, other_name, other_key, 69042905380, LONG),
        (
            "merchant",
            name("CampusPay Sandbox Test Merchant 777290058110001", "CampusPay Test School"),
            inter_name,
            inter_key,
            68759663125,
            LONG,
        ),
    )
    for stem, subject, issuer, issuer_key, serial, validity in leaves:
        key = new_key()
        write(stem, issue(subject, key, issuer, issuer_key, serial, validity, ca=False), key)


if __name__ == "__main__":
    main()
