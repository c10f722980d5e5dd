import pytest

from gateway.protection.crypto import DecryptionError, Keyring

pytestmark = pytest.mark.unit


def test_round_trip_and_context_binding() -> None:
    ring = Keyring.from_b64(Keyring.generate())
    token = ring.encrypt("s3cret", aad="provider_settings/sch_1/ecard")
    assert "s3cret" not in token
    assert ring.decrypt(token, aad="provider_settings/sch_1/ecard") == "s3cret"
    with pytest.raises(DecryptionError):
        ring.decrypt(token, aad="provider_settings/sch_2/ecard")  # moved to another row
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(DecryptionError):
        ring.decrypt(tampered, aad="provider_settings/sch_1/ecard")


def test_rotation_rewraps_without_changing_hashes() -> None:
    old = Keyring.generate()
    first = Keyring.from_b64(old)
    token = first.encrypt("card-secret", aad="ctx")
    digest = first.keyed_hash("card", "sch:31000001")
    rotated = Keyring.from_b64(Keyring.generate(), previous=[old])  # the oldest key roots the hashes
    assert rotated.keyed_hash("card", "sch:31000001") == digest
    assert rotated.decrypt(token, aad="ctx") == "card-secret"
    rewrapped = rotated.rewrap(token, aad="ctx")
    assert rewrapped != token and rewrapped.split(".")[3] == token.split(".")[3]  # data untouched
    only_new = Keyring(rotated.current, hash_root=first.hash_root)
    assert only_new.decrypt(rewrapped, aad="ctx") == "card-secret"
    with pytest.raises(DecryptionError):
        only_new.decrypt(token, aad="ctx")
    assert only_new.keyed_hash("card", "sch:31000001") == digest


def test_keyed_hashes_differ_by_purpose_and_key() -> None:
    a, b = Keyring.from_b64(Keyring.generate()), Keyring.from_b64(Keyring.generate())
    assert a.keyed_hash("card", "x") != a.keyed_hash("idempotency-fingerprint", "x")
    assert a.keyed_hash("card", "x") != b.keyed_hash("card", "x")


def test_master_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        Keyring(b"short")
