from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from filestore.metadata.db import store
from filestore.metadata.db.engine import create_engine, session_factory
from filestore.metadata.db.migrate import upgrade_to_head
from filestore.metadata.db.models import Grant, Permission

Sessions = async_sessionmaker[AsyncSession]


async def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(text("PRAGMA foreign_keys")) == 1
            assert await connection.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await connection.scalar(text("PRAGMA busy_timeout")) == 30_000
    finally:
        await engine.dispose()


async def test_foreign_keys_are_enforced(sessions: Sessions) -> None:
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            session.add(Grant(file_id="missing", tenant="t", principal="p", permission=Permission.READ))


async def test_timestamps_round_trip_as_utc(sessions: Sessions, tenant: str) -> None:
    plus_two = timezone(timedelta(hours=2))
    expires = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=plus_two)
    async with sessions() as session, session.begin():
        file = await store.create_file(
            session, tenant=tenant, owner="o", name="n", declared_content_type="x/y", size=1
        )
        grant = await store.create_grant(
            session,
            tenant=tenant,
            file_id=file.id,
            principal="p",
            permission=Permission.READ,
            expires_at=expires,
        )
        grant_id = grant.id
    async with sessions() as session:
        stored = await store.get_grant(session, tenant=tenant, grant_id=grant_id)
    assert stored.expires_at == expires
    assert stored.expires_at is not None
    assert stored.expires_at.tzinfo == UTC


async def test_naive_timestamps_are_refused(sessions: Sessions, tenant: str) -> None:
    async with sessions() as session, session.begin():
        file = await store.create_file(
            session, tenant=tenant, owner="o", name="n", declared_content_type="x/y", size=1
        )
        with pytest.raises(StatementError, match="naive datetime"):
            await store.create_grant(
                session,
                tenant=tenant,
                file_id=file.id,
                principal="p",
                permission=Permission.READ,
                expires_at=datetime(2030, 1, 1),
            )
        await session.rollback()


async def test_session_objects_survive_commit(engine: AsyncEngine, tenant: str) -> None:
    async with session_factory(engine)() as session:
        async with session.begin():
            file = await store.create_file(
                session, tenant=tenant, owner="o", name="n", declared_content_type="x/y", size=1
            )
        # expire_on_commit=False: reading after commit needs no lazy load (impossible under asyncio).
        assert file.name == "n"


async def test_a_migrated_file_database_is_usable(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await upgrade_to_head(url)
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session, session.begin():
            page = await store.list_files(session, tenant="t")
            assert page.files == []
    finally:
        await engine.dispose()
