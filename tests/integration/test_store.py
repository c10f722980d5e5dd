"""Storage: migrations match the models; the audit chain exposes edits; Redis nonces."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, select, update

from gateway.store.db import Database
from gateway.store.models import AuditEntry, Base
from tests.harness import Harness, start_harness
from tests.signing_helpers import signed

pytestmark = pytest.mark.integration


async def test_migrations_create_exactly_the_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.migrate()
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await db.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


async def _pay_a_few(h: Harness) -> None:
    async with h.client() as client:
        for amount in (100, 200, 300):
            await client.create_payment(**h.payment(amount=amount))


async def _verify(h: Harness) -> dict[str, object]:
    r = await h.admin("GET", f"/v1/schools/{h.school_id}/audit/verify")
    assert r.status_code == 200
    return dict(r.json())


async def test_audit_chain_is_intact_then_finds_the_first_edit(harness: Harness) -> None:
    await _pay_a_few(harness)
    assert await _verify(harness) == {"intact": True, "first_break": None}
    entries = (await harness.admin("GET", f"/v1/schools/{harness.school_id}/audit")).json()["data"]
    actions = [e["action"] for e in entries]
    assert actions.count("payment.created") == 3 and actions.count("payment.succeeded") == 3
    victim = entries[len(entries) // 2]["seq"]
    async with harness.services.db.transaction() as session:
        # someone with database access changes an amount and even recomputes nothing else
        entry = (
            await session.execute(
                select(AuditEntry).where(AuditEntry.chain == harness.school_id, AuditEntry.seq == victim)
            )
        ).scalar_one()
        await session.execute(
            update(AuditEntry).where(AuditEntry.id == entry.id).values(data={**entry.data, "amount": 1})
        )
    assert await _verify(harness) == {
        "intact": False,
        "first_break": {"seq": victim, "reason": "entry edited"},
    }


async def test_audit_chain_finds_a_deleted_entry(harness: Harness) -> None:
    await _pay_a_few(harness)
    async with harness.services.db.transaction() as session:
        await session.execute(
            delete(AuditEntry).where(AuditEntry.chain == harness.school_id, AuditEntry.seq == 3)
        )
    assert await _verify(harness) == {"intact": False, "first_break": {"seq": 3, "reason": "entry deleted"}}


@pytest.mark.redis
async def test_nonces_in_redis_are_single_use(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    prefix = redis_prefix
    async with start_harness(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        data_dir=tmp_path,
        redis_url=redis_url,
        redis_prefix=prefix,
    ) as h:
        redis = h.services.redis
        assert redis is not None
        assert h.device is not None
        request = signed(h, h.device, "GET", "/v1/payments?merchant_order_id=x")
        first = await h.gateway.send(request)
        assert first.status_code == 200
        replay = await h.gateway.send(request)
        assert replay.status_code == 401 and replay.json()["code"] == "nonce_reused"
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        assert len([k for k in keys if k.startswith(f"{prefix}nonce:".encode())]) == 1
        ready = (await h.gateway.get("/readyz")).json()
        assert ready["checks"] == {"database": "ok", "redis": "ok"}
