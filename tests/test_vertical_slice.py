"""One upload end to end against the real stack (SeaweedFS, NATS JetStream, the four services), on
SQLite and on PostgreSQL: create, PUT with plain HTTP and no credentials, complete, the processor
verifies the stored bytes, READY, download URL, plain GET returns exactly the bytes."""

from __future__ import annotations

import hashlib
import os

import grpc
import httpx
import pytest

from filestore.core.errors import FailedPrecondition, InvalidArgument, NotFound
from filestore.stack import Stack
from filestore.v1 import (
    download_service_pb2,
    processor_service_pb2,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)
from tests.support import ClientFactory, StatusEvents, bare_channel, rpc_error
from tests.support import complete_upload as _complete
from tests.support import create_upload as _create
from tests.support import get_file as _file
from tests.support import put_presigned as _put

Status = resources_pb2.FileStatus


@pytest.mark.parametrize("declare_sha256", [True, False], ids=["sha256-declared", "no-sha256"])
async def test_upload_process_download_round_trip(
    client_for: ClientFactory, status_events: StatusEvents, declare_sha256: bool
) -> None:
    client = client_for()
    # A PDF header, so the type sniffed from the bytes agrees with the declared one.
    body = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + os.urandom(256 * 1024 + 17)
    created = await _create(client, body, name="Q3 résumé.pdf", declare_sha256=declare_sha256)
    assert created.file.status == Status.FILE_STATUS_PENDING
    assert created.upload.kind == resources_pb2.UPLOAD_KIND_SINGLE
    request = created.upload.request
    assert request.method == "PUT"
    # Keys come from ids, never from the client's name.
    assert "r%C3%A9sum%C3%A9" not in request.url
    assert "Q3" not in request.url
    assert f"originals/{client.tenant}/{created.file.id}" in request.url

    # The client holds no credentials: the presigned URL is all it has.
    put = await _put(request, body)
    assert put.status_code == 200, put.text

    completed = await _complete(client, created.upload.id)
    assert completed.file.status == Status.FILE_STATUS_UPLOADED
    assert completed.upload.state == resources_pb2.UPLOAD_STATE_COMPLETED

    event = await status_events.wait_for(created.file.id)
    assert event.status == Status.FILE_STATUS_READY
    file = await _file(client, created.file.id)
    assert file.status == Status.FILE_STATUS_READY
    assert file.sha256 == hashlib.sha256(body).hexdigest()

    status = await client.processor.GetProcessingStatus(
        processor_service_pb2.GetProcessingStatusRequest(file_id=created.file.id)
    )
    integrity = {result.step: result for result in status.results}["integrity"]
    assert integrity.outcome == resources_pb2.STEP_OUTCOME_PASSED
    assert integrity.details["sha256"] == hashlib.sha256(body).hexdigest()

    url = await client.download.GetDownloadUrl(
        download_service_pb2.GetDownloadUrlRequest(file_id=created.file.id)
    )
    async with httpx.AsyncClient(timeout=30) as http:
        got = await http.get(url.url)
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["content-type"] == "application/pdf"
    assert "filename*=UTF-8''Q3%20r%C3%A9sum%C3%A9.pdf" in got.headers["content-disposition"]
    assert got.headers["content-disposition"].startswith("attachment;")


@pytest.mark.parametrize(
    ("overrides", "body_change"),
    [
        ({}, b"one byte more"),
        ({"Content-Type": "text/html"}, b""),
    ],
    ids=["different-size", "different-content-type"],
)
async def test_storage_refuses_a_put_that_differs_from_what_was_signed(
    client_for: ClientFactory, overrides: dict[str, str], body_change: bytes
) -> None:
    client = client_for()
    body = os.urandom(4096)
    created = await _create(client, body, declare_sha256=False)
    refused = await _put(created.upload.request, body + body_change, **overrides)
    assert refused.status_code == 403
    # Nothing arrived, so the upload cannot complete and the file never becomes READY.
    error = await rpc_error(_complete(client, created.upload.id))
    assert isinstance(error, FailedPrecondition)
    assert error.reason == "OBJECT_MISSING"
    assert (await _file(client, created.file.id)).status == Status.FILE_STATUS_PENDING
    refused_download = await rpc_error(
        client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=created.file.id))
    )
    assert isinstance(refused_download, FailedPrecondition)
    assert refused_download.reason == "FILE_PENDING"


async def test_storage_refuses_a_body_with_another_digest(client_for: ClientFactory) -> None:
    client = client_for()
    body = os.urandom(4096)
    created = await _create(client, body)
    tampered = bytes([body[0] ^ 0xFF]) + body[1:]
    assert (await _put(created.upload.request, tampered)).status_code in (400, 403)
    assert isinstance(await rpc_error(_complete(client, created.upload.id)), FailedPrecondition)


async def test_completing_twice_is_harmless(client_for: ClientFactory, status_events: StatusEvents) -> None:
    client = client_for()
    body = os.urandom(2048)
    created = await _create(client, body)
    assert (await _put(created.upload.request, body)).status_code == 200
    first = await _complete(client, created.upload.id)
    second = await _complete(client, created.upload.id)
    assert first.file.id == second.file.id
    assert (await status_events.wait_for(created.file.id)).status == Status.FILE_STATUS_READY


async def test_other_tenants_and_other_users_see_nothing(client_for: ClientFactory) -> None:
    owner = client_for("alice", "acme")
    body = os.urandom(1024)
    created = await _create(owner, body)
    for stranger in (client_for("mallory", "evil"), client_for("bob", "acme")):
        hidden = await rpc_error(_file(stranger, created.file.id))
        assert isinstance(hidden, NotFound)
        assert hidden.reason == "FILE_NOT_FOUND"
        hidden = await rpc_error(
            stranger.upload.GetUpload(upload_service_pb2.GetUploadRequest(upload_id=created.upload.id))
        )
        assert (type(hidden), hidden.reason) == (NotFound, "UPLOAD_NOT_FOUND")
        hidden = await rpc_error(
            stranger.download.GetDownloadUrl(
                download_service_pb2.GetDownloadUrlRequest(file_id=created.file.id)
            )
        )
        assert (type(hidden), hidden.reason) == (NotFound, "FILE_NOT_FOUND")


async def test_a_retried_create_with_the_same_request_id_returns_the_same_upload(
    client_for: ClientFactory,
) -> None:
    client = client_for()
    request = upload_service_pb2.CreateUploadRequest(
        name="a.bin",
        size=10,
        content_type="application/octet-stream",
        request_id="6f1c9a52-1111-4e8e-9a0f-1d2c3b4a5e6f",
    )
    first = await client.upload.CreateUpload(request)
    again = await client.upload.CreateUpload(request)
    assert (again.upload.id, again.file.id) == (first.upload.id, first.file.id)
    request.size = 11
    reused = await rpc_error(client.upload.CreateUpload(request))
    assert (reused.code, reused.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"name": ""}, "INVALID_NAME"),
        ({"name": "../../etc/passwd\x00"}, "INVALID_STRING"),
        ({"name": "invoice\u202efdp.exe"}, "INVALID_NAME"),
        ({"name": "x" * 10_000}, "INVALID_NAME"),
        ({"size": -1}, "INVALID_SIZE"),
        ({"size": 0, "kind": resources_pb2.UPLOAD_KIND_MULTIPART}, "INVALID_SIZE"),
        ({"content_type": "not a type"}, "INVALID_CONTENT_TYPE"),
        ({"sha256": "abc"}, "INVALID_SHA256"),
    ],
    ids=[
        "empty-name",
        "nul-in-name",
        "rtl-override",
        "10k-name",
        "negative-size",
        "empty-multipart",
        "bogus-type",
        "short-sha256",
    ],
)
async def test_bad_input_is_refused_with_a_reason(
    client_for: ClientFactory, change: dict[str, object], reason: str
) -> None:
    client = client_for()
    fields: dict[str, object] = {"name": "ok.txt", "size": 5, "content_type": "text/plain", **change}
    refused = await rpc_error(
        client.upload.CreateUpload(upload_service_pb2.CreateUploadRequest(**fields))  # type: ignore[arg-type]
    )
    assert isinstance(refused, InvalidArgument)
    assert (refused.reason, refused.domain) == (reason, "upload.filestore.v1")


async def test_calls_without_a_valid_token_are_refused(stack: Stack) -> None:
    async with bare_channel(stack.endpoints, stack.endpoints.upload_addr) as channel:
        stub = upload_service_pb2_grpc.UploadServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetUpload(upload_service_pb2.GetUploadRequest(upload_id="x"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
