"""The audit chain (decision 0021): append is one INSERT in the caller's transaction, the sealer
chains entries without forking however many processes seal, and verify finds edits, deletions,
forged entries, a cut tail (through a head published earlier) and entries left unsealed."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, event, insert, select, text, update

from gateway.protection import audit
from gateway.protection.auditlog import AuditLog
from gateway.protection.crypto import Keyring
from gateway.store.db import Database, run_migrations
from gateway.store.models import AuditEntry, AuditHead, UTCDateTime, utcnow
from tests.harness import TEST_MASTER_KEY, Clock, _sqlite_from_template

pytestmark = pytest.mark.integration

KEYRING = Keyring.from_b64(TEST_MASTER_KEY)


def _log(db: Database, clock: Clock | None = None) -> AuditLog:
    return AuditLog(db, KEYRING, clock=clock or Clock(), interval=0.01, seal_deadline=10.0)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await asyncio.to_thread(_sqlite_from_template, database_url)  # a migrated copy (SQLite only)
    database = Database(database_url)
    await database.migrate()
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def chain() -> str:
    # the PostgreSQL database is shared by a session's tests: a chain of this test alone
    return "t_" + secrets.token_hex(8)


async def _append(db: Database, chain: str, n: int = 1, **data: Any) -> None:
    async with db.transaction() as session:
        for i in range(n):
            await audit.append(
                session,
                KEYRING,
                chain=chain,
                actor="system:test",
                action="test.happened",
                object_type="test",
                object_id=f"obj_{i}",
                data={"i": i, **data},
            )


async def _entries(db: Database, chain: str) -> list[AuditEntry]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.id)
        )
        return list(rows.scalars())


async def test_append_is_one_insert_and_reads_nothing(db: Database, chain: str) -> None:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    async with db.transaction() as session:
        await session.connection()  # the transaction has begun (SQLite's BEGIN is a statement)
        event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        try:
            await audit.append(
                session, KEYRING, chain=chain, actor="a", action="b", object_type="c", object_id="d"
            )
        finally:
            event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert len(statements) == 1, statements  # was 4: insert the head, lock it, insert, update it
    assert statements[0].lstrip().upper().startswith("INSERT INTO AUDIT_LOG")


async def test_a_rolled_back_transaction_leaves_no_entry(db: Database, chain: str) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await audit.append(
                session, KEYRING, chain=chain, actor="a", action="b", object_type="c", object_id="d"
            )
            raise RuntimeError("the change fails after its audit entry was written")
    assert await _entries(db, chain) == []
    log = _log(db)
    assert await log.seal(chain) == 0
    assert (await log.verify(chain))["head"] == {"seq": 0, "hash": audit.GENESIS}


async def test_entries_show_at_once_and_are_chained_by_the_sealer(db: Database, chain: str) -> None:
    log = _log(db)
    await _append(db, chain, 3)
    listed = await log.read(chain, 0, 100)
    assert [(e["seq"], e["hash"], e["object_id"]) for e in listed] == [
        (None, None, "obj_0"),
        (None, None, "obj_1"),
        (None, None, "obj_2"),
    ]
    before = await log.verify(chain)  # not sealed yet, but well within the deadline: intact
    assert before == {
        "intact": True,
        "first_break": None,
        "head": {"seq": 0, "hash": audit.GENESIS},
        "unsealed": 3,
    }
    assert await log.seal() >= 3
    listed = await log.read(chain, 0, 100)
    assert [(e["seq"], e["object_id"]) for e in listed] == [(1, "obj_0"), (2, "obj_1"), (3, "obj_2")]
    after = await log.verify(chain)
    assert after == {
        "intact": True,
        "first_break": None,
        "head": {"seq": 3, "hash": listed[-1]["hash"]},
        "unsealed": 0,
    }
    # paging on: sealed entries after the last seq read, then what is not sealed yet
    await _append(db, chain, 1)
    assert [(e["seq"], e["object_id"]) for e in await log.read(chain, 2, 100)] == [
        (3, "obj_2"),
        (None, "obj_0"),
    ]
    assert [e["seq"] for e in await log.read(chain, 0, 2)] == [1, 2]


async def test_an_entry_edited_or_deleted_after_sealing_is_found(db: Database, chain: str) -> None:
    log = _log(db)
    await _append(db, chain, 5)
    await log.seal(chain)
    async with db.transaction() as session:
        await session.execute(
            update(AuditEntry)
            .where(AuditEntry.chain == chain, AuditEntry.seq == 2)
            .values(data={"i": 1, "amount": 1})
        )
    assert (await log.verify(chain))["first_break"] == {"seq": 2, "reason": "entry edited"}
    async with db.transaction() as session:
        await session.execute(delete(AuditEntry).where(AuditEntry.chain == chain, AuditEntry.seq <= 2))
    assert (await log.verify(chain))["first_break"] == {"seq": 1, "reason": "entry deleted"}


async def test_entries_not_written_by_the_gateway_are_found(db: Database, chain: str) -> None:
    """Someone with database access but no key inserts an entry for the sealer to chain, or
    strips a sealed entry's mac: the sealer chains what it finds, and verify flags it."""
    log = _log(db)
    await _append(db, chain, 2)
    await log.seal(chain)
    forged = {
        "chain": chain,
        "at": utcnow(),
        "actor": "school_admin:key_x",
        "action": "consent.recorded",
        "object_type": "consent",
        "object_id": "con_x",
        "data": {},
    }
    async with db.transaction() as session:
        await session.execute(insert(AuditEntry), [{**forged, "mac": "0" * 64}])
    assert (await log.verify(chain))["first_break"] == {"seq": None, "reason": "entry edited"}
    await log.seal(chain)
    assert (await log.verify(chain))["first_break"] == {"seq": 3, "reason": "entry edited"}

    other = chain[:-1] + ("x" if chain[-1] != "x" else "y")
    await _append(db, other, 2)
    await log.seal(other)
    async with db.transaction() as session:
        await session.execute(
            update(AuditEntry).where(AuditEntry.chain == other, AuditEntry.seq == 2).values(mac=None)
        )
    assert (await log.verify(other))["first_break"] == {"seq": 2, "reason": "entry edited"}


async def test_a_cut_tail_is_found(db: Database, chain: str) -> None:
    log = _log(db)
    await _append(db, chain, 3)
    await log.seal(chain)
    async with db.transaction() as session:
        old_head = (await session.execute(select(AuditHead).where(AuditHead.chain == chain))).scalar_one()
        kept = (old_head.seq, old_head.hash, old_head.mac)
    await _append(db, chain, 2)
    await log.seal(chain)
    published = (await log.verify(chain))["head"]
    assert published["seq"] == 5

    async with db.transaction() as session:
        await session.execute(delete(AuditEntry).where(AuditEntry.chain == chain, AuditEntry.seq > 3))
    # the head row still names entry 5
    assert (await log.verify(chain))["first_break"] == {"seq": 4, "reason": "newest entries deleted"}

    async with db.transaction() as session:
        entry3 = (
            await session.execute(select(AuditEntry).where(AuditEntry.chain == chain, AuditEntry.seq == 3))
        ).scalar_one()
        await session.execute(
            update(AuditHead).where(AuditHead.chain == chain).values(seq=3, hash=entry3.hash)
        )
    # the head moved back to entry 3, but its mac cannot be made without the key
    assert (await log.verify(chain))["first_break"] == {"seq": 4, "reason": "chain head edited"}
    async with db.transaction() as session:
        await session.execute(update(AuditHead).where(AuditHead.chain == chain).values(mac=None))
    assert (await log.verify(chain))["first_break"] == {"seq": 4, "reason": "chain head edited"}

    async with db.transaction() as session:  # the head row exactly as it was at seq 3, mac and all
        await session.execute(
            update(AuditHead).where(AuditHead.chain == chain).values(seq=kept[0], hash=kept[1], mac=kept[2])
        )
    # inside the database the cut cannot be told from a chain that ended at 3 ...
    assert (await log.verify(chain))["intact"] is True
    # ... the head published earlier tells it
    assert (await log.verify(chain, (published["seq"], published["hash"])))["first_break"] == {
        "seq": 4,
        "reason": "newest entries deleted",
    }
    assert (await log.verify(chain, (3, entry3.hash)))["intact"] is True
    assert (await log.verify(chain, (2, entry3.hash)))["first_break"] == {
        "seq": 2,
        "reason": "does not match the published head",
    }


async def test_an_entry_left_unsealed_past_the_deadline_is_a_break(db: Database, chain: str) -> None:
    clock = Clock()
    log = _log(db, clock)
    await _append(db, chain, 2)
    await log.seal(chain)
    await _append(db, chain, 1)
    assert (await log.verify(chain))["intact"] is True  # written just now: the sealer has time
    clock.advance(seconds=11)  # no sealer ran for longer than the 10 s deadline
    result = await log.verify(chain)
    assert result["first_break"] == {"seq": None, "reason": "entry not sealed in time"}
    assert (result["intact"], result["head"]["seq"], result["unsealed"]) == (False, 2, 1)
    await log.seal(chain)
    assert (await log.verify(chain))["intact"] is True


async def test_the_background_sealer_chains_what_is_committed(db: Database, chain: str) -> None:
    log = _log(db)
    await log.start()
    try:
        await _append(db, chain, 3)
        for _ in range(2000):  # bounded wait for a pass (they are 10 ms apart here)
            if (await log.verify(chain))["unsealed"] == 0:
                break
            await asyncio.sleep(0.01)
        result = await log.verify(chain)
        assert (result["intact"], result["head"]["seq"], result["unsealed"]) == (True, 3, 0)
        await _append(db, chain, 2)
    finally:
        await log.stop()  # seals what was committed last
    result = await log.verify(chain)
    assert (result["intact"], result["head"]["seq"], result["unsealed"]) == (True, 5, 0)


async def test_concurrent_appends_and_sealers_of_two_processes_never_fork(
    database_url: str, chain: str
) -> None:
    """Two Database objects stand for two gateway processes: each appends from several tasks
    while both run their background sealers and seal on demand as well."""
    dbs = [Database(database_url), Database(database_url)]
    await dbs[0].migrate()
    logs = [_log(d) for d in dbs]
    rounds, writers_per_db = 15, 4
    try:
        for log in logs:
            await log.start()

        async def writer(index: int, name: str) -> None:
            for i in range(rounds):
                await _append(dbs[index], chain, 2, writer=name, round=i)  # two entries per transaction
                if i % 5 == 4:
                    await logs[1 - index].seal(chain)  # the other process seals on demand meanwhile

        await asyncio.gather(*(writer(d, f"{d}.{w}") for d in range(len(dbs)) for w in range(writers_per_db)))
        for log in logs:
            await log.stop()
        await logs[1].seal()
        total = 2 * rounds * writers_per_db * len(dbs)
        result = await logs[0].verify(chain)
        assert result["intact"] is True and result["unsealed"] == 0, result
        assert result["head"]["seq"] == total
        entries = sorted(await _entries(dbs[0], chain), key=lambda e: e.seq or 0)
    finally:
        for log in logs:
            await log.stop()
        for d in dbs:
            await d.dispose()
    assert [e.seq for e in entries] == list(range(1, total + 1))
    # Causal order holds within a transaction and from each transaction of a writer to its next
    # (concurrent transactions may interleave: the chain follows the ids the database handed out)
    by_writer: dict[str, list[tuple[int, str]]] = {}
    for e in entries:
        by_writer.setdefault(e.data["writer"], []).append((e.data["round"], e.object_id))
    assert len(by_writer) == writers_per_db * len(dbs)
    for sequence in by_writer.values():
        assert sequence == [(i, obj) for i in range(rounds) for obj in ("obj_0", "obj_1")]


@pytest.mark.postgres
async def test_append_never_waits_for_a_sealer_holding_the_head(postgres_url: str, chain: str) -> None:
    """With the head row locked as a sealer locks it, appending and committing still go
    through with a lock timeout of 1 ms: no payment queues on the chain any more."""
    db = Database(postgres_url)
    await db.migrate()
    log = _log(db)
    try:
        await _append(db, chain, 1)
        await log.seal(chain)  # the head row exists
        async with db.transaction() as sealer:
            await sealer.execute(select(AuditHead).where(AuditHead.chain == chain).with_for_update())
            async with db.transaction() as session:
                await session.execute(text("SET LOCAL lock_timeout = '1ms'"))
                await audit.append(
                    session, KEYRING, chain=chain, actor="a", action="b", object_type="c", object_id="d"
                )
            assert await audit.seal(sealer, KEYRING, [chain], wait=False, limit=10) == 1
        assert (await log.verify(chain))["head"]["seq"] == 2
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_background_pass_skips_a_chain_another_sealer_holds(postgres_url: str, chain: str) -> None:
    db = Database(postgres_url)
    await db.migrate()
    log = _log(db)
    try:
        await _append(db, chain, 1)
        await log.seal(chain)
        await _append(db, chain, 1)
        async with db.transaction() as other:
            await other.execute(select(AuditHead).where(AuditHead.chain == chain).with_for_update())
            assert await log.seal(chain, wait=False) == 0  # skipped, not waited for
        assert await log.seal(chain, wait=False) == 1
    finally:
        await db.dispose()


# -- migration 0009: chains sealed before it stay valid --


async def test_migration_0009_keeps_existing_chains_valid(empty_database_url: str) -> None:
    url, chain = empty_database_url, "sch_legacy"
    await asyncio.to_thread(run_migrations, url, "0008")
    db = Database(url)
    columns = (
        "chain",
        "seq",
        "at",
        "actor",
        "action",
        "object_type",
        "object_id",
        "data",
        "prev_hash",
        "hash",
    )
    types = {"at": UTCDateTime(), "data": sa.JSON()}
    old_log = sa.table("audit_log", *(sa.column(c, types.get(c)) for c in columns))
    try:
        key, prev = KEYRING.derive(audit.CHAIN_KEY), audit.GENESIS
        async with db.engine.begin() as conn:
            for seq in (1, 2, 3):  # written the way append wrote them before 0009: no mac
                at = utcnow()
                content = audit._content(
                    chain, at, "system:test", "test.happened", "test", f"o{seq}", {"n": seq}
                )
                digest = audit._entry_hash(key, content, seq, None, prev)
                await conn.execute(
                    sa.insert(old_log).values(
                        chain=chain,
                        seq=seq,
                        at=at,
                        actor="system:test",
                        action="test.happened",
                        object_type="test",
                        object_id=f"o{seq}",
                        data={"n": seq},
                        prev_hash=prev,
                        hash=digest,
                    )
                )
                prev = digest
            await conn.execute(
                sa.text("INSERT INTO audit_heads (chain, seq, hash) VALUES (:c, 3, :h)"),
                {"c": chain, "h": prev},
            )
        await db.migrate()
        log = _log(db)
        assert await log.verify(chain) == {
            "intact": True,
            "first_break": None,
            "head": {"seq": 3, "hash": prev},
            "unsealed": 0,
        }
        await _append(db, chain, 2)
        await log.seal(chain)
        after = await log.verify(chain)
        assert after["intact"] is True and after["head"]["seq"] == 5
        async with db.transaction() as session:
            head = (await session.execute(select(AuditHead).where(AuditHead.chain == chain))).scalar_one()
            assert head.mac is not None  # signed the first time the sealer moved it
    finally:
        await db.dispose()
