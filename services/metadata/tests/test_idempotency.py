from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from filestore.core.errors import AlreadyExists
from filestore.metadata.db import store

Sessions = async_sessionmaker[AsyncSession]
METHOD = "/filestore.v1.MetadataService/CreateFile"


async def test_save_then_replay(sessions: Sessions, tenant: str) -> None:
    async with sessions() as session, session.begin():
        assert await store.get_idempotent(session, tenant=tenant, method=METHOD, request_id="r1") is None
        saved = await store.save_idempotent(
            session, tenant=tenant, method=METHOD, request_id="r1", request_hash="h1", response=b"\x00answer"
        )
        assert not saved.replayed
    async with sessions() as session, session.begin():
        found = await store.get_idempotent(
            session, tenant=tenant, method=METHOD, request_id="r1", request_hash="h1"
        )
        assert found is not None
        assert found.response == b"\x00answer"
        # Same id under another tenant or method is a different request altogether.
        assert await store.get_idempotent(session, tenant="other", method=METHOD, request_id="r1") is None
        assert await store.get_idempotent(session, tenant=tenant, method="/x/Y", request_id="r1") is None


async def test_reused_request_id_with_another_request_is_refused(sessions: Sessions, tenant: str) -> None:
    async with sessions() as session, session.begin():
        await store.save_idempotent(
            session, tenant=tenant, method=METHOD, request_id="r1", request_hash="h1", response=b"a"
        )
    async with sessions() as session, session.begin():
        with pytest.raises(AlreadyExists) as on_get:
            await store.get_idempotent(
                session, tenant=tenant, method=METHOD, request_id="r1", request_hash="h2"
            )
        with pytest.raises(AlreadyExists) as on_save:
            await store.save_idempotent(
                session, tenant=tenant, method=METHOD, request_id="r1", request_hash="h2", response=b"b"
            )
    assert on_get.value.reason == on_save.value.reason == "REQUEST_ID_REUSED"


async def test_second_writer_gets_the_first_answer(sessions: Sessions, tenant: str) -> None:
    async with sessions() as session, session.begin():
        await store.save_idempotent(
            session, tenant=tenant, method=METHOD, request_id="r1", request_hash="h", response=b"first"
        )
    async with sessions() as session, session.begin():
        late = await store.save_idempotent(
            session, tenant=tenant, method=METHOD, request_id="r1", request_hash="h", response=b"second"
        )
    assert late.replayed
    assert late.response == b"first"


async def test_racing_writers_resolve_on_the_unique_key(
    sessions: Sessions,
    engine: AsyncEngine,
    tenant: str,
    lock_waiter: Callable[[AsyncEngine], Awaitable[None]],
) -> None:
    """Both requests miss the lookup, both do the work, both save: the loser must answer the winner's.

    On SQLite the second transaction cannot begin before the first ends (BEGIN IMMEDIATE), so the race
    cannot happen there; what must hold instead is that the second one then sees the first's answer.
    """
    if engine.dialect.name == "sqlite":
        await _sqlite_serialises_the_twins(sessions, tenant)
        return
    async with sessions() as first, sessions() as second:
        await first.begin()
        await second.begin()
        for session in (first, second):
            assert await store.get_idempotent(session, tenant=tenant, method=METHOD, request_id="r") is None
        won = await store.save_idempotent(
            first, tenant=tenant, method=METHOD, request_id="r", request_hash="h", response=b"winner"
        )
        losing = asyncio.create_task(
            store.save_idempotent(
                second, tenant=tenant, method=METHOD, request_id="r", request_hash="h", response=b"loser"
            )
        )
        await lock_waiter(engine)  # the loser's INSERT waits for the winner's transaction
        await first.commit()
        lost = await losing
        answer = lost.response
        await second.rollback()  # what the servicer does with its own work on a replay
    assert not won.replayed
    assert lost.replayed
    assert answer == b"winner"


async def test_concurrent_requests_with_one_id_share_one_answer(sessions: Sessions, tenant: str) -> None:
    async def handle(n: int) -> tuple[bytes, bool]:
        async with sessions() as session, session.begin():
            stored = await store.get_idempotent(
                session, tenant=tenant, method=METHOD, request_id="same", request_hash="h"
            )
            if stored is not None:
                return stored.response, True
            saved = await store.save_idempotent(
                session, tenant=tenant, method=METHOD, request_id="same", request_hash="h", response=b"%d" % n
            )
            return saved.response, saved.replayed

    answers = await asyncio.gather(*(handle(n) for n in range(20)))
    assert len({response for response, _ in answers}) == 1
    assert sum(1 for _, replayed in answers if not replayed) == 1


async def test_purge_old_keys(sessions: Sessions, tenant: str) -> None:
    async with sessions() as session, session.begin():
        await store.save_idempotent(
            session, tenant=tenant, method=METHOD, request_id="old", request_hash="h", response=b"x"
        )
    async with sessions() as session, session.begin():
        purged = await store.purge_idempotency_keys(
            session, older_than=datetime.now(UTC) + timedelta(seconds=1)
        )
        assert purged >= 1
        assert await store.get_idempotent(session, tenant=tenant, method=METHOD, request_id="old") is None


async def _sqlite_serialises_the_twins(sessions: Sessions, tenant: str) -> None:
    async with sessions() as first:
        await first.begin()
        assert await store.get_idempotent(first, tenant=tenant, method=METHOD, request_id="r") is None
        second_started = asyncio.Event()

        async def second_twin() -> bytes:
            async with sessions() as second:
                second_started.set()
                await second.begin()  # waits for the first transaction's write lock
                found = await store.get_idempotent(second, tenant=tenant, method=METHOD, request_id="r")
                assert found is not None
                answer = found.response
                await second.rollback()
                return answer

        twin = asyncio.create_task(second_twin())
        await second_started.wait()
        await store.save_idempotent(
            first, tenant=tenant, method=METHOD, request_id="r", request_hash="h", response=b"winner"
        )
        await first.commit()
    assert await twin == b"winner"
