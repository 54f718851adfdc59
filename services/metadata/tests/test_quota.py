from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from filestore.core.errors import ResourceExhausted
from filestore.metadata.db import store
from filestore.metadata.db.models import FileStatus

Sessions = async_sessionmaker[AsyncSession]


async def _usage(sessions: Sessions, tenant: str, owner: str = "") -> tuple[int, int]:
    async with sessions() as session:
        quota = await store.get_quota(session, tenant=tenant, owner=owner)
    assert quota is not None
    return quota.used_bytes, quota.reserved_bytes


async def _set(sessions: Sessions, tenant: str, limit: int, owner: str = "") -> None:
    async with sessions() as session, session.begin():
        await store.set_quota(session, tenant=tenant, owner=owner, limit_bytes=limit)


async def test_without_a_quota_row_a_tenant_is_unlimited(sessions: Sessions, tenant: str) -> None:
    async with sessions() as session, session.begin():
        await store.reserve_quota(session, tenant=tenant, owner="alice", nbytes=10**15)
        assert await store.get_quota(session, tenant=tenant) is None


async def test_reserve_settle_release(sessions: Sessions, tenant: str) -> None:
    await _set(sessions, tenant, 1000)
    async with sessions() as session, session.begin():
        await store.reserve_quota(session, tenant=tenant, owner="alice", nbytes=600)
    assert await _usage(sessions, tenant) == (0, 600)

    async with sessions() as session, session.begin():
        with pytest.raises(ResourceExhausted) as refused:
            await store.reserve_quota(session, tenant=tenant, owner="alice", nbytes=401)
    assert refused.value.reason == "QUOTA_EXCEEDED"
    assert refused.value.metadata["scope"] == "tenant"
    assert refused.value.metadata["limit_bytes"] == "1000"

    async with sessions() as session, session.begin():
        # The upload turned out larger than reserved: settling may overshoot the limit...
        await store.settle_quota(session, tenant=tenant, owner="alice", reserved=600, actual=1100)
    assert await _usage(sessions, tenant) == (1100, 0)
    async with sessions() as session, session.begin():
        # ...and then nothing more fits, not even a byte.
        with pytest.raises(ResourceExhausted):
            await store.reserve_quota(session, tenant=tenant, owner="alice", nbytes=1)
        await store.refund_quota(session, tenant=tenant, owner="alice", nbytes=1100)
        await store.reserve_quota(session, tenant=tenant, owner="alice", nbytes=1000)
        await store.release_quota(session, tenant=tenant, owner="alice", reserved=1000)
        # Releasing twice (a retried abort) cannot drive the counter negative.
        await store.release_quota(session, tenant=tenant, owner="alice", reserved=1000)
    assert await _usage(sessions, tenant) == (0, 0)


async def test_owner_quota_and_tenant_quota_both_apply(sessions: Sessions, tenant: str) -> None:
    await _set(sessions, tenant, 1000)
    await _set(sessions, tenant, 300, owner="alice")
    async with sessions() as session, session.begin():
        await store.reserve_quota(session, tenant=tenant, owner="alice", nbytes=300)
        with pytest.raises(ResourceExhausted) as refused:
            await store.reserve_quota(session, tenant=tenant, owner="alice", nbytes=1)
        assert refused.value.metadata["scope"] == "owner"
        # Bob has no row of his own, so only the tenant's limit binds him.
        await store.reserve_quota(session, tenant=tenant, owner="bob", nbytes=700)
        with pytest.raises(ResourceExhausted):
            await store.reserve_quota(session, tenant=tenant, owner="bob", nbytes=1)
    # The refused reservation took nothing from the tenant row even though this transaction committed.
    assert await _usage(sessions, tenant) == (0, 1000)
    assert await _usage(sessions, tenant, "alice") == (0, 300)


async def test_deleting_an_uploaded_file_refunds_its_bytes(sessions: Sessions, tenant: str) -> None:
    await _set(sessions, tenant, 1000)
    async with sessions() as session, session.begin():
        file = await store.create_file(
            session, tenant=tenant, owner="alice", name="a", declared_content_type="x/y", size=400
        )
        await store.reserve_quota(session, tenant=tenant, owner="alice", nbytes=400)
        await store.transition_file(session, tenant=tenant, file_id=file.id, to_status=FileStatus.UPLOADED)
        await store.settle_quota(session, tenant=tenant, owner="alice", reserved=400, actual=400)
    assert await _usage(sessions, tenant) == (400, 0)
    for _ in range(2):  # the redelivered delete must not refund twice
        async with sessions() as session, session.begin():
            await store.transition_file(session, tenant=tenant, file_id=file.id, to_status=FileStatus.DELETED)
    assert await _usage(sessions, tenant) == (0, 0)


async def test_fifty_concurrent_reservations_admit_exactly_ten(sessions: Sessions, tenant: str) -> None:
    await _set(sessions, tenant, 10 * 100)

    async def reserve() -> bool:
        async with sessions() as session, session.begin():
            try:
                await store.reserve_quota(session, tenant=tenant, owner="alice", nbytes=100)
            except ResourceExhausted:
                return False
            return True

    granted = await asyncio.gather(*(reserve() for _ in range(50)))
    assert sum(granted) == 10
    assert await _usage(sessions, tenant) == (0, 1000)
