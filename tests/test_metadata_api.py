"""MetadataService through gRPC against the real stack, on SQLite and on PostgreSQL: files (get, list,
create, update, delete), listing filters and keyset pagination with signed page tokens, the lifecycle,
derivatives and processing results, grants, quotas, request_id replays, and bad input that changes
nothing in the database (proved by reading the database itself before and after)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import grpc
import httpx
import pytest
from botocore.exceptions import ClientError
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from filestore.core.auth import mint_token
from filestore.core.clients import insecure_channel
from filestore.core.errors import FilestoreError, error_from_rpc
from filestore.metadata.db import models
from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import metadata_service_pb2_grpc, resources_pb2, upload_service_pb2
from tests.support import Client, ClientFactory, StatusEvents, rpc_error

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub as MetadataStub

Status = resources_pb2.FileStatus
Code = grpc.StatusCode
DOMAIN = "metadata.filestore.v1"


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
async def service(stack: Stack) -> AsyncIterator[MetadataStub]:
    """The metadata service as a Filestore service (the broker, the processor) calls it."""
    token = mint_token(stack.endpoints.auth_secret, subject="service:test", tenant="*", roles=["service"])
    channel = insecure_channel(stack.endpoints.metadata_addr, token=lambda: token)
    yield metadata_service_pb2_grpc.MetadataServiceStub(channel)
    await channel.close()


def fresh_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def tenant() -> str:
    """A tenant of the test's own, so counts and listings see only what the test made."""
    return fresh_tenant()


@pytest.fixture
def storage(stack: Stack) -> S3Client:
    endpoints = stack.endpoints
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=endpoints.s3_endpoint,
        region_name=endpoints.s3_region,
        aws_access_key_id=endpoints.s3_access_key,
        aws_secret_access_key=endpoints.s3_secret_key,
    )
    return client


# ------------------------------------------------------------------------------------ helpers

Snapshot = dict[str, list[tuple[Any, ...]]]


async def catalogue_snapshot(stack: Stack, *tenants: str) -> Snapshot:
    """Every row of the tenants' files, blobs, uploads, grants, quotas, idempotency keys, derivatives
    and processing results, read from the database itself (not through the API under test)."""
    engine = create_async_engine(stack.endpoints.database_url)
    snapshot: Snapshot = {}
    try:
        async with engine.connect() as connection:
            file_ids = select(models.File.id).where(models.File.tenant.in_(tenants))
            for table in models.Base.metadata.sorted_tables:
                if "tenant" in table.c:
                    where = table.c.tenant.in_(tenants)
                elif "file_id" in table.c:
                    where = table.c.file_id.in_(file_ids)
                else:  # pragma: no cover - every table is scoped one of the two ways
                    raise AssertionError(f"table {table.name} is not tenant-scoped")
                rows = (await connection.execute(select(table).where(where))).all()
                snapshot[table.name] = sorted((tuple(row) for row in rows), key=repr)
    finally:
        await engine.dispose()
    return snapshot


async def refused_without_change(
    stack: Stack, tenants: tuple[str, ...], call: Awaitable[object], code: grpc.StatusCode, reason: str
) -> FilestoreError:
    """The call fails with ``code`` and ``reason`` (and our domain), and not one row changed."""
    before = await catalogue_snapshot(stack, *tenants)
    error = await rpc_error(call)
    assert (error.code, error.reason) == (code, reason), str(error)
    assert error.domain == DOMAIN
    assert await catalogue_snapshot(stack, *tenants) == before
    return error


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _newest_first(files: list[resources_pb2.File]) -> list[str]:
    ordered = sorted(files, key=lambda f: (f.create_time.seconds, f.create_time.nanos, f.id), reverse=True)
    return [f.id for f in ordered]


async def create_file(
    stub: MetadataStub,
    *,
    name: str = "a.txt",
    content_type: str = "text/plain",
    size: int = 10,
    labels: dict[str, str] | None = None,
    tenant: str = "",
    owner: str = "",
    request_id: str = "",
) -> resources_pb2.File:
    """CreateFile as a user (tenant and owner from the token) or, naming them, as a service."""
    file = resources_pb2.File(
        name=name,
        declared_content_type=content_type,
        size=size,
        labels=labels or {},
        tenant=tenant,
        owner=owner,
    )
    created: resources_pb2.File = await stub.CreateFile(
        pb.CreateFileRequest(file=file, request_id=request_id)
    )
    return created


async def list_all(stub: MetadataStub, request: pb.ListFilesRequest) -> list[resources_pb2.File]:
    """Every page of a listing."""
    files: list[resources_pb2.File] = []
    request.page_size = request.page_size or 1000
    while True:
        page = await stub.ListFiles(request)
        files.extend(page.files)
        if not page.next_page_token:
            return files
        request.page_token = page.next_page_token


async def move(
    service: MetadataStub, file: resources_pb2.File, *path: Status.ValueType
) -> resources_pb2.File:
    for status in path:
        file = await service.TransitionFile(
            pb.TransitionFileRequest(file_id=file.id, tenant=file.tenant, status=status)
        )
    return file


async def upload_bytes(client: Client, body: bytes, *, name: str = "data.bin") -> resources_pb2.File:
    """A real upload: CreateUpload, a plain HTTP PUT to storage, CompleteUpload."""
    created = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name=name,
            size=len(body),
            content_type="application/octet-stream",
            sha256=hashlib.sha256(body).hexdigest(),
        )
    )
    request = created.upload.request
    async with httpx.AsyncClient(timeout=30) as http:
        put = await http.put(request.url, content=body, headers=dict(request.headers))
    assert put.status_code == 200, put.text
    completed = await client.upload.CompleteUpload(
        upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id)
    )
    assert completed.file.status == Status.FILE_STATUS_UPLOADED
    file: resources_pb2.File = completed.file
    return file


async def object_exists(storage: S3Client, bucket: str, key: str) -> bool:
    try:
        await asyncio.to_thread(storage.head_object, Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def _flip_byte(token: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


# ------------------------------------------------------------------------------------ files


async def test_create_get_update_delete_a_file(stack: Stack, client_for: ClientFactory, tenant: str) -> None:
    alice = client_for("alice", tenant)
    created = await create_file(
        alice.metadata, name="Plan.pdf", content_type="application/pdf", size=1234, labels={"team": "blue"}
    )
    assert (created.tenant, created.owner, created.status) == (tenant, "alice", Status.FILE_STATUS_PENDING)
    assert (created.name, created.declared_content_type, created.size) == (
        "Plan.pdf",
        "application/pdf",
        1234,
    )
    assert dict(created.labels) == {"team": "blue"}
    assert created.visibility == resources_pb2.VISIBILITY_PRIVATE
    assert created.etag
    assert created.HasField("create_time")
    assert not created.HasField("delete_time")
    assert await alice.metadata.GetFile(pb.GetFileRequest(file_id=created.id)) == created

    # Only the fields named in the mask change: the labels sent along with the new name are ignored.
    before = await catalogue_snapshot(stack, tenant)
    renamed = await alice.metadata.UpdateFile(
        pb.UpdateFileRequest(
            file=resources_pb2.File(id=created.id, name="Plan v2.pdf", labels={"team": "red"}, size=1),
            update_mask=FieldMask(paths=["name"]),
        )
    )
    assert (renamed.name, dict(renamed.labels), renamed.size) == ("Plan v2.pdf", {"team": "blue"}, 1234)
    assert renamed.etag != created.etag
    assert renamed.update_time.ToDatetime() >= created.update_time.ToDatetime()
    assert await catalogue_snapshot(stack, tenant) != before  # the snapshot does see changes

    both = await alice.metadata.UpdateFile(
        pb.UpdateFileRequest(
            file=resources_pb2.File(
                id=created.id,
                etag=renamed.etag,
                labels={"team": "red"},
                visibility=resources_pb2.VISIBILITY_PUBLIC,
            ),
            update_mask=FieldMask(paths=["labels", "visibility"]),
        )
    )
    assert (both.name, dict(both.labels), both.visibility) == (
        "Plan v2.pdf",
        {"team": "red"},
        resources_pb2.VISIBILITY_PUBLIC,
    )

    # A stale etag (the file changed since it was read) is ABORTED and changes nothing.
    stale = await refused_without_change(
        stack,
        (tenant,),
        alice.metadata.UpdateFile(
            pb.UpdateFileRequest(
                file=resources_pb2.File(id=created.id, etag=renamed.etag, name="lost update.pdf"),
                update_mask=FieldMask(paths=["name"]),
            )
        ),
        Code.ABORTED,
        "ETAG_MISMATCH",
    )
    assert stale.metadata["etag"] == both.etag
    await refused_without_change(
        stack,
        (tenant,),
        alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=created.id, etag=created.etag)),
        Code.ABORTED,
        "ETAG_MISMATCH",
    )

    deleted = await alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=created.id, etag=both.etag))
    assert deleted.status == Status.FILE_STATUS_DELETED
    assert deleted.HasField("delete_time")
    gone = await rpc_error(alice.metadata.GetFile(pb.GetFileRequest(file_id=created.id)))
    assert (gone.code, gone.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")
    kept = await alice.metadata.GetFile(pb.GetFileRequest(file_id=created.id, include_deleted=True))
    assert kept.status == Status.FILE_STATUS_DELETED
    assert kept.name == "Plan v2.pdf"
    # Deleting a deleted file is a no-op; it no longer lists, and can no longer be updated.
    again = await alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=created.id))
    assert again.etag == deleted.etag
    assert list((await alice.metadata.ListFiles(pb.ListFilesRequest())).files) == []
    error = await rpc_error(
        alice.metadata.UpdateFile(
            pb.UpdateFileRequest(
                file=resources_pb2.File(id=created.id, name="x.pdf"), update_mask=FieldMask(paths=["name"])
            )
        )
    )
    assert (error.code, error.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")


async def test_delete_releases_the_blob_and_deletes_the_object_when_no_file_needs_it(
    stack: Stack,
    client_for: ClientFactory,
    service: MetadataStub,
    status_events: StatusEvents,
    storage: S3Client,
) -> None:
    tenant = fresh_tenant()
    alice = client_for("alice", tenant)
    body = os.urandom(64 * 1024 + 3)
    digest = hashlib.sha256(body).hexdigest()
    original = await upload_bytes(alice, body)
    assert (await status_events.wait_for(original.id)).status == Status.FILE_STATUS_READY
    key = f"originals/{tenant}/{original.id}"
    bucket = stack.endpoints.bucket
    assert await object_exists(storage, bucket, key)
    assert not (await alice.metadata.GetFile(pb.GetFileRequest(file_id=original.id))).deduplicated

    # The same bytes again: the verified blob is shared, no transfer, one more reference.
    began = await service.BeginUpload(
        pb.BeginUploadRequest(
            file=resources_pb2.File(
                tenant=tenant,
                owner="alice",
                name="copy.bin",
                declared_content_type="application/octet-stream",
                size=len(body),
                sha256=digest,
            ),
            kind=resources_pb2.UPLOAD_KIND_SINGLE,
            expire_time=_timestamp(datetime.now(UTC) + timedelta(hours=1)),
        )
    )
    copy = began.file
    assert began.upload.kind == resources_pb2.UPLOAD_KIND_DEDUP
    assert copy.status == Status.FILE_STATUS_UPLOADED
    assert copy.deduplicated
    read = await service.AuthorizeRead(
        pb.AuthorizeReadRequest(file_id=copy.id, tenant=tenant, principal="alice")
    )
    assert read.storage_key == key

    # The copy still needs the bytes: deleting the original keeps the object.
    await alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=original.id))
    assert await object_exists(storage, bucket, key)
    assert (await catalogue_snapshot(stack, tenant))["blobs"] != []
    # The last reference goes: the blob is forgotten (no dedup target any more) and the object deleted.
    await alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=copy.id))
    assert not await object_exists(storage, bucket, key)
    assert (await catalogue_snapshot(stack, tenant))["blobs"] == []


# ------------------------------------------------------------------------------------ listing


@dataclass
class Catalogue:
    files: dict[str, resources_pb2.File]

    def expect(self, keep: Callable[[resources_pb2.File], bool]) -> list[str]:
        return _newest_first([f for f in self.files.values() if keep(f)])


async def _fill_catalogue(service: MetadataStub, tenant: str) -> Catalogue:
    specs: list[tuple[str, str, str, str, dict[str, str]]] = [
        ("f0", "alice", "Report-2024.pdf", "application/pdf", {"project": "apollo", "kind": "report"}),
        ("f1", "alice", "report-lower.pdf", "application/pdf", {"project": "gemini"}),
        ("f2", "bob", "photo.png", "image/png", {"project": "apollo"}),
        ("f3", "bob", "photo2.jpeg", "image/jpeg", {}),
        ("f4", "alice", "notes.txt", "text/plain", {"project": "apollo", "kind": "notes"}),
        ("f5", "alice", "Report-draft.pdf", "application/pdf", {"project": "apollo", "kind": "report"}),
        ("f6", "bob", "scan.png", "image/png", {}),
        ("f7", "carol", "video.mp4", "video/mp4", {"project": "apollo"}),
    ]
    files: dict[str, resources_pb2.File] = {}
    for label, owner, name, content_type, labels in specs:  # one by one: creation times in this order
        files[label] = await create_file(
            service, name=name, content_type=content_type, labels=labels, tenant=tenant, owner=owner
        )
    files["f5"] = await service.DeleteFile(pb.DeleteFileRequest(file_id=files["f5"].id, tenant=tenant))
    ready = (Status.FILE_STATUS_UPLOADED, Status.FILE_STATUS_PROCESSING, Status.FILE_STATUS_READY)
    files["f6"] = await move(service, files["f6"], *ready)
    files["f7"] = await move(service, files["f7"], Status.FILE_STATUS_UPLOADED)
    return Catalogue(files)


async def test_list_files_filters_and_order(
    client_for: ClientFactory, service: MetadataStub, tenant: str
) -> None:
    catalogue = await _fill_catalogue(service, tenant)
    f = catalogue.files
    live = Status.FILE_STATUS_DELETED

    async def listed(**fields: Any) -> list[str]:
        return [file.id for file in await list_all(service, pb.ListFilesRequest(tenant=tenant, **fields))]

    everything = await listed()
    assert everything == catalogue.expect(lambda x: x.status != live)
    assert len(everything) == 7
    assert await listed() == everything  # stable
    assert await listed(owner="bob") == catalogue.expect(lambda x: x.owner == "bob")
    assert await listed(statuses=[Status.FILE_STATUS_READY]) == [f["f6"].id]
    assert await listed(statuses=[Status.FILE_STATUS_DELETED]) == [f["f5"].id]
    assert await listed(statuses=[Status.FILE_STATUS_READY, Status.FILE_STATUS_UPLOADED]) == [
        f["f7"].id,
        f["f6"].id,
    ]
    assert await listed(content_type_prefix="image/") == [f["f6"].id, f["f3"].id, f["f2"].id]
    assert await listed(content_type_prefix="application/pd") == [f["f1"].id, f["f0"].id]
    # Created range: at or after f2's creation, before f6's.
    in_range = await listed(created_after=f["f2"].create_time, created_before=f["f6"].create_time)
    assert in_range == [f["f4"].id, f["f3"].id, f["f2"].id]
    assert await listed(labels={"project": "apollo"}) == [f["f7"].id, f["f4"].id, f["f2"].id, f["f0"].id]
    assert await listed(labels={"project": "apollo", "kind": "report"}) == [f["f0"].id]
    assert await listed(labels={"project": "Apollo"}) == []
    # Name prefixes are case-sensitive.
    assert await listed(name_prefix="Report") == [f["f0"].id]
    assert await listed(name_prefix="report") == [f["f1"].id]
    assert await listed(name_prefix="photo") == [f["f3"].id, f["f2"].id]
    combined = await listed(owner="alice", content_type_prefix="application/", labels={"project": "apollo"})
    assert combined == [f["f0"].id]

    # A user lists their own files; naming another owner does not reveal that owner's private files.
    alice = client_for("alice", tenant)
    mine = await list_all(alice.metadata, pb.ListFilesRequest())
    assert [x.id for x in mine] == catalogue.expect(lambda x: x.owner == "alice" and x.status != live)
    nosy = await rpc_error(alice.metadata.ListFiles(pb.ListFilesRequest(owner="bob")))
    assert (nosy.code, nosy.reason) == (Code.INVALID_ARGUMENT, "INVALID_FILTER")
    own = await list_all(alice.metadata, pb.ListFilesRequest(owner="alice", name_prefix="Report"))
    assert [x.id for x in own] == [f["f0"].id]
    # Another tenant sees none of them.
    assert (
        list((await client_for("alice", f"{tenant}-other").metadata.ListFiles(pb.ListFilesRequest())).files)
        == []
    )


async def test_keyset_pagination_has_no_duplicates_and_no_gaps_while_rows_arrive(
    client_for: ClientFactory, service: MetadataStub, tenant: str
) -> None:
    alice = client_for("alice", tenant)
    originals = await asyncio.gather(*(create_file(alice.metadata, name=f"f{i}.txt") for i in range(55)))
    expected = _newest_first(list(originals))

    first = await alice.metadata.ListFiles(pb.ListFilesRequest())
    assert len(first.files) == 50
    assert first.next_page_token

    seen: list[resources_pb2.File] = []
    token = ""
    removed: str | None = None
    late = 0
    page_sizes = iter([7, 7, 3, 11, 7, 7, 7, 7, 7, 7, 7])
    while True:
        page = await alice.metadata.ListFiles(
            pb.ListFilesRequest(page_size=next(page_sizes), page_token=token)
        )
        seen.extend(page.files)
        if not page.next_page_token:
            break
        token = page.next_page_token
        # Rows arrive while the client pages (newer than every position, so they belong before it)...
        await asyncio.gather(*(create_file(alice.metadata, name="late.txt") for _ in range(2)))
        late += 2
        if removed is None:
            # ...and one not yet listed goes away: it must vanish without taking a neighbour with it.
            removed = expected[-5]
            await alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=removed))
    ids = [f.id for f in seen]
    assert len(ids) == len(set(ids)), "a file was listed twice"
    assert ids == [i for i in expected if i != removed], "a file was skipped or the order changed"
    everything = await list_all(service, pb.ListFilesRequest(tenant=tenant))
    assert len(everything) == 55 - 1 + late
    assert late >= 10
    assert [f.id for f in everything] == _newest_first(everything)


async def test_page_tokens_are_opaque_and_tamper_proof(
    stack: Stack, client_for: ClientFactory, service: MetadataStub, tenant: str
) -> None:
    alice = client_for("alice", tenant)
    for i in range(5):
        await create_file(alice.metadata, name=f"doc{i}.txt", labels={"set": "a"})
    request = pb.ListFilesRequest(page_size=2, labels={"set": "a"})
    page = await alice.metadata.ListFiles(request)
    token = page.next_page_token
    assert token
    # Opaque: no file id, no timestamp in clear text, even after base64 decoding.
    decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert page.files[-1].id not in token
    next_page = await alice.metadata.ListFiles(
        pb.ListFilesRequest(page_size=2, page_token=token, labels={"set": "a"})
    )
    assert next_page.files[0].id not in [f.id for f in page.files]

    def listing(page_token: str, **fields: Any) -> Awaitable[object]:
        fields.setdefault("labels", {"set": "a"})
        return alice.metadata.ListFiles(pb.ListFilesRequest(page_size=2, page_token=page_token, **fields))

    tampered = [
        _flip_byte(token, 0),  # in the signature
        _flip_byte(token, len(decoded) - 3),  # in the signed position
        token[:-4],  # truncated
        "not a token at all!",
        base64.urlsafe_b64encode(
            b"\x00" * 16 + json.dumps({"p": {"c": "2000-01-01T00:00:00+00:00", "i": "z"}, "f": ""}).encode()
        ).decode(),
        "A" * 10_000,
    ]
    for forged in tampered:
        await refused_without_change(
            stack, (tenant,), listing(forged), Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"
        )
    # A genuine token is bound to its filters: reused with others it is refused...
    for other_filters in (
        {"labels": {"set": "b"}},
        {"name_prefix": "doc"},
        {"statuses": [Status.FILE_STATUS_PENDING]},
    ):
        error = await rpc_error(listing(token, **other_filters))
        assert (error.code, error.reason) == (Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    # ...and to the tenant a service lists.
    service_page = await service.ListFiles(pb.ListFilesRequest(tenant=tenant, page_size=2))
    error = await rpc_error(
        service.ListFiles(
            pb.ListFilesRequest(tenant=f"{tenant}-x", page_size=2, page_token=service_page.next_page_token)
        )
    )
    assert (error.code, error.reason) == (Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    # The page size is not a filter: it may change between pages (AIP-158).
    resized = await alice.metadata.ListFiles(
        pb.ListFilesRequest(page_size=3, page_token=token, labels={"set": "a"})
    )
    assert [f.id for f in resized.files] == [f.id for f in next_page.files] + [resized.files[2].id]


# ------------------------------------------------------------------------------------ lifecycle


async def test_lifecycle_transitions_are_enforced(
    stack: Stack, client_for: ClientFactory, service: MetadataStub, tenant: str
) -> None:
    alice = client_for("alice", tenant)
    file = await create_file(alice.metadata)

    async def transition(target: Status.ValueType, **fields: Any) -> resources_pb2.File:
        moved: resources_pb2.File = await service.TransitionFile(
            pb.TransitionFileRequest(file_id=file.id, tenant=tenant, status=target, **fields)
        )
        return moved

    def illegal(target: Status.ValueType) -> Awaitable[FilestoreError]:
        return refused_without_change(
            stack,
            (tenant,),
            service.TransitionFile(pb.TransitionFileRequest(file_id=file.id, tenant=tenant, status=target)),
            Code.FAILED_PRECONDITION,
            "ILLEGAL_TRANSITION",
        )

    await illegal(Status.FILE_STATUS_READY)  # PENDING cannot skip to READY
    await illegal(Status.FILE_STATUS_PROCESSING)
    uploaded = await transition(Status.FILE_STATUS_UPLOADED)
    assert uploaded.status == Status.FILE_STATUS_UPLOADED
    # Re-applying the current state is an idempotent no-op (events are redelivered).
    assert (await transition(Status.FILE_STATUS_UPLOADED)).etag == uploaded.etag
    await illegal(Status.FILE_STATUS_PENDING)
    processing = await transition(Status.FILE_STATUS_PROCESSING)
    # With an etag, a transition applies only to the version that was read.
    stale = await rpc_error(
        service.TransitionFile(
            pb.TransitionFileRequest(
                file_id=file.id, tenant=tenant, status=Status.FILE_STATUS_READY, etag=uploaded.etag
            )
        )
    )
    assert (stale.code, stale.reason) == (Code.ABORTED, "ETAG_MISMATCH")
    quarantined = await transition(
        Status.FILE_STATUS_QUARANTINED, reason="MALWARE_FOUND", etag=processing.etag
    )
    assert (quarantined.status, quarantined.status_reason) == (
        Status.FILE_STATUS_QUARANTINED,
        "MALWARE_FOUND",
    )
    await illegal(Status.FILE_STATUS_READY)  # a quarantined file never becomes READY
    await illegal(Status.FILE_STATUS_PROCESSING)
    deleted = await transition(Status.FILE_STATUS_DELETED)
    assert deleted.status == Status.FILE_STATUS_DELETED
    for target in (Status.FILE_STATUS_PENDING, Status.FILE_STATUS_UPLOADED, Status.FILE_STATUS_READY):
        await illegal(target)

    # Clients may delete their own files through TransitionFile, but the pipeline states are the
    # services' to set: a client marking its own PENDING file READY would skip the verification.
    mine = await create_file(alice.metadata)
    for target in (Status.FILE_STATUS_UPLOADED, Status.FILE_STATUS_READY):
        await refused_without_change(
            stack,
            (tenant,),
            alice.metadata.TransitionFile(pb.TransitionFileRequest(file_id=mine.id, status=target)),
            Code.PERMISSION_DENIED,
            "SERVICE_ROLE_REQUIRED",
        )
    bob = client_for("bob", tenant)
    hidden = await rpc_error(
        bob.metadata.TransitionFile(
            pb.TransitionFileRequest(file_id=mine.id, status=Status.FILE_STATUS_DELETED)
        )
    )
    assert (hidden.code, hidden.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")
    gone = await alice.metadata.TransitionFile(
        pb.TransitionFileRequest(file_id=mine.id, status=Status.FILE_STATUS_DELETED)
    )
    assert gone.status == Status.FILE_STATUS_DELETED


# ------------------------------------------------------------------------------------ processing


async def test_derivatives_and_processing_results(
    stack: Stack, client_for: ClientFactory, service: MetadataStub, tenant: str
) -> None:
    alice = client_for("alice", tenant)
    file = await create_file(alice.metadata, name="pic.png", content_type="image/png")

    thumb = await service.CreateDerivative(
        pb.CreateDerivativeRequest(
            tenant=tenant,
            derivative=resources_pb2.Derivative(
                file_id=file.id, kind="thumbnail_256", size=900, content_type="image/webp"
            ),
        )
    )
    assert thumb.storage_key == f"derivatives/{tenant}/{file.id}/thumbnail_256"
    await service.CreateDerivative(
        pb.CreateDerivativeRequest(
            tenant=tenant,
            derivative=resources_pb2.Derivative(
                file_id=file.id, kind="text", size=12, content_type="text/plain"
            ),
        )
    )
    # Registering a kind again replaces it: one derivative per file and kind.
    again = await service.CreateDerivative(
        pb.CreateDerivativeRequest(
            tenant=tenant,
            derivative=resources_pb2.Derivative(
                file_id=file.id, kind="thumbnail_256", size=950, content_type="image/webp"
            ),
        )
    )
    assert again.size == 950
    listed = (await alice.metadata.ListDerivatives(pb.ListDerivativesRequest(file_id=file.id))).derivatives
    assert [(d.kind, d.size) for d in listed] == [("text", 12), ("thumbnail_256", 950)]
    as_service = await service.ListDerivatives(pb.ListDerivativesRequest(file_id=file.id, tenant=tenant))
    assert list(as_service.derivatives) == list(listed)

    async def record(
        step: str, outcome: resources_pb2.StepOutcome.ValueType, **details: str
    ) -> resources_pb2.ProcessingResult:
        result: resources_pb2.ProcessingResult = await service.RecordProcessingResult(
            pb.RecordProcessingResultRequest(
                tenant=tenant,
                result=resources_pb2.ProcessingResult(
                    file_id=file.id, step=step, outcome=outcome, details=details
                ),
            )
        )
        return result

    assert (await record("scan", resources_pb2.STEP_OUTCOME_PENDING)).attempts == 0
    assert (await record("scan", resources_pb2.STEP_OUTCOME_ERROR, error="timeout")).attempts == 1
    passed = await record("scan", resources_pb2.STEP_OUTCOME_PASSED, engine="clamav")
    assert (passed.attempts, dict(passed.details)) == (2, {"engine": "clamav"})
    await record("integrity", resources_pb2.STEP_OUTCOME_PASSED, sha256="0" * 64)
    results = (
        await alice.metadata.ListProcessingResults(pb.ListProcessingResultsRequest(file_id=file.id))
    ).results
    assert [(r.step, r.outcome, r.attempts) for r in results] == [
        ("integrity", resources_pb2.STEP_OUTCOME_PASSED, 1),
        ("scan", resources_pb2.STEP_OUTCOME_PASSED, 2),
    ]

    # Writing them is for services; users and other tenants cannot.
    denied = await refused_without_change(
        stack,
        (tenant,),
        alice.metadata.CreateDerivative(
            pb.CreateDerivativeRequest(
                derivative=resources_pb2.Derivative(file_id=file.id, kind="x", content_type="image/png")
            )
        ),
        Code.PERMISSION_DENIED,
        "SERVICE_ROLE_REQUIRED",
    )
    assert "service" in str(denied)
    await refused_without_change(
        stack,
        (tenant,),
        alice.metadata.RecordProcessingResult(
            pb.RecordProcessingResultRequest(
                result=resources_pb2.ProcessingResult(
                    file_id=file.id, step="scan", outcome=resources_pb2.STEP_OUTCOME_FAILED
                )
            )
        ),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    )
    await refused_without_change(
        stack,
        (tenant,),
        service.CreateDerivative(
            pb.CreateDerivativeRequest(
                tenant=tenant,
                derivative=resources_pb2.Derivative(file_id=file.id, kind="../x", content_type="image/png"),
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_KIND",
    )
    for stranger in (client_for("mallory", f"{tenant}-evil"), client_for("bob", tenant)):
        hidden = await rpc_error(
            stranger.metadata.ListDerivatives(pb.ListDerivativesRequest(file_id=file.id))
        )
        assert (hidden.code, hidden.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")
    wrong_tenant = await rpc_error(
        service.ListProcessingResults(
            pb.ListProcessingResultsRequest(file_id=file.id, tenant=f"{tenant}-evil")
        )
    )
    assert (wrong_tenant.code, wrong_tenant.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")


# ------------------------------------------------------------------------------------ grants


async def test_grants_create_list_revoke_and_expire(
    stack: Stack, client_for: ClientFactory, service: MetadataStub, tenant: str
) -> None:
    alice, bob, carol = (client_for(name, tenant) for name in ("alice", "bob", "carol"))
    file = await create_file(alice.metadata, name="shared.txt")

    def authorize(reader: Client) -> Awaitable[pb.AuthorizeReadResponse]:
        answer: Awaitable[pb.AuthorizeReadResponse] = reader.metadata.AuthorizeRead(
            pb.AuthorizeReadRequest(file_id=file.id)
        )
        return answer

    for reader in (bob, carol):
        refused = await rpc_error(authorize(reader))
        assert (refused.code, refused.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")

    expires = datetime.now(UTC) + timedelta(seconds=2)
    temporary = await alice.metadata.CreateGrant(
        pb.CreateGrantRequest(
            grant=resources_pb2.Grant(
                file_id=file.id,
                principal="bob",
                permission=resources_pb2.PERMISSION_READ,
                expire_time=_timestamp(expires),
            )
        )
    )
    lasting = await alice.metadata.CreateGrant(
        pb.CreateGrantRequest(
            grant=resources_pb2.Grant(
                file_id=file.id, principal="carol", permission=resources_pb2.PERMISSION_WRITE
            )
        )
    )
    assert temporary.id != lasting.id
    assert temporary.expire_time.ToDatetime(tzinfo=UTC) == expires
    grants = (await alice.metadata.ListGrants(pb.ListGrantsRequest(file_id=file.id))).grants
    assert {(g.principal, g.permission) for g in grants} == {
        ("bob", resources_pb2.PERMISSION_READ),
        ("carol", resources_pb2.PERMISSION_WRITE),
    }
    assert (await authorize(bob)).file.id == file.id
    assert (await authorize(carol)).storage_key == f"originals/{tenant}/{file.id}"
    # The service asks on behalf of a principal, with the same answer.
    on_behalf = await service.AuthorizeRead(
        pb.AuthorizeReadRequest(file_id=file.id, tenant=tenant, principal="bob")
    )
    assert on_behalf.file.id == file.id
    # WRITE lets carol rename the file, but deleting or re-sharing it stays the owner's.
    renamed = await carol.metadata.UpdateFile(
        pb.UpdateFileRequest(
            file=resources_pb2.File(id=file.id, name="renamed.txt"), update_mask=FieldMask(paths=["name"])
        )
    )
    assert renamed.name == "renamed.txt"
    forbidden: list[tuple[Awaitable[object], str]] = [
        (carol.metadata.DeleteFile(pb.DeleteFileRequest(file_id=file.id)), "FILE_NOT_FOUND"),
        (
            carol.metadata.CreateGrant(
                pb.CreateGrantRequest(
                    grant=resources_pb2.Grant(
                        file_id=file.id, principal="dave", permission=resources_pb2.PERMISSION_READ
                    )
                )
            ),
            "FILE_NOT_FOUND",
        ),
        (bob.metadata.ListGrants(pb.ListGrantsRequest(file_id=file.id)), "FILE_NOT_FOUND"),
        (bob.metadata.DeleteGrant(pb.DeleteGrantRequest(grant_id=lasting.id)), "GRANT_NOT_FOUND"),
    ]
    for call, reason in forbidden:
        await refused_without_change(stack, (tenant,), call, Code.NOT_FOUND, reason)

    # Expiry is honoured: once the moment passes, bob's reads fail and the grant stops listing.
    async def until_refused() -> FilestoreError:
        while True:
            try:
                await authorize(bob)
            except grpc.aio.AioRpcError as error:
                return error_from_rpc(error)
            await asyncio.sleep(0.1)

    expired = await asyncio.wait_for(until_refused(), timeout=15)
    assert (expired.code, expired.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")
    assert datetime.now(UTC) >= expires
    grants = (await alice.metadata.ListGrants(pb.ListGrantsRequest(file_id=file.id))).grants
    assert [g.principal for g in grants] == ["carol"]

    # Revoking takes effect at once; revoking again is a no-op; unknown grants are NOT_FOUND.
    await alice.metadata.DeleteGrant(pb.DeleteGrantRequest(grant_id=lasting.id))
    refused = await rpc_error(authorize(carol))
    assert (refused.code, refused.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")
    await alice.metadata.DeleteGrant(pb.DeleteGrantRequest(grant_id=lasting.id))
    assert list((await alice.metadata.ListGrants(pb.ListGrantsRequest(file_id=file.id))).grants) == []
    unknown = await rpc_error(alice.metadata.DeleteGrant(pb.DeleteGrantRequest(grant_id=str(uuid.uuid4()))))
    assert (unknown.code, unknown.reason) == (Code.NOT_FOUND, "GRANT_NOT_FOUND")


# ------------------------------------------------------------------------------------ quotas


def _begin_with_checksum(
    kind: resources_pb2.UploadKind.ValueType, algorithm: resources_pb2.ChecksumAlgorithm.ValueType
) -> pb.BeginUploadRequest:
    request = _begin("", "", 6 * 1024 * 1024)
    request.kind = kind
    request.part_checksum_algorithm = algorithm
    if kind == resources_pb2.UPLOAD_KIND_MULTIPART:
        request.part_size, request.part_count = 5 * 1024 * 1024, 2
    return request


def _begin_empty_multipart(tenant: str) -> pb.BeginUploadRequest:
    """0 bytes in parts: storage completes a multipart upload from one part at least."""
    request = _begin(tenant, "alice", 0)
    request.kind = resources_pb2.UPLOAD_KIND_MULTIPART
    request.part_size, request.part_count = 5 * 1024 * 1024, 1
    return request


async def _quota(stub: MetadataStub, tenant: str = "", owner: str = "") -> tuple[int, int, int]:
    quota = await stub.GetQuota(pb.GetQuotaRequest(tenant=tenant, owner=owner))
    return quota.limit_bytes, quota.used_bytes, quota.reserved_bytes


def _begin(tenant: str, owner: str, size: int, request_id: str = "") -> pb.BeginUploadRequest:
    return pb.BeginUploadRequest(
        file=resources_pb2.File(
            tenant=tenant,
            owner=owner,
            name="up.bin",
            declared_content_type="application/octet-stream",
            size=size,
        ),
        kind=resources_pb2.UPLOAD_KIND_SINGLE,
        expire_time=_timestamp(datetime.now(UTC) + timedelta(hours=1)),
        request_id=request_id,
    )


async def test_quotas_reserve_settle_release_and_refuse(
    stack: Stack, client_for: ClientFactory, service: MetadataStub, status_events: StatusEvents, tenant: str
) -> None:
    alice = client_for("alice", tenant)
    assert await _quota(alice.metadata) == (-1, 0, 0)  # no quota: unlimited
    denied = await refused_without_change(
        stack,
        (tenant,),
        alice.metadata.SetQuota(pb.SetQuotaRequest(tenant=tenant, limit_bytes=10**12)),
        Code.PERMISSION_DENIED,
        "SERVICE_ROLE_REQUIRED",
    )
    assert denied.domain == DOMAIN
    await refused_without_change(
        stack,
        (tenant,),
        service.SetQuota(pb.SetQuotaRequest(tenant=tenant, limit_bytes=-5)),
        Code.INVALID_ARGUMENT,
        "INVALID_LIMIT",
    )
    set_to = await service.SetQuota(pb.SetQuotaRequest(tenant=tenant, limit_bytes=100_000))
    assert (set_to.limit_bytes, set_to.used_bytes, set_to.reserved_bytes) == (100_000, 0, 0)
    await service.SetQuota(pb.SetQuotaRequest(tenant=tenant, owner="alice", limit_bytes=80_000))

    # Reserve at creation, settle to the real size at completion.
    body = os.urandom(30_000)
    file = await upload_bytes(alice, body)
    # The pipeline writes to the catalogue until the file is READY: let it finish before the
    # "changes nothing" checks below take their snapshots.
    await status_events.wait_for(file.id)
    assert await _quota(alice.metadata) == (100_000, 30_000, 0)
    assert await _quota(alice.metadata, owner="alice") == (80_000, 30_000, 0)

    # Release when an upload ends without bytes.
    began = await service.BeginUpload(_begin(tenant, "alice", 40_000))
    assert await _quota(service, tenant, "alice") == (80_000, 30_000, 40_000)
    ended = await service.EndUploadRecord(
        pb.EndUploadRecordRequest(
            upload_id=began.upload.id, tenant=tenant, state=resources_pb2.UPLOAD_STATE_ABORTED
        )
    )
    assert ended.state == resources_pb2.UPLOAD_STATE_ABORTED
    assert await _quota(service, tenant, "alice") == (80_000, 30_000, 0)
    aborted_file = await service.GetFile(
        pb.GetFileRequest(file_id=began.file.id, tenant=tenant, include_deleted=True)
    )
    assert aborted_file.status == Status.FILE_STATUS_DELETED

    # Refused: the owner's quota binds alice (30,000 used + 50,001 > 80,000), the tenant's binds bob.
    refused = await refused_without_change(
        stack,
        (tenant,),
        service.BeginUpload(_begin(tenant, "alice", 50_001)),
        Code.RESOURCE_EXHAUSTED,
        "QUOTA_EXCEEDED",
    )
    assert (refused.metadata["scope"], refused.metadata["limit_bytes"]) == ("owner", "80000")
    await service.BeginUpload(_begin(tenant, "bob", 60_000))
    before = await catalogue_snapshot(stack, tenant)
    through_broker = await rpc_error(
        client_for("bob", tenant).upload.CreateUpload(
            upload_service_pb2.CreateUploadRequest(
                name="big.bin", size=10_001, content_type="application/octet-stream"
            )
        )
    )
    assert (through_broker.code, through_broker.reason) == (Code.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    assert through_broker.metadata["scope"] == "tenant"
    assert await catalogue_snapshot(stack, tenant) == before

    # Deleting a stored file gives its bytes back.
    assert (await status_events.wait_for(file.id)).status == Status.FILE_STATUS_READY
    await alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=file.id))
    assert await _quota(service, tenant) == (100_000, 0, 60_000)


async def test_fifty_concurrent_uploads_against_a_quota_for_ten(
    client_for: ClientFactory, service: MetadataStub, tenant: str
) -> None:
    await service.SetQuota(pb.SetQuotaRequest(tenant=tenant, limit_bytes=10 * 1000))
    alice = client_for("alice", tenant)
    request = upload_service_pb2.CreateUploadRequest(
        name="c.bin", size=1000, content_type="application/octet-stream"
    )
    outcomes = await asyncio.gather(
        *(alice.upload.CreateUpload(request) for _ in range(50)), return_exceptions=True
    )
    granted = [o for o in outcomes if isinstance(o, upload_service_pb2.CreateUploadResponse)]
    refused = [error_from_rpc(o) for o in outcomes if isinstance(o, grpc.RpcError)]
    assert len(granted) == 10
    assert len(refused) == 40
    assert {(e.code, e.reason) for e in refused} == {(Code.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")}
    assert await _quota(service, tenant) == (10_000, 0, 10_000)
    files = await list_all(service, pb.ListFilesRequest(tenant=tenant))
    assert sorted(f.id for f in files) == sorted(g.file.id for g in granted)


# ------------------------------------------------------------------------------------ request_id


async def test_request_id_replays_answer_the_first_answer(
    stack: Stack, client_for: ClientFactory, service: MetadataStub, tenant: str
) -> None:
    alice, bob = client_for("alice", tenant), client_for("bob", tenant)
    rid = str(uuid.uuid4())
    first = await create_file(alice.metadata, name="once.txt", request_id=rid)
    assert await create_file(alice.metadata, name="once.txt", request_id=rid) == first
    await refused_without_change(
        stack,
        (tenant,),
        create_file(alice.metadata, name="twice.txt", request_id=rid),
        Code.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    assert [f.id for f in await list_all(alice.metadata, pb.ListFilesRequest())] == [first.id]

    update = pb.UpdateFileRequest(
        file=resources_pb2.File(id=first.id, name="renamed.txt", etag=first.etag),
        update_mask=FieldMask(paths=["name"]),
        request_id=str(uuid.uuid4()),
    )
    updated = await alice.metadata.UpdateFile(update)
    # The replay carries a now-stale etag, yet answers the first answer instead of ABORTED.
    assert await alice.metadata.UpdateFile(update) == updated
    assert (await alice.metadata.GetFile(pb.GetFileRequest(file_id=first.id))).etag == updated.etag
    update.file.name = "other.txt"
    await refused_without_change(
        stack, (tenant,), alice.metadata.UpdateFile(update), Code.ALREADY_EXISTS, "REQUEST_ID_REUSED"
    )
    # Another user replaying alice's request (id and body) learns nothing about her file.
    update.file.name = "renamed.txt"
    hidden = await rpc_error(bob.metadata.UpdateFile(update))
    assert (hidden.code, hidden.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")
    # Request ids are per caller: bob's own request with the same id is his own business.
    bobs = await create_file(bob.metadata, name="bob.txt", request_id=rid)
    assert bobs.id != first.id
    assert bobs.owner == "bob"

    grant = pb.CreateGrantRequest(
        grant=resources_pb2.Grant(
            file_id=first.id, principal="bob", permission=resources_pb2.PERMISSION_READ
        ),
        request_id=str(uuid.uuid4()),
    )
    granted = await alice.metadata.CreateGrant(grant)
    assert await alice.metadata.CreateGrant(grant) == granted
    assert len((await alice.metadata.ListGrants(pb.ListGrantsRequest(file_id=first.id))).grants) == 1

    transition = pb.TransitionFileRequest(
        file_id=first.id, tenant=tenant, status=Status.FILE_STATUS_UPLOADED, request_id=str(uuid.uuid4())
    )
    moved = await service.TransitionFile(transition)
    assert await service.TransitionFile(transition) == moved

    # BeginUpload: the expiry is computed afresh on every retry and is not part of "the same request".
    begin = _begin(tenant, "alice", 123, request_id=str(uuid.uuid4()))
    began = await service.BeginUpload(begin)
    begin.expire_time.CopyFrom(_timestamp(datetime.now(UTC) + timedelta(hours=2)))
    assert await service.BeginUpload(begin) == began
    begin.file.size = 124
    await refused_without_change(
        stack, (tenant,), service.BeginUpload(begin), Code.ALREADY_EXISTS, "REQUEST_ID_REUSED"
    )
    # It answers the upload as it is now, not its first answer: a broker retrying a multipart create
    # finds the storage upload it attached (never by listing storage), concurrent twins included.
    multipart = _begin(tenant, "alice", 6 * 1024 * 1024, request_id=str(uuid.uuid4()))
    multipart.kind = resources_pb2.UPLOAD_KIND_MULTIPART
    multipart.part_size, multipart.part_count = 5 * 1024 * 1024, 2
    twins = await asyncio.gather(*(service.BeginUpload(multipart) for _ in range(8)))
    assert {twin.upload.id for twin in twins} == {twins[0].upload.id}
    assert not twins[0].upload.storage_upload_id
    await service.AttachStorageUpload(
        pb.AttachStorageUploadRequest(upload_id=twins[0].upload.id, tenant=tenant, storage_upload_id="s3-id")
    )
    replays = await asyncio.gather(*(service.BeginUpload(multipart) for _ in range(4)))
    assert {(r.upload.id, r.upload.storage_upload_id) for r in replays} == {(twins[0].upload.id, "s3-id")}

    delete = pb.DeleteFileRequest(file_id=first.id, request_id=str(uuid.uuid4()))
    deleted = await alice.metadata.DeleteFile(delete)
    assert await alice.metadata.DeleteFile(delete) == deleted
    assert deleted.status == Status.FILE_STATUS_DELETED


# ------------------------------------------------------------------------------------ bad input


@dataclass(frozen=True)
class Scene:
    """A file of alice's, and everyone who might poke at it."""

    tenant: str
    file: resources_pb2.File
    alice: Client
    bob: Client  # same tenant, no grant
    mallory: Client  # another tenant
    service: MetadataStub

    @property
    def tenants(self) -> tuple[str, ...]:
        return (self.tenant, self.mallory.tenant)


def _update(file_id: str, paths: list[str], **fields: Any) -> pb.UpdateFileRequest:
    return pb.UpdateFileRequest(
        file=resources_pb2.File(id=file_id, **fields), update_mask=FieldMask(paths=paths)
    )


def _new(**fields: Any) -> pb.CreateFileRequest:
    values: dict[str, Any] = {"name": "ok.txt", "declared_content_type": "text/plain", "size": 1, **fields}
    return pb.CreateFileRequest(file=resources_pb2.File(**values))


_UNKNOWN_ID = str(uuid.uuid4())
_TOO_MANY_LABELS = {f"k{i}": "v" for i in range(65)}
_BAD_CASES: list[tuple[str, Callable[[Scene], Awaitable[object]], grpc.StatusCode, str]] = [
    # Unknown ids and other tenants' ids: NOT_FOUND, exactly as if the file did not exist.
    (
        "get-unknown",
        lambda s: s.alice.metadata.GetFile(pb.GetFileRequest(file_id=_UNKNOWN_ID)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "update-unknown",
        lambda s: s.alice.metadata.UpdateFile(_update(_UNKNOWN_ID, ["name"], name="x")),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "delete-unknown",
        lambda s: s.alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=_UNKNOWN_ID)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "get-other-tenant",
        lambda s: s.mallory.metadata.GetFile(pb.GetFileRequest(file_id=s.file.id)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "update-other-tenant",
        lambda s: s.mallory.metadata.UpdateFile(_update(s.file.id, ["name"], name="pwned")),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "delete-other-tenant",
        lambda s: s.mallory.metadata.DeleteFile(pb.DeleteFileRequest(file_id=s.file.id)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "transition-other-tenant",
        lambda s: s.mallory.metadata.TransitionFile(
            pb.TransitionFileRequest(file_id=s.file.id, status=Status.FILE_STATUS_DELETED)
        ),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "grant-other-tenant",
        lambda s: s.mallory.metadata.CreateGrant(
            pb.CreateGrantRequest(
                grant=resources_pb2.Grant(
                    file_id=s.file.id, principal="mallory", permission=resources_pb2.PERMISSION_READ
                )
            )
        ),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "read-other-tenant",
        lambda s: s.mallory.metadata.AuthorizeRead(pb.AuthorizeReadRequest(file_id=s.file.id)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "service-wrong-tenant",
        lambda s: s.service.DeleteFile(pb.DeleteFileRequest(file_id=s.file.id, tenant=s.mallory.tenant)),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    (
        "update-other-user",
        lambda s: s.bob.metadata.UpdateFile(_update(s.file.id, ["name"], name="mine")),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    ),
    # Masks.
    (
        "mask-empty",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, [], name="x")),
        Code.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    (
        "mask-size",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["size"], size=1)),
        Code.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    (
        "mask-owner-and-name",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["name", "owner"], name="x", owner="bob")),
        Code.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    (
        "mask-status",
        lambda s: s.alice.metadata.UpdateFile(
            _update(s.file.id, ["status"], status=Status.FILE_STATUS_READY)
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    (
        "mask-wildcard",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["*"], name="x")),
        Code.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    ),
    (
        "etag-not-ours",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["name"], name="x", etag="W/abc")),
        Code.INVALID_ARGUMENT,
        "INVALID_ETAG",
    ),
    (
        "etag-stale",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["name"], name="x", etag="99")),
        Code.ABORTED,
        "ETAG_MISMATCH",
    ),
    # Page sizes, filters and page tokens.
    (
        "page-size-negative",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(page_size=-1)),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    ),
    (
        "page-size-1001",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(page_size=1001)),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    ),
    (
        "page-size-int32-max",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(page_size=2**31 - 1)),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    ),
    (
        "page-size-int32-min",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(page_size=-(2**31))),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    ),
    (
        "page-token-forged",
        lambda s: s.alice.metadata.ListFiles(
            pb.ListFilesRequest(
                page_token=base64.urlsafe_b64encode(
                    json.dumps({"c": "2999-01-01", "i": s.file.id}).encode()
                ).decode()
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    ),
    (
        "page-token-id",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(page_token=s.file.id)),
        Code.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    ),
    (
        "filter-unspecified-status",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(statuses=[Status.FILE_STATUS_UNSPECIFIED])),
        Code.INVALID_ARGUMENT,
        "INVALID_FILTER",
    ),
    (
        "filter-empty-range",
        lambda s: s.alice.metadata.ListFiles(
            pb.ListFilesRequest(created_after=s.file.create_time, created_before=s.file.create_time)
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_FILTER",
    ),
    (
        "filter-other-owner",
        lambda s: s.bob.metadata.ListFiles(pb.ListFilesRequest(owner="alice")),
        Code.INVALID_ARGUMENT,
        "INVALID_FILTER",
    ),
    (
        "filter-huge-prefix",
        lambda s: s.alice.metadata.ListFiles(pb.ListFilesRequest(name_prefix="x" * 5000)),
        Code.INVALID_ARGUMENT,
        "INVALID_FILTER",
    ),
    # Labels.
    (
        "create-65-labels",
        lambda s: s.alice.metadata.CreateFile(_new(labels=_TOO_MANY_LABELS)),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    (
        "create-label-value-256",
        lambda s: s.alice.metadata.CreateFile(_new(labels={"k": "v" * 256})),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    (
        "create-label-key-64",
        lambda s: s.alice.metadata.CreateFile(_new(labels={"k" * 64: "v"})),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    (
        "create-label-key-upper",
        lambda s: s.alice.metadata.CreateFile(_new(labels={"Key": "v"})),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    (
        "create-label-value-nul",
        lambda s: s.alice.metadata.CreateFile(_new(labels={"k": "a\x00b"})),
        Code.INVALID_ARGUMENT,
        "INVALID_STRING",
    ),
    (
        "update-65-labels",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["labels"], labels=_TOO_MANY_LABELS)),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    (
        "update-label-value-1mib",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["labels"], labels={"k": "v" * (1 << 20)})),
        Code.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    # Other declared values.
    (
        "create-empty-name",
        lambda s: s.alice.metadata.CreateFile(_new(name="  ")),
        Code.INVALID_ARGUMENT,
        "INVALID_NAME",
    ),
    (
        "create-bidi-name",
        lambda s: s.alice.metadata.CreateFile(_new(name="invoice\u202efdp.exe")),
        Code.INVALID_ARGUMENT,
        "INVALID_NAME",
    ),
    (
        "update-long-name",
        lambda s: s.alice.metadata.UpdateFile(_update(s.file.id, ["name"], name="x" * 256)),
        Code.INVALID_ARGUMENT,
        "INVALID_NAME",
    ),
    (
        "create-negative-size",
        lambda s: s.alice.metadata.CreateFile(_new(size=-1)),
        Code.INVALID_ARGUMENT,
        "INVALID_SIZE",
    ),
    (
        "create-bad-type",
        lambda s: s.alice.metadata.CreateFile(_new(declared_content_type="text/html; x")),
        Code.INVALID_ARGUMENT,
        "INVALID_CONTENT_TYPE",
    ),
    (
        "create-bad-sha256",
        lambda s: s.alice.metadata.CreateFile(_new(sha256="ABC")),
        Code.INVALID_ARGUMENT,
        "INVALID_SHA256",
    ),
    (
        "begin-part-checksum-for-a-single-put",
        lambda s: s.alice.metadata.BeginUpload(
            _begin_with_checksum(resources_pb2.UPLOAD_KIND_SINGLE, resources_pb2.CHECKSUM_ALGORITHM_CRC32)
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_CHECKSUM_ALGORITHM",
    ),
    (
        "begin-unknown-kind",
        lambda s: s.alice.metadata.BeginUpload(
            _begin_with_checksum(42, resources_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED)  # type: ignore[arg-type]
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_ENUM_VALUE",
    ),
    (
        "begin-unknown-part-checksum",
        lambda s: s.alice.metadata.BeginUpload(
            _begin_with_checksum(resources_pb2.UPLOAD_KIND_MULTIPART, 9)  # type: ignore[arg-type]
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_ENUM_VALUE",
    ),
    (
        "grant-past-expiry",
        lambda s: s.alice.metadata.CreateGrant(
            pb.CreateGrantRequest(
                grant=resources_pb2.Grant(
                    file_id=s.file.id,
                    principal="bob",
                    permission=resources_pb2.PERMISSION_READ,
                    expire_time=Timestamp(seconds=1),
                )
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_EXPIRY",
    ),
    (
        "grant-no-permission",
        lambda s: s.alice.metadata.CreateGrant(
            pb.CreateGrantRequest(grant=resources_pb2.Grant(file_id=s.file.id, principal="bob"))
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_PERMISSION",
    ),
    (
        "grant-unknown-permission",
        lambda s: s.alice.metadata.CreateGrant(
            pb.CreateGrantRequest(
                grant=resources_pb2.Grant(file_id=s.file.id, principal="bob", permission=9)  # type: ignore[arg-type]
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_ENUM_VALUE",
    ),
    (
        "grant-no-principal",
        lambda s: s.alice.metadata.CreateGrant(
            pb.CreateGrantRequest(
                grant=resources_pb2.Grant(file_id=s.file.id, permission=resources_pb2.PERMISSION_READ)
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_PRINCIPAL",
    ),
    (
        "transition-unspecified",
        lambda s: s.service.TransitionFile(pb.TransitionFileRequest(file_id=s.file.id, tenant=s.tenant)),
        Code.INVALID_ARGUMENT,
        "INVALID_STATUS",
    ),
    (
        "transition-illegal",
        lambda s: s.service.TransitionFile(
            pb.TransitionFileRequest(file_id=s.file.id, tenant=s.tenant, status=Status.FILE_STATUS_READY)
        ),
        Code.FAILED_PRECONDITION,
        "ILLEGAL_TRANSITION",
    ),
    (
        "begin-negative-size",
        lambda s: s.service.BeginUpload(_begin(s.tenant, "alice", -1)),
        Code.INVALID_ARGUMENT,
        "INVALID_SIZE",
    ),
    (
        "begin-empty-multipart",
        lambda s: s.service.BeginUpload(_begin_empty_multipart(s.tenant)),
        Code.INVALID_ARGUMENT,
        "INVALID_SIZE",
    ),
]


@pytest.mark.parametrize("case", _BAD_CASES, ids=[case[0] for case in _BAD_CASES])
async def test_bad_input_is_refused_with_a_reason_and_changes_nothing(
    stack: Stack,
    client_for: ClientFactory,
    service: MetadataStub,
    tenant: str,
    case: tuple[str, Callable[[Scene], Awaitable[object]], grpc.StatusCode, str],
) -> None:
    _, call, code, reason = case
    alice = client_for("alice", tenant)
    file = await create_file(alice.metadata, name="precious.txt", labels={"keep": "me"})
    await alice.metadata.CreateGrant(
        pb.CreateGrantRequest(
            grant=resources_pb2.Grant(
                file_id=file.id, principal="carol", permission=resources_pb2.PERMISSION_READ
            )
        )
    )
    scene = Scene(
        tenant=tenant,
        file=file,
        alice=alice,
        bob=client_for("bob", tenant),
        mallory=client_for("mallory", f"{tenant}-evil"),
        service=service,
    )
    await refused_without_change(stack, scene.tenants, call(scene), code, reason)


async def test_not_found_gives_no_hint_that_another_tenants_file_exists(
    client_for: ClientFactory, tenant: str
) -> None:
    alice, mallory = client_for("alice", tenant), client_for("mallory", f"{tenant}-evil")
    file = await create_file(alice.metadata)
    unknown = str(uuid.uuid4())
    for probe in (
        lambda file_id: mallory.metadata.GetFile(pb.GetFileRequest(file_id=file_id)),
        lambda file_id: mallory.metadata.UpdateFile(_update(file_id, ["name"], name="x")),
        lambda file_id: mallory.metadata.DeleteFile(pb.DeleteFileRequest(file_id=file_id)),
        lambda file_id: mallory.metadata.AuthorizeRead(pb.AuthorizeReadRequest(file_id=file_id)),
        lambda file_id: mallory.metadata.ListGrants(pb.ListGrantsRequest(file_id=file_id)),
    ):
        existing, missing = await rpc_error(probe(file.id)), await rpc_error(probe(unknown))
        assert (existing.code, existing.reason, existing.domain) == (
            missing.code,
            missing.reason,
            missing.domain,
        )
        assert str(existing).replace(file.id, "ID") == str(missing).replace(unknown, "ID")
        assert {k: v.replace(file.id, "ID") for k, v in existing.metadata.items()} == {
            k: v.replace(unknown, "ID") for k, v in missing.metadata.items()
        }
