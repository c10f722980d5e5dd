"""Configuration: environment variables ``CAMPUSPAY_*`` and an optional TOML file.

Precedence: explicit arguments > environment > TOML file > defaults.
"""

from __future__ import annotations

import base64
import enum
import os
from pathlib import Path
from typing import Any

from limits import parse as parse_rate
from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["Environment", "Settings"]


class Environment(enum.StrEnum):
    SANDBOX = "sandbox"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAMPUSPAY_", extra="forbid", toml_file=None)

    env: Environment = Environment.SANDBOX
    data_dir: Path = Path(".campuspay")
    database_url: str | None = None  # default: SQLite file in data_dir
    redis_url: str | None = None
    redis_prefix: str = "campuspay:"
    # Each Redis command waits at most this long; then that request uses the fallbacks, and
    # Redis is not tried again for redis_retry_pause_seconds (docs/operations.md "Redis outages").
    redis_timeout_seconds: float = Field(default=0.5, gt=0)
    redis_retry_pause_seconds: float = Field(default=1.0, ge=0)
    bootstrap_token: str | None = None
    public_base_url: str = "http://127.0.0.1:8080"
    # 32 bytes, base64. In sandbox a key is generated into the data directory when unset;
    # production refuses to start without one.
    master_key: str | None = None
    # Earlier master keys, oldest first, kept while data wrapped with them is re-wrapped
    # (`campuspay rewrap`). The oldest is also the root of keyed hashes, which never change.
    previous_master_keys: list[str] = Field(default_factory=list)
    signature_max_skew_seconds: int = Field(default=300, ge=1, le=3600)
    idempotency_retention_hours: int = Field(default=48, ge=24)
    # Offline records older than this (by their sale time) are held for review, not posted
    # (decision 0019): a terminal that was offline longer uploads them for a person to look at.
    offline_max_age_hours: int = Field(default=72, ge=1, le=24 * 31)
    sync_budget_seconds: float = Field(default=20.0, gt=0)
    recovery_deadline_seconds: float = Field(default=60.0, gt=0)
    recovery_interval_seconds: float = Field(default=2.0, gt=0)
    recovery_max_backoff_seconds: float = Field(default=30.0, gt=0)
    # How often a payment or refund in the needs-attention queue (its provider kept refusing the
    # gateway's requests past the recovery deadline) is tried again (docs/operations.md).
    refusal_retry_seconds: float = Field(default=300.0, gt=0)
    provider_timeout_seconds: float = Field(default=10.0, gt=0)
    # The audit sealer chains new entries every audit_seal_interval_seconds; verify reports an
    # entry still unsealed audit_seal_deadline_seconds after it was written as a break
    # (decision 0021, docs/operations.md "The audit chain").
    audit_seal_interval_seconds: float = Field(default=0.5, gt=0, le=5)
    audit_seal_deadline_seconds: float = Field(default=10.0, gt=0)
    # Outgoing webhooks (docs/webhooks.md): the delay before each retry, in seconds, comma-
    # separated (each delay is jittered by up to 10 % either way; after the last one a delivery
    # is given up); the default spreads over about 3.9 days. An endpoint whose deliveries have
    # all failed for webhook_disable_after_hours is disabled.
    webhook_retry_schedule: str = "5,30,120,600,3600,10800,21600,43200,86400,86400,86400"
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    webhook_interval_seconds: float = Field(default=0.5, gt=0, le=10)
    webhook_disable_after_hours: float = Field(default=120.0, gt=0)
    # Requests per device, in the `limits` notation ("600/minute"); "off" turns limiting off.
    # Shared across processes through Redis when redis_url is set (docs/operations.md).
    device_rate_limit: str | None = "600/minute"
    max_body_bytes: int = 64 * 1024
    max_batch_body_bytes: int = 1024 * 1024
    # The HTTP server's guards against slow and surplus clients (gateway/server.py, decision
    # 0013): a request's headers must arrive within header_timeout_seconds of its first byte
    # (of the connection, for a new one), its body within body_timeout_seconds of the headers.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    # Bearer token for GET /metrics. Unset: /metrics is open in sandbox and not served (404) in
    # production.
    metrics_token: str | None = Field(default=None, min_length=16)
    log_level: str = "INFO"
    config_file: Path | None = None

    @model_validator(mode="after")
    def _deadline_after_handover(self) -> Settings:
        # A payment whose request died is picked up sync_budget + 2 s after it started; the
        # worker must still have time to *query* it before the deadline forces a reversal.
        if self.recovery_deadline_seconds <= self.sync_budget_seconds + 2:
            raise ValueError("recovery_deadline_seconds must exceed sync_budget_seconds + 2")
        return self

    @model_validator(mode="after")
    def _seal_deadline_after_passes(self) -> Settings:
        # a deadline shorter than a few sealer passes would report a healthy sealer as a break
        if self.audit_seal_deadline_seconds < 4 * self.audit_seal_interval_seconds:
            raise ValueError("audit_seal_deadline_seconds must be at least 4 x audit_seal_interval_seconds")
        return self

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        try:
            delays = [float(part) for part in v.split(",")]
        except ValueError:
            raise ValueError("webhook_retry_schedule: seconds, comma-separated") from None
        if not delays or any(d <= 0 for d in delays):
            raise ValueError("webhook_retry_schedule: one or more delays, each above 0 s")
        return v

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        return tuple(float(part) for part in self.webhook_retry_schedule.split(","))

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        v = v.rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError("public_base_url must start with http:// or https://")
        return v

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("device_rate_limit")
    @classmethod
    def _rate_parses(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() in ("", "off", "none"):
            return None
        try:
            item = parse_rate(v)
        except ValueError as exc:
            raise ValueError(f"device_rate_limit {v!r} is not a rate like '600/minute'") from exc
        if item.amount < 1:
            raise ValueError("device_rate_limit must allow at least one request")
        return v

    @field_validator("master_key")
    @classmethod
    def _master_key_is_32_bytes(cls, v: str | None) -> str | None:
        if v is not None and len(base64.b64decode(v, validate=True)) != 32:
            raise ValueError("master_key must be 32 bytes, base64-encoded")
        return v

    @field_validator("previous_master_keys")
    @classmethod
    def _previous_keys_are_32_bytes(cls, v: list[str]) -> list[str]:
        for key in v:
            if len(base64.b64decode(key, validate=True)) != 32:
                raise ValueError("previous_master_keys must each be 32 bytes, base64-encoded")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, file_secret_settings)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Settings from a TOML file (if given), then the environment, then ``overrides``."""
        base: dict[str, Any] = {}
        if config_file is not None:
            if not config_file.is_file():
                raise FileNotFoundError(f"config file not found: {config_file}")
            toml = dict(TomlConfigSettingsSource(cls, toml_file=config_file)())
            # The environment outranks the file: drop file values the environment sets.
            base = {k: v for k, v in toml.items() if f"CAMPUSPAY_{k.upper()}" not in os.environ}
            base["config_file"] = config_file
        return cls(**{**base, **overrides})

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'campuspay.db').resolve()}"

    @property
    def is_sandbox(self) -> bool:
        return self.env is Environment.SANDBOX
