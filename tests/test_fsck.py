"""The reconciler (``filestore-fsck``) against the real stack, on SQLite and on PostgreSQL.

Every inconsistency is made with the real components: objects put into and deleted from SeaweedFS
behind the services' backs, a multipart upload started in storage and left, rows changed or deleted
with SQL in the stack's own database. Each test works in a tenant of its own and scopes the reconciler
to it, because the session stack is shared: other tests' files must neither show up in its findings
nor be repaired by it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from filestore.metadata.db.engine import create_engine, session_factory
from filestore.metadata.db.models import Blob, Derivative, File
from filestore.metadata.fsck import (
    DEFAULT_GRACE,
    OBJECT_MISSING_REASON,
    FindingKind,
    FsckOptions,
    FsckReport,
    Resolution,
    reconcile,
    run,
)
from filestore.server.settings import S3Settings
from filestore.server.storage import ObjectStore
from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2, metadata_service_pb2_grpc, resources_pb2
from tests.storage import admin_store, object_exists
from tests.support import (
    Client,
    ClientFactory,
    StatusEvents,
    get_file,
    service_token,
    stack_channel,
    upload_until_processed,
)

#: These tests read and change the stack's database directly, which an external stack
#: (`make test-stack`) need not expose.
pytestmark = pytest.mark.local_stack

Status = resources_pb2.FileStatus
DERIVATIVE_KIND = "fsck_preview"


@dataclass
class World:
    stack: Stack
    tenant: str
    storage: ObjectStore
    sessions: async_sessionmaker[AsyncSession]
    service: metadata_service_pb2_grpc.MetadataServiceAsyncStub

    def options(self, *, repair: bool = False, grace: timedelta = timedelta(0)) -> FsckOptions:
        return FsckOptions(
            database_url=self.stack.endpoints.database_url,
            s3=admin_s3_settings(self.stack),
            repair=repair,
            grace=grace,
            tenants=(self.tenant,),
        )

    async def object_exists(self, key: str) -> bool:
        return await object_exists(self.stack, key)

    async def put_object(self, key: str, body: bytes) -> None:
        await self.storage.put(key, body, content_type="application/octet-stream")

    async def delete_object(self, key: str) -> None:
        await self.storage.delete(key)

    async def start_multipart_upload(self, key: str) -> str:
        return await self.storage.create_multipart(key, content_type="application/octet-stream")

    async def open_multipart_upload_ids(self, key: str) -> set[str]:
        return {
            upload.upload_id
            async for page in self.storage.list_multipart_uploads(key)
            for upload in page
            if upload.key == key
        }

    async def file_row(self, file_id: str) -> File | None:
        async with self.sessions() as session, session.begin():
            return await session.get(File, file_id)

    async def blob_row(self, blob_id: str) -> Blob | None:
        async with self.sessions() as session, session.begin():
            return await session.get(Blob, blob_id)

    async def derivative_rows(self, file_id: str) -> list[Derivative]:
        async with self.sessions() as session, session.begin():
            return list(
                (await session.scalars(select(Derivative).where(Derivative.file_id == file_id))).all()
            )

    async def add_derivative(self, file_id: str) -> str:
        """What the processor does for a thumbnail: the object first, then the row."""
        key = f"derivatives/{self.tenant}/{file_id}/{DERIVATIVE_KIND}"
        await self.put_object(key, b"preview bytes")
        await self.service.CreateDerivative(
            metadata_service_pb2.CreateDerivativeRequest(
                tenant=self.tenant,
                derivative=resources_pb2.Derivative(
                    file_id=file_id, kind=DERIVATIVE_KIND, size=13, content_type="image/webp"
                ),
            )
        )
        return key


def admin_s3_settings(stack: Stack) -> S3Settings:
    """Storage as an operator sees it: the reconciler lists, reads (HEAD) and deletes."""
    return stack.endpoints.admin_s3_settings()


@pytest.fixture
async def world(stack: Stack) -> AsyncIterator[World]:
    engine = create_engine(stack.endpoints.database_url)
    token = service_token(stack)
    channel: grpc.aio.Channel = stack_channel(
        stack.endpoints, stack.endpoints.metadata_addr, token=lambda: token
    )
    yield World(
        stack=stack,
        tenant=f"fsck-{uuid.uuid4().hex[:12]}",
        storage=admin_store(stack),
        sessions=session_factory(engine),
        service=metadata_service_pb2_grpc.MetadataServiceStub(channel),
    )
    await channel.close()
    await engine.dispose()


def subjects(report: FsckReport) -> set[tuple[FindingKind, str]]:
    return {(finding.kind, finding.subject) for finding in report.findings}


async def fsck_cli(world: World, *args: str) -> tuple[int, str]:
    """The installed console script, as an operator runs it, configured like the metadata service."""
    settings = admin_s3_settings(world.stack)
    environ = {
        **os.environ,
        "FILESTORE_DATABASE_URL": world.stack.endpoints.database_url,
        "FILESTORE_S3_ENDPOINT": settings.endpoint,
        "FILESTORE_S3_REGION": settings.region,
        "FILESTORE_S3_ACCESS_KEY": settings.access_key,
        "FILESTORE_S3_SECRET_KEY": settings.secret_key,
        "FILESTORE_S3_BUCKET": settings.bucket,
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "filestore-fsck"),
        "--tenant",
        world.tenant,
        *args,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    assert not err, err.decode()
    return process.returncode, out.decode()


@dataclass
class Planted:
    """One of each inconsistency, made in the world's tenant, and a healthy file beside them."""

    orphan_key: str
    lost: File
    stale_key: str
    stale_upload_id: str
    drifted: File
    soft_parent: File
    soft_derivative_key: str
    gone_parent: File
    gone_derivative_key: str
    healthy: File

    def expected(self) -> set[tuple[FindingKind, str]]:
        return {
            (FindingKind.ORPHAN_OBJECT, self.orphan_key),
            (FindingKind.MISSING_OBJECT, self.lost.storage_key),
            (FindingKind.STALE_MULTIPART_UPLOAD, self.stale_key),
            (FindingKind.REFCOUNT_DRIFT, f"blob:{self.drifted.blob_id}"),
            (FindingKind.ORPHAN_DERIVATIVE, self.soft_derivative_key),
            (FindingKind.ORPHAN_DERIVATIVE, self.gone_derivative_key),
            (FindingKind.REFCOUNT_DRIFT, f"blob:{self.gone_parent.blob_id}"),
        }


async def plant_one_of_each(world: World, client: Client, status_events: StatusEvents) -> Planted:
    async def ready_file(body: bytes) -> File:
        uploaded = await upload_until_processed(
            client, status_events, body, name="notes.txt", content_type="text/plain"
        )
        assert uploaded.status == Status.FILE_STATUS_READY
        row = await world.file_row(uploaded.id)
        assert row is not None
        assert row.blob_id is not None  # verified content is a dedup target
        return row

    # An object no record knows.
    orphan_key = f"originals/{world.tenant}/{uuid.uuid4()}"
    await world.put_object(orphan_key, b"nobody's bytes")
    # A READY file whose bytes vanished (and with them its blob's).
    lost = await ready_file(b"bytes that will be lost")
    await world.delete_object(lost.storage_key)
    # A multipart upload started in storage that no upload record owns.
    stale_key = f"originals/{world.tenant}/{uuid.uuid4()}"
    stale_upload_id = await world.start_multipart_upload(stale_key)
    # A blob whose reference count drifted.
    drifted = await ready_file(b"bytes whose blob count drifts")
    async with world.sessions() as session, session.begin():
        await session.execute(update(Blob).where(Blob.id == drifted.blob_id).values(ref_count=5))
    # A thumbnail stored while its file was being deleted through the API: the processor's object
    # landed, its row was refused (DeleteFile itself takes the derivatives it knows with the file).
    soft_parent = await ready_file(b"parent deleted through the API")
    await client.metadata.DeleteFile(metadata_service_pb2.DeleteFileRequest(file_id=soft_parent.id))
    soft_derivative_key = f"derivatives/{world.tenant}/{soft_parent.id}/{DERIVATIVE_KIND}"
    await world.put_object(soft_derivative_key, b"preview bytes")
    # A derivative object whose parent row was deleted outright (the row went with it, by cascade),
    # leaving the parent's blob referenced by no file at all.
    gone_parent = await ready_file(b"parent row deleted with SQL")
    gone_derivative_key = await world.add_derivative(gone_parent.id)
    async with world.sessions() as session, session.begin():
        await session.execute(delete(File).where(File.id == gone_parent.id))
    return Planted(
        orphan_key=orphan_key,
        lost=lost,
        stale_key=stale_key,
        stale_upload_id=stale_upload_id,
        drifted=drifted,
        soft_parent=soft_parent,
        soft_derivative_key=soft_derivative_key,
        gone_parent=gone_parent,
        gone_derivative_key=gone_derivative_key,
        healthy=await ready_file(b"nothing wrong with me"),
    )


async def assert_untouched(world: World, client: Client, planted: Planted) -> None:
    assert await world.object_exists(planted.orphan_key)
    assert (await get_file(client, planted.lost.id)).status == Status.FILE_STATUS_READY
    assert planted.stale_upload_id in await world.open_multipart_upload_ids(planted.stale_key)
    drifted_blob = await world.blob_row(str(planted.drifted.blob_id))
    assert drifted_blob is not None
    assert drifted_blob.ref_count == 5
    assert await world.object_exists(planted.soft_derivative_key)
    assert await world.object_exists(planted.gone_derivative_key)


async def assert_repaired(world: World, client: Client, planted: Planted) -> None:
    """Each repair did the honest thing, and nothing a record needs was touched."""
    assert not await world.object_exists(planted.orphan_key)
    lost = await get_file(client, planted.lost.id)
    assert (lost.status, lost.status_reason) == (Status.FILE_STATUS_FAILED, OBJECT_MISSING_REASON)
    assert await world.blob_row(str(planted.lost.blob_id)) is None  # no longer a dedup target
    assert planted.stale_upload_id not in await world.open_multipart_upload_ids(planted.stale_key)
    drifted_blob = await world.blob_row(str(planted.drifted.blob_id))
    assert drifted_blob is not None
    assert drifted_blob.ref_count == 1
    assert await world.derivative_rows(planted.soft_parent.id) == []
    assert not await world.object_exists(planted.soft_derivative_key)
    assert not await world.object_exists(planted.gone_derivative_key)
    assert await world.blob_row(str(planted.gone_parent.blob_id)) is None
    assert not await world.object_exists(planted.gone_parent.storage_key)
    assert (await get_file(client, planted.healthy.id)).status == Status.FILE_STATUS_READY
    assert await world.object_exists(planted.healthy.storage_key)
    assert await world.object_exists(planted.drifted.storage_key)


async def test_finds_each_kind_of_inconsistency_repairs_them_and_then_finds_nothing(
    world: World, client_for: ClientFactory, status_events: StatusEvents
) -> None:
    client = client_for("alice", world.tenant)
    planted = await plant_one_of_each(world, client, status_events)
    expected = planted.expected()

    # Dry run: every planted inconsistency, and nothing else in this tenant; nothing changed.
    report = await run(world.options())
    assert subjects(report) == expected
    assert report.exit_code == 1
    assert {f.resolution for f in report.findings} == {Resolution.FOUND}
    missing_records = {f.detail["record"] for f in report.findings if f.kind == FindingKind.MISSING_OBJECT}
    assert missing_records == {"file", "blob"}  # the lost file's bytes were its blob's too
    drift = next(f for f in report.findings if f.subject == f"blob:{planted.drifted.blob_id}")
    assert (drift.detail["ref_count"], drift.detail["live_files"]) == ("5", "1")
    await assert_untouched(world, client, planted)

    # The console script says the same, as JSON, with exit status 1.
    status, out = await fsck_cli(world, "--grace-s", "0", "--json")
    assert status == 1
    described = json.loads(out)
    assert described["clean"] is False
    expected_json = {(str(kind), subject) for kind, subject in expected}
    assert {(f["kind"], f["subject"]) for f in described["findings"]} == expected_json

    # Repair, through the console script.
    status, out = await fsck_cli(world, "--grace-s", "0", "--repair", "--json")
    assert status == 0, out
    repaired = json.loads(out)
    assert repaired["clean"] is True
    assert {(f["kind"], f["subject"]) for f in repaired["findings"]} == expected_json
    assert {f["resolution"] for f in repaired["findings"]} == {"repaired"}
    await assert_repaired(world, client, planted)

    # A second dry run finds nothing, through the API and the console script alike.
    after = await run(world.options())
    assert after.findings == []
    assert after.exit_code == 0
    assert after.scanned["files"] >= 2  # the healthy and the drifted file were looked at
    status, out = await fsck_cli(world, "--grace-s", "0")
    assert status == 0
    assert "no findings" in out


async def test_young_objects_and_uploads_are_left_alone_within_the_grace_period(world: World) -> None:
    young_key = f"originals/{world.tenant}/{uuid.uuid4()}"
    await world.put_object(young_key, b"an upload in flight")
    multipart_key = f"originals/{world.tenant}/{uuid.uuid4()}"
    await world.start_multipart_upload(multipart_key)

    report = await run(world.options(repair=True, grace=DEFAULT_GRACE))
    assert report.findings == []
    assert report.young_skipped == 2
    assert report.exit_code == 0
    assert await world.object_exists(young_key)
    assert await world.open_multipart_upload_ids(multipart_key)

    # Once they are older than the grace period they are found (and, here, cleaned up).
    cleanup = await run(world.options(repair=True))
    assert subjects(cleanup) == {
        (FindingKind.ORPHAN_OBJECT, young_key),
        (FindingKind.STALE_MULTIPART_UPLOAD, multipart_key),
    }
    assert cleanup.exit_code == 0
    assert not await world.object_exists(young_key)
    assert not await world.open_multipart_upload_ids(multipart_key)


async def test_each_repair_rechecks_its_finding_and_leaves_what_changed_meanwhile(
    world: World, client_for: ClientFactory, status_events: StatusEvents
) -> None:
    client = client_for("alice", world.tenant)
    rewritten_key = f"originals/{world.tenant}/{uuid.uuid4()}"
    await world.put_object(rewritten_key, b"first version")
    vanished_key = f"originals/{world.tenant}/{uuid.uuid4()}"
    await world.put_object(vanished_key, b"deleted by someone else")
    uploaded = await upload_until_processed(
        client, status_events, b"count fixed meanwhile", name="n.txt", content_type="text/plain"
    )
    file = await world.file_row(uploaded.id)
    assert file is not None
    async with world.sessions() as session, session.begin():
        await session.execute(update(Blob).where(Blob.id == file.blob_id).values(ref_count=3))

    report = await reconcile(world.sessions, world.storage, world.options())
    found = {finding.subject: finding for finding in report.findings}
    assert set(found) == {rewritten_key, vanished_key, f"blob:{file.blob_id}"}

    # Between the scan and the repair: the object is rewritten, another deleted, the count fixed.
    await world.put_object(rewritten_key, b"second version, written after the scan")
    await world.delete_object(vanished_key)
    async with world.sessions() as session, session.begin():
        await session.execute(update(Blob).where(Blob.id == file.blob_id).values(ref_count=1))

    assert await found[rewritten_key].repair() == Resolution.SKIPPED
    assert await world.object_exists(rewritten_key)
    assert await found[vanished_key].repair() == Resolution.RESOLVED
    assert await found[f"blob:{file.blob_id}"].repair() == Resolution.RESOLVED
    blob = await world.blob_row(str(file.blob_id))
    assert blob is not None
    assert blob.ref_count == 1
    assert report.exit_code == 1  # the skipped object is still unresolved

    # The next run judges the rewritten object afresh, and repairing it again changes nothing more.
    second = await run(world.options(repair=True))
    assert subjects(second) == {(FindingKind.ORPHAN_OBJECT, rewritten_key)}
    assert second.exit_code == 0
    third = await run(world.options(repair=True))
    assert third.findings == []
    assert (await get_file(client, uploaded.id)).status == Status.FILE_STATUS_READY
