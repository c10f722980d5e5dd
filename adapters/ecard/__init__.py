"""Adapter for the campus e-card (one-card) system, dialect in docs/ecard-protocol.md."""

from adapters.ecard.adapter import EcardAdapter

__all__ = ["EcardAdapter"]
