"""Per-school provider settings: endpoint, encrypted credentials, options.

The environment guard (docs/decisions/0003-sandbox-endpoints.md, 0014-outbound-guard.md) is
``gateway.outbound``'s: the same decision runs when settings are saved, at every start-up and at
every call. In ``production`` settings holding a credential the repository publishes for the
sandbox are refused as well (``gateway.protection.published``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from adapters.base import Adapter, AdapterConfigError, ProviderConfig
from adapters.registry import AdapterRegistry
from gateway.errors import BadGateway, Unprocessable
from gateway.outbound import EndpointInvalid, EndpointRefused, EndpointUnresolved, Outbound
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.protection.published import refuse_published
from gateway.settings import Environment
from gateway.store.cache import SettingsCache
from gateway.store.db import Database
from gateway.store.models import ProviderSetting, Store, utcnow

__all__ = ["ProviderSettings", "ProviderView"]

log = logging.getLogger("campuspay")


@dataclass(frozen=True)
class ProviderView:
    adapter: str
    endpoint: str
    credential_fields: list[str]
    options: dict[str, Any]
    updated_at: datetime


@dataclass(frozen=True)
class _Loaded:
    version: tuple[Any, ...]
    config: ProviderConfig
    adapter: Adapter


class ProviderSettings:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        registry: AdapterRegistry,
        env: Environment,
        outbound: Outbound,
        timeout: float,
    ) -> None:
        self.db, self.keyring, self.registry, self.env = db, keyring, registry, env
        self.outbound, self.timeout = outbound, timeout
        self._cache: SettingsCache[tuple[str, str], _Loaded | None] = SettingsCache()
        self._configured: SettingsCache[str, frozenset[str]] = SettingsCache()

    async def _check_endpoint(self, school_id: str, endpoint: str) -> None:
        try:
            await self.outbound.check_url(endpoint, school_id)
        except EndpointInvalid as exc:
            raise Unprocessable("validation_error", str(exc)) from None
        except EndpointRefused as exc:
            raise Unprocessable("endpoint_not_allowed", str(exc)) from None

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
        refuse_published(self.env, credentials, "credentials")
        client = self.outbound.client(school_id)
        try:  # the adapter itself says whether these settings are usable, before anything is stored
            self.registry.create(adapter, ProviderConfig(endpoint, credentials, options), client)
        except AdapterConfigError as exc:
            raise Unprocessable("validation_error", f"{adapter}: {exc}") from exc
        await self._check_endpoint(school_id, endpoint)  # last: in production it resolves the name
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
        self._cache.drop(lambda key: key == (school_id, adapter))
        self._configured.drop(lambda key: key == school_id)
        return ProviderView(adapter, endpoint, sorted(credentials), options, row.updated_at)

    async def view(self, school_id: str, adapter: str) -> ProviderView | None:
        async with self.db.transaction(readonly=True) as session:
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
        loaded = await self._loaded(school_id, adapter)
        refs = loaded.config.options.get("store_refs") if loaded is not None else None
        ref = refs.get(store_id) if isinstance(refs, dict) else None
        return ref if isinstance(ref, str) else store_id

    async def configured(self, school_id: str) -> set[str]:
        """The adapters this school has settings for (cached like the settings themselves)."""
        fresh, names = self._configured.fresh(school_id)
        if fresh and names is not None:
            return set(names)
        async with self.db.transaction(readonly=True) as session:
            rows = await session.execute(
                select(ProviderSetting.adapter).where(ProviderSetting.school_id == school_id)
            )
            found = frozenset(rows.scalars())
        return set(self._configured.put(school_id, found))

    async def _loaded(self, school_id: str, adapter: str) -> _Loaded | None:
        """The school's settings for ``adapter``, decrypted and built once per version: served
        from the cache for up to 5 s, then revalidated by one read of the row, and decrypted
        and built again only when it changed."""
        key = (school_id, adapter)
        fresh, loaded = self._cache.fresh(key)
        if fresh:
            return loaded
        async with self.db.transaction(readonly=True) as session:
            row = await session.get(ProviderSetting, key)
        if row is None:
            self._cache.put(key, None)
            return None
        version = (row.updated_at, row.endpoint, row.credentials_enc)
        known = self._cache.stale(key)
        if known is not None and known.version == version:
            return self._cache.put(key, known)
        creds = json.loads(self.keyring.decrypt(row.credentials_enc, aad=self._aad(school_id, adapter)))
        options = {"timeout_seconds": self.timeout, **row.options}
        config = ProviderConfig(endpoint=row.endpoint, credentials=creds, options=options)
        built = self.registry.create(adapter, config, self.outbound.client(school_id))
        return self._cache.put(key, _Loaded(version, config, built))

    async def config(self, school_id: str, adapter: str) -> ProviderConfig | None:
        loaded = await self._loaded(school_id, adapter)
        return None if loaded is None else loaded.config

    async def adapter(self, school_id: str, name: str) -> Adapter | None:
        """The adapter for this school's settings: one instance per settings version (adapters
        keep no per-payment state, docs/adding-an-adapter.md), so keys are parsed once."""
        loaded = await self._loaded(school_id, name)
        return None if loaded is None else loaded.adapter

    async def verify_endpoint(self, school_id: str, adapter: str) -> None:
        """Before ``/check`` probes a stored endpoint: 422 when the guard refuses it now, 502 when
        its name does not resolve (the round trip could not be made)."""
        config = await self.config(school_id, adapter)
        if config is None:
            return
        try:
            await self.outbound.check_url(config.endpoint, school_id)
        except EndpointUnresolved as exc:
            raise BadGateway("provider_check_failed", f"{adapter}: {exc}") from None
        except EndpointInvalid as exc:
            raise Unprocessable("validation_error", str(exc)) from None
        except EndpointRefused as exc:
            raise Unprocessable("endpoint_not_allowed", str(exc)) from None

    async def startup_violations(self) -> list[str]:
        """Stored settings the guard refuses now; start-up refuses to run while any exist.

        A name that does not resolve is only logged: a DNS outage must not stop the gateway, and
        every call is judged again anyway."""
        async with self.db.transaction() as session:
            rows = list((await session.execute(select(ProviderSetting))).scalars())
        limit = asyncio.Semaphore(16)  # lookups run side by side, a few at a time

        async def judge(row: ProviderSetting) -> str | None:
            async with limit:
                return await self._startup_violation(row)

        found = await asyncio.gather(*(judge(row) for row in rows))
        return [v for v in found if v is not None]

    async def _startup_violation(self, row: ProviderSetting) -> str | None:
        where = f"school {row.school_id} adapter {row.adapter}"
        creds = json.loads(
            self.keyring.decrypt(row.credentials_enc, aad=self._aad(row.school_id, row.adapter))
        )
        try:
            refuse_published(self.env, creds, "credentials")
        except Unprocessable as exc:
            return f"{where}: {exc.detail}"
        try:
            await self.outbound.check_url(row.endpoint, row.school_id)
        except EndpointUnresolved as exc:
            log.warning("%s -> %s: not checked at start-up: %s", where, row.endpoint, exc)
        except (EndpointRefused, EndpointInvalid) as exc:
            return f"{where} -> {row.endpoint}: {exc}"
        return None
