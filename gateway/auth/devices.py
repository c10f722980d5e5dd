"""Authenticate a POS device request: signature, digest, freshness, key state, nonce."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from gateway.auth.headers import RequestHeaders
from gateway.auth.nonces import NonceClaim, NonceStore
from gateway.auth.signatures import check_freshness, parse_signature_params, verify_signature
from gateway.errors import Unauthorized
from gateway.protection.crypto import Keyring
from gateway.store.db import Database
from gateway.store.models import Device, DeviceKey

__all__ = ["DeviceAuthenticator", "DeviceIdentity"]


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    school_id: str
    key_id: str


class DeviceAuthenticator:
    def __init__(
        self, db: Database, keyring: Keyring, nonces: NonceStore, *, public_base_url: str, max_skew: int
    ) -> None:
        self.db, self.keyring, self.nonces = db, keyring, nonces
        self.public_base_url = public_base_url
        self.max_skew = max_skew

    async def authenticate(
        self, *, method: str, path_and_query: str, headers: RequestHeaders, body: bytes, now: datetime
    ) -> DeviceIdentity:
        """``now`` is the gateway's clock (the one ``Date`` reports), not the host's."""
        params = parse_signature_params(headers)
        check_freshness(params, now, self.max_skew)
        async with self.db.transaction(readonly=True) as session:
            row = (
                await session.execute(
                    select(DeviceKey, Device)
                    .join(Device, Device.id == DeviceKey.device_id)
                    .where(DeviceKey.key_id == params.key_id)
                )
            ).one_or_none()
        if row is None:
            raise Unauthorized("key_unknown")
        key, device = row[0], row[1]
        if device.status != "active":
            raise Unauthorized("device_revoked")
        if key.status != "active":
            raise Unauthorized("key_retired")
        if key.alg == "ed25519":
            material = key.public_key_pem or ""
        else:
            material = self.keyring.decrypt(key.secret_enc or "", aad=f"device_key/{key.key_id}")
        verify_signature(
            params=params,
            registered_alg=key.alg,
            key_material=material,
            method=method,
            target_uri=self.public_base_url + path_and_query,
            headers=headers,
            body=body,
        )
        # Only a verified signature may consume a nonce, so nobody can burn a device's nonces.
        assert params.nonce is not None
        ttl = timedelta(seconds=2 * self.max_skew + 60)
        claim = await self.nonces.claim(key.key_id, params.nonce, ttl, now=now, created=params.created)
        if claim is NonceClaim.REUSED:
            raise Unauthorized("nonce_reused")
        if claim is NonceClaim.UNVERIFIABLE:
            # nothing ran; a signature made a second later can be checked (docs/decisions/0015)
            raise Unauthorized(
                "nonce_unverifiable",
                "this signature is older than what the gateway can check for replays right now "
                "(Redis unreachable or restarted); sign the request again",
                headers={"Retry-After": "1"},
            )
        return DeviceIdentity(device_id=device.id, school_id=device.school_id, key_id=key.key_id)
