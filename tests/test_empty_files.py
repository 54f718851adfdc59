"""An empty file is a legal file (placeholders, `.keep`, empty logs): it is accepted by every upload kind
that can carry it, verified, sniffed and scanned to READY, and downloads as 0 bytes, through the raw API,
the Python SDK, the `filestore` command and the Node client; its owner's second one is deduplicated.
MULTIPART alone refuses 0 bytes: storage completes a multipart upload only from at least one part."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import grpc
import httpx
import pytest

from filestore.client import AsyncClient
from filestore.core.auth import mint_token
from filestore.stack import Stack
from filestore.v1 import (
    download_service_pb2,
    processor_service_pb2,
    resources_pb2,
    upload_service_pb2,
)
from tests.cli import as_json, run, user_shell
from tests.node import e2e_result
from tests.support import (
    Client,
    ClientFactory,
    StatusEvents,
    endpoints_for,
    get_file,
    post_form,
    put_presigned,
    rpc_error,
)

Kind = resources_pb2.UploadKind
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: What libmagic answers for no bytes at all.
EMPTY_TYPE = "application/x-empty"
READY = resources_pb2.FILE_STATUS_READY


def _own_tenant(client_for: ClientFactory, subject: str = "alice") -> Client:
    """A tenant of the test's own: no other test's empty file is a dedup target here."""
    return client_for(subject, f"empty-{uuid.uuid4().hex[:8]}")


async def _download(client: Client, file_id: str) -> httpx.Response:
    signed = await client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=file_id))
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.get(signed.url)


async def _assert_ready_and_empty(client: Client, file_id: str) -> None:
    file = await get_file(client, file_id)
    assert (file.status, file.size, file.sha256) == (READY, 0, EMPTY_SHA256)
    assert file.sniffed_content_type == EMPTY_TYPE
    processing = await client.processor.GetProcessingStatus(
        processor_service_pb2.GetProcessingStatusRequest(file_id=file_id)
    )
    # The required steps passed; nothing to render, so no thumbnail or OCR was even tried.
    assert {r.step: r.outcome for r in processing.results} == {
        step: resources_pb2.STEP_OUTCOME_PASSED for step in ("integrity", "sniff", "scan")
    }
    got = await _download(client, file_id)
    assert (got.status_code, got.content, got.headers["content-length"]) == (200, b"", "0")


@pytest.mark.parametrize(
    ("kind", "content_type", "declare_sha256"),
    [
        (Kind.UPLOAD_KIND_SINGLE, "text/plain", True),
        # Declared as an image: the sniffed empty type agrees with anything and chooses no renderer.
        (Kind.UPLOAD_KIND_POST_POLICY, "image/png", True),
        (Kind.UPLOAD_KIND_UNSPECIFIED, "application/pdf", False),
    ],
    ids=["single", "post-policy", "unspecified"],
)
async def test_an_empty_file_is_uploaded_processed_to_ready_and_downloads_as_nothing(
    client_for: ClientFactory,
    status_events: StatusEvents,
    kind: resources_pb2.UploadKind.ValueType,
    content_type: str,
    declare_sha256: bool,
) -> None:
    client = _own_tenant(client_for)
    created = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name=".keep",
            size=0,
            content_type=content_type,
            sha256=EMPTY_SHA256 if declare_sha256 else "",
            kind=kind,
        )
    )
    # An unspecified kind chooses one request for 0 bytes, as for any small file.
    assert created.upload.kind == (Kind.UPLOAD_KIND_SINGLE if kind == Kind.UPLOAD_KIND_UNSPECIFIED else kind)
    if created.upload.kind == Kind.UPLOAD_KIND_POST_POLICY:
        sent = await post_form(created.upload.request, b"")
        assert sent.status_code in (200, 201, 204), sent.text
    else:
        sent = await put_presigned(created.upload.request, b"")
        assert sent.status_code == 200, sent.text
    completed = await client.upload.CompleteUpload(
        upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id)
    )
    assert (completed.file.status, completed.file.size) == (resources_pb2.FILE_STATUS_UPLOADED, 0)
    announced = await status_events.wait_for(created.file.id)
    assert announced.status == READY, announced.reason
    await _assert_ready_and_empty(client, created.file.id)


async def test_a_multipart_upload_cannot_be_empty(client_for: ClientFactory) -> None:
    """Asked for by kind or by part size, parts cannot carry 0 bytes (nor can BeginUpload's, in
    tests/test_metadata_bad_input.py)."""
    client = _own_tenant(client_for)
    for request in (
        upload_service_pb2.CreateUploadRequest(
            name="e.bin", size=0, content_type="application/octet-stream", kind=Kind.UPLOAD_KIND_MULTIPART
        ),
        # Asking for a part size asks for parts.
        upload_service_pb2.CreateUploadRequest(
            name="e.bin", size=0, content_type="application/octet-stream", part_size=5 * 1024**2
        ),
    ):
        refused = await rpc_error(client.upload.CreateUpload(request))
        assert (refused.code, refused.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SIZE")
        assert "MULTIPART" in str(refused)


async def test_the_owners_second_empty_file_is_deduplicated(
    client_for: ClientFactory, status_events: StatusEvents
) -> None:
    client = _own_tenant(client_for)
    request = upload_service_pb2.CreateUploadRequest(
        name="first.log", size=0, content_type="text/plain", sha256=EMPTY_SHA256
    )
    first = await client.upload.CreateUpload(request)
    assert (await put_presigned(first.upload.request, b"")).status_code == 200
    await client.upload.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=first.upload.id))
    assert (await status_events.wait_for(first.file.id)).status == READY

    request.name = "second.log"
    second = await client.upload.CreateUpload(request)
    assert second.upload.kind == Kind.UPLOAD_KIND_DEDUP
    assert second.file.id != first.file.id
    assert (await status_events.wait_for(second.file.id)).status == READY
    await _assert_ready_and_empty(client, second.file.id)


async def test_the_sdk_uploads_and_downloads_an_empty_file(stack: Stack, tmp_path: Path) -> None:
    source = tmp_path / "empty.log"
    source.touch()
    async with AsyncClient(endpoints_for(stack), state_dir=tmp_path / "state") as client:
        # From memory, then from a path: the second is the same (empty) content of the same owner.
        for body, kind in ((b"", "single"), (source, "dedup")):
            uploaded = await client.upload(body, name="empty.log")
            assert (uploaded.kind, uploaded.bytes_sent) == (kind, 0)
            ready = await client.wait_until_processed(uploaded.file.id)
            assert (ready.status, ready.size, ready.sha256) == (READY, 0, EMPTY_SHA256)
            target = tmp_path / f"copy-{uploaded.file.id}.log"
            downloaded = await client.download(uploaded.file.id, target)
            assert downloaded.path == target
            assert target.read_bytes() == b""


def test_the_cli_uploads_and_downloads_an_empty_file(stack: Stack, tmp_path: Path) -> None:
    env = user_shell(stack, tmp_path, tenant=f"empty-{uuid.uuid4().hex[:8]}")
    source = tmp_path / ".keep"
    source.touch()
    uploaded = run("upload", source, "--wait", "--json", env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    file = as_json(uploaded)["file"]
    assert (file["status"], file["size"], file["sha256"]) == ("FILE_STATUS_READY", "0", EMPTY_SHA256)
    target = tmp_path / "copy"
    fetched = run("download", file["id"], target, "--json", env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert target.read_bytes() == b""


async def test_the_node_client_uploads_and_downloads_an_empty_file(
    stack: Stack, client_for: ClientFactory, tmp_path: Path
) -> None:
    client = _own_tenant(client_for, "nora")
    source, target = tmp_path / "empty.txt", tmp_path / "out.txt"
    source.touch()
    target.write_bytes(b"not yet downloaded")
    token = mint_token(stack.endpoints.auth_secret, subject=client.subject, tenant=client.tenant)
    result = await e2e_result(
        stack, token, "--in", str(source), "--out", str(target), "--content-type", "text/plain"
    )
    assert (result["status"], result["size"], result["sha256"]) == ("FILE_STATUS_READY", "0", EMPTY_SHA256)
    assert result["downloaded_bytes"] == 0
    assert target.read_bytes() == b""
    await _assert_ready_and_empty(client, result["file_id"])
