"""The store functions the reconciler (``filestore-fsck``) repairs the catalogue with: each changes a row
only while it is as the reconciler found it, so a finding that stopped holding changes nothing, and a
second call is a no-op. (The drift and loss they repair are made here with SQL behind the store's back,
as a crash or a hand edit would.)"""

from __future__ import annotations

import hashlib

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from filestore.core.keys import derivative_key
from filestore.metadata.db import store
from filestore.metadata.db.models import Blob, Derivative, File, FileStatus

Sessions = async_sessionmaker[AsyncSession]
DIGEST = hashlib.sha256(b"lost and found").hexdigest()


async def _new_file(sessions: Sessions, tenant: str, **kwargs: object) -> File:
    async with sessions() as session, session.begin():
        return await store.create_file(
            session,
            tenant=tenant,
            owner="alice",
            name="a.txt",
            declared_content_type="text/plain",
            size=14,
            **kwargs,  # type: ignore[arg-type]
        )


async def _move(sessions: Sessions, file: File, *statuses: FileStatus) -> File:
    for status in statuses:
        async with sessions() as session, session.begin():
            file = await store.transition_file(session, tenant=file.tenant, file_id=file.id, to_status=status)
    return file


async def _shared_blob(sessions: Sessions, tenant: str) -> tuple[Blob, list[File]]:
    """A blob two live files point at (the first file's object holds the bytes)."""
    first = await _new_file(sessions, tenant, sha256=DIGEST)
    async with sessions() as session, session.begin():
        blob = await store.register_blob(
            session, tenant=tenant, sha256=DIGEST, size=14, storage_key=first.storage_key
        )
        await store.link_file_blob(session, tenant=tenant, file_id=first.id, blob_id=blob.id)
    copy = await _new_file(sessions, tenant, blob_id=blob.id)
    return blob, [first, copy]


async def _set_ref_count(sessions: Sessions, blob_id: str, ref_count: int) -> None:
    async with sessions() as session, session.begin():
        await session.execute(update(Blob).where(Blob.id == blob_id).values(ref_count=ref_count))


async def _blob(sessions: Sessions, blob_id: str) -> Blob | None:
    async with sessions() as session, session.begin():
        return await session.get(Blob, blob_id, populate_existing=True)


async def test_a_file_whose_bytes_are_lost_fails_once(sessions: Sessions, tenant: str) -> None:
    ready = await _move(
        sessions,
        await _new_file(sessions, tenant),
        FileStatus.UPLOADED,
        FileStatus.PROCESSING,
        FileStatus.READY,
    )
    async with sessions() as session, session.begin():
        # Another key than the file's: the file reads other bytes now, nothing to do.
        assert (
            await store.fail_file_without_object(
                session, file_id=ready.id, storage_key=f"{ready.storage_key}x", reason="OBJECT_MISSING"
            )
            is None
        )
        failed = await store.fail_file_without_object(
            session, file_id=ready.id, storage_key=ready.storage_key, reason="OBJECT_MISSING"
        )
        assert failed is not None
        assert (failed.status, failed.status_reason) == (FileStatus.FAILED, "OBJECT_MISSING")
        assert failed.version == ready.version + 1  # etags held by clients go stale
        again = await store.fail_file_without_object(
            session, file_id=ready.id, storage_key=ready.storage_key, reason="OBJECT_MISSING"
        )
        assert again is None


async def test_only_files_whose_bytes_must_be_stored_are_failed(sessions: Sessions, tenant: str) -> None:
    pending = await _new_file(sessions, tenant)
    quarantined = await _move(
        sessions,
        await _new_file(sessions, tenant),
        FileStatus.UPLOADED,
        FileStatus.PROCESSING,
        FileStatus.QUARANTINED,
    )
    deleted = await _move(sessions, await _new_file(sessions, tenant), FileStatus.DELETED)
    for file in (pending, quarantined, deleted):
        assert file.status not in store.STATES_WITH_BYTES
        async with sessions() as session, session.begin():
            assert (
                await store.fail_file_without_object(
                    session, file_id=file.id, storage_key=file.storage_key, reason="OBJECT_MISSING"
                )
                is None
            )
            assert (
                await store.get_file(session, tenant=tenant, file_id=file.id, include_deleted=True)
            ).status == (file.status)


async def test_a_drifted_reference_count_is_recounted(sessions: Sessions, tenant: str) -> None:
    blob, _ = await _shared_blob(sessions, tenant)
    async with sessions() as session, session.begin():
        right = await store.recount_blob_references(session, blob_id=blob.id)
    assert right == store.BlobRecount(storage_key=blob.storage_key, stored=2, live=2)
    assert not right.changed

    await _set_ref_count(sessions, blob.id, 7)
    async with sessions() as session, session.begin():
        recount = await store.recount_blob_references(session, blob_id=blob.id)
    assert recount is not None
    assert (recount.stored, recount.live, recount.changed, recount.forgotten) == (7, 2, True, False)
    recounted = await _blob(sessions, blob.id)
    assert recounted is not None
    assert recounted.ref_count == 2


async def test_a_blob_no_live_file_points_at_is_forgotten(sessions: Sessions, tenant: str) -> None:
    blob, files = await _shared_blob(sessions, tenant)
    # Deleted behind the store's back, so that the blob keeps a count nobody backs.
    async with sessions() as session, session.begin():
        await session.execute(
            update(File).where(File.id.in_([f.id for f in files])).values(status=FileStatus.DELETED)
        )
    async with sessions() as session, session.begin():
        recount = await store.recount_blob_references(session, blob_id=blob.id)
    assert recount == store.BlobRecount(storage_key=blob.storage_key, stored=2, live=0)
    assert recount.changed
    assert recount.forgotten
    assert await _blob(sessions, blob.id) is None
    async with sessions() as session, session.begin():
        assert await store.recount_blob_references(session, blob_id=blob.id) is None


async def test_a_blob_whose_object_is_lost_is_forgotten_if_it_still_names_it(
    sessions: Sessions, tenant: str
) -> None:
    blob, files = await _shared_blob(sessions, tenant)
    async with sessions() as session, session.begin():
        assert not await store.forget_blob_without_object(session, blob_id=blob.id, storage_key="elsewhere")
        assert await store.forget_blob_without_object(session, blob_id=blob.id, storage_key=blob.storage_key)
        assert not await store.forget_blob_without_object(
            session, blob_id=blob.id, storage_key=blob.storage_key
        )
    assert await _blob(sessions, blob.id) is None
    async with sessions() as session, session.begin():
        # The files keep their rows; the foreign key let go of the blob.
        for file in files:
            kept = await store.get_file(session, tenant=tenant, file_id=file.id)
            assert kept.blob_id is None


async def _derivative(sessions: Sessions, file: File, kind: str) -> Derivative:
    async with sessions() as session, session.begin():
        return await store.add_derivative(
            session,
            tenant=file.tenant,
            file_id=file.id,
            kind=kind,
            storage_key=derivative_key(file.tenant, file.id, kind),
            size=3,
            content_type="image/webp",
        )


async def _derivative_ids(sessions: Sessions, file_id: str) -> set[str]:
    async with sessions() as session, session.begin():
        return set((await session.scalars(select(Derivative.id).where(Derivative.file_id == file_id))).all())


async def test_a_derivative_is_dropped_only_when_its_file_is_gone(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    derivative = await _derivative(sessions, file, "thumbnail_256")
    async with sessions() as session, session.begin():
        assert await store.drop_parentless_derivative(session, derivative_id=derivative.id) is None
    assert await _derivative_ids(sessions, file.id) == {derivative.id}
    # The processor recorded it while the file was being deleted: the deletion did not see it.
    async with sessions() as session, session.begin():
        await session.execute(update(File).where(File.id == file.id).values(status=FileStatus.DELETED))
    async with sessions() as session, session.begin():
        dropped = await store.drop_parentless_derivative(session, derivative_id=derivative.id)
        assert dropped == derivative.storage_key
        assert await store.drop_parentless_derivative(session, derivative_id=derivative.id) is None
    assert await _derivative_ids(sessions, file.id) == set()


async def test_a_derivative_whose_object_is_lost_is_dropped_if_it_still_names_it(
    sessions: Sessions, tenant: str
) -> None:
    file = await _new_file(sessions, tenant)
    lost = await _derivative(sessions, file, "thumbnail_256")
    kept = await _derivative(sessions, file, "text")
    async with sessions() as session, session.begin():
        assert not await store.drop_derivative_without_object(
            session, derivative_id=lost.id, storage_key=kept.storage_key
        )
        assert await store.drop_derivative_without_object(
            session, derivative_id=lost.id, storage_key=lost.storage_key
        )
        assert not await store.drop_derivative_without_object(
            session, derivative_id=lost.id, storage_key=lost.storage_key
        )
    assert await _derivative_ids(sessions, file.id) == {kept.id}
