"""SQLite connections that run on the event loop's own thread.

aiosqlite gives every connection a thread and sends each DBAPI call to it through a queue and
back through ``call_soon_threadsafe``: about 200 thread hops and several hundred context switches
per card payment, which cost more CPU than the SQL itself (a statement on a local SQLite file
takes microseconds). ``InlineConnection`` keeps aiosqlite's API, which SQLAlchemy's
``sqlite+aiosqlite`` dialect drives, and runs each call at once instead.

Running SQLite inline is safe only if a call never waits for a lock another coroutine of this
process holds, since that coroutine could not run while the thread waits. ``Database``
guarantees it (decision 0020): write transactions take a process-wide ``asyncio.Lock`` before
``BEGIN IMMEDIATE``, their connections wait for no lock at all (``busy_timeout`` 0; a busy
database at BEGIN, meaning another *process* writes, is retried with an ``await``ed backoff), and
read transactions run on query-only connections in WAL mode, where readers never wait for
writers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite

__all__ = ["InlineConnection", "connect_inline"]


class _RunNow:
    """Stands in for aiosqlite's queue to its worker thread: runs each call as it is queued.

    SQLAlchemy's adapter queues onto it directly (to set ``isolation_level``), so the queue
    itself has to work, not only ``_execute``."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as error:  # handed to the awaiting caller, as the thread would
            if future is not None and not future.done():
                future.set_exception(error)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection without its thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _RunNow()  # type: ignore[assignment]

    def __await__(self) -> Any:
        return self._connect().__await__()  # no worker thread to start

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)


def connect_inline(path: str, *, readonly: bool) -> Callable[[], InlineConnection]:
    """An ``async_creator`` for SQLAlchemy: connections to ``path`` set up for their role.

    Writers wait for no lock (``busy_timeout`` 0, see the module docstring); readers are
    query-only, so a read transaction can never try to take the write lock, and wait at most
    100 ms for the rare lock a WAL reader needs (while the WAL index is rebuilt)."""

    def connector() -> sqlite3.Connection:
        # autocommit at the driver level: Database issues BEGIN / BEGIN IMMEDIATE itself
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")  # only while the connection is set up
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        if readonly:
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA busy_timeout=100")
        else:
            conn.execute("PRAGMA busy_timeout=0")
        return conn

    def create() -> InlineConnection:
        return InlineConnection(connector)

    return create
