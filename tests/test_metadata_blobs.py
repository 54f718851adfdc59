"""Blobs against the real stack, on SQLite and on PostgreSQL: a file's verified bytes are a blob that a
later file of the same bytes shares without a transfer, and the blob's object is deleted with the last
file that needs it (storage read through boto3, the catalogue from the database itself)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from filestore.stack import Stack
from filestore.v1 import events_pb2, resources_pb2
from filestore.v1 import metadata_service_pb2 as pb
from tests.catalogue import catalogue_snapshot, in_an_hour
from tests.storage import object_exists
from tests.support import Client, ClientFactory, StatusEvents, upload_file

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub as MetadataStub

Status = resources_pb2.FileStatus


@dataclass(frozen=True)
class Stored:
    """alice's upload of random bytes, once the processor announced it."""

    alice: Client
    file: resources_pb2.File
    announced: events_pb2.FileStatusChanged
    body: bytes
    key: str


@pytest.fixture
async def stored(stack: Stack, client_for: ClientFactory, status_events: StatusEvents, tenant: str) -> Stored:
    alice = client_for("alice", tenant)
    body = os.urandom(64 * 1024 + 3)
    original = await upload_file(alice, body, name="data.bin", content_type="application/octet-stream")
    assert original.status == Status.FILE_STATUS_UPLOADED
    announced = await status_events.wait_for(original.id)
    return Stored(alice, original, announced, body, f"originals/{tenant}/{original.id}")


@pytest.fixture
async def copy(service_metadata: MetadataStub, stored: Stored) -> pb.BeginUploadResponse:
    """The same bytes again, declared by their digest: BeginUpload as the broker sends it."""
    began: pb.BeginUploadResponse = await service_metadata.BeginUpload(
        pb.BeginUploadRequest(
            file=resources_pb2.File(
                tenant=stored.file.tenant,
                owner="alice",
                name="copy.bin",
                declared_content_type="application/octet-stream",
                size=len(stored.body),
                sha256=hashlib.sha256(stored.body).hexdigest(),
            ),
            kind=resources_pb2.UPLOAD_KIND_SINGLE,
            expire_time=in_an_hour(),
        )
    )
    return began


async def test_a_verified_upload_has_an_object_of_its_own(stack: Stack, stored: Stored) -> None:
    assert stored.announced.status == Status.FILE_STATUS_READY
    assert await object_exists(stack, stored.key)
    assert not (await stored.alice.metadata.GetFile(pb.GetFileRequest(file_id=stored.file.id))).deduplicated


async def test_the_same_bytes_again_share_the_verified_blob_without_a_transfer(
    copy: pb.BeginUploadResponse,
) -> None:
    assert copy.upload.kind == resources_pb2.UPLOAD_KIND_DEDUP
    assert copy.file.status == Status.FILE_STATUS_UPLOADED
    assert copy.file.deduplicated


async def test_a_deduplicated_file_is_read_from_the_shared_object(
    service_metadata: MetadataStub, stored: Stored, copy: pb.BeginUploadResponse
) -> None:
    read = await service_metadata.AuthorizeRead(
        pb.AuthorizeReadRequest(file_id=copy.file.id, tenant=stored.file.tenant, principal="alice")
    )
    assert read.storage_key == stored.key


async def test_deleting_a_file_keeps_the_object_a_copy_still_needs(
    stack: Stack, stored: Stored, copy: pb.BeginUploadResponse
) -> None:
    await stored.alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=stored.file.id))
    assert await object_exists(stack, stored.key)
    assert (await catalogue_snapshot(stack, stored.file.tenant))["blobs"] != []


async def test_deleting_the_last_file_deletes_the_object_and_forgets_the_blob(
    stack: Stack, stored: Stored, copy: pb.BeginUploadResponse
) -> None:
    # Forgotten, the blob is no dedup target any more.
    await stored.alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=stored.file.id))
    await stored.alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=copy.file.id))
    assert not await object_exists(stack, stored.key)
    assert (await catalogue_snapshot(stack, stored.file.tenant))["blobs"] == []
