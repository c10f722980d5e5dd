"""create_app(settings) -> FastAPI. The lifespan wires the store, adapters and workers."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from adapters.registry import default_registry
from gateway import __version__
from gateway.api import (
    admin,
    consent,
    guardians,
    health,
    notify,
    offline,
    payments,
    recovery,
    routing,
    webhooks,
)
from gateway.api.malformed import MalformedBodyMiddleware, reject_malformed_parameters
from gateway.api.openapi_extras import add_device_headers, add_malformed_answers, document_problems
from gateway.api.problems import BodyLimitMiddleware, ResponseHeadersMiddleware, install_handlers
from gateway.auth.devices import DeviceAuthenticator
from gateway.auth.guardians import GuardianAuthorizer
from gateway.auth.nonces import NonceStore, RedisNonceStore, SqlNonceStore
from gateway.auth.ratelimit import DeviceRateLimiter
from gateway.auth.tokens import TokenAuthenticator, new_token
from gateway.cards.status import CardStatusService
from gateway.errors import CODES
from gateway.idempotency.service import IdempotencyService
from gateway.metrics import HttpMetricsMiddleware
from gateway.offline.service import OfflineService
from gateway.outbound import (
    Guard,
    NameResolver,
    NetworkAllowlists,
    NetworkConnector,
    Outbound,
    PassThrough,
    SystemResolver,
)
from gateway.outbound.transport import Connector
from gateway.payments.attention import AttentionQueue
from gateway.payments.breaker import Breaker, FallbackBreaker, RedisBreaker, SqlBreaker
from gateway.payments.recovery import RecoveryWorker
from gateway.payments.resolver import Resolver
from gateway.payments.routing import RoutingService
from gateway.payments.service import PaymentService
from gateway.protection.auditlog import AuditLog
from gateway.protection.consent import ConsentService
from gateway.protection.crypto import Keyring
from gateway.protection.limits import LimitService
from gateway.services import Services
from gateway.settings import Environment, Settings
from gateway.store.db import Database
from gateway.store.models import utcnow
from gateway.store.redis import RedisLink, connect
from gateway.tenancy.funding import FundingService
from gateway.tenancy.providers import ProviderSettings
from gateway.tenancy.service import TenancyService
from gateway.webhooks.delivery import WebhookDeliverer
from gateway.webhooks.endpoints import WebhookEndpoints
from gateway.webhooks.events import EventLog
from gateway.webhooks.log import DeliveryLog

__all__ = ["StartupRefused", "build_services", "create_app", "describe", "load_keyring"]

log = logging.getLogger("campuspay")


class StartupRefused(RuntimeError):
    """The configuration is unsafe for this environment; the gateway will not start."""


def load_keyring(settings: Settings) -> Keyring:
    if settings.master_key:
        return Keyring.from_b64(settings.master_key, settings.previous_master_keys)
    if settings.env is Environment.PRODUCTION:
        raise StartupRefused("CAMPUSPAY_MASTER_KEY is required in production")
    path = settings.data_dir / "master.key"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(Keyring.generate())
    return Keyring.from_b64(path.read_text().strip())


def describe(retention_hours: int) -> str:
    codes = "\n".join(f"- `{code}` ({status}): {title}" for code, (status, title) in sorted(CODES.items()))
    return f"""
One signed HTTP API for school payment terminals. Device requests are signed with RFC 9421
HTTP Message Signatures (see docs/signing.md). Every POST that creates or moves money needs an
`Idempotency-Key`; this gateway keeps keys for {retention_hours} hours (never less than 24; set with
`CAMPUSPAY_IDEMPOTENCY_RETENTION_HOURS`, default 48). Errors are RFC 9457 problem details with a
stable `code`:

{codes}
"""


def create_app(
    settings: Settings | None = None,
    *,
    provider_transport: httpx.AsyncBaseTransport | None = None,
    resolver: NameResolver | None = None,
    clock: Callable[[], datetime] = utcnow,
    run_workers: bool = True,
) -> FastAPI:
    """``provider_transport`` replaces the network for calls out (tests: the sandbox over
    ``httpx.ASGITransport``); ``resolver`` replaces the system's name resolution. The outbound
    guard judges every call either way."""
    settings = settings or Settings.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(
            settings, provider_transport=provider_transport, names=resolver, clock=clock
        )
        app.state.services = services
        try:
            violations = [
                *await services.providers.startup_violations(),
                *await services.tenancy.startup_violations(),
            ]
            if violations:
                raise StartupRefused(
                    f"{settings.env.value} environment refuses stored settings: " + "; ".join(violations)
                )
            if run_workers:
                await services.audit.start()
                await services.recovery.start()
                await services.webhooks.start()
            yield
        finally:
            await services.webhooks.stop()
            await services.webhooks.outbound.aclose()
            await services.recovery.stop()
            await services.audit.stop()  # after recovery: it seals what recovery wrote last
            await services.outbound.aclose()
            if services.redis_link is not None:
                await services.redis_link.aclose()
            await services.db.dispose()

    app = FastAPI(
        title="CampusPay gateway",
        version=__version__,
        description=describe(settings.idempotency_retention_hours),
        lifespan=lifespan,
        # a NUL in a path or query parameter: 400 malformed_body before anything reads it
        dependencies=[Depends(reject_malformed_parameters)],
    )
    install_handlers(app)
    app.include_router(payments.router)
    app.include_router(admin.router)
    app.include_router(recovery.router)
    app.include_router(routing.router)
    app.include_router(consent.router)
    app.include_router(guardians.router)
    app.include_router(notify.router)
    app.include_router(offline.router)
    app.include_router(webhooks.router)
    app.include_router(health.router)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (*payments.BODY_MODELS, offline.OfflineBatchIn):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            add_device_headers(schema)
            add_malformed_answers(schema)
            document_problems(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    app.add_middleware(MalformedBodyMiddleware)  # inside the body limit: reads bounded bodies only
    app.add_middleware(
        BodyLimitMiddleware,
        default=settings.max_body_bytes,
        large_paths={"/v1/offline-batches": settings.max_batch_body_bytes},
    )
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(ResponseHeadersMiddleware)
    if settings.env is Environment.SANDBOX:
        from sandbox import create_sandbox_app

        sandbox_app = create_sandbox_app()
        app.state.sandbox_app = sandbox_app  # the demo seeds it in-process, before the server listens
        app.mount("/sandbox", sandbox_app)
    return app


async def build_services(
    settings: Settings,
    *,
    provider_transport: httpx.AsyncBaseTransport | None,
    clock: Callable[[], datetime],
    names: NameResolver | None = None,
) -> Services:
    keyring = load_keyring(settings)
    db = Database(settings.effective_database_url)
    await db.migrate()
    link = None
    if settings.redis_url:
        client = connect(settings.redis_url, timeout=settings.redis_timeout_seconds)
        link = RedisLink(client, clock=clock, pause=timedelta(seconds=settings.redis_retry_pause_seconds))
    nonces: NonceStore = (
        RedisNonceStore(link, settings.redis_prefix, db, clock) if link is not None else SqlNonceStore(db)
    )
    allowlists = NetworkAllowlists(db, keyring)
    names = names or SystemResolver()
    connector: Connector = (
        PassThrough(provider_transport)
        if provider_transport is not None
        else NetworkConnector(names, limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
    )
    outbound = Outbound(
        Guard(settings.env, names, allowlists.networks),
        connector,
        timeout=settings.provider_timeout_seconds,
    )
    registry = default_registry()
    tenancy = TenancyService(db, keyring, settings.env)
    await _bootstrap_token(settings, tenancy)
    providers = ProviderSettings(
        db, keyring, registry, settings.env, outbound, settings.provider_timeout_seconds
    )
    resolver = Resolver(
        db,
        keyring,
        providers,
        clock=clock,
        interval=settings.recovery_interval_seconds,
        max_backoff=settings.recovery_max_backoff_seconds,
        attention_after=settings.recovery_deadline_seconds,
        refusal_retry=settings.refusal_retry_seconds,
    )
    idempotency = IdempotencyService(
        db,
        keyring,
        timedelta(hours=settings.idempotency_retention_hours),
        lock=timedelta(seconds=settings.sync_budget_seconds + 10),
    )
    consents = ConsentService(db, keyring, clock=clock)
    cards = CardStatusService(db, keyring, providers, clock=clock)
    funding = FundingService(db, keyring, registry)
    breaker: Breaker = SqlBreaker(db, clock)
    if link is not None:
        in_redis = RedisBreaker(link.client, settings.redis_prefix, clock)
        breaker = FallbackBreaker(link, in_redis, SqlBreaker(db, clock))
    limits = LimitService(db, keyring, clock=clock)
    routing_service = RoutingService(db, keyring, registry, funding, breaker, clock, providers, limits)
    payments_service = PaymentService(
        db,
        keyring,
        tenancy,
        providers,
        resolver,
        consents,
        funding,
        routing_service,
        clock=clock,
        sync_budget=settings.sync_budget_seconds,
        recovery_deadline=settings.recovery_deadline_seconds,
    )
    webhook_endpoints = WebhookEndpoints(db, keyring, outbound, settings.env, clock)
    return Services(
        settings=settings,
        db=db,
        keyring=keyring,
        redis_link=link,
        outbound=outbound,
        allowlists=allowlists,
        registry=registry,
        nonces=nonces,
        devices=DeviceAuthenticator(
            db,
            keyring,
            nonces,
            public_base_url=settings.public_base_url,
            max_skew=settings.signature_max_skew_seconds,
        ),
        rate_limiter=DeviceRateLimiter(settings.device_rate_limit, redis=link, prefix=settings.redis_prefix),
        tokens=TokenAuthenticator(db),
        guardians=GuardianAuthorizer(db),
        idempotency=idempotency,
        tenancy=tenancy,
        providers=providers,
        consents=consents,
        limits=limits,
        cards=cards,
        offline=OfflineService(
            db,
            keyring,
            providers,
            clock=clock,
            max_age=timedelta(hours=settings.offline_max_age_hours),
            future_skew=timedelta(seconds=settings.signature_max_skew_seconds),
        ),
        payments=payments_service,
        funding=funding,
        routing=routing_service,
        recovery=RecoveryWorker(
            db,
            resolver,
            idempotency,
            nonces,
            consents=consents,
            cards=cards,
            providers=providers,
            clock=clock,
            interval=settings.recovery_interval_seconds,
        ),
        attention=AttentionQueue(db, clock),
        audit=AuditLog(
            db,
            keyring,
            clock=clock,
            interval=settings.audit_seal_interval_seconds,
            seal_deadline=settings.audit_seal_deadline_seconds,
        ),
        webhook_endpoints=webhook_endpoints,
        webhook_events=EventLog(db),
        webhook_log=DeliveryLog(db, webhook_endpoints, clock),
        webhooks=WebhookDeliverer(
            db,
            keyring,
            webhook_endpoints,
            # Deliveries always go over real sockets (tests put receivers on real ports), through
            # the same guard as every call out; their own pools, so receivers never hold
            # connections providers need.
            Outbound(
                outbound.guard,
                NetworkConnector(
                    names, limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
                ),
                timeout=settings.webhook_timeout_seconds,
            ),
            env=settings.env,
            clock=clock,
            schedule=settings.webhook_retry_delays,
            timeout=settings.webhook_timeout_seconds,
            interval=settings.webhook_interval_seconds,
            disable_after=timedelta(hours=settings.webhook_disable_after_hours),
        ),
        clock=clock,
    )


async def _bootstrap_token(settings: Settings, tenancy: TenancyService) -> None:
    if settings.bootstrap_token:
        await tenancy.ensure_platform_token(settings.bootstrap_token)
        return
    if await tenancy.has_platform_token():
        return
    token = new_token("platform")
    await tenancy.ensure_platform_token(token)
    # Printed once; only its hash is stored. Lost it? Set CAMPUSPAY_BOOTSTRAP_TOKEN and restart.
    print(f"campuspay: platform admin token (shown once): {token}", file=sys.stderr)  # noqa: T201
