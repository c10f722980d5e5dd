"""The settings cache: bounded age, revalidation by version, local drops."""

from __future__ import annotations

import time

import pytest

from gateway.store.cache import MAX_AGE, SettingsCache


def test_a_value_is_fresh_until_its_age_runs_out_then_only_stale() -> None:
    cache: SettingsCache[str, int] = SettingsCache(max_age=0.05)
    cache.put("a", 1)
    assert cache.fresh("a") == (True, 1)
    time.sleep(0.1)  # only ever more expired on a slower machine
    assert cache.fresh("a") == (False, None)
    assert cache.stale("a") == 1  # kept for revalidation against the row's version


def test_drop_removes_only_what_it_names() -> None:
    cache: SettingsCache[tuple[str, str], int] = SettingsCache()
    cache.put(("sch_a", "ecard"), 1)
    cache.put(("sch_b", "ecard"), 2)
    cache.drop(lambda key: key[0] == "sch_a")
    assert cache.fresh(("sch_a", "ecard")) == (False, None)
    assert cache.fresh(("sch_b", "ecard")) == (True, 2)


def test_nobody_can_configure_a_staler_cache_than_the_rule_allows() -> None:
    with pytest.raises(ValueError, match="at most"):
        SettingsCache(max_age=MAX_AGE + 1)


def test_the_bound_on_entries_keeps_memory_flat() -> None:
    cache: SettingsCache[int, int] = SettingsCache(max_entries=3)
    for i in range(10):
        cache.put(i, i)
    assert sum(cache.fresh(i)[0] for i in range(10)) <= 3
    assert cache.fresh(9) == (True, 9)
