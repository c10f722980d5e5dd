"""What two gateway processes on one database may and may not cache (issue 8, decision 0020):
a revoked device key is refused by the other process at its very next request; a settings
change made through one process is used by that process at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.client import CampusPayError
from tests.harness import Harness, start_harness

pytestmark = pytest.mark.integration


async def _pay(h: Harness) -> int:
    async with h.client(max_retries=0) as client:
        try:
            result = await client.create_payment(**h.payment(amount=100))
        except CampusPayError as exc:
            return exc.status
    return result.status_code


async def test_a_key_revoked_in_one_process_is_refused_by_the_other_at_once(
    database_url: str, tmp_path: Path
) -> None:
    async with start_harness(database_url=database_url, data_dir=tmp_path / "a") as first:
        assert first.device is not None
        async with start_harness(
            database_url=database_url, data_dir=tmp_path / "b", seed=False, sandbox_app=first.sandbox_app
        ) as second:
            second.device, second.store_id, second.cards = first.device, first.store_id, first.cards
            second.school_id = first.school_id
            assert await _pay(second) == 201  # the key is known and used in the second process
            r = await first.admin("DELETE", f"/v1/schools/{first.school_id}/devices/{first.device.device_id}")
            assert r.status_code == 204, r.text
            assert await _pay(second) == 401  # no cached "yes" in the second process


async def test_a_provider_change_made_here_is_used_here_at_once(harness: Harness) -> None:
    """The e-card secret is replaced by a wrong one: the very next payment of the process that
    made the change signs with it instead of using the settings cached a moment before. The
    e-card cannot sign a refusal for a secret it does not know, so the payment is left unknown
    (``processing``, decision 0012); with the cached settings it would have succeeded."""
    assert await _pay(harness) == 201
    settings = {
        "endpoint": f"{harness.provider_base}/ecard",
        "credentials": {"merchant_id": harness.merchant_id, "secret": "not-" + harness.merchant_secret},
    }
    r = await harness.admin("PUT", f"/v1/schools/{harness.school_id}/providers/ecard", settings)
    assert r.status_code == 200, r.text
    async with harness.client(max_retries=0) as client:
        result = await client.create_payment(**harness.payment(amount=100))
    assert result.status_code == 202 and result.body["status"] == "processing"
