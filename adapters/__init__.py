"""Provider adapters. Nothing here imports the gateway; see ``adapters.base`` for the interface."""

from adapters.base import (
    Adapter,
    AdapterConfigError,
    AdapterError,
    BaseAdapter,
    Capabilities,
    Outcome,
    PaymentRequest,
    ProviderConfig,
    ProviderResult,
    ProviderUnreachable,
    RefundRequest,
    Refusal,
)
from adapters.registry import AdapterRegistry, UnknownAdapter, default_registry

__all__ = [
    "Adapter",
    "AdapterConfigError",
    "AdapterError",
    "AdapterRegistry",
    "BaseAdapter",
    "Capabilities",
    "Outcome",
    "PaymentRequest",
    "ProviderConfig",
    "ProviderResult",
    "ProviderUnreachable",
    "RefundRequest",
    "Refusal",
    "UnknownAdapter",
    "default_registry",
]
