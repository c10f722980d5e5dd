"""Per-school provider settings: endpoint, encrypted credentials, options.

Environment guard (docs/decisions/0003-sandbox-endpoints.md): in ``sandbox`` a provider may only
point at a sandbox host (loopback, or a ``.test`` / ``.localhost`` name); in ``production`` it
may not. The same rule runs when settings are saved and at every start-up, so one forgotten flag
can neither send test traffic to a live provider nor live traffic to a sandbox.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from adapters.base import Adapter, AdapterConfigError, ProviderConfig
from adapters.registry import AdapterRegistry
from gateway.errors import Unprocessable
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.settings import Environment
from gateway.store.db import Database
from gateway.store.models import ProviderSetting, Store, utcnow

__all__ = ["ProviderSettings", "ProviderView", "is_sandbox_url"]


def is_sandbox_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if host == "localhost" or host.endswith((".test", ".localhost")):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_published_test_key(credentials: dict[str, str]) -> bool:
    """The sandbox's Alipay key pair is public (it is in this repository): anything it signs could
    be forged by anyone, so production refuses it as a provider's public key."""
    from sandbox.alipay.keys import ALIPAY_PUBLIC_KEY_SHA256

    for value in credentials.values():
        if "PUBLIC KEY" not in value:
            continue
        try:
            key = serialization.load_pem_public_key(value.encode())
        except ValueError:
            continue
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if hashlib.sha256(der).hexdigest() == ALIPAY_PUBLIC_KEY_SHA256:
            return True
    return False


@dataclass(frozen=True)
class ProviderView:
    adapter: str
    endpoint: str
    credential_fields: list[str]
    options: dict[str, Any]
    updated_at: datetime


class ProviderSettings:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        registry: AdapterRegistry,
        env: Environment,
        http: httpx.AsyncClient,
        timeout: float,
    ) -> None:
        self.db, self.keyring, self.registry, self.env, self.http = db, keyring, registry, env, http
        self.timeout = timeout

    def _check_endpoint(self, endpoint: str) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Unprocessable("validation_error", "endpoint must be an absolute http(s) URL")
        sandbox = is_sandbox_url(endpoint)
        if self.env is Environment.SANDBOX and not sandbox:
            raise Unprocessable(
                "provider_url_not_allowed",
                "the sandbox environment only talks to sandbox hosts (loopback, *.test, *.localhost)",
            )
        if self.env is Environment.PRODUCTION and sandbox:
            raise Unprocessable(
                "provider_url_not_allowed", "production may not point a provider at a sandbox host"
            )

    @staticmethod
    def _aad(school_id: str, adapter: str) -> str:
        return f"provider_settings/{school_id}/{adapter}"

    async def put(
        self,
        school_id: str,
        adapter: str,
        *,
        endpoint: str,
        credentials: dict[str, str],
        options: dict[str, Any],
        actor: str,
    ) -> ProviderView:
        if adapter not in self.registry:
            raise Unprocessable("unknown_adapter", f"no adapter named {adapter!r}")
        self._check_endpoint(endpoint)
        if self.env is Environment.PRODUCTION and _is_published_test_key(credentials):
            raise Unprocessable(
                "provider_url_not_allowed",
                "these credentials hold the sandbox's published test key, which proves nothing",
            )
        try:  # the adapter itself says whether these settings are usable, before anything is stored
            self.registry.create(adapter, ProviderConfig(endpoint, credentials, options), self.http)
        except AdapterConfigError as exc:
            raise Unprocessable("validation_error", f"{adapter}: {exc}") from exc
        enc = self.keyring.encrypt(json.dumps(credentials), aad=self._aad(school_id, adapter))
        async with self.db.transaction() as session:
            await self._check_store_refs(session, school_id, options.get("store_refs"))
            row = await session.get(ProviderSetting, (school_id, adapter), with_for_update=True)
            if row is None:
                row = ProviderSetting(
                    school_id=school_id,
                    adapter=adapter,
                    endpoint=endpoint,
                    credentials_enc=enc,
                    options=options,
                )
                session.add(row)
            else:
                row.endpoint, row.credentials_enc, row.options, row.updated_at = (
                    endpoint,
                    enc,
                    options,
                    utcnow(),
                )
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="provider.configured",
                object_type="provider",
                object_id=adapter,
                data={"endpoint": endpoint, "credential_fields": sorted(credentials)},
            )
        return ProviderView(adapter, endpoint, sorted(credentials), options, row.updated_at)

    async def view(self, school_id: str, adapter: str) -> ProviderView | None:
        async with self.db.transaction() as session:
            row = await session.get(ProviderSetting, (school_id, adapter))
        if row is None:
            return None
        creds = json.loads(self.keyring.decrypt(row.credentials_enc, aad=self._aad(school_id, adapter)))
        return ProviderView(adapter, row.endpoint, sorted(creds), dict(row.options), row.updated_at)

    @staticmethod
    async def _check_store_refs(session: Any, school_id: str, refs: Any) -> None:
        """``options.store_refs``: this school's store ids -> the provider's own store refs."""
        if refs is None:
            return
        if not isinstance(refs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and 1 <= len(v) <= 64 for k, v in refs.items()
        ):
            why = "options.store_refs maps store ids to the provider's store refs (1-64 characters)"
            raise Unprocessable("validation_error", why)
        known = set((await session.execute(select(Store.id).where(Store.school_id == school_id))).scalars())
        unknown = sorted(set(refs) - known)
        if unknown:
            raise Unprocessable("validation_error", f"options.store_refs names unknown stores: {unknown}")

    async def store_ref(self, school_id: str, adapter: str, store_id: str) -> str:
        """What ``adapter`` calls this store: its ``options.store_refs`` entry, else the store id."""
        async with self.db.transaction() as session:
            row = await session.get(ProviderSetting, (school_id, adapter))
        refs = (row.options or {}).get("store_refs") if row is not None else None
        ref = refs.get(store_id) if isinstance(refs, dict) else None
        return ref if isinstance(ref, str) else store_id

    async def config(self, school_id: str, adapter: str) -> ProviderConfig | None:
        async with self.db.transaction() as session:
            row = await session.get(ProviderSetting, (school_id, adapter))
        if row is None:
            return None
        creds = json.loads(self.keyring.decrypt(row.credentials_enc, aad=self._aad(school_id, adapter)))
        options = {"timeout_seconds": self.timeout, **row.options}
        return ProviderConfig(endpoint=row.endpoint, credentials=creds, options=options)

    async def adapter(self, school_id: str, name: str) -> Adapter | None:
        config = await self.config(school_id, name)
        if config is None:
            return None
        return self.registry.create(name, config, self.http)

    async def environment_violations(self) -> list[str]:
        """Settings that break the environment guard; start-up refuses to run while any exist."""
        async with self.db.transaction() as session:
            rows = list((await session.execute(select(ProviderSetting))).scalars())
        bad = []
        for row in rows:
            sandbox = is_sandbox_url(row.endpoint)
            if (self.env is Environment.SANDBOX) != sandbox:
                bad.append(f"school {row.school_id} adapter {row.adapter} -> {row.endpoint}")
        return bad
