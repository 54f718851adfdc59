"""Database fixtures: every test runs against SQLite and PostgreSQL.

PostgreSQL isolation: each test session creates its own uniquely named databases on the server at
``TEST_DATABASE_URL`` and drops them at the end, so concurrent runs sharing the server never see each
other's tables (and nothing is ever created in the shared database itself). SQLite databases are files
under pytest's tmp directories.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from filestore.metadata.db.engine import create_engine, session_factory
from filestore.metadata.db.migrate import upgrade_to_head

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]

FreshDatabase = Callable[[str], AbstractAsyncContextManager[str]]


async def _postgres_admin() -> AsyncEngine | None:
    engine = create_async_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (OSError, ConnectionError) as exc:
        await engine.dispose()
        print(f"PostgreSQL at {TEST_DATABASE_URL} unavailable: {exc}")
        return None
    return engine


@pytest.fixture(scope="session")
async def postgres_admin() -> AsyncIterator[AsyncEngine | None]:
    engine = await _postgres_admin()
    yield engine
    if engine is not None:
        await engine.dispose()


@pytest.fixture(scope="session")
def fresh_database(
    postgres_admin: AsyncEngine | None, tmp_path_factory: pytest.TempPathFactory
) -> FreshDatabase:
    """``async with fresh_database(backend) as url``: an empty database that is dropped afterwards."""

    @asynccontextmanager
    async def fresh(backend: str) -> AsyncIterator[str]:
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("sqlite") / "metadata.db"
            yield f"sqlite+aiosqlite:///{path}"
            return
        if postgres_admin is None:
            # Never a silent skip: the PostgreSQL half is part of the suite, not an option.
            pytest.fail(f"PostgreSQL not reachable at {TEST_DATABASE_URL}; set TEST_DATABASE_URL")
        name = f"filestore_metadata_test_{uuid.uuid4().hex[:16]}"
        async with postgres_admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            async with postgres_admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return fresh


@pytest.fixture(scope="session", params=BACKENDS)
async def migrated_url(request: pytest.FixtureRequest, fresh_database: FreshDatabase) -> AsyncIterator[str]:
    """One database per backend per session, at head; tests keep apart by using fresh tenants."""
    async with fresh_database(request.param) as url:
        await upgrade_to_head(url)
        yield url


@pytest.fixture(scope="session")
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def backend(engine: AsyncEngine) -> str:
    return engine.dialect.name


async def wait_for_lock_waiter(engine: AsyncEngine) -> None:
    """Return once some other PostgreSQL backend of this database waits on a row lock."""

    async def poll() -> None:
        async with engine.connect() as connection:
            while True:
                waiting = await connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
                await connection.rollback()
                if waiting:
                    return
                await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), 10.0)


@pytest.fixture
def lock_waiter() -> Callable[[AsyncEngine], Awaitable[None]]:
    return wait_for_lock_waiter
