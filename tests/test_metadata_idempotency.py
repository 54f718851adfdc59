"""request_id replays through MetadataService against the real stack, on SQLite and on PostgreSQL
(AIP-155): a write sent again with its request_id answers the first answer and changes nothing more;
the same id with another request is refused; ids are per caller."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2
from tests.catalogue import (
    begin_multipart_request,
    begin_upload_request,
    create_file,
    list_all,
    refused_without_change,
    timestamp,
)
from tests.support import Client, ClientFactory, rpc_error

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub as MetadataStub

Status = resources_pb2.FileStatus
Code = grpc.StatusCode


@pytest.fixture
def rid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def once(alice: Client, rid: str) -> resources_pb2.File:
    """alice's file, created with the request id ``rid``."""
    return await create_file(alice.metadata, name="once.txt", request_id=rid)


# ------------------------------------------------------------------------------------ CreateFile


async def test_a_replayed_create_answers_the_first_file(
    alice: Client, rid: str, once: resources_pb2.File
) -> None:
    assert await create_file(alice.metadata, name="once.txt", request_id=rid) == once


async def test_a_request_id_reused_for_another_create_is_refused(
    stack: Stack, alice: Client, rid: str, once: resources_pb2.File, tenant: str
) -> None:
    await refused_without_change(
        stack,
        (tenant,),
        create_file(alice.metadata, name="twice.txt", request_id=rid),
        Code.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )


async def test_a_replayed_create_creates_one_file(alice: Client, rid: str, once: resources_pb2.File) -> None:
    await create_file(alice.metadata, name="once.txt", request_id=rid)
    assert [f.id for f in await list_all(alice.metadata, pb.ListFilesRequest())] == [once.id]


async def test_request_ids_are_per_caller(
    client_for: ClientFactory, rid: str, once: resources_pb2.File, tenant: str
) -> None:
    # bob's own request with alice's id is his own business.
    bobs = await create_file(client_for("bob", tenant).metadata, name="bob.txt", request_id=rid)
    assert bobs.id != once.id
    assert bobs.owner == "bob"


# ------------------------------------------------------------------------------------ UpdateFile


@pytest.fixture
def update(once: resources_pb2.File) -> pb.UpdateFileRequest:
    """alice's rename of her file, with its request id."""
    return pb.UpdateFileRequest(
        file=resources_pb2.File(id=once.id, name="renamed.txt", etag=once.etag),
        update_mask=FieldMask(paths=["name"]),
        request_id=str(uuid.uuid4()),
    )


async def test_a_replayed_update_answers_the_first_answer_though_its_etag_is_stale_now(
    alice: Client, once: resources_pb2.File, update: pb.UpdateFileRequest
) -> None:
    updated = await alice.metadata.UpdateFile(update)
    # Not ABORTED: the replay is the same request, not a second update.
    assert await alice.metadata.UpdateFile(update) == updated
    assert (await alice.metadata.GetFile(pb.GetFileRequest(file_id=once.id))).etag == updated.etag


async def test_a_request_id_reused_for_another_update_is_refused(
    stack: Stack, alice: Client, update: pb.UpdateFileRequest, tenant: str
) -> None:
    await alice.metadata.UpdateFile(update)
    update.file.name = "other.txt"
    await refused_without_change(
        stack, (tenant,), alice.metadata.UpdateFile(update), Code.ALREADY_EXISTS, "REQUEST_ID_REUSED"
    )


async def test_another_user_replaying_a_request_learns_nothing_about_the_file(
    client_for: ClientFactory, alice: Client, update: pb.UpdateFileRequest, tenant: str
) -> None:
    # The id and the body of alice's request.
    await alice.metadata.UpdateFile(update)
    hidden = await rpc_error(client_for("bob", tenant).metadata.UpdateFile(update))
    assert (hidden.code, hidden.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")


# ------------------------------------------------------------------------------------ other writes


async def test_a_replayed_grant_is_the_first_grant(alice: Client, once: resources_pb2.File) -> None:
    grant = pb.CreateGrantRequest(
        grant=resources_pb2.Grant(file_id=once.id, principal="bob", permission=resources_pb2.PERMISSION_READ),
        request_id=str(uuid.uuid4()),
    )
    granted = await alice.metadata.CreateGrant(grant)
    assert await alice.metadata.CreateGrant(grant) == granted
    assert len((await alice.metadata.ListGrants(pb.ListGrantsRequest(file_id=once.id))).grants) == 1


async def test_a_replayed_transition_answers_the_first_answer(
    service_metadata: MetadataStub, once: resources_pb2.File, tenant: str
) -> None:
    transition = pb.TransitionFileRequest(
        file_id=once.id, tenant=tenant, status=Status.FILE_STATUS_UPLOADED, request_id=str(uuid.uuid4())
    )
    moved = await service_metadata.TransitionFile(transition)
    assert await service_metadata.TransitionFile(transition) == moved


async def test_a_replayed_delete_answers_the_first_answer(alice: Client, once: resources_pb2.File) -> None:
    delete = pb.DeleteFileRequest(file_id=once.id, request_id=str(uuid.uuid4()))
    deleted = await alice.metadata.DeleteFile(delete)
    assert await alice.metadata.DeleteFile(delete) == deleted
    assert deleted.status == Status.FILE_STATUS_DELETED


# ------------------------------------------------------------------------------------ BeginUpload


async def test_a_replayed_begin_upload_ignores_the_expiry_computed_afresh(
    service_metadata: MetadataStub, tenant: str
) -> None:
    # A broker computes the expiry on every retry: it is not part of "the same request".
    begin = begin_upload_request(tenant, "alice", 123, request_id=str(uuid.uuid4()))
    began = await service_metadata.BeginUpload(begin)
    begin.expire_time.CopyFrom(timestamp(datetime.now(UTC) + timedelta(hours=2)))
    assert await service_metadata.BeginUpload(begin) == began


async def test_a_request_id_reused_for_another_begin_upload_is_refused(
    stack: Stack, service_metadata: MetadataStub, tenant: str
) -> None:
    begin = begin_upload_request(tenant, "alice", 123, request_id=str(uuid.uuid4()))
    await service_metadata.BeginUpload(begin)
    begin.file.size = 124
    await refused_without_change(
        stack, (tenant,), service_metadata.BeginUpload(begin), Code.ALREADY_EXISTS, "REQUEST_ID_REUSED"
    )


@pytest.fixture
def multipart(tenant: str) -> pb.BeginUploadRequest:
    """BeginUpload of two parts, with its request id."""
    return begin_multipart_request(
        tenant,
        "alice",
        size=6 * 1024 * 1024,
        part_size=5 * 1024 * 1024,
        part_count=2,
        storage_upload_id="s3-id",
        request_id=str(uuid.uuid4()),
    )


def attempt(request: pb.BeginUploadRequest, storage_upload_id: str) -> pb.BeginUploadRequest:
    """Another attempt of the same create: the broker brings a file id and a storage upload of its own."""
    again = pb.BeginUploadRequest()
    again.CopyFrom(request)
    again.file_id, again.storage_upload_id = str(uuid.uuid4()), storage_upload_id
    return again


async def test_concurrent_twins_of_a_begin_upload_begin_one_upload(
    service_metadata: MetadataStub, multipart: pb.BeginUploadRequest
) -> None:
    twins = [attempt(multipart, f"s3-id-{n}") for n in range(8)]
    answers = await asyncio.gather(*(service_metadata.BeginUpload(twin) for twin in twins))
    first = answers[0]
    assert {(a.upload.id, a.file.id, a.upload.storage_upload_id) for a in answers} == {
        (first.upload.id, first.file.id, first.upload.storage_upload_id)
    }
    # The one recorded is one attempt's own, whole: its file id, its key, its storage upload.
    [winner] = [twin for twin in twins if twin.file_id == first.file.id]
    assert first.upload.storage_upload_id == winner.storage_upload_id
    assert first.upload.storage_key == f"originals/{winner.file.tenant}/{winner.file_id}"


async def test_a_replayed_begin_upload_answers_the_upload_as_it_is_now(
    service_metadata: MetadataStub, multipart: pb.BeginUploadRequest, tenant: str
) -> None:
    # Not its first answer: a broker retrying a create learns what happened since (here: the
    # upload was aborted), with the first attempt's file and storage upload.
    began = await service_metadata.BeginUpload(multipart)
    await service_metadata.EndUploadRecord(
        pb.EndUploadRecordRequest(
            upload_id=began.upload.id, tenant=tenant, state=resources_pb2.UPLOAD_STATE_ABORTED
        )
    )
    retry = attempt(multipart, "s3-id-of-the-retry")
    replays = await asyncio.gather(*(service_metadata.BeginUpload(retry) for _ in range(4)))
    assert {(r.upload.id, r.file.id, r.upload.storage_upload_id, r.upload.state) for r in replays} == {
        (began.upload.id, began.file.id, "s3-id", resources_pb2.UPLOAD_STATE_ABORTED)
    }
