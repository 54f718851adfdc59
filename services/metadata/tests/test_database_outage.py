"""A database connection lost in the middle of an RPC's transaction answers UNAVAILABLE
``DATABASE_UNAVAILABLE`` (retryable), not INTERNAL, and the next transaction gets a working one.

PostgreSQL only: the loss is an operator's ``pg_terminate_backend`` of the transaction's own backend,
as a failover or a restart of the server does to every backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from filestore.core.errors import Unavailable
from filestore.core.reasons import Reason
from filestore.metadata.db.engine import create_engine, session_factory
from filestore.metadata.db.migrate import upgrade_to_head
from filestore.metadata.servicer.unit_of_work import UnitOfWork

from .conftest import FreshDatabase


@pytest.fixture(scope="module")
async def postgres_engine(fresh_database: FreshDatabase) -> AsyncIterator[AsyncEngine]:
    async with fresh_database("postgresql") as url:
        await upgrade_to_head(url)
        engine = create_engine(url)
        yield engine
        await engine.dispose()


async def _terminate_own_backend(connection: AsyncConnection, admin: AsyncEngine) -> None:
    pid = await connection.scalar(text("SELECT pg_backend_pid()"))
    async with admin.connect() as other:
        assert await other.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}) is True


async def test_a_connection_lost_mid_transaction_is_unavailable_and_the_next_one_works(
    postgres_engine: AsyncEngine, postgres_admin: AsyncEngine | None
) -> None:
    assert postgres_admin is not None
    unit = UnitOfWork(session_factory(postgres_engine))

    async def lose_the_connection(connection: AsyncConnection) -> int:
        await _terminate_own_backend(connection, postgres_admin)
        return int(await connection.scalar(text("SELECT count(*) FROM files")) or 0)

    with pytest.raises(Unavailable) as raised:
        await unit.write_rows(lose_the_connection)
    assert raised.value.reason == Reason.DATABASE_UNAVAILABLE

    async def read_after_losing_it() -> None:
        async with unit.read() as session:
            connection = await session.connection()
            await _terminate_own_backend(connection, postgres_admin)
            await session.execute(text("SELECT 1"))

    with pytest.raises(Unavailable) as raised_in_read:
        await read_after_losing_it()
    assert raised_in_read.value.reason == Reason.DATABASE_UNAVAILABLE

    async with unit.read_rows() as connection:
        assert await connection.scalar(text("SELECT 1")) == 1


async def test_other_database_errors_stay_what_they_are(postgres_engine: AsyncEngine) -> None:
    unit = UnitOfWork(session_factory(postgres_engine))

    async def broken_sql(connection: AsyncConnection) -> int:
        return int(await connection.scalar(text("SELECT no_such_column FROM files")) or 0)

    with pytest.raises(ProgrammingError, match="no_such_column"):
        await unit.write_rows(broken_sql)


async def test_a_refused_connect_is_unavailable() -> None:
    # Port 1 on loopback: nothing listens, the connect is refused at once.
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    try:
        with pytest.raises(Unavailable) as raised:
            async with UnitOfWork(session_factory(engine)).read_rows() as connection:
                await connection.scalar(text("SELECT 1"))
        assert raised.value.reason == Reason.DATABASE_UNAVAILABLE
    finally:
        await engine.dispose()


async def _select_one(unit: UnitOfWork) -> None:
    async with unit.read_rows() as connection:
        await connection.scalar(text("SELECT 1"))
