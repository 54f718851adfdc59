"""Uploads, grants, blobs (dedup), derivatives and processing results."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from filestore.core.errors import FailedPrecondition, InvalidArgument, NotFound
from filestore.core.keys import derivative_key, original_key
from filestore.metadata.db import store
from filestore.metadata.db.models import (
    File,
    FileStatus,
    Permission,
    ProcessingOutcome,
    UploadKind,
    UploadState,
    Visibility,
)

Sessions = async_sessionmaker[AsyncSession]
DIGEST = hashlib.sha256(b"hello").hexdigest()


async def _new_file(sessions: Sessions, tenant: str, **kwargs: object) -> File:
    arguments: dict[str, object] = {
        "tenant": tenant,
        "owner": "alice",
        "name": "a.png",
        "declared_content_type": "image/png",
        "size": 5,
        **kwargs,
    }
    async with sessions() as session, session.begin():
        return await store.create_file(session, **arguments)  # type: ignore[arg-type]


async def _new_upload(
    sessions: Sessions, tenant: str, file: File, *, expires_in: timedelta = timedelta(hours=1)
) -> str:
    async with sessions() as session, session.begin():
        upload = await store.record_upload(
            session,
            file=file,
            kind=UploadKind.MULTIPART,
            part_size=5 * 2**20,
            part_count=3,
            expires_at=datetime.now(UTC) + expires_in,
            reserved_bytes=15 * 2**20,
            storage_upload_id=None,
        )
        return upload.id


async def test_upload_lifecycle(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    upload_id = await _new_upload(sessions, tenant, file)
    async with sessions() as session, session.begin():
        upload = await store.get_upload(session, tenant=tenant, upload_id=upload_id)
        assert (upload.state, upload.kind, upload.part_count) == (UploadState.OPEN, UploadKind.MULTIPART, 3)
        assert upload.expires_at > datetime.now(UTC)
        with pytest.raises(NotFound):
            await store.get_upload(session, tenant="other", upload_id=upload_id)
        assert [u.id for u in await store.list_uploads(session, tenant=tenant, file_id=file.id)] == [
            upload_id
        ]

        completed = await store.set_upload_state(
            session, tenant=tenant, upload_id=upload_id, to_state=UploadState.COMPLETED
        )
        assert completed.state == UploadState.COMPLETED
        again = await store.set_upload_state(
            session, tenant=tenant, upload_id=upload_id, to_state=UploadState.COMPLETED
        )
        assert again.state == UploadState.COMPLETED
        with pytest.raises(FailedPrecondition) as refused:
            await store.set_upload_state(
                session, tenant=tenant, upload_id=upload_id, to_state=UploadState.ABORTED
            )
        assert refused.value.reason == "UPLOAD_COMPLETED"
        with pytest.raises(InvalidArgument):
            await store.set_upload_state(
                session, tenant=tenant, upload_id=upload_id, to_state=UploadState.OPEN
            )


async def test_complete_and_abort_race_has_one_winner(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    upload_id = await _new_upload(sessions, tenant, file)

    async def close(state: UploadState) -> str:
        try:
            async with sessions() as session, session.begin():
                await store.set_upload_state(session, tenant=tenant, upload_id=upload_id, to_state=state)
        except FailedPrecondition as refused:
            return refused.reason
        return "OK"

    outcomes = await asyncio.gather(*(close(s) for s in [UploadState.COMPLETED, UploadState.ABORTED] * 5))
    async with sessions() as session:
        final = await store.get_upload(session, tenant=tenant, upload_id=upload_id)
    for state, outcome in zip([UploadState.COMPLETED, UploadState.ABORTED] * 5, outcomes, strict=True):
        assert outcome == ("OK" if state == final.state else f"UPLOAD_{final.state}")


async def test_a_file_and_its_upload_recorded_with_the_ids_the_broker_chose(
    sessions: Sessions, tenant: str
) -> None:
    # The broker creates the storage multipart upload at the key of a file id it chose, then records
    # both in one transaction.
    file_id = str(uuid.uuid4())
    async with sessions() as session, session.begin():
        file = await store.create_file(
            session,
            tenant=tenant,
            owner="alice",
            name="a.bin",
            declared_content_type="x/y",
            size=5,
            file_id=file_id,
        )
        upload = await store.record_upload(
            session,
            file=file,
            kind=UploadKind.MULTIPART,
            part_size=5 * 2**20,
            part_count=1,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            storage_upload_id="mp-1",
        )
    async with sessions() as session:
        stored = await store.get_upload(session, tenant=tenant, upload_id=upload.id)
        again = await store.get_file(session, tenant=tenant, file_id=file_id)
    assert (stored.file_id, stored.storage_upload_id) == (file_id, "mp-1")
    assert again.storage_key == original_key(tenant, file_id)


async def test_complete_upload_settles_exactly_once(sessions: Sessions, tenant: str) -> None:
    async with sessions() as session, session.begin():
        await store.set_quota(session, tenant=tenant, limit_bytes=10_000)
    file = await _new_file(sessions, tenant, size=1000)
    async with sessions() as session, session.begin():
        await store.reserve_quota(session, tenant=tenant, owner="alice", nbytes=1000)
        upload = await store.record_upload(
            session,
            file=file,
            kind=UploadKind.SINGLE,
            part_size=1000,
            part_count=1,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            reserved_bytes=1000,
        )

    async def complete() -> store.UploadOutcome:
        async with sessions() as session, session.begin():
            return await store.complete_upload(session, tenant=None, upload_id=upload.id, actual_size=1000)

    # The client's CompleteUpload and the storage event arrive together, several times over.
    outcomes = await asyncio.gather(*(complete() for _ in range(8)))
    assert sum(outcome.changed for outcome in outcomes) == 1
    assert {outcome.file.status for outcome in outcomes} == {FileStatus.UPLOADED}
    async with sessions() as session, session.begin():
        quota = await store.get_quota(session, tenant=tenant)
        assert quota is not None
        assert (quota.used_bytes, quota.reserved_bytes) == (1000, 0)
        with pytest.raises(FailedPrecondition) as refused:
            await store.end_upload(session, tenant=tenant, upload_id=upload.id, to_state=UploadState.ABORTED)
        assert refused.value.reason == "UPLOAD_COMPLETED"


async def test_end_upload_releases_and_deletes_the_pending_file(sessions: Sessions, tenant: str) -> None:
    reserved = 15 * 2**20  # what _new_upload records
    async with sessions() as session, session.begin():
        await store.set_quota(session, tenant=tenant, limit_bytes=100 * 2**20)
        # Two uploads' worth, so that a second release would show.
        await store.reserve_quota(session, tenant=tenant, owner="alice", nbytes=2 * reserved)
    file = await _new_file(sessions, tenant)
    upload_id = await _new_upload(sessions, tenant, file)
    for _ in range(2):
        async with sessions() as session, session.begin():
            ended = await store.end_upload(
                session, tenant=tenant, upload_id=upload_id, to_state=UploadState.ABORTED
            )
            assert ended.upload.state == UploadState.ABORTED
            assert ended.file.status == FileStatus.DELETED
            assert ended.file.status_reason == "UPLOAD_ABORTED"
    async with sessions() as session, session.begin():
        quota = await store.get_quota(session, tenant=tenant)
        assert quota is not None
        assert quota.reserved_bytes == reserved
        with pytest.raises(FailedPrecondition) as refused:
            await store.end_upload(session, tenant=tenant, upload_id=upload_id, to_state=UploadState.EXPIRED)
        assert refused.value.reason == "UPLOAD_ABORTED"
        with pytest.raises(InvalidArgument):
            await store.end_upload(
                session, tenant=tenant, upload_id=upload_id, to_state=UploadState.COMPLETED
            )


async def test_delete_reports_objects_nobody_needs(sessions: Sessions, tenant: str) -> None:
    plain = await _new_file(sessions, tenant)
    first = await _new_file(sessions, tenant, sha256=DIGEST)
    second = await _new_file(sessions, tenant, sha256=DIGEST)
    async with sessions() as session, session.begin():
        blob = await store.register_blob(
            session, tenant=tenant, sha256=DIGEST, size=5, storage_key=first.storage_key
        )
        linked = await store.link_file_blob(session, tenant=tenant, file_id=first.id, blob_id=blob.id)
        assert linked.orphaned_storage_keys == []  # the blob's bytes are its own
        # Verified later with the same digest: moves onto the blob's object; its own copy is garbage.
        moved = await store.link_file_blob(session, tenant=tenant, file_id=second.id, blob_id=blob.id)
        assert moved.file.storage_key == first.storage_key
        assert moved.orphaned_storage_keys == [second.storage_key]
        again = await store.link_file_blob(session, tenant=tenant, file_id=second.id, blob_id=blob.id)
        assert again.orphaned_storage_keys == []  # reported once
    copy = await _new_file(sessions, tenant, blob_id=blob.id)
    deletions: dict[str, list[str]] = {}
    for file in (plain, first, second, copy):
        async with sessions() as session, session.begin():
            deletion = await store.delete_file(session, tenant=tenant, file_id=file.id)
            deletions[file.id] = deletion.orphaned_storage_keys
    assert deletions[plain.id] == [plain.storage_key]
    assert deletions[first.id] == []  # the blob still needs these bytes
    assert deletions[second.id] == []
    assert deletions[copy.id] == [first.storage_key]  # last reference gone
    async with sessions() as session, session.begin():
        with pytest.raises(NotFound):
            await store.get_blob(session, tenant=tenant, blob_id=blob.id)
        assert await store.find_dedup_blob(session, tenant=tenant, owner="alice", sha256=DIGEST) is None
        again = await store.delete_file(session, tenant=tenant, file_id=plain.id)
        assert again.orphaned_storage_keys == []


async def test_delete_takes_the_derivatives_with_the_file(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    keys = [derivative_key(tenant, file.id, kind) for kind in ("thumbnail_256", "text")]
    async with sessions() as session, session.begin():
        for kind, key in zip(("thumbnail_256", "text"), keys, strict=True):
            await store.add_derivative(
                session,
                tenant=tenant,
                file_id=file.id,
                kind=kind,
                storage_key=key,
                size=1,
                content_type="image/webp",
            )
    async with sessions() as session, session.begin():
        deletion = await store.delete_file(session, tenant=tenant, file_id=file.id)
    assert sorted(deletion.orphaned_storage_keys) == sorted([*keys, file.storage_key])
    async with sessions() as session, session.begin():
        with pytest.raises(NotFound):
            await store.get_derivative(session, tenant=None, file_id=file.id, kind="text")


async def test_reapers_never_claim_the_same_upload(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    expired = {await _new_upload(sessions, tenant, file, expires_in=timedelta(seconds=-5)) for _ in range(6)}
    fresh = await _new_upload(sessions, tenant, file)

    async def reap() -> list[str]:
        async with sessions() as session, session.begin():
            claimed = await store.claim_expired_uploads(session, lease=timedelta(minutes=5), limit=4)
            return [upload.id for upload in claimed if upload.tenant == tenant]

    batches = await asyncio.gather(*(reap() for _ in range(4)))
    claimed = [upload_id for batch in batches for upload_id in batch]
    assert len(claimed) == len(set(claimed))  # nobody got an upload twice
    assert set(claimed) == expired
    assert fresh not in claimed
    async with sessions() as session, session.begin():
        # Leased uploads stay invisible to other reapers until the lease lapses...
        assert await reap_ids(session, tenant) == set()
        # ...and come back once it has.
        later = datetime.now(UTC) + timedelta(minutes=10)
        assert await reap_ids(session, tenant, now=later) == expired
        upload_id = next(iter(expired))
        await store.set_upload_state(session, tenant=None, upload_id=upload_id, to_state=UploadState.EXPIRED)
        assert await reap_ids(session, tenant, now=later + timedelta(minutes=10)) == expired - {upload_id}


async def reap_ids(session: AsyncSession, tenant: str, *, now: datetime | None = None) -> set[str]:
    claimed = await store.claim_expired_uploads(session, lease=timedelta(minutes=5), limit=1000, now=now)
    return {upload.id for upload in claimed if upload.tenant == tenant}


async def test_grants_and_permissions(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    async with sessions() as session, session.begin():
        assert await store.is_permitted(session, file=file, principal="alice", permission=Permission.WRITE)
        assert not await store.is_permitted(session, file=file, principal="bob", permission=Permission.READ)
        reader = await store.create_grant(
            session, tenant=tenant, file_id=file.id, principal="bob", permission=Permission.READ
        )
        await store.create_grant(
            session,
            tenant=tenant,
            file_id=file.id,
            principal="carol",
            permission=Permission.WRITE,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        await store.create_grant(
            session,
            tenant=tenant,
            file_id=file.id,
            principal="dave",
            permission=Permission.READ,
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )
        assert await store.is_permitted(session, file=file, principal="bob", permission=Permission.READ)
        assert not await store.is_permitted(session, file=file, principal="bob", permission=Permission.WRITE)
        assert await store.is_permitted(session, file=file, principal="carol", permission=Permission.READ)
        assert not await store.is_permitted(session, file=file, principal="dave", permission=Permission.READ)
        active = await store.list_grants(session, tenant=tenant, file_id=file.id)
        assert {grant.principal for grant in active} == {"bob", "carol"}
        with pytest.raises(NotFound):
            await store.revoke_grant(session, tenant="other", grant_id=reader.id)
        with pytest.raises(NotFound):
            await store.create_grant(
                session, tenant="other", file_id=file.id, principal="eve", permission=Permission.READ
            )
        revoked = await store.revoke_grant(session, tenant=tenant, grant_id=reader.id)
        assert revoked.revoked_at is not None
        assert (
            await store.revoke_grant(session, tenant=tenant, grant_id=reader.id)
        ).revoked_at == revoked.revoked_at
        assert not await store.is_permitted(session, file=file, principal="bob", permission=Permission.READ)
        public = await store.update_file(
            session, tenant=tenant, file_id=file.id, visibility=Visibility.PUBLIC
        )
        assert await store.is_permitted(session, file=public, principal="bob", permission=Permission.READ)
        assert not await store.is_permitted(
            session, file=public, principal="bob", permission=Permission.WRITE
        )


async def test_dedup_shares_a_verified_blob(sessions: Sessions, tenant: str) -> None:
    original = await _new_file(sessions, tenant, sha256=DIGEST)
    async with sessions() as session, session.begin():
        assert await store.find_dedup_blob(session, tenant=tenant, owner="alice", sha256=DIGEST) is None
        blob = await store.register_blob(
            session, tenant=tenant, sha256=DIGEST, size=5, storage_key=original.storage_key
        )
        again = await store.register_blob(
            session, tenant=tenant, sha256=DIGEST, size=5, storage_key="other/key"
        )
        assert again.id == blob.id
        assert again.storage_key == original.storage_key  # the first registration wins
        linked = await store.link_file_blob(session, tenant=None, file_id=original.id, blob_id=blob.id)
        assert linked.file.blob_id == blob.id
        await store.link_file_blob(session, tenant=None, file_id=original.id, blob_id=blob.id)  # idempotent
        assert await store.find_dedup_blob(session, tenant="other", owner="alice", sha256=DIGEST) is None
        found = await store.find_dedup_blob(session, tenant=tenant, owner="alice", sha256=DIGEST)
        assert found is not None
        assert found.id == blob.id
        # Offered to the content's owner only: knowing the digest proves nothing.
        assert await store.find_dedup_blob(session, tenant=tenant, owner="bob", sha256=DIGEST) is None

    copy = await _new_file(sessions, tenant, sha256=DIGEST, blob_id=blob.id)
    assert copy.storage_key == original.storage_key
    assert copy.verified_sha256 == DIGEST
    async with sessions() as session, session.begin():
        assert (await store.get_blob(session, tenant=tenant, blob_id=blob.id)).ref_count == 2
        with pytest.raises(NotFound):
            await store.create_file(
                session,
                tenant="other",
                owner="mallory",
                name="steal",
                declared_content_type="x/y",
                size=5,
                blob_id=blob.id,
            )
        with pytest.raises(InvalidArgument):
            await store.create_file(
                session,
                tenant=tenant,
                owner="a",
                name="n",
                declared_content_type="x/y",
                size=6,
                blob_id=blob.id,
            )
    async with sessions() as session, session.begin():
        await store.transition_file(session, tenant=tenant, file_id=copy.id, to_status=FileStatus.DELETED)
        assert (await store.get_blob(session, tenant=tenant, blob_id=blob.id)).ref_count == 1


async def test_dedup_is_offered_to_owners_of_a_live_file_of_the_content(
    sessions: Sessions, tenant: str
) -> None:
    alices = await _new_file(sessions, tenant, sha256=DIGEST)
    bobs = await _new_file(sessions, tenant, owner="bob")
    async with sessions() as session, session.begin():
        blob = await store.register_blob(
            session, tenant=tenant, sha256=DIGEST, size=5, storage_key=alices.storage_key
        )
        await store.link_file_blob(session, tenant=tenant, file_id=alices.id, blob_id=blob.id)
        assert await store.find_dedup_blob(session, tenant=tenant, owner="bob", sha256=DIGEST) is None
        # Bob sent the bytes, and they were verified: now he holds the content too.
        await store.link_file_blob(session, tenant=tenant, file_id=bobs.id, blob_id=blob.id)
        assert await store.find_dedup_blob(session, tenant=tenant, owner="bob", sha256=DIGEST) is not None
    async with sessions() as session, session.begin():
        await store.delete_file(session, tenant=tenant, file_id=bobs.id)
        # A deleted file proves nothing any more, though the content is still in the tenant.
        assert await store.find_dedup_blob(session, tenant=tenant, owner="bob", sha256=DIGEST) is None
        assert await store.find_dedup_blob(session, tenant=tenant, owner="alice", sha256=DIGEST) is not None


async def test_unverified_blob_is_not_a_dedup_target(sessions: Sessions, tenant: str) -> None:
    async with sessions() as session, session.begin():
        blob = await store.register_blob(
            session, tenant=tenant, sha256=DIGEST, size=5, storage_key="k", verified=False
        )
        assert await store.find_dedup_blob(session, tenant=tenant, owner="alice", sha256=DIGEST) is None
        with pytest.raises(FailedPrecondition) as refused:
            await store.create_file(
                session,
                tenant=tenant,
                owner="a",
                name="n",
                declared_content_type="x/y",
                size=5,
                blob_id=blob.id,
            )
        assert refused.value.reason == "BLOB_NOT_VERIFIED"
        verified = await store.register_blob(session, tenant=tenant, sha256=DIGEST, size=5, storage_key="k")
        assert verified.verified


async def test_derivatives_upsert_per_kind(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    key = derivative_key(tenant, file.id, "thumbnail_256")
    for size in (100, 120):  # a re-run of the step replaces, never duplicates
        async with sessions() as session, session.begin():
            derivative = await store.add_derivative(
                session,
                tenant=None,
                file_id=file.id,
                kind="thumbnail_256",
                storage_key=key,
                size=size,
                content_type="image/webp",
            )
            assert derivative.size == size
    async with sessions() as session, session.begin():
        await store.add_derivative(
            session,
            tenant=tenant,
            file_id=file.id,
            kind="text",
            storage_key="k2",
            size=1,
            content_type="text/plain",
        )
        listed = await store.list_derivatives(session, tenant=tenant, file_id=file.id)
        assert [(d.kind, d.size) for d in listed] == [("text", 1), ("thumbnail_256", 120)]
        assert (
            await store.get_derivative(session, tenant=tenant, file_id=file.id, kind="thumbnail_256")
        ).storage_key == key
        with pytest.raises(NotFound):
            await store.get_derivative(session, tenant=tenant, file_id=file.id, kind="thumbnail_1024")
        with pytest.raises(NotFound):
            await store.list_derivatives(session, tenant="other", file_id=file.id)


async def test_processing_results_upsert_and_count_attempts(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    sequence = [
        (ProcessingOutcome.PENDING, 0),
        (ProcessingOutcome.ERROR, 1),
        (ProcessingOutcome.PENDING, 1),
        (ProcessingOutcome.PASSED, 2),
    ]
    for outcome, attempts in sequence:
        async with sessions() as session, session.begin():
            result = await store.set_processing_result(
                session,
                tenant=None,
                file_id=file.id,
                step="virus_scan",
                outcome=outcome,
                details={"o": str(outcome)},
            )
            assert (result.outcome, result.attempts, result.details) == (
                outcome,
                attempts,
                {"o": str(outcome)},
            )
    async with sessions() as session, session.begin():
        await store.set_processing_result(
            session, tenant=None, file_id=file.id, step="checksum", outcome=ProcessingOutcome.FAILED
        )
        results = await store.list_processing_results(session, tenant=tenant, file_id=file.id)
        assert [(r.step, r.outcome) for r in results] == [
            ("checksum", ProcessingOutcome.FAILED),
            ("virus_scan", ProcessingOutcome.PASSED),
        ]
        scan = await store.get_processing_result(session, tenant=tenant, file_id=file.id, step="virus_scan")
        assert scan is not None
        assert scan.attempts == 2
        assert await store.get_processing_result(session, tenant=tenant, file_id=file.id, step="ocr") is None


async def test_update_file_facts(sessions: Sessions, tenant: str) -> None:
    file = await _new_file(sessions, tenant)
    async with sessions() as session, session.begin():
        updated = await store.update_file_facts(
            session,
            tenant=None,
            file_id=file.id,
            verified_sha256=DIGEST,
            sniffed_content_type="image/png",
            extracted_text="hello",
        )
    assert (updated.verified_sha256, updated.sniffed_content_type, updated.extracted_text) == (
        DIGEST,
        "image/png",
        "hello",
    )
    assert updated.version == file.version + 1
