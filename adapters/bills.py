"""Helpers every adapter's bill parser shares: yuan as Decimal, and a bill row's time."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from adapters.base import BillUnavailable

__all__ = ["BEIJING", "MALFORMED", "beijing_time", "yuan_to_fen"]

MALFORMED = "MALFORMED_BILL"
# Asia/Shanghai is UTC+8 all year (no daylight saving): a fixed offset is exact.
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
_YUAN = re.compile(r"-?[0-9]{1,12}(?:\.[0-9]{1,2})?")


def yuan_to_fen(text: str) -> int:
    """``"12.50"`` -> 1250, ``"-3.1"`` -> -310. Parsed with Decimal, never float: a bill's
    amounts are summed by the thousand and a float would drift. Only plain decimals with at most
    two places are bill amounts (no exponent, no NaN, at most 12 integer digits); anything else
    raises ``BillUnavailable``."""
    plain = text.strip().replace(",", "")
    if not _YUAN.fullmatch(plain):
        raise BillUnavailable(MALFORMED, f"not an amount in yuan: {text[:20]!r}")
    return int(Decimal(plain) * 100)


def beijing_time(text: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> datetime | None:
    """A bill's local (Beijing) time as an aware datetime; None when the field is empty."""
    text = text.strip()
    if not text:
        return None
    try:
        return datetime.strptime(text, fmt).replace(tzinfo=BEIJING)
    except ValueError:
        raise BillUnavailable(MALFORMED, f"not a time: {text[:25]!r}") from None
