"""Tables. Money is integer fen; times are UTC; secrets and PII are envelope-encrypted text.

The audit log, outbox and encrypted fields exist from the first release so later capabilities
write into them instead of migrating around them.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "AuditEntry",
    "AuditHead",
    "Base",
    "BlacklistState",
    "Card",
    "CardBinSetting",
    "CardLoss",
    "CircuitBreaker",
    "Consent",
    "ConsentNotice",
    "Device",
    "DeviceKey",
    "Enrollment",
    "FundingSource",
    "Guardian",
    "IdempotencyRecord",
    "NetworkAllowlist",
    "Nonce",
    "NonceFallback",
    "OfflineRecord",
    "OutboxEvent",
    "Payment",
    "PaymentAttempt",
    "ProviderNotification",
    "ProviderSetting",
    "Refund",
    "RoutingConfig",
    "School",
    "SchoolLimitPolicy",
    "Store",
    "Student",
    "StudentControls",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "new_id",
    "utcnow",
]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford-ish base32, no ambiguous letters


def new_id(prefix: str) -> str:
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class School(Base):
    __tablename__ = "schools"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """Admin bearer tokens, stored as SHA-256 (tokens are 256-bit random, so no KDF is needed)."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str | None] = mapped_column(ForeignKey("schools.id"), index=True)  # None: platform
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Store(Base):
    __tablename__ = "stores"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    merchant_category: Mapped[str] = mapped_column(String(40))
    timezone: Mapped[str] = mapped_column(String(64))
    # [{"name", "start": "HH:MM", "end": "HH:MM"}] in the store's time zone: the windows a
    # guardian's per-meal-period limit counts in (None: no meal periods at this store)
    meal_periods: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class DeviceKey(Base):
    __tablename__ = "device_keys"
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"))
    alg: Mapped[str] = mapped_column(String(20))
    public_key_pem: Mapped[str | None] = mapped_column(Text, default=None)
    secret_enc: Mapped[str | None] = mapped_column(Text, default=None)  # HMAC secret, encrypted
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(default=None)


class Nonce(Base):
    __tablename__ = "nonces"
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class NonceFallback(Base):
    """Per Redis prefix: until when nonces must be claimed in the database as well as in Redis
    (a gateway process that cannot reach Redis says so here). A row also means the prefix has
    been used with Redis, so a Redis without its marker key has forgotten (docs/decisions/0015)."""

    __tablename__ = "nonce_fallbacks"
    prefix: Mapped[str] = mapped_column(String(200), primary_key=True)
    until: Mapped[datetime] = mapped_column()


class Student(Base):
    __tablename__ = "students"
    __table_args__ = (UniqueConstraint("school_id", "external_ref"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the pseudonymous ref
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    external_ref: Mapped[str] = mapped_column(String(64))  # the school's own student number
    age_band: Mapped[str] = mapped_column(String(10))  # under_14 | 14_17 | adult
    name_enc: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Card(Base):
    """A card bound to a student. Only a keyed hash and the last four digits are kept."""

    __tablename__ = "cards"
    __table_args__ = (UniqueConstraint("school_id", "card_hash"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id"), index=True)
    card_hash: Mapped[str] = mapped_column(String(64))
    last4: Mapped[str] = mapped_column(String(4))
    funding_adapter: Mapped[str] = mapped_column(String(40), default="ecard")
    # active | lost | frozen: the provider's card status, cached by blacklist version
    status: Mapped[str] = mapped_column(String(20), default="active")
    status_version: Mapped[int] = mapped_column(BigInteger, default=0)
    status_changed_at: Mapped[datetime | None] = mapped_column(default=None)
    # The one funding source this card pays from (None: rows from before funding sources
    # existed, which pay from the e-card account through ``funding_adapter``).
    funding_source_id: Mapped[str | None] = mapped_column(
        ForeignKey("funding_sources.id", name="fk_cards_funding_source_id"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CardLoss(Base):
    """One loss report of a card: lost from ``lost_at`` until ``found_at`` (None: still lost).

    Every report is kept, so a record made while the card was lost is recognised even after the
    card was found (and perhaps lost again): COMPLIANCE rule 20 asks about the card's status *at
    the sale*, not now. Reports come from the gateway's own admin calls and from the provider's
    blacklist; one that overlaps a report still open is the same loss."""

    __tablename__ = "card_losses"
    __table_args__ = (Index("ix_card_losses_card", "card_id", "lost_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    card_id: Mapped[str] = mapped_column(ForeignKey("cards.id"))
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"))
    lost_at: Mapped[datetime] = mapped_column()
    found_at: Mapped[datetime | None] = mapped_column(default=None)


class ProviderSetting(Base):
    __tablename__ = "provider_settings"
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), primary_key=True)
    adapter: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(500))
    credentials_enc: Mapped[str] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        # Money moves at most once per order: at most one payment per (device, order id) that
        # is not failed. Enforced by the database, not only by the service.
        Index(
            "uq_payments_live_order",
            "device_id",
            "merchant_order_id",
            unique=True,
            sqlite_where=text("status != 'failed'"),
            postgresql_where=text("status != 'failed'"),
        ),
        Index("ix_payments_order", "device_id", "merchant_order_id"),
        Index("ix_payments_recovery", "status", "next_recovery_at"),
        Index("ix_payments_student_occurred", "student_id", "occurred_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    store_id: Mapped[str] = mapped_column(ForeignKey("stores.id"))
    merchant_order_id: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    method: Mapped[str] = mapped_column(String(10))
    adapter: Mapped[str | None] = mapped_column(String(40), default=None)
    student_id: Mapped[str | None] = mapped_column(String(40), default=None)
    card_last4: Mapped[str | None] = mapped_column(String(4), default=None)
    description: Mapped[str | None] = mapped_column(String(200), default=None)
    status: Mapped[str] = mapped_column(String(20))
    failure_code: Mapped[str | None] = mapped_column(String(64), default=None)
    failure_message: Mapped[str | None] = mapped_column(String(500), default=None)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    provider_reference: Mapped[str | None] = mapped_column(String(64), default=None, unique=True)
    provider_txn_id: Mapped[str | None] = mapped_column(String(128), default=None)
    # The routing decision: rule, candidates in order, skipped ones with reasons, attempts.
    routing: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # Recovery bookkeeping for payments whose outcome is not yet known.
    recovery_deadline: Mapped[datetime | None] = mapped_column(default=None)
    next_recovery_at: Mapped[datetime | None] = mapped_column(default=None)
    recovery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    reversal_requested: Mapped[int] = mapped_column(Integer, default=0)
    # The provider refuses the gateway's requests about this payment (``kind:code``, e.g.
    # ``timestamp:TIMESTAMP_EXPIRED``), since when, and whether that outlasted the recovery
    # deadline: then it waits in the needs-attention queue (docs/operations.md).
    refusal: Mapped[str | None] = mapped_column(String(80), default=None)
    refused_since: Mapped[datetime | None] = mapped_column(default=None)
    needs_attention: Mapped[bool] = mapped_column(default=False)
    # Two times, kept apart: ``created_at`` is when the gateway took the payment (its cancel
    # window and statement day); ``occurred_at`` is when the sale happened (what limits count
    # and what a loss report is compared with). They differ only for offline records, which
    # are posted hours after the sale.
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PaymentAttempt(Base):
    __tablename__ = "payment_attempts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    adapter: Mapped[str] = mapped_column(String(40))
    provider_reference: Mapped[str] = mapped_column(String(64))
    # processing | succeeded | failed | unknown | unreachable | refused (nothing applied)
    status: Mapped[str] = mapped_column(String(20))
    provider_code: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Refund(Base):
    __tablename__ = "refunds"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str | None] = mapped_column(String(200), default=None)
    status: Mapped[str] = mapped_column(String(20))  # processing | succeeded | failed
    provider_reference: Mapped[str] = mapped_column(String(64), unique=True)
    failure_code: Mapped[str | None] = mapped_column(String(64), default=None)
    failure_message: Mapped[str | None] = mapped_column(String(500), default=None)
    next_recovery_at: Mapped[datetime | None] = mapped_column(default=None)
    recovery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # as on payments: a provider refusing the gateway's requests about this refund
    refusal: Mapped[str | None] = mapped_column(String(80), default=None)
    refused_since: Mapped[datetime | None] = mapped_column(default=None)
    needs_attention: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    device_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))  # executing | done | processing
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    resource_type: Mapped[str | None] = mapped_column(String(20), default=None)
    resource_id: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuditHead(Base):
    """The newest sealed entry of each chain, written only by the sealer (decision 0021).

    ``mac`` is ``HMAC(audit key, chain, seq, hash)``: someone who deletes the newest entries
    cannot set the head back to match. NULL only on heads no sealer has written since
    migration 0009."""

    __tablename__ = "audit_heads"
    chain: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(64), default=None)


class AuditEntry(Base):
    """One audit entry. ``append`` inserts it unsealed (``seq``, ``prev_hash`` and ``hash``
    NULL, ``mac`` over its content); the sealer chains it in ``id`` order (decision 0021)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        UniqueConstraint("chain", "seq"),
        # what the sealer looks for; holds only the entries of the last second or so
        Index(
            "ix_audit_log_unsealed",
            "chain",
            "id",
            sqlite_where=text("seq IS NULL"),
            postgresql_where=text("seq IS NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    chain: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int | None] = mapped_column(BigInteger, default=None)
    at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(80))
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column()
    prev_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    hash: Mapped[str | None] = mapped_column(String(64), default=None)
    mac: Mapped[str | None] = mapped_column(String(64), default=None)  # NULL before migration 0009


class OutboxEvent(Base):
    """An event, written in the transaction of the change it describes. The relay (one at a
    time) gives it its per-school ``sequence`` after commit and fans it out to the school's
    endpoints as ``webhook_deliveries`` rows; ``sequence IS NULL`` means not relayed yet."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "delivered_at", "next_attempt_at"),
        Index("ix_outbox_school_sequence", "school_id", "sequence", unique=True),
        Index("ix_outbox_resource", "resource_id", "resource_version"),
        Index(
            "ix_outbox_unsequenced",
            "created_at",
            sqlite_where=text("sequence IS NULL"),
            postgresql_where=text("sequence IS NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # also the webhook-id
    school_id: Mapped[str] = mapped_column(String(40), index=True)
    event_type: Mapped[str] = mapped_column(String(60))
    payload: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)  # unused since 0010
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # unused since 0010
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)  # unused since 0010
    sequence: Mapped[int | None] = mapped_column(BigInteger, default=None)
    relayed_at: Mapped[datetime | None] = mapped_column(default=None)
    # what the event is about (set by emit) and its version (set by the relay, per resource)
    resource_id: Mapped[str | None] = mapped_column(String(40), default=None)
    resource_version: Mapped[int | None] = mapped_column(Integer, default=None)


class WebhookEndpoint(Base):
    """A school system's URL that receives events (Standard Webhooks). Secrets are encrypted
    with the keyring; during a rotation's overlap the previous secret signs as well."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str] | None] = mapped_column(JSON, default=None)  # None: every type
    status: Mapped[str] = mapped_column(String(10), default="enabled")  # enabled | disabled
    disabled_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    secret_enc: Mapped[str] = mapped_column(Text)
    previous_secret_enc: Mapped[str | None] = mapped_column(Text, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    failing_since: Mapped[datetime | None] = mapped_column(default=None)  # first failure since a success
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event for one endpoint. ``next_attempt_at`` is both the retry schedule and the
    lease: a worker takes a due row by moving it forward past the attempt's longest run."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(String(40), index=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("outbox.id"), index=True)
    state: Mapped[str] = mapped_column(String(10), default="pending")  # pending | succeeded | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookAttempt(Base):
    """Every attempt of a delivery: what the endpoint answered (at most 1 KiB kept)."""

    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    endpoint_id: Mapped[str] = mapped_column(String(40), index=True)
    event_id: Mapped[str] = mapped_column(String(40), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(String(200), default=None)
    duration_ms: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
    at: Mapped[datetime] = mapped_column()


class Guardian(Base):
    __tablename__ = "guardians"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id"), index=True)
    external_ref: Mapped[str] = mapped_column(String(64))
    relation: Mapped[str] = mapped_column(String(20))
    name_enc: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsentNotice(Base):
    """A stand-alone face-consent notice (COMPLIANCE rules 3-4); consents point at one version."""

    __tablename__ = "consent_notices"
    __table_args__ = (UniqueConstraint("school_id", "version"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    version: Mapped[str] = mapped_column(String(40))
    content_hash: Mapped[str] = mapped_column(String(64))
    fields: Mapped[dict[str, Any]] = mapped_column()  # controller, contact, purpose, method, ...
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Consent(Base):
    __tablename__ = "consents"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id"), index=True)
    signer_type: Mapped[str] = mapped_column(String(20))  # guardian | student
    guardian_id: Mapped[str | None] = mapped_column(String(40), default=None)
    notice_id: Mapped[str] = mapped_column(ForeignKey("consent_notices.id"))
    scope: Mapped[str] = mapped_column(String(40))  # face_payment
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | withdrawn
    ends_at: Mapped[datetime] = mapped_column()
    withdrawn_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Enrollment(Base):
    """A student's face enrolment at a provider. The gateway holds only the provider's ids."""

    __tablename__ = "enrollments"
    __table_args__ = (
        Index("ix_enrollments_user", "school_id", "provider", "provider_user_id"),
        Index("ix_enrollments_deletion", "status", "next_delete_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id"), index=True)
    provider: Mapped[str] = mapped_column(String(40))
    provider_user_id: Mapped[str] = mapped_column(String(64))
    agreement_no: Mapped[str | None] = mapped_column(String(64), default=None)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"))
    # active | deleting (at the provider, retried until acknowledged) | deleted
    status: Mapped[str] = mapped_column(String(20), default="active")
    deletion_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    next_delete_at: Mapped[datetime | None] = mapped_column(default=None)
    delete_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class ProviderNotification(Base):
    """Every verified provider notification, once: the unique key de-duplicates repeats."""

    __tablename__ = "provider_notifications"
    __table_args__ = (UniqueConstraint("school_id", "adapter", "dedupe_key"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(String(40))
    adapter: Mapped[str] = mapped_column(String(40))
    dedupe_key: Mapped[str] = mapped_column(String(128))
    reference: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class BlacklistState(Base):
    """How far this school's card-status cache has followed the provider's blacklist."""

    __tablename__ = "blacklist_state"
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), primary_key=True)
    adapter: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    synced_at: Mapped[datetime | None] = mapped_column(default=None)


class OfflineRecord(Base):
    """A card payment a terminal took while offline, uploaded later; one row per (device, seq)."""

    __tablename__ = "offline_records"
    __table_args__ = (UniqueConstraint("device_id", "terminal_seq"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    batch_id: Mapped[str] = mapped_column(String(40), index=True)
    terminal_seq: Mapped[int] = mapped_column(BigInteger)
    merchant_order_id: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    card_hash: Mapped[str] = mapped_column(String(64))
    card_last4: Mapped[str] = mapped_column(String(4))
    store_id: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column()
    # posted | held_for_review | rejected (a duplicate is answered, never stored twice)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(64), default=None)
    payment_id: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FundingSource(Base):
    """Where a card's money comes from: the student's e-card account, or a guardian's bank
    direct-debit agreement (token encrypted, aad bound to the row; only the last four digits of
    the bank card are kept)."""

    __tablename__ = "funding_sources"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # ecard_account | bank_agreement
    adapter: Mapped[str] = mapped_column(String(40))
    agreement_token_enc: Mapped[str | None] = mapped_column(Text, default=None)
    card_last4: Mapped[str | None] = mapped_column(String(4), default=None)
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | revoked
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CardBinSetting(Base):
    """A school's bank co-branded card BIN prefixes: cards starting with one pay by bank agreement."""

    __tablename__ = "card_bin_settings"
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), primary_key=True)
    co_branded: Mapped[dict[str, Any]] = mapped_column()  # {"prefixes": [...]}
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NetworkAllowlist(Base):
    """Private networks a school's providers may live in (production), set by the platform admin
    only (docs/decisions/0014-outbound-guard.md). No row: no private address is allowed."""

    __tablename__ = "network_allowlists"
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), primary_key=True)
    cidrs: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoutingConfig(Base):
    """A school's routing rule set (a validated JSON document) and its version."""

    __tablename__ = "routing_configs"
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column()
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CircuitBreaker(Base):
    """Breaker state per (school, adapter) when no Redis is configured (docs/decisions/0010)."""

    __tablename__ = "circuit_breakers"
    school_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    adapter: Mapped[str] = mapped_column(String(40), primary_key=True)
    state: Mapped[str] = mapped_column(String(10), default="closed")  # closed | open | half_open
    failures: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None] = mapped_column(default=None)
    trial_until: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StudentControls(Base):
    """What a student's guardians set (COMPLIANCE rules 15-16): spending limits in fen (None:
    not set, the school's default applies) and the merchant categories face payment is kept to
    (None: no restriction). No row: nothing set."""

    __tablename__ = "student_controls"
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id"), primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    per_payment: Mapped[int | None] = mapped_column(BigInteger, default=None)
    per_meal_period: Mapped[int | None] = mapped_column(BigInteger, default=None)
    per_day: Mapped[int | None] = mapped_column(BigInteger, default=None)
    per_week: Mapped[int | None] = mapped_column(BigInteger, default=None)
    face_categories: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SchoolLimitPolicy(Base):
    """A school's limit defaults (for students whose guardians set none) and ceilings (no
    guardian limit may exceed one; they cap every student), each ``{kind: fen | None}``."""

    __tablename__ = "school_limit_policies"
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), primary_key=True)
    defaults: Mapped[dict[str, Any]] = mapped_column()
    ceilings: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
