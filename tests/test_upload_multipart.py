"""Multipart uploads against the real stack: the plan, part URLs signed again on demand, resuming
from storage's own part list, per-part SHA-256 enforced by storage, completion checks, abort."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any, ClassVar

import grpc
import httpx
import pytest
from botocore.exceptions import ClientError

from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from filestore.server.storage import ObjectStore
from filestore.stack import Stack
from filestore.upload import app as upload_app
from filestore.upload.reaper import Reaper
from filestore.upload.settings import UploadSettings
from filestore.v1 import (
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)
from tests.multipart import MIB, PART, chunk, complete, create_multipart, put_part
from tests.stacks import broker_env
from tests.storage import admin_storage, admin_store
from tests.support import (
    Client,
    ClientFactory,
    StatusEvents,
    free_port,
    rpc_error,
    service_token,
    stack_channel,
)

Kind = resources_pb2.UploadKind
UState = resources_pb2.UploadState
FStatus = resources_pb2.FileStatus
Algorithm = resources_pb2.ChecksumAlgorithm


async def get_upload(client: Client, upload_id: str) -> resources_pb2.Upload:
    upload: resources_pb2.Upload = await client.upload.GetUpload(
        upload_service_pb2.GetUploadRequest(upload_id=upload_id)
    )
    return upload


async def sign(
    client: Client,
    upload_id: str,
    numbers: list[int],
    sha256: dict[int, str] | None = None,
    crc32: dict[int, str] | None = None,
    *,
    session_token: str = "",
) -> list[resources_pb2.PartUrl]:
    signed = await client.upload.SignParts(
        upload_service_pb2.SignPartsRequest(
            upload_id=upload_id,
            part_numbers=numbers,
            part_sha256=sha256 or {},
            part_crc32=crc32 or {},
            session_token=session_token,
        )
    )
    return list(signed.part_urls)


def crc32_hex(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


async def test_multipart_upload_resumes_from_storage_and_completes(
    client_for: ClientFactory,
    status_events: StatusEvents,
) -> None:
    client = client_for()
    body = os.urandom(2 * PART + 17)
    created = await create_multipart(client, body)
    upload = created.upload
    assert (upload.kind, upload.state) == (Kind.UPLOAD_KIND_MULTIPART, UState.UPLOAD_STATE_OPEN)
    assert (upload.part_size, upload.part_count) == (PART, 3)
    assert [(p.part_number, p.size) for p in upload.part_urls] == [(1, PART), (2, PART), (3, 17)]
    assert f"originals/{client.tenant}/{created.file.id}" in upload.part_urls[0].request.url

    assert (await put_part(upload.part_urls[0], chunk(body, upload, 1))).status_code == 200

    # Another device resumes: storage, not the first client, says which parts are there.
    resumed = await get_upload(client_for(), upload.id)
    assert [(p.part_number, p.size) for p in resumed.uploaded_parts] == [(1, PART)]
    assert resumed.uploaded_parts[0].etag

    urls = await sign(client, upload.id, [3, 2])  # signed again on demand, in any order
    assert [p.part_number for p in urls] == [3, 2]
    assert (await put_part(urls[1], chunk(body, upload, 2))).status_code == 200
    assert (await put_part(urls[0], chunk(body, upload, 3))).status_code == 200

    done = await complete(client, upload.id)
    assert done.file.status == FStatus.FILE_STATUS_UPLOADED
    assert done.upload.state == UState.UPLOAD_STATE_COMPLETED
    again = await complete(client, upload.id)  # completing twice is harmless
    assert again.file.id == done.file.id
    assert again.upload.state == UState.UPLOAD_STATE_COMPLETED

    ready = await status_events.wait_for(created.file.id)
    assert ready.status == FStatus.FILE_STATUS_READY
    file = await client.metadata.GetFile(metadata_service_pb2.GetFileRequest(file_id=created.file.id))
    assert (file.sha256, file.size) == (hashlib.sha256(body).hexdigest(), len(body))


async def test_completion_checks_storage_parts_and_changes_nothing_when_they_do_not_add_up(
    client_for: ClientFactory, stack: Stack
) -> None:
    client = client_for()
    body = os.urandom(2 * PART + 5)
    created = await create_multipart(client, body)
    upload = created.upload
    assert (await put_part(upload.part_urls[0], chunk(body, upload, 1))).status_code == 200

    missing = await rpc_error(complete(client, upload.id))
    assert (type(missing), missing.reason) == (FailedPrecondition, "PARTS_MISSING")
    assert missing.metadata["missing_count"] == "2"

    # A part of the wrong size, sent with storage credentials (our URLs would not allow it).
    client_s3 = admin_storage(stack)
    record = await client.upload.GetUpload(upload_service_pb2.GetUploadRequest(upload_id=upload.id))
    storage_upload_id = _storage_upload_id(upload.part_urls[0].request.url)
    key = f"originals/{client.tenant}/{created.file.id}"
    for number, data in ((2, chunk(body, upload, 2)), (3, b"not the planned five bytes")):
        await asyncio.to_thread(
            client_s3.upload_part,
            Bucket=stack.endpoints.bucket,
            Key=key,
            UploadId=storage_upload_id,
            PartNumber=number,
            Body=data,
        )
    wrong = await rpc_error(complete(client, upload.id))
    assert (type(wrong), wrong.reason) == (FailedPrecondition, "SIZE_MISMATCH")
    assert wrong.metadata["part_number"] == "3"
    after = await get_upload(client, upload.id)
    assert after.state == UState.UPLOAD_STATE_OPEN == record.state
    assert [p.part_number for p in after.uploaded_parts] == [1, 2, 3]
    file = await client.metadata.GetFile(metadata_service_pb2.GetFileRequest(file_id=created.file.id))
    assert file.status == FStatus.FILE_STATUS_PENDING

    # Sending the right last part through its URL repairs it; then completion succeeds.
    (last,) = await sign(client, upload.id, [3])
    assert (await put_part(last, chunk(body, upload, 3))).status_code == 200
    assert (await complete(client, upload.id)).file.status == FStatus.FILE_STATUS_UPLOADED


def _storage_upload_id(url: str) -> str:
    query = httpx.URL(url).params
    return str(query["uploadId"])


NONE, CRC32, SHA256 = (
    Algorithm.CHECKSUM_ALGORITHM_UNSPECIFIED,
    Algorithm.CHECKSUM_ALGORITHM_CRC32,
    Algorithm.CHECKSUM_ALGORITHM_SHA256,
)


@pytest.mark.parametrize(
    ("algorithm", "numbers", "sha256", "crc32", "reason"),
    [
        (NONE, [0], {}, {}, "INVALID_PART_NUMBER"),
        (NONE, [3], {}, {}, "INVALID_PART_NUMBER"),
        (NONE, [-1], {}, {}, "INVALID_PART_NUMBER"),
        (NONE, [], {}, {}, "INVALID_PART_NUMBER"),
        (NONE, [1] * 1001, {}, {}, "TOO_MANY_PARTS"),
        (NONE, [1], {}, {1: "0" * 8}, "CHECKSUM_ALGORITHM_MISMATCH"),
        (SHA256, [1], {1: "abc"}, {}, "INVALID_SHA256"),
        (SHA256, [1], {1: ""}, {}, "INVALID_SHA256"),
        (SHA256, [1], {1: "0" * 64, 2: "0" * 64}, {}, "INVALID_PART_NUMBER"),
        (SHA256, [1], {}, {}, "PART_CHECKSUM_REQUIRED"),
        (CRC32, [1], {}, {1: "ABCDEF01"}, "INVALID_CRC32"),
        (CRC32, [1], {}, {1: "0" * 9}, "INVALID_CRC32"),
        (CRC32, [1, 2], {}, {1: "0" * 8}, "PART_CHECKSUM_REQUIRED"),
        (CRC32, [1], {1: "0" * 64}, {1: "0" * 8}, "CHECKSUM_ALGORITHM_MISMATCH"),
    ],
    ids=[
        "zero",
        "beyond-count",
        "negative",
        "none",
        "too-many",
        "checksum-on-an-upload-without",
        "bad-digest",
        "empty-digest",
        "digest-for-unasked-part",
        "sha256-missing",
        "upper-case-crc32",
        "long-crc32",
        "crc32-missing-for-one-part",
        "other-algorithm-too",
    ],
)
# The same checks whether the broker reads the upload from the catalogue or from its session token.
@pytest.mark.parametrize("with_token", [False, True], ids=["catalogue", "session-token"])
async def test_sign_parts_refuses_bad_part_numbers_and_checksums(
    client_for: ClientFactory,
    *,
    algorithm: resources_pb2.ChecksumAlgorithm.ValueType,
    numbers: list[int],
    sha256: dict[int, str],
    crc32: dict[int, str],
    reason: str,
    with_token: bool,
) -> None:
    client = client_for()
    created = await create_multipart(client, os.urandom(PART + 1), algorithm=algorithm)
    token = created.upload.session_token if with_token else ""
    assert created.upload.session_token
    refused = await rpc_error(sign(client, created.upload.id, numbers, sha256, crc32, session_token=token))
    assert (type(refused), refused.reason) == (InvalidArgument, reason)
    if reason in ("INVALID_SHA256", "INVALID_CRC32"):
        assert refused.metadata["part_number"] == "1"
    if reason == "PART_CHECKSUM_REQUIRED":
        assert refused.metadata["part_number"] == str(numbers[-1])


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [(CRC32, crc32_hex), (SHA256, lambda data: hashlib.sha256(data).hexdigest())],
    ids=["crc32", "sha256"],
)
async def test_parts_carry_the_checksum_the_upload_was_created_for(
    client_for: ClientFactory,
    stack: Stack,
    algorithm: resources_pb2.ChecksumAlgorithm.ValueType,
    digest: Callable[[bytes], str],
) -> None:
    client = client_for()
    body = os.urandom(PART + 9)
    created = await create_multipart(client, body, algorithm=algorithm)
    upload = created.upload
    # Every URL must carry its part's checksum, so none comes without one.
    assert (upload.part_checksum_algorithm, list(upload.part_urls)) == (algorithm, [])
    assert (await get_upload(client, upload.id)).part_checksum_algorithm == algorithm
    first, last = chunk(body, upload, 1), chunk(body, upload, 2)
    header = "x-amz-checksum-crc32" if algorithm == CRC32 else "x-amz-checksum-sha256"
    checksums = {1: digest(first), 2: digest(last)}
    if algorithm == CRC32:
        urls = await sign(client, upload.id, [1, 2], crc32=checksums)
    else:
        urls = await sign(client, upload.id, [1, 2], sha256=checksums)
    assert all(header in url.request.headers for url in urls)
    # Storage refuses a part whose content differs from the checksum signed into its URL.
    tampered = first[:-1] + bytes([first[-1] ^ 0x01])
    assert (await put_part(urls[0], tampered)).status_code in (400, 403)
    assert (await put_part(urls[0], first)).status_code == 200
    assert (await put_part(urls[1], last)).status_code == 200

    # Storage was told at creation, so it needs every part's checksum to assemble the object:
    # missing ones are refused before storage is asked, wrong ones by storage; neither changes anything.
    missing = await rpc_error(complete(client, upload.id, {1: checksums[1]}))
    assert (type(missing), missing.reason) == (InvalidArgument, "PART_CHECKSUM_REQUIRED")
    assert missing.metadata["first_part_number"] == "2"
    wrong = await rpc_error(complete(client, upload.id, {1: checksums[2], 2: checksums[2]}))
    assert (type(wrong), wrong.reason) == (FailedPrecondition, "CHECKSUM_MISMATCH")
    assert (await get_upload(client, upload.id)).state == UState.UPLOAD_STATE_OPEN
    done = await complete(client, upload.id, checksums)
    assert done.file.status == FStatus.FILE_STATUS_UPLOADED
    head = await asyncio.to_thread(
        admin_storage(stack).head_object,
        Bucket=stack.endpoints.bucket,
        Key=f"originals/{client.tenant}/{created.file.id}",
        ChecksumMode="ENABLED",
    )
    # A checksum of 2 parts; its key is built at run time, which boto3's types cannot check.
    assert head[f"Checksum{'CRC32' if algorithm == CRC32 else 'SHA256'}"].endswith("-2")  # type: ignore[literal-required]


async def test_an_unknown_checksum_algorithm_is_refused(client_for: ClientFactory) -> None:
    refused = await rpc_error(
        create_multipart(client_for(), os.urandom(PART + 1), algorithm=7)  # type: ignore[arg-type]
    )
    assert (type(refused), refused.reason) == (InvalidArgument, "INVALID_ENUM_VALUE")


async def test_sign_parts_of_a_single_upload_is_refused(client_for: ClientFactory) -> None:
    client = client_for()
    created = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(name="a.txt", size=3, content_type="text/plain")
    )
    refused = await rpc_error(sign(client, created.upload.id, [1]))
    assert (type(refused), refused.reason) == (FailedPrecondition, "NOT_MULTIPART")


async def test_abort_frees_storage_and_refuses_completion(client_for: ClientFactory, stack: Stack) -> None:
    client = client_for()
    body = os.urandom(PART + 9)
    created = await create_multipart(client, body)
    upload = created.upload
    assert (await put_part(upload.part_urls[0], chunk(body, upload, 1))).status_code == 200

    aborted = await client.upload.AbortUpload(upload_service_pb2.AbortUploadRequest(upload_id=upload.id))
    assert aborted.upload.state == UState.UPLOAD_STATE_ABORTED
    # Storage forgot the multipart upload and its parts: the old part URLs no longer work.
    client_s3 = admin_storage(stack)
    with pytest.raises(ClientError) as gone:
        await asyncio.to_thread(
            client_s3.list_parts,
            Bucket=stack.endpoints.bucket,
            Key=f"originals/{client.tenant}/{created.file.id}",
            UploadId=_storage_upload_id(upload.part_urls[0].request.url),
        )
    assert gone.value.response["Error"]["Code"] == "NoSuchUpload"
    assert (await put_part(upload.part_urls[1], chunk(body, upload, 2))).status_code >= 400

    again = await client.upload.AbortUpload(upload_service_pb2.AbortUploadRequest(upload_id=upload.id))
    assert again.upload.state == UState.UPLOAD_STATE_ABORTED  # aborting twice is a no-op
    refused = await rpc_error(complete(client, upload.id))
    assert (type(refused), refused.reason) == (FailedPrecondition, "UPLOAD_ABORTED")
    refused = await rpc_error(sign(client, upload.id, [1]))
    assert (type(refused), refused.reason) == (FailedPrecondition, "UPLOAD_NOT_OPEN")
    file = await client.metadata.GetFile(
        metadata_service_pb2.GetFileRequest(file_id=created.file.id, include_deleted=True)
    )
    assert file.status == FStatus.FILE_STATUS_DELETED


async def test_completed_upload_cannot_be_aborted(client_for: ClientFactory) -> None:
    client = client_for()
    body = os.urandom(1000)
    created = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name="a.bin", size=len(body), content_type="application/octet-stream"
        )
    )
    async with httpx.AsyncClient(timeout=30) as http:
        put = await http.put(
            created.upload.request.url, content=body, headers=dict(created.upload.request.headers)
        )
    assert put.status_code == 200
    await complete(client, created.upload.id)
    refused = await rpc_error(
        client.upload.AbortUpload(upload_service_pb2.AbortUploadRequest(upload_id=created.upload.id))
    )
    assert (type(refused), refused.reason) == (FailedPrecondition, "UPLOAD_COMPLETED")


async def test_a_retried_multipart_create_returns_the_same_storage_upload(
    client_for: ClientFactory, stack: Stack
) -> None:
    client = client_for("alice", f"retry-{uuid.uuid4().hex[:10]}")
    body = os.urandom(PART + 3)
    first = await create_multipart(client, body, request_id="0f8e3f52-2222-4e8e-9a0f-1d2c3b4a5e6f")
    again = await create_multipart(client, body, request_id="0f8e3f52-2222-4e8e-9a0f-1d2c3b4a5e6f")
    assert (again.upload.id, again.file.id) == (first.upload.id, first.file.id)
    recorded = _storage_upload_id(first.upload.part_urls[0].request.url)
    assert _storage_upload_id(again.upload.part_urls[0].request.url) == recorded
    # The retry created a storage upload of its own before BeginUpload answered the first attempt's
    # upload; it is aborted, so storage holds the recorded one only.
    assert await _open_uploads_of(stack, client.tenant) == {(_key(client, first), recorded)}


async def test_concurrent_creates_under_one_request_id_leave_one_storage_upload(
    client_for: ClientFactory, stack: Stack
) -> None:
    client = client_for("alice", f"twins-{uuid.uuid4().hex[:10]}")
    body = os.urandom(PART + 3)
    request_id = str(uuid.uuid4())
    twins = await asyncio.gather(*(create_multipart(client, body, request_id=request_id) for _ in range(6)))
    assert {(twin.upload.id, twin.file.id) for twin in twins} == {(twins[0].upload.id, twins[0].file.id)}
    recorded = {_storage_upload_id(twin.upload.part_urls[0].request.url) for twin in twins}
    assert len(recorded) == 1
    assert await _open_uploads_of(stack, client.tenant) == {(_key(client, twins[0]), recorded.pop())}


async def test_a_multipart_create_metadata_refuses_leaves_no_storage_upload(
    client_for: ClientFactory, stack: Stack
) -> None:
    tenant = f"refused-{uuid.uuid4().hex[:10]}"
    client = client_for("alice", tenant)
    token = service_token(stack)
    async with stack_channel(stack.endpoints, stack.endpoints.metadata_addr, token=lambda: token) as channel:
        metadata = metadata_service_pb2_grpc.MetadataServiceStub(channel)
        await metadata.SetQuota(metadata_service_pb2.SetQuotaRequest(tenant=tenant, limit_bytes=PART))
    # Over the quota: refused in BeginUpload, after the broker created the storage upload.
    over = await rpc_error(create_multipart(client, os.urandom(PART + 1)))
    assert (type(over), over.reason) == (ResourceExhausted, "QUOTA_EXCEEDED")
    # A request id reused for another request: refused too.
    request_id = str(uuid.uuid4())
    first = await create_multipart(client, os.urandom(100), request_id=request_id)
    reused = await rpc_error(create_multipart(client, os.urandom(200), request_id=request_id))
    assert (type(reused), reused.reason) == (AlreadyExists, "REQUEST_ID_REUSED")
    recorded = _storage_upload_id(first.upload.part_urls[0].request.url)
    assert await _open_uploads_of(stack, tenant) == {(_key(client, first), recorded)}


async def test_a_create_that_never_hears_from_metadata_leaves_its_storage_upload_to_the_sweep(
    stack: Stack, client_for: ClientFactory
) -> None:
    # Metadata unreachable: the broker cannot know whether BeginUpload committed (a lost answer looks
    # the same), so it leaves the storage upload it created, as a broker that died between the two
    # calls does. The reaper's sweep finds it: no upload record holds it.
    tenant = f"lost-{uuid.uuid4().hex[:10]}"
    async with _own_broker(stack, client_for, FILESTORE_METADATA_ADDR=f"127.0.0.1:{free_port()}") as make:
        lost = await rpc_error(create_multipart(make("alice", tenant), os.urandom(PART + 1)))
    assert (type(lost), lost.reason) == (Unavailable, "METADATA_UNAVAILABLE")
    [(key, left)] = await _open_uploads_of(stack, tenant)
    assert key.startswith(f"originals/{tenant}/")
    token = service_token(stack)
    async with stack_channel(stack.endpoints, stack.endpoints.metadata_addr, token=lambda: token) as channel:
        metadata = metadata_service_pb2_grpc.MetadataServiceStub(channel)
        swept = await Reaper(
            metadata=metadata, store=admin_store(stack), unattached_grace=timedelta(0)
        ).sweep_unattached()
    assert left in swept
    assert await _open_uploads_of(stack, tenant) == set()


@pytest.mark.parametrize(
    ("size", "part_size", "expected"),
    [
        (100 * MIB, 0, (16 * MIB, 7)),  # above the threshold: multipart, default part size
        (100 * MIB, 6 * MIB, (6 * MIB, 17)),  # the client's part size, honoured
    ],
    ids=["default-plan", "requested-part-size"],
)
async def test_large_uploads_get_a_plan_and_a_first_batch_of_urls(
    client_for: ClientFactory, size: int, part_size: int, expected: tuple[int, int]
) -> None:
    client = client_for()
    created = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name="big.bin", size=size, content_type="application/octet-stream", part_size=part_size
        )
    )
    upload = created.upload
    assert upload.kind == Kind.UPLOAD_KIND_MULTIPART
    assert (upload.part_size, upload.part_count) == expected
    assert [p.part_number for p in upload.part_urls] == list(range(1, min(16, expected[1]) + 1))
    assert upload.part_urls[-1].size in (expected[0], size - expected[0] * (expected[1] - 1))
    await client.upload.AbortUpload(upload_service_pb2.AbortUploadRequest(upload_id=upload.id))


@pytest.mark.parametrize(
    ("part_size", "reason"),
    [(5 * MIB - 1, "INVALID_PART_SIZE"), (5 * 1024**3 + 1, "INVALID_PART_SIZE")],
    ids=["below-5mib", "above-5gib"],
)
async def test_part_sizes_out_of_bounds_are_refused(
    client_for: ClientFactory, part_size: int, reason: str
) -> None:
    refused = await rpc_error(create_multipart(client_for(), os.urandom(16), part_size=part_size))
    assert (type(refused), refused.reason) == (InvalidArgument, reason)
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------ creates cost the same, always


class CountingObjectStore(ObjectStore):
    """The object store, recording every control request it makes (pages of a listing too)."""

    calls: ClassVar[list[str]] = []

    async def _request(self, operation: str, /, **params: Any) -> dict[str, Any]:
        self.calls.append(operation)
        return await super()._request(operation, **params)


@contextlib.asynccontextmanager
async def _own_broker(
    stack: Stack, client_for: ClientFactory, **env: str
) -> AsyncIterator[Callable[[str, str], Client]]:
    """A broker of its own, built as the service builds it with ``env`` over the stack's settings;
    ``make(subject, tenant)`` is a Client whose uploads go through it."""
    handle = await upload_app.build(UploadSettings.from_env(broker_env(stack, **env)))
    await handle.start()
    channels: list[grpc.aio.Channel] = []

    def make(subject: str, tenant: str) -> Client:
        token = mint_token(stack.endpoints.auth_secret, subject=subject, tenant=tenant)
        channel = insecure_channel(f"127.0.0.1:{handle.port}", token=lambda: token)
        channels.append(channel)
        return dataclasses.replace(
            client_for(subject, tenant), upload=upload_service_pb2_grpc.UploadServiceStub(channel)
        )

    try:
        yield make
    finally:
        for channel in channels:
            await channel.close()
        await handle.stop(0)


@pytest.fixture
async def counting_broker(
    stack: Stack, client_for: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[str, str], Client]]:
    """A broker of its own whose storage requests are counted (:func:`_own_broker`)."""
    monkeypatch.setattr(upload_app, "ObjectStore", CountingObjectStore)
    async with _own_broker(stack, client_for) as make:
        yield make


async def test_a_multipart_create_makes_one_storage_call_however_many_uploads_are_open(
    counting_broker: Callable[[str, str], Client], stack: Stack
) -> None:
    # Storage answers a listing of multipart uploads in time proportional to every upload open in
    # the bucket: a create that listed first got slower as uploads accumulated. It makes one call.
    client = counting_broker("alice", f"count-{uuid.uuid4().hex[:10]}")
    client_s3 = admin_storage(stack)
    bucket = stack.endpoints.bucket
    opened: list[tuple[str, str]] = []
    calls_per_create: list[list[str]] = []
    for open_beforehand in (0, 25):
        for index in range(open_beforehand):
            key = f"originals/{client.tenant}/elsewhere-{len(opened)}-{index}"
            started = await asyncio.to_thread(
                client_s3.create_multipart_upload,
                Bucket=bucket,
                Key=key,
            )
            opened.append((key, started["UploadId"]))
        CountingObjectStore.calls.clear()
        await create_multipart(client, os.urandom(PART + 1))
        calls_per_create.append(list(CountingObjectStore.calls))
    assert calls_per_create == [["create_multipart_upload"], ["create_multipart_upload"]]

    # A retried create finds the storage upload in the catalogue, never by listing storage: it
    # creates one (before BeginUpload answers that the upload exists) and aborts it.
    request_id = str(uuid.uuid4())
    body = os.urandom(PART + 1)
    first = await create_multipart(client, body, request_id=request_id)
    CountingObjectStore.calls.clear()
    again = await create_multipart(client, body, request_id=request_id)
    assert CountingObjectStore.calls == ["create_multipart_upload", "abort_multipart_upload"]
    assert _storage_upload_id(again.upload.part_urls[0].request.url) == _storage_upload_id(
        first.upload.part_urls[0].request.url
    )

    # Single PUTs and browser forms make no storage call at all.
    for kind in (Kind.UPLOAD_KIND_SINGLE, Kind.UPLOAD_KIND_POST_POLICY):
        CountingObjectStore.calls.clear()
        created = await client.upload.CreateUpload(
            upload_service_pb2.CreateUploadRequest(
                name="a.bin", size=1000, content_type="application/octet-stream", kind=kind
            )
        )
        assert (created.upload.kind, CountingObjectStore.calls) == (kind, [])
    for key, upload_id in opened:
        await asyncio.to_thread(
            client_s3.abort_multipart_upload,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
        )


async def test_a_storage_upload_a_dead_attempt_never_recorded_is_swept_and_no_other(
    client_for: ClientFactory, stack: Stack, status_events: StatusEvents
) -> None:
    # The broker creates the storage upload at the key of a file id it chose, then records both in
    # BeginUpload; an attempt that died in between (broker killed, metadata's answer lost) leaves one
    # under a key that no file has. No part URL was ever signed for it, so it holds nothing, and the
    # reaper's sweep aborts it. (An earlier release attached the storage upload to a recorded
    # upload in a second call, so its dead attempts left one under the key of a recorded file: the
    # same sweep finds those.)
    client = client_for("alice", f"sweep-{uuid.uuid4().hex[:10]}")
    client_s3 = admin_storage(stack)
    bucket = stack.endpoints.bucket
    body = os.urandom(PART + 5)
    created = await create_multipart(client, body)
    key = _key(client, created)
    attached = _storage_upload_id(created.upload.part_urls[0].request.url)
    dead_key = f"originals/{client.tenant}/{uuid.uuid4()}"
    dead = await asyncio.to_thread(client_s3.create_multipart_upload, Bucket=bucket, Key=dead_key)
    left = await asyncio.to_thread(
        client_s3.create_multipart_upload,
        Bucket=bucket,
        Key=key,
    )
    assert await _open_upload_ids(stack, key) == {attached, left["UploadId"]}

    token = service_token(stack)
    async with stack_channel(stack.endpoints, stack.endpoints.metadata_addr, token=lambda: token) as channel:
        metadata = metadata_service_pb2_grpc.MetadataServiceStub(channel)
        store = admin_store(stack)
        # Younger than the grace: a create may still be on its way to recording it.
        patient = Reaper(metadata=metadata, store=store)
        assert not {left["UploadId"], dead["UploadId"]} & set(await patient.sweep_unattached())
        assert await _open_upload_ids(stack, key) == {attached, left["UploadId"]}
        assert await _open_upload_ids(stack, dead_key) == {dead["UploadId"]}
        swept = await Reaper(metadata=metadata, store=store, unattached_grace=timedelta(0)).sweep_unattached()
    assert {left["UploadId"], dead["UploadId"]} <= set(swept)
    assert attached not in swept
    assert await _open_uploads_of(stack, client.tenant) == {(key, attached)}

    # The attached upload was never touched: it completes as usual.
    parts = created.upload.part_urls
    for part in parts:
        assert (await put_part(part, chunk(body, created.upload, part.part_number))).status_code == 200
    await complete(client, created.upload.id)
    assert (await status_events.wait_for(created.file.id)).status == FStatus.FILE_STATUS_READY
    assert await _open_upload_ids(stack, key) == set()


async def _open_upload_ids(stack: Stack, key: str) -> set[str]:
    listed = await asyncio.to_thread(
        admin_storage(stack).list_multipart_uploads,
        Bucket=stack.endpoints.bucket,
        Prefix=key,
    )
    return {upload["UploadId"] for upload in listed.get("Uploads", []) if upload["Key"] == key}


async def _open_uploads_of(stack: Stack, tenant: str) -> set[tuple[str, str]]:
    """(key, storage upload id) of every multipart upload storage holds open under the tenant's originals."""
    listed = await asyncio.to_thread(
        admin_storage(stack).list_multipart_uploads,
        Bucket=stack.endpoints.bucket,
        Prefix=f"originals/{tenant}/",
    )
    return {(upload["Key"], upload["UploadId"]) for upload in listed.get("Uploads", [])}


def _key(client: Client, created: upload_service_pb2.CreateUploadResponse) -> str:
    return f"originals/{client.tenant}/{created.file.id}"
