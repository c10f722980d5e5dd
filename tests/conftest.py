"""Shared fixtures: real databases (SQLite, PostgreSQL), real Redis, the real sandbox over ASGI.

PostgreSQL and Redis tests skip with a visible reason when the server is absent, except under
CI=true, where an absent server is a failure. Each run creates its own PostgreSQL database and
Redis key prefix and removes them afterwards; nothing else on the shared servers is touched.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.harness import Harness, start_harness

PG_ADMIN_URL = os.environ.get("CAMPUSPAY_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CAMPUSPAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI") == "true"


def _unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} is not reachable ({type(exc).__name__}: {exc})"
    if IN_CI:
        pytest.fail(f"{message}; under CI=true this must run", pytrace=False)
    pytest.skip(message)


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"campuspay_t_{secrets.token_hex(6)}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """The shared Redis server's URL (skips, or fails under CI, when it is not running). Keys go
    under ``redis_prefix``; nothing else on the server is touched."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        _unavailable("Redis", exc)
    yield REDIS_URL
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test alone; every key under it is deleted afterwards, pass or fail."""
    from redis.asyncio import Redis

    prefix = f"campuspay-test-{uuid.uuid4().hex[:16]}:"
    yield prefix
    client = Redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'campuspay.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test alone (``database_url`` shares one PostgreSQL database
    across the session, already migrated): for tests that migrate step by step."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"campuspay_e_{secrets.token_hex(6)}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def harness(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with start_harness(database_url=database_url, data_dir=tmp_path) as h:
        yield h


@pytest.fixture
async def sqlite_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with start_harness(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'campuspay.db'}", data_dir=tmp_path
    ) as h:
        yield h


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The property tests' seeds, so any run can be repeated (tests/property)."""
    seeds = [
        str(value)
        for kind in ("passed", "failed", "error")
        for report in terminalreporter.stats.get(kind, [])
        for name, value in getattr(report, "user_properties", ())
        if name == "campuspay_property_seed"
    ]
    if seeds:
        terminalreporter.write_line(
            "property test seeds (repeat one with CAMPUSPAY_PROPERTY_SEED=<seed>): " + ", ".join(seeds)
        )
