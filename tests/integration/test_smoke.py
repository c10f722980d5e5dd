import pytest

from tests.harness import Harness

pytestmark = pytest.mark.integration


async def test_card_payment_debits_once(harness: Harness) -> None:
    async with harness.client() as client:
        result = await client.create_payment(**harness.payment(amount=1250))
    assert result.status_code == 201
    assert result.body["status"] == "succeeded"
    assert result.body["student"] == harness.cards["31000001"]
    debits = await harness.debits()
    assert [d["amount"] for d in debits] == [1250]
    assert await harness.balance("31000001") == 100_000 - 1250
