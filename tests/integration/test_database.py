"""gateway.store.db: SQLite inline under a writer lock, read-only transactions beside writers,
a busy file retried without blocking the event loop, and no pre-ping (decision 0020)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError

from gateway.store.db import Database
from gateway.store.models import School, utcnow

pytestmark = pytest.mark.integration


async def _migrated(url: str) -> Database:
    db = Database(url)
    await db.migrate()
    return db


async def _schools(db: Database) -> int:
    async with db.transaction(readonly=True) as session:
        return int(await session.scalar(select(func.count()).select_from(School)) or 0)


async def test_a_read_only_transaction_cannot_write_on_sqlite(tmp_path: Path) -> None:
    db = await _migrated(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        with pytest.raises(OperationalError, match="readonly"):
            async with db.transaction(readonly=True) as session:
                session.add(School(id="sch_x", name="x", created_at=utcnow()))
        assert await _schools(db) == 0
    finally:
        await db.dispose()


async def test_reads_run_beside_an_open_write_transaction(tmp_path: Path) -> None:
    """A reader neither waits for the writer nor sees its uncommitted row (WAL snapshot)."""
    db = await _migrated(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    writing, read_done = asyncio.Event(), asyncio.Event()
    try:

        async def writer() -> None:
            async with db.transaction() as session:
                session.add(School(id="sch_w", name="w", created_at=utcnow()))
                await session.flush()
                writing.set()
                await read_done.wait()  # hold the write lock until the reader has read

        task = asyncio.create_task(writer())
        await writing.wait()
        assert await asyncio.wait_for(_schools(db), timeout=30) == 0
        read_done.set()
        await task
        assert await _schools(db) == 1
    finally:
        await db.dispose()


async def test_writers_of_one_process_queue_on_the_event_loop(tmp_path: Path) -> None:
    """Twenty concurrent read-modify-write transactions: none lost, none refused busy, and the
    loop keeps running meanwhile (a blocked loop would starve the ticker)."""
    db = await _migrated(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def add(i: int) -> None:
        async with db.transaction() as session:
            before = int(await session.scalar(select(func.count()).select_from(School)) or 0)
            await asyncio.sleep(0.005)  # other coroutines run while this one holds the lock
            session.add(School(id=f"sch_{i}", name=str(before), created_at=utcnow()))

    try:
        tick_task = asyncio.create_task(ticker())
        await asyncio.gather(*(add(i) for i in range(20)))
        stop.set()
        await tick_task
        assert await _schools(db) == 20
        async with db.transaction(readonly=True) as session:
            names = sorted(int(n) for n in (await session.execute(select(School.name))).scalars())
        assert names == list(range(20))  # each saw every earlier commit: serial, nothing lost
        assert ticks > 20
    finally:
        await db.dispose()


async def test_a_write_transaction_nested_in_one_task_fails_at_once(tmp_path: Path) -> None:
    """The writer lock is per process: a task that opened a second write transaction inside its
    first would wait for itself forever (a CI run hung on exactly this). It fails instead, the
    outer transaction rolls back, and the lock is free for the next writer."""
    db = await _migrated(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        with pytest.raises(RuntimeError, match="inside a write transaction"):
            async with db.transaction() as outer:
                outer.add(School(id="sch_o", name="o", created_at=utcnow()))
                await outer.flush()
                async with asyncio.timeout(5):
                    async with db.transaction():
                        pass
        assert await _schools(db) == 0
        async with asyncio.timeout(5), db.transaction() as session:
            session.add(School(id="sch_n", name="n", created_at=utcnow()))
        async with asyncio.timeout(5), db.transaction() as session:  # reads inside a write are fine
            async with db.transaction(readonly=True) as reader:
                await reader.scalar(select(func.count()).select_from(School))
        assert await _schools(db) == 1
    finally:
        await db.dispose()


async def test_a_file_another_process_writes_is_waited_for_not_refused(tmp_path: Path) -> None:
    """Another "process" (a second Database on the same file, as a CLI command would be)
    holds the write lock; this one's write waits by sleeping and then succeeds."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    ours, theirs = await _migrated(url), Database(url)
    try:
        async with theirs.transaction() as session:
            session.add(School(id="sch_theirs", name="t", created_at=utcnow()))
            await session.flush()

            async def write() -> None:
                async with ours.transaction() as mine:
                    mine.add(School(id="sch_ours", name="o", created_at=utcnow()))

            waiting = asyncio.create_task(write())
            await asyncio.sleep(0.2)  # it keeps trying meanwhile, and the loop runs
            assert not waiting.done()
        await asyncio.wait_for(waiting, timeout=30)
        assert await _schools(ours) == 2
    finally:
        await ours.dispose()
        await theirs.dispose()


async def test_no_statement_is_spent_on_pinging_the_pool(database_url: str) -> None:
    db = await _migrated(database_url)
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    engines = [db.engine.sync_engine] + ([db.reader.sync_engine] if db.reader is not None else [])
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        await _schools(db)  # warm the pool
        statements.clear()
        for _ in range(3):
            await _schools(db)
        work = [s for s in statements if not s.startswith("BEGIN")]
        assert len(work) == 3, statements
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_dead_pooled_connection_is_replaced_before_the_body_runs(postgres_url: str) -> None:
    """PostgreSQL closes the pooled connection (a restart, an idle timeout on a proxy); the next
    transaction is retried on a fresh connection instead of failing with 503."""
    db = Database(postgres_url)
    try:
        async with db.transaction() as session:
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
        async with db.transaction() as session:
            assert await session.scalar(text("SELECT pg_backend_pid()")) == pid  # pooled
        killer = Database(postgres_url)
        try:
            async with killer.transaction() as session:
                # with a timeout it waits until the backend is gone (PostgreSQL 14+); without one the
                # next BEGIN could still reach the dying backend and the test would be flaky
                await session.execute(text("SELECT pg_terminate_backend(:p, 10000)"), {"p": pid})
        finally:
            await killer.dispose()
        ran = 0
        async with db.transaction() as session:
            ran += 1
            assert await session.scalar(text("SELECT pg_backend_pid()")) != pid
        assert ran == 1  # the body ran once
    finally:
        await db.dispose()
