"""A dependency that is down is reported as such, before the caller's deadline, and nothing is lost.

Each dependency is *stopped* (SIGSTOP), not killed: its process keeps its sockets, the kernel still
completes TCP connects, and nothing ever answers, so only a timeout on the caller's side can end a call.
Every call is made with a client deadline of 30 s, so a call that hangs shows as DEADLINE_EXCEEDED: the
assertions are on the status and reason, never on how long a call took. After SIGCONT the same calls are
retried and every upload ends READY.

A stack of its own: the tests stop its processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator

import grpc
import httpx
import nats
import pytest

from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.core.errors import error_from_rpc
from filestore.server.storage import ObjectStore
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import (
    download_service_pb2,
    download_service_pb2_grpc,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    processor_service_pb2,
    processor_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)
from tests.admin_storage import admin_store
from tests.conftest import Client, StatusEvents

pytestmark = pytest.mark.local_stack

Kind = resources_pb2.UploadKind
UState = resources_pb2.UploadState
FStatus = resources_pb2.FileStatus
Code = grpc.StatusCode

#: What a client usually waits; a call that hangs until then answers DEADLINE_EXCEEDED.
CLIENT_DEADLINE_S = 30.0
#: A caller in a hurry: a dependency's timeout must follow the caller's deadline, not only its own.
SHORT_DEADLINE_S = 3.0
#: How long an object deleted while storage was stopped may take to go once storage is back.
DELETION_WITHIN_S = 60.0


@pytest.fixture(scope="module")
async def own_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    config = StackConfig(
        home=tmp_path_factory.mktemp("dependencies-down"), ports=StackPorts.free(), ready_timeout_s=60.0
    )
    async with Stack(config) as stack:
        yield stack


@pytest.fixture
async def client(own_stack: Stack) -> AsyncIterator[Client]:
    endpoints = own_stack.endpoints
    tenant = f"deps-{uuid.uuid4().hex[:10]}"
    token = mint_token(endpoints.auth_secret, subject="alice", tenant=tenant)
    channels = [
        insecure_channel(address, token=lambda: token)
        for address in (
            endpoints.upload_addr,
            endpoints.metadata_addr,
            endpoints.processor_addr,
            endpoints.download_addr,
        )
    ]
    yield Client(
        subject="alice",
        tenant=tenant,
        upload=upload_service_pb2_grpc.UploadServiceStub(channels[0]),
        metadata=metadata_service_pb2_grpc.MetadataServiceStub(channels[1]),
        processor=processor_service_pb2_grpc.ProcessorServiceStub(channels[2]),
        download=download_service_pb2_grpc.DownloadServiceStub(channels[3]),
    )
    for channel in channels:
        await channel.close()


@pytest.fixture
async def ready_events(own_stack: Stack) -> AsyncIterator[StatusEvents]:
    collector = StatusEvents()
    connection = await nats.connect(own_stack.endpoints.nats_url)
    await connection.subscribe("files.file.ready", cb=collector.on_message)
    await connection.flush()
    yield collector
    await connection.close()


@contextlib.contextmanager
def stopped(stack: Stack, component: str) -> Iterator[None]:
    """``component`` frozen (SIGSTOP) for the block, and always thawed (SIGCONT) after it."""
    process = stack.process(component)
    process.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.signal(signal.SIGCONT)


async def outcome(call: Awaitable[object]) -> tuple[Code, str]:
    """The status and ErrorInfo reason a call ended with (OK and "" when it answered)."""
    try:
        await call
    except grpc.RpcError as error:
        typed = error_from_rpc(error)
        return typed.code, typed.reason
    return Code.OK, ""


def body_of(label: str) -> bytes:
    return f"{label} {uuid.uuid4()}\n".encode() * 64


def create_request(
    body: bytes, *, kind: resources_pb2.UploadKind.ValueType = Kind.UPLOAD_KIND_SINGLE, request_id: str = ""
) -> upload_service_pb2.CreateUploadRequest:
    return upload_service_pb2.CreateUploadRequest(
        name="notes.txt",
        size=len(body),
        content_type="text/plain",
        sha256=hashlib.sha256(body).hexdigest(),
        kind=kind,
        request_id=request_id,
    )


async def put(request: resources_pb2.PresignedRequest, data: bytes) -> None:
    async with httpx.AsyncClient(timeout=CLIENT_DEADLINE_S) as http:
        response = await http.put(request.url, content=data, headers=dict(request.headers))
    assert response.status_code == 200, response.text


async def stored_single(client: Client, label: str) -> tuple[upload_service_pb2.CreateUploadResponse, bytes]:
    """A single upload whose bytes are in storage, not yet completed."""
    body = body_of(label)
    created = await client.upload.CreateUpload(create_request(body), timeout=CLIENT_DEADLINE_S)
    await put(created.upload.request, body)
    return created, body


async def open_multipart(client: Client, label: str) -> tuple[upload_service_pb2.CreateUploadResponse, bytes]:
    body = body_of(label)
    created = await client.upload.CreateUpload(
        create_request(body, kind=Kind.UPLOAD_KIND_MULTIPART), timeout=CLIENT_DEADLINE_S
    )
    assert created.upload.state == UState.UPLOAD_STATE_OPEN
    return created, body


async def complete(client: Client, upload_id: str, *, deadline_s: float = CLIENT_DEADLINE_S) -> None:
    await client.upload.CompleteUpload(
        upload_service_pb2.CompleteUploadRequest(upload_id=upload_id), timeout=deadline_s
    )


async def until_ready(ready_events: StatusEvents, file_id: str) -> None:
    event = await ready_events.wait_for_status(file_id, FStatus.FILE_STATUS_READY)
    assert event.status == FStatus.FILE_STATUS_READY


async def ready_file(client: Client, ready_events: StatusEvents, label: str) -> resources_pb2.File:
    created, _ = await stored_single(client, label)
    await complete(client, created.upload.id)
    await until_ready(ready_events, created.file.id)
    file: resources_pb2.File = await client.metadata.GetFile(
        metadata_service_pb2.GetFileRequest(file_id=created.file.id), timeout=CLIENT_DEADLINE_S
    )
    return file


async def until_gone(storage: ObjectStore, key: str) -> None:
    async def gone() -> None:
        while True:
            if await storage.head(key) is None:
                return
            await asyncio.sleep(0.2)

    await asyncio.wait_for(gone(), DELETION_WITHIN_S)


# ------------------------------------------------------------------------------------ storage


async def test_stopped_storage_is_reported_as_unavailable_and_nothing_is_lost(
    own_stack: Stack, client: Client, ready_events: StatusEvents
) -> None:
    to_complete, _ = await stored_single(client, "completed while storage is stopped")
    to_resume, resumed_body = await open_multipart(client, "resumed after storage comes back")
    [part] = to_resume.upload.part_urls
    await put(part.request, resumed_body)
    to_abort, _ = await open_multipart(client, "aborted while storage is stopped")
    to_delete = await ready_file(client, ready_events, "deleted while storage is stopped")
    deleted_key = f"originals/{client.tenant}/{to_delete.id}"
    storage = admin_store(own_stack)
    assert await storage.head(deleted_key) is not None
    created_body = body_of("created while storage is stopped")
    create_multipart = create_request(
        created_body, kind=Kind.UPLOAD_KIND_MULTIPART, request_id=str(uuid.uuid4())
    )
    upload = client.upload

    with stopped(own_stack, "seaweedfs"):
        completion, creation, listing, abortion, deletion = await asyncio.gather(
            outcome(complete(client, to_complete.upload.id)),
            outcome(upload.CreateUpload(create_multipart, timeout=CLIENT_DEADLINE_S)),
            outcome(
                upload.GetUpload(
                    upload_service_pb2.GetUploadRequest(upload_id=to_resume.upload.id),
                    timeout=CLIENT_DEADLINE_S,
                )
            ),
            outcome(
                upload.AbortUpload(
                    upload_service_pb2.AbortUploadRequest(upload_id=to_abort.upload.id),
                    timeout=CLIENT_DEADLINE_S,
                )
            ),
            outcome(
                client.metadata.DeleteFile(
                    metadata_service_pb2.DeleteFileRequest(file_id=to_delete.id), timeout=CLIENT_DEADLINE_S
                )
            ),
        )
        # A short deadline is followed too: the broker gives up on storage before its caller does.
        hurried = await outcome(complete(client, to_complete.upload.id, deadline_s=SHORT_DEADLINE_S))

    unavailable = (Code.UNAVAILABLE, "STORAGE_UNAVAILABLE")
    assert completion == unavailable
    assert creation == unavailable
    assert listing == unavailable
    assert abortion == unavailable
    assert hurried == unavailable
    # Deleting a file is done once its record is: the object goes after the answer, or is left to
    # the reconciler, and a stopped storage does not hold the answer up.
    assert deletion == (Code.OK, "")

    # Storage is back: the same calls, retried, finish what they began.
    await complete(client, to_complete.upload.id)
    await until_ready(ready_events, to_complete.file.id)

    created = await upload.CreateUpload(create_multipart, timeout=CLIENT_DEADLINE_S)
    assert created.upload.state == UState.UPLOAD_STATE_OPEN
    [created_part] = created.upload.part_urls
    await put(created_part.request, created_body)
    await complete(client, created.upload.id)
    await until_ready(ready_events, created.file.id)

    listed = await upload.GetUpload(
        upload_service_pb2.GetUploadRequest(upload_id=to_resume.upload.id), timeout=CLIENT_DEADLINE_S
    )
    assert [p.part_number for p in listed.uploaded_parts] == [1]
    await complete(client, to_resume.upload.id)
    await until_ready(ready_events, to_resume.file.id)

    aborted = await upload.AbortUpload(
        upload_service_pb2.AbortUploadRequest(upload_id=to_abort.upload.id), timeout=CLIENT_DEADLINE_S
    )
    assert aborted.upload.state == UState.UPLOAD_STATE_ABORTED

    deleted = await client.metadata.GetFile(
        metadata_service_pb2.GetFileRequest(file_id=to_delete.id, include_deleted=True),
        timeout=CLIENT_DEADLINE_S,
    )
    assert deleted.status == FStatus.FILE_STATUS_DELETED
    await until_gone(storage, deleted_key)


# ------------------------------------------------------------------------------------ metadata


async def test_stopped_metadata_is_reported_as_unavailable_and_nothing_is_lost(
    own_stack: Stack, client: Client, ready_events: StatusEvents
) -> None:
    to_complete, _ = await stored_single(client, "completed while metadata is stopped")
    to_download = await ready_file(client, ready_events, "signed while metadata is stopped")
    created_body = body_of("created while metadata is stopped")
    create_single = create_request(created_body, request_id=str(uuid.uuid4()))

    with stopped(own_stack, "metadata"):
        creation, completion, signing, status, hurried = await asyncio.gather(
            outcome(client.upload.CreateUpload(create_single, timeout=CLIENT_DEADLINE_S)),
            outcome(complete(client, to_complete.upload.id)),
            outcome(
                client.download.GetDownloadUrl(
                    download_service_pb2.GetDownloadUrlRequest(file_id=to_download.id),
                    timeout=CLIENT_DEADLINE_S,
                )
            ),
            outcome(
                client.processor.GetProcessingStatus(
                    processor_service_pb2.GetProcessingStatusRequest(file_id=to_download.id),
                    timeout=CLIENT_DEADLINE_S,
                )
            ),
            # A short deadline is followed too: the signer gives up on metadata before its caller does.
            outcome(
                client.download.GetDownloadUrl(
                    download_service_pb2.GetDownloadUrlRequest(file_id=to_download.id),
                    timeout=SHORT_DEADLINE_S,
                )
            ),
        )

    unavailable = (Code.UNAVAILABLE, "METADATA_UNAVAILABLE")
    assert creation == unavailable
    assert completion == unavailable
    assert signing == unavailable
    assert status == unavailable
    assert hurried == unavailable

    await complete(client, to_complete.upload.id)
    await until_ready(ready_events, to_complete.file.id)
    created = await client.upload.CreateUpload(create_single, timeout=CLIENT_DEADLINE_S)
    await put(created.upload.request, created_body)
    await complete(client, created.upload.id)
    await until_ready(ready_events, created.file.id)
    signed = await client.download.GetDownloadUrl(
        download_service_pb2.GetDownloadUrlRequest(file_id=to_download.id), timeout=CLIENT_DEADLINE_S
    )
    assert signed.url


# ------------------------------------------------------------------------------------ NATS


async def test_stopped_nats_is_reported_as_unavailable_and_nothing_is_lost(
    own_stack: Stack, client: Client, ready_events: StatusEvents
) -> None:
    to_complete, _ = await stored_single(client, "completed while NATS is stopped")
    to_download = await ready_file(client, ready_events, "signed while NATS is stopped")

    with stopped(own_stack, "nats"):
        completion = await outcome(complete(client, to_complete.upload.id))
        hurried, signing = await asyncio.gather(
            outcome(complete(client, to_complete.upload.id, deadline_s=SHORT_DEADLINE_S)),
            outcome(
                client.download.GetDownloadUrl(
                    download_service_pb2.GetDownloadUrlRequest(file_id=to_download.id),
                    timeout=SHORT_DEADLINE_S,
                )
            ),
        )

    assert completion == (Code.UNAVAILABLE, "EVENT_PUBLISH_FAILED")
    assert hurried == (Code.UNAVAILABLE, "EVENT_PUBLISH_FAILED")
    assert signing == (Code.UNAVAILABLE, "AUDIT_UNAVAILABLE")

    await complete(client, to_complete.upload.id)
    await until_ready(ready_events, to_complete.file.id)
