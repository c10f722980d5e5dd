"""Storage: migrations match the models and carry existing data; the audit chain exposes edits
and a cut tail; Redis nonces."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, select, update

from gateway.store.db import Database, alembic_config, run_migrations
from gateway.store.models import AuditEntry, AuditHead, Base, CardLoss, UTCDateTime
from gateway.store.payments import PaymentRepository
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
    await h.services.audit.seal()  # the sealer runs every 0.5 s; the tests below edit by seq


async def _verify(h: Harness, **params: Any) -> dict[str, object]:
    r = await h.admin("GET", f"/v1/schools/{h.school_id}/audit/verify?{urlencode(params)}")
    assert r.status_code == 200, r.text
    body = dict(r.json())
    assert set(body) == {"intact", "first_break", "head", "unsealed"}
    return {"intact": body["intact"], "first_break": body["first_break"]}


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


async def test_audit_verify_publishes_the_head_and_checks_one_kept_earlier(harness: Harness) -> None:
    """The head of each answer, kept outside the database, shows a cut tail later even when
    the head row was put back as it was (decision 0021)."""
    h = harness
    await _pay_a_few(h)
    path = f"/v1/schools/{h.school_id}/audit/verify"
    head = (await h.admin("GET", path)).json()["head"]
    entries = (await h.admin("GET", f"/v1/schools/{h.school_id}/audit?limit=1000")).json()["data"]
    assert head == {"seq": entries[-1]["seq"], "hash": entries[-1]["hash"]}
    async with h.services.db.transaction() as session:
        kept = (await session.execute(select(AuditHead).where(AuditHead.chain == h.school_id))).scalar_one()
        kept_row = {"seq": kept.seq, "hash": kept.hash, "mac": kept.mac}
    await _pay_a_few(h)
    later = (await h.admin("GET", path)).json()["head"]
    assert later["seq"] > head["seq"]
    assert await _verify(h, head_seq=head["seq"], head_hash=head["hash"]) == {
        "intact": True,
        "first_break": None,
    }

    async with h.services.db.transaction() as session:  # cut the tail, put the old head row back
        await session.execute(
            delete(AuditEntry).where(AuditEntry.chain == h.school_id, AuditEntry.seq > head["seq"])
        )
        await session.execute(update(AuditHead).where(AuditHead.chain == h.school_id).values(**kept_row))
    assert await _verify(h) == {"intact": True, "first_break": None}
    assert await _verify(h, head_seq=later["seq"], head_hash=later["hash"]) == {
        "intact": False,
        "first_break": {"seq": head["seq"] + 1, "reason": "newest entries deleted"},
    }
    r = await h.admin("GET", f"{path}?head_seq=3")
    assert r.status_code == 422 and r.json()["code"] == "validation_error"


async def test_audit_log_shows_an_entry_before_it_is_sealed(tmp_path: Path) -> None:
    async with start_harness(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", data_dir=tmp_path, run_workers=False
    ) as h:
        entries = (await h.admin("GET", f"/v1/schools/{h.school_id}/audit?limit=1000")).json()["data"]
        assert entries and all(e["seq"] is None and e["hash"] is None for e in entries)
        assert entries[0]["action"] == "school.created"
        verify = (await h.admin("GET", f"/v1/schools/{h.school_id}/audit/verify")).json()
        assert verify["unsealed"] == len(entries) and verify["head"]["seq"] == 0 and verify["intact"]
        await h.services.audit.seal()
        sealed = (await h.admin("GET", f"/v1/schools/{h.school_id}/audit?limit=1000")).json()["data"]
        assert [e["seq"] for e in sealed] == list(range(1, len(entries) + 1))
        assert [e["action"] for e in sealed] == [e["action"] for e in entries]


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


# -- migration 0008 (decision 0019): card loss history and payments' sale time, on existing data --

_BEFORE, _AFTER = "0007", "0008"  # the revision before ours, and ours
_T = datetime(2026, 9, 1, 4, 0, tzinfo=UTC)
_SOLD, _POSTED = _T + timedelta(days=1), _T + timedelta(days=2, hours=5)


def _table(name: str, *columns: str) -> sa.TableClause:
    """A table as an older revision has it: only the columns named; ``*_at`` typed like the models'."""
    return sa.table(
        name, *(sa.column(c, UTCDateTime()) if c.endswith("_at") else sa.column(c) for c in columns)
    )


async def _insert(conn: Any, table: str, /, **values: Any) -> None:
    await conn.execute(sa.insert(_table(table, *values)).values(**values))


async def _seed_before_0008(db: Database) -> None:
    async with db.engine.begin() as conn:
        await _insert(conn, "schools", id="sch_1", name="S", created_at=_T)
        await _insert(
            conn,
            "stores",
            id="sto_1",
            school_id="sch_1",
            name="C",
            merchant_category="canteen",
            timezone="Asia/Shanghai",
            created_at=_T,
        )
        await _insert(
            conn, "devices", id="dev_1", school_id="sch_1", name="till", status="active", created_at=_T
        )
        await _insert(
            conn,
            "students",
            id="stu_1",
            school_id="sch_1",
            external_ref="A1",
            age_band="under_14",
            status="active",
            created_at=_T,
        )
        for card_id, status, changed in (
            ("crd_lost", "lost", _T + timedelta(days=3)),
            ("crd_lost_unknown", "lost", None),  # lost, the time not recorded
            ("crd_found", "active", _T + timedelta(days=2)),  # lost and found once: when, unknown
        ):
            await _insert(
                conn,
                "cards",
                id=card_id,
                school_id="sch_1",
                student_id="stu_1",
                card_hash=card_id,
                last4="0001",
                funding_adapter="ecard",
                status=status,
                status_version=1,
                status_changed_at=changed,
                created_at=_T,
            )
        payment = {
            "school_id": "sch_1",
            "device_id": "dev_1",
            "store_id": "sto_1",
            "amount": 800,
            "currency": "CNY",
            "method": "card",
            "student_id": "stu_1",
            "status": "succeeded",
            "refunded_amount": 0,
            "recovery_attempts": 0,
            "reversal_requested": 0,
        }
        await _insert(
            conn,
            "payments",
            **payment,
            id="pay_online",
            merchant_order_id="o-1",
            created_at=_T,
            updated_at=_T,
        )
        # posted by the old code, which gave the payment the record's sale time as created_at
        await _insert(
            conn,
            "payments",
            **payment,
            id="pay_offline",
            merchant_order_id="off-1",
            created_at=_SOLD,
            updated_at=_POSTED,
        )
        await _insert(
            conn,
            "offline_records",
            id="ofr_1",
            school_id="sch_1",
            device_id="dev_1",
            batch_id="ob_1",
            terminal_seq=1,
            merchant_order_id="off-1",
            amount=800,
            currency="CNY",
            card_hash="crd_lost",
            card_last4="0001",
            store_id="sto_1",
            status="posted",
            payment_id="pay_offline",
            occurred_at=_SOLD,
            created_at=_POSTED,
        )


async def _payment_times(db: Database, *columns: str) -> dict[str, tuple[Any, ...]]:
    payments = _table("payments", "id", *columns)
    async with db.engine.connect() as conn:
        rows = await conn.execute(sa.select(*payments.c).select_from(payments))
        return {r[0]: tuple(r[1:]) for r in rows}


async def test_migration_0008_backfills_sale_times_and_loss_history(empty_database_url: str) -> None:
    url = empty_database_url
    db = Database(url)
    try:
        await asyncio.to_thread(run_migrations, url, _BEFORE)
        await _seed_before_0008(db)
        await asyncio.to_thread(run_migrations, url, _AFTER)
        assert await _payment_times(db, "created_at", "occurred_at") == {
            "pay_online": (_T, _T),
            "pay_offline": (_POSTED, _SOLD),  # taken when posted, sold the day before
        }
        async with db.transaction() as session:
            losses = await session.execute(
                select(CardLoss.card_id, CardLoss.lost_at, CardLoss.found_at).order_by(CardLoss.card_id)
            )
            assert list(losses) == [
                ("crd_lost", _T + timedelta(days=3), None),
                ("crd_lost_unknown", _T, None),  # from the card's creation: the safe side
            ]
            # the new code reads the migrated rows
            payment = await PaymentRepository(session).get("pay_offline")
            assert payment is not None and (payment.created_at, payment.occurred_at) == (_POSTED, _SOLD)
            assert await PaymentRepository(session).spent("stu_1", _SOLD, _SOLD + timedelta(seconds=1)) == 800
        # and back: created_at means the sale time again
        await asyncio.to_thread(command.downgrade, alembic_config(url), _BEFORE)
        assert await _payment_times(db, "created_at") == {"pay_online": (_T,), "pay_offline": (_SOLD,)}
        await db.migrate()  # up to the head again, data and all
    finally:
        await db.dispose()
