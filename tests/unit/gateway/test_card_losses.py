"""The loss-period arithmetic offline records are judged by (COMPLIANCE 20, decision 0019)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.cards.losses import was_lost

T = datetime(2026, 9, 1, 12, tzinfo=UTC)
H = timedelta(hours=1)


def test_a_moment_is_lost_from_the_report_until_the_card_is_found() -> None:
    periods = [(T, T + H)]
    assert not was_lost(periods, T - timedelta(microseconds=1))
    assert was_lost(periods, T)  # made at the very moment of the report: held
    assert was_lost(periods, T + H - timedelta(microseconds=1))
    assert not was_lost(periods, T + H)  # found: the card works again


def test_every_period_counts_and_an_open_one_lasts() -> None:
    periods = [(T, T + H), (T + 3 * H, None)]
    assert [was_lost(periods, T + n * H / 2) for n in range(10)] == [
        True, True, False, False, False, False, True, True, True, True,
    ]  # fmt: skip
    assert not was_lost([], T)
