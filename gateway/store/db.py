"""Engine, sessions and migrations.

SQLite (the embedded default) runs every transaction as ``BEGIN IMMEDIATE``: one writer at a
time, taken up front, so a read-then-write transaction can never deadlock on lock upgrade and
the audit chain and idempotency claims stay serial. PostgreSQL uses row locks instead.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from gateway.errors import Unavailable
from gateway.metrics import DB_STATEMENTS, DB_TRANSACTIONS

__all__ = ["Database", "DatabaseUnavailable", "run_migrations"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # autocommit at the driver level; SQLAlchemy's "begin" hook issues BEGIN IMMEDIATE itself
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _count_statement(*_args: Any) -> None:
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
        if isinstance(error, exc.OperationalError) and "database is locked" in str(error.orig):
            return True
        return isinstance(error.orig, OSError) or type(error.orig).__name__ in _DRIVER_LINK_ERRORS
    # asyncpg raises its connect errors (refused, reset, timed out) as they are
    return isinstance(error, OSError | TimeoutError | exc.TimeoutError)


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
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        event.listen(self.engine.sync_engine, "before_cursor_execute", _count_statement)
        event.listen(self.engine.sync_engine, "begin", _count_transaction)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit on success, roll back on any exception. A lost link to the
        database becomes ``DatabaseUnavailable`` (503), whichever statement met it."""
        try:
            async with self.sessionmaker() as session, session.begin():
                yield session
        except DatabaseUnavailable:
            raise
        except Exception as error:
            if _is_unavailable(error):
                raise DatabaseUnavailable() from error
            raise

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


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def run_migrations(url: str, revision: str = "head") -> None:
    """Upgrade the schema (synchronously; call from a thread inside an event loop)."""
    command.upgrade(alembic_config(url), revision)
