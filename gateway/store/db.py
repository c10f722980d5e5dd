"""Engine, sessions and migrations.

SQLite (the embedded default, decision 0020, superseding 0002): a write transaction takes the
process's writer lock and then ``BEGIN IMMEDIATE``, so writers are serial, a read-then-write
transaction can never deadlock on lock upgrade, and the audit chain and idempotency claims stay
serial; a read-only transaction (``readonly=True``) begins deferred on a query-only connection
and never queues for the write lock. Every SQLite call runs inline on the event loop's thread
(``gateway.store.sqlite``). PostgreSQL uses row locks instead.

No ``pool_pre_ping``: each transaction begins before its body runs, and a transaction whose
connect or BEGIN meets a dead link is retried once on a fresh connection (nothing of it ran).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_

from gateway.errors import Unavailable
from gateway.metrics import DB_STATEMENTS, DB_TRANSACTIONS
from gateway.store.sqlite import connect_inline

__all__ = ["Database", "DatabaseUnavailable", "run_migrations"]

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_begin_deferred(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


# How long a write transaction waits for another process's write lock on the SQLite file,
# sleeping (not blocking the event loop) between tries.
SQLITE_BUSY_WAIT = 30.0


def _is_busy(error: BaseException) -> bool:
    return isinstance(error, exc.OperationalError) and "database is locked" in str(error.orig)


def _begin_now(connection: Any) -> None:
    """Send PostgreSQL's BEGIN now rather than with the first statement (SQLAlchemy's asyncpg
    adapter defers it), so a dead pooled connection is found where the transaction can still be
    retried. This is the round trip the first statement would have paid anyway, unlike
    ``pool_pre_ping``'s extra one. Uses the adapter's private ``_start_transaction``; without it
    the dead link shows at the first statement as before."""
    adapted = connection.connection.dbapi_connection
    start = getattr(adapted, "_start_transaction", None)
    if start is None or getattr(adapted, "_transaction", None) is not None:
        return
    try:
        await_(start())
    except Exception as error:
        if _is_unavailable(error):
            # What SQLAlchemy does when a statement meets a disconnect: this connection, and
            # every one opened before it (a restarted server killed them all), is replaced at
            # its next checkout, so the one retry gets a live connection.
            connection.engine.pool._invalidate(connection.connection, error)
        raise


def _count_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    # BEGIN is counted as a transaction, not a statement: asyncpg sends PostgreSQL's without a
    # cursor, so counting SQLite's would make the two databases' figures differ
    if not statement.startswith("BEGIN"):
        DB_STATEMENTS.inc()


def _count_transaction(*_args: Any) -> None:
    DB_TRANSACTIONS.inc()


class DatabaseUnavailable(Unavailable):
    """The database could not be reached (connect refused or reset, connection lost, pool
    exhausted, SQLite locked past its busy timeout). Nothing of the transaction was committed,
    and it says nothing about the request itself: the client retries (503 ``Retry-After``)."""

    def __init__(self) -> None:
        super().__init__("database_unavailable", headers={"Retry-After": "1"})


def _is_unavailable(error: BaseException) -> bool:
    """A failure of the link to the database, not of the statement: retrying can succeed."""
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        if _is_busy(error):
            return True
        return isinstance(error.orig, OSError) or type(error.orig).__name__ in _DRIVER_LINK_ERRORS
    # asyncpg raises its connect errors (refused, reset, timed out) as they are, and its adapted
    # errors reach us unwrapped where the adapter is driven directly (``_begin_now``)
    return (
        isinstance(error, OSError | TimeoutError | exc.TimeoutError)
        or type(error).__name__ in _DRIVER_LINK_ERRORS
    )


# asyncpg's names for a lost or refused connection (the adapted exception keeps the original)
_DRIVER_LINK_ERRORS = frozenset(
    {
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "CannotConnectNowError",
        "TooManyConnectionsError",
        "ConnectionRejectionError",
        "InterfaceError",
    }
)


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        # hide_parameters: an error (logged, or in a 500's traceback) shows the SQL, never the
        # parameter row, which holds amounts, card hashes and personal data.
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        self._writer = asyncio.Lock()  # SQLite: one write transaction of this process at a time
        self._writer_task: asyncio.Task[Any] | None = None
        self.reader: AsyncEngine | None = None
        if self.dialect == "sqlite":
            path = parsed.database or ""
            if not path or path == ":memory:" or path.startswith("file:"):
                raise ValueError("CampusPay's SQLite database is a file: sqlite+aiosqlite:///path/to/file.db")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = create_async_engine(
                url, async_creator=connect_inline(path, readonly=False), **kwargs
            )
            self.reader = create_async_engine(
                url, async_creator=connect_inline(path, readonly=True), **kwargs
            )
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin_immediate)
            event.listen(self.reader.sync_engine, "begin", _sqlite_begin_deferred)
        else:
            # Sized for one gateway process: the synchronous payment path holds a connection
            # only inside its short transactions, never across a provider call, so 10 (+20 in
            # a burst) serve hundreds of payments in flight (docs/operations.md).
            self.engine = create_async_engine(url, pool_size=10, max_overflow=20, **kwargs)
        for engine in (self.engine, self.reader):
            if engine is not None:
                event.listen(engine.sync_engine, "before_cursor_execute", _count_statement)
                event.listen(engine.sync_engine, "begin", _count_transaction)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessionmaker = async_sessionmaker(self.reader or self.engine, expire_on_commit=False)
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit on success, roll back on any exception. A lost link to the
        database becomes ``DatabaseUnavailable`` (503), whichever statement met it.

        ``readonly``: the body only reads. On SQLite it then runs on a query-only connection
        beside the writer (a write there fails loudly instead of taking the lock); on
        PostgreSQL it is an ordinary transaction."""
        try:
            if self.is_sqlite and not readonly:
                task = asyncio.current_task()
                if task is not None and task is self._writer_task:
                    # waiting here would wait for ourselves, forever: fail loudly instead
                    raise RuntimeError("a write transaction inside a write transaction of the same task")
                async with self._writer:
                    self._writer_task = task
                    try:
                        async with self._begun(self.sessionmaker) as session:
                            yield session
                    finally:
                        self._writer_task = None
            else:
                async with self._begun(self.read_sessionmaker if readonly else self.sessionmaker) as session:
                    yield session
        except DatabaseUnavailable:
            raise
        except Exception as error:
            if _is_unavailable(error):
                raise DatabaseUnavailable() from error
            raise

    @asynccontextmanager
    async def _begun(self, maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
        """A session whose transaction has begun, so that a dead pooled connection or a busy
        SQLite file shows before the body runs, when trying again cannot repeat any of it."""
        loop = asyncio.get_running_loop()
        busy_until = loop.time() + SQLITE_BUSY_WAIT
        delay, retried_link = 0.002, False
        while True:
            session = maker()
            try:
                connection = await session.connection()
                if not self.is_sqlite:
                    await connection.run_sync(_begin_now)
            except BaseException as error:  # a cancellation too: the connection goes back
                await session.close()
                if not isinstance(error, Exception):
                    raise
                if self.is_sqlite and _is_busy(error) and loop.time() < busy_until:
                    await asyncio.sleep(delay)  # another process writes; let it finish
                    delay = min(delay * 2, 0.1)
                    continue
                if not self.is_sqlite and _is_unavailable(error) and not retried_link:
                    retried_link = True  # the pool dropped the dead connection: one fresh try
                    continue
                raise
            break
        try:
            yield session
            await session.commit()
        except BaseException:
            try:
                await session.rollback()
            except Exception:  # the link died with the body's error; that error is the news
                log.debug("rollback after a failed transaction failed too", exc_info=True)
            raise
        finally:
            await session.close()

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Mutual exclusion on ``name`` across every process on this database, held across
        provider calls (no transaction stays open meanwhile). PostgreSQL: a session-level
        advisory lock on a connection of its own, released with the connection even if this
        process dies. SQLite: the embedded database serves one process, so a process-local
        lock is the whole story."""
        if self.is_sqlite:
            lock = self._locks.setdefault(name, asyncio.Lock())
            async with lock:
                yield
            return
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                await conn.commit()

    async def migrate(self) -> None:
        await asyncio.to_thread(run_migrations, self.url)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.reader is not None:
            await self.reader.dispose()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def run_migrations(url: str, revision: str = "head") -> None:
    """Upgrade the schema (synchronously; call from a thread inside an event loop)."""
    command.upgrade(alembic_config(url), revision)
