"""The wired-up services of one running gateway (built in the app's lifespan)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from adapters.registry import AdapterRegistry
from gateway.auth.devices import DeviceAuthenticator
from gateway.auth.guardians import GuardianAuthorizer
from gateway.auth.nonces import NonceStore
from gateway.auth.ratelimit import DeviceRateLimiter
from gateway.auth.tokens import TokenAuthenticator
from gateway.cards.status import CardStatusService
from gateway.idempotency.service import IdempotencyService
from gateway.offline.service import OfflineService
from gateway.outbound import NetworkAllowlists, Outbound
from gateway.payments.attention import AttentionQueue
from gateway.payments.recovery import RecoveryWorker
from gateway.payments.routing import RoutingService
from gateway.payments.service import PaymentService
from gateway.protection.auditlog import AuditLog
from gateway.protection.consent import ConsentService
from gateway.protection.crypto import Keyring
from gateway.protection.limits import LimitService
from gateway.settings import Settings
from gateway.store.db import Database
from gateway.store.redis import RedisLink
from gateway.tenancy.funding import FundingService
from gateway.tenancy.providers import ProviderSettings
from gateway.tenancy.service import TenancyService
from gateway.webhooks.delivery import WebhookDeliverer
from gateway.webhooks.endpoints import WebhookEndpoints
from gateway.webhooks.events import EventLog
from gateway.webhooks.log import DeliveryLog

__all__ = ["Services"]


@dataclass
class Services:
    settings: Settings
    db: Database
    keyring: Keyring
    redis_link: RedisLink | None
    outbound: Outbound  # every call out (decision 0014)
    allowlists: NetworkAllowlists
    registry: AdapterRegistry
    nonces: NonceStore
    devices: DeviceAuthenticator
    rate_limiter: DeviceRateLimiter
    tokens: TokenAuthenticator
    guardians: GuardianAuthorizer  # who a guardian-path call acts for
    idempotency: IdempotencyService
    tenancy: TenancyService
    providers: ProviderSettings
    consents: ConsentService
    limits: LimitService  # guardians' limits and the school's defaults and ceilings
    cards: CardStatusService
    offline: OfflineService
    payments: PaymentService
    funding: FundingService
    routing: RoutingService
    recovery: RecoveryWorker
    attention: AttentionQueue
    audit: AuditLog  # reading, verifying and sealing the audit chains (decision 0021)
    webhook_endpoints: WebhookEndpoints
    webhook_events: EventLog  # GET …/events (issue 9)
    webhook_log: DeliveryLog  # attempts, redelivery, test events
    webhooks: WebhookDeliverer  # the outbox relay and delivery worker (issue 9)
    clock: Callable[[], datetime]

    @property
    def redis(self) -> Redis | None:
        """The Redis client, when one is configured."""
        return self.redis_link.client if self.redis_link is not None else None
