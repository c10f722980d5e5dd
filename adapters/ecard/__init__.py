"""Adapter for the campus e-card (one-card) system, dialect in docs/ecard-protocol.md."""

from adapters.ecard.adapter import EcardAdapter
from adapters.ecard.types import (
    MAX_OFFLINE_RECORDS,
    BlacklistChange,
    CardReplacement,
    CardStatus,
    CardStatusChange,
    EcardRefused,
    EcardRequestInvalid,
    EcardUnverified,
    OfflineRecord,
    OfflineResult,
    SubsidyWallet,
)

__all__ = [
    "MAX_OFFLINE_RECORDS",
    "BlacklistChange",
    "CardReplacement",
    "CardStatus",
    "CardStatusChange",
    "EcardAdapter",
    "EcardRefused",
    "EcardRequestInvalid",
    "EcardUnverified",
    "OfflineRecord",
    "OfflineResult",
    "SubsidyWallet",
]
