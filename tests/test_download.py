"""Download URLs against the real stack: safe dispositions, pinned types, batches, derivatives, TTL
bounds, and one audit event per URL handed out."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from nats.aio.msg import Msg
from PIL import Image

from filestore.stack import Stack
from filestore.v1 import (
    download_service_pb2,
    events_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    processor_service_pb2,
    resources_pb2,
)
from tests.storage import admin_storage
from tests.support import (
    ClientFactory,
    StatusEvents,
    complete_upload,
    connect_nats,
    create_upload,
    put_presigned,
    rpc_error,
    service_token,
    stack_channel,
    upload_until_processed,
)

INLINE = download_service_pb2.DISPOSITION_INLINE


class Audit:
    def __init__(self) -> None:
        self.events: asyncio.Queue[events_pb2.FileDownloaded] = asyncio.Queue()

    async def on_message(self, message: Msg) -> None:
        await self.events.put(events_pb2.FileDownloaded.FromString(message.data))

    async def next_for(self, file_id: str) -> events_pb2.FileDownloaded:
        while True:
            event = await asyncio.wait_for(self.events.get(), 30)
            if event.file_id == file_id:
                return event


@pytest.fixture
async def audit(stack: Stack) -> AsyncIterator[Audit]:
    collector = Audit()
    connection = await connect_nats(stack.endpoints)
    await connection.subscribe("files.file.downloaded", cb=collector.on_message)
    await connection.flush()
    yield collector
    await connection.close()


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.get(url)


async def test_html_is_never_inline_and_safe_types_may_be(
    client_for: ClientFactory, status_events: StatusEvents, audit: Audit
) -> None:
    client = client_for()
    page = await upload_until_processed(
        client,
        status_events,
        b"<html><script>alert(1)</script></html>",
        name="x.html",
        content_type="text/html",
    )
    url = await client.download.GetDownloadUrl(
        download_service_pb2.GetDownloadUrlRequest(file_id=page.id, disposition=INLINE)
    )
    assert url.content_disposition.startswith("attachment;")
    got = await _get(url.url)
    assert got.headers["content-disposition"].startswith("attachment;")
    event = await audit.next_for(page.id)
    assert (event.principal, event.tenant, event.derivative_kind) == ("alice", "acme", "")

    text = await upload_until_processed(
        client, status_events, b"plain words", name="n.txt", content_type="text/plain"
    )
    url = await client.download.GetDownloadUrl(
        download_service_pb2.GetDownloadUrlRequest(file_id=text.id, disposition=INLINE)
    )
    assert url.content_disposition.startswith("inline;")
    got = await _get(url.url)
    assert got.headers["content-disposition"].startswith("inline;")
    assert got.headers["content-type"] == "text/plain"
    assert got.content == b"plain words"


async def test_ttl_is_clamped_to_the_configured_bounds(
    client_for: ClientFactory, status_events: StatusEvents
) -> None:
    client = client_for()
    file = await upload_until_processed(client, status_events, os.urandom(64))
    for asked, bound in ((10**6, 3600), (1, 30)):
        before = datetime.now(UTC)
        url = await client.download.GetDownloadUrl(
            download_service_pb2.GetDownloadUrlRequest(file_id=file.id, ttl_seconds=asked)
        )
        lifetime = url.expire_time.ToDatetime(tzinfo=UTC) - before
        assert timedelta(seconds=bound - 5) <= lifetime <= timedelta(seconds=bound + 5)
        assert f"X-Amz-Expires={bound}" in url.url
    negative = await rpc_error(
        client.download.GetDownloadUrl(
            download_service_pb2.GetDownloadUrlRequest(file_id=file.id, ttl_seconds=-1)
        )
    )
    assert negative.reason == "INVALID_TTL"


async def test_batch_answers_each_file_on_its_own(
    client_for: ClientFactory, status_events: StatusEvents
) -> None:
    alice = client_for()
    ready = await upload_until_processed(alice, status_events, os.urandom(128))
    pending = await create_upload(alice, os.urandom(128))
    theirs = await create_upload(client_for("mallory", "evil"), os.urandom(128))
    answer = await alice.download.BatchGetDownloadUrls(
        download_service_pb2.BatchGetDownloadUrlsRequest(
            requests=[
                download_service_pb2.GetDownloadUrlRequest(file_id=file_id)
                for file_id in (ready.id, pending.file.id, theirs.file.id, "no-such-file")
            ]
        )
    )
    outcomes = [(r.file_id, r.error_reason, bool(r.download_url.url)) for r in answer.results]
    assert outcomes == [
        (ready.id, "", True),
        (pending.file.id, "FILE_PENDING", False),
        (theirs.file.id, "FILE_NOT_FOUND", False),
        ("no-such-file", "FILE_NOT_FOUND", False),
    ]
    too_many = await rpc_error(
        alice.download.BatchGetDownloadUrls(
            download_service_pb2.BatchGetDownloadUrlsRequest(
                requests=[download_service_pb2.GetDownloadUrlRequest(file_id=ready.id)] * 101
            )
        )
    )
    assert too_many.reason == "TOO_MANY_FILES"


async def test_derivative_urls(
    stack: Stack, client_for: ClientFactory, status_events: StatusEvents, audit: Audit
) -> None:
    client = client_for()
    file = await upload_until_processed(client, status_events, os.urandom(256))
    endpoints = stack.endpoints
    token = service_token(stack)
    async with stack_channel(endpoints, endpoints.metadata_addr, token=lambda: token) as channel:
        registered = await metadata_service_pb2_grpc.MetadataServiceStub(channel).CreateDerivative(
            metadata_service_pb2.CreateDerivativeRequest(
                tenant="acme",
                derivative=resources_pb2.Derivative(
                    file_id=file.id, kind="thumbnail_test", size=4, content_type="image/webp"
                ),
            )
        )
    storage = admin_storage(stack)
    storage.put_object(
        Bucket=endpoints.bucket, Key=registered.storage_key, Body=b"RIFF", ContentType="image/webp"
    )
    url = await client.download.GetDerivativeUrl(
        download_service_pb2.GetDerivativeUrlRequest(file_id=file.id, kind="thumbnail_test")
    )
    got = await _get(url.url)
    assert (got.status_code, got.content, got.headers["content-type"]) == (200, b"RIFF", "image/webp")
    assert url.content_disposition.startswith("inline;")
    assert (await audit.next_for(file.id)).derivative_kind in ("", "thumbnail_test")
    missing = await rpc_error(
        client.download.GetDerivativeUrl(
            download_service_pb2.GetDerivativeUrlRequest(file_id=file.id, kind="nope")
        )
    )
    assert missing.reason == "DERIVATIVE_NOT_FOUND"
    stranger = client_for("mallory", "evil")
    hidden = await rpc_error(
        stranger.download.GetDerivativeUrl(
            download_service_pb2.GetDerivativeUrlRequest(file_id=file.id, kind="thumbnail_test")
        )
    )
    assert hidden.reason == "FILE_NOT_FOUND"


async def test_an_upload_url_cannot_replace_bytes_once_they_are_stored(
    client_for: ClientFactory, status_events: StatusEvents
) -> None:
    # Without a declared SHA-256 nothing else in the URL pins the body: the signed If-None-Match is
    # what keeps a still-valid URL from swapping the verified bytes behind a download URL.
    client = client_for()
    body = b"the bytes that were scanned"
    created = await create_upload(client, body, name="a.txt", content_type="text/plain", declare_sha256=False)
    assert (await put_presigned(created.upload.request, body)).status_code == 200
    # A client retrying a PUT that had in fact succeeded is told so, and completes as usual.
    assert (await put_presigned(created.upload.request, body)).status_code == 412
    await complete_upload(client, created.upload.id)
    assert (await status_events.wait_for(created.file.id)).status == resources_pb2.FILE_STATUS_READY
    swapped = await put_presigned(created.upload.request, b"other bytes, same length!!!")
    assert swapped.status_code == 412
    # The header cannot be dropped either: it is part of the signature.
    headers = {k: v for k, v in created.upload.request.headers.items() if k.lower() != "if-none-match"}
    async with httpx.AsyncClient(timeout=30) as http:
        unsigned = await http.put(created.upload.request.url, content=body, headers=headers)
    assert unsigned.status_code == 403
    url = await client.download.GetDownloadUrl(
        download_service_pb2.GetDownloadUrlRequest(file_id=created.file.id)
    )
    assert (await _get(url.url)).content == body


async def test_a_ready_image_gets_its_thumbnail_from_the_enrichment_queue(
    client_for: ClientFactory, status_events: StatusEvents
) -> None:
    # In the default pipeline thumbnails and OCR do not gate READY: the file is READY first, and its
    # optional steps run afterwards from files.file.enrich, on slots of their own.
    client = client_for()
    picture = io.BytesIO()
    Image.new("RGB", (640, 400), (30, 120, 200)).save(picture, format="PNG")
    file = await upload_until_processed(
        client, status_events, picture.getvalue(), name="sky.png", content_type="image/png"
    )
    assert file.status == resources_pb2.FILE_STATUS_READY
    deadline = asyncio.get_running_loop().time() + 60
    steps: dict[str, int] = {}
    while "thumbnail" not in steps and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)  # no event marks the end of the optional steps: poll, bounded
        status = await client.processor.GetProcessingStatus(
            processor_service_pb2.GetProcessingStatusRequest(file_id=file.id)
        )
        steps = {result.step: result.outcome for result in status.results}
    assert steps.get("thumbnail") == resources_pb2.STEP_OUTCOME_PASSED
    url = await client.download.GetDerivativeUrl(
        download_service_pb2.GetDerivativeUrlRequest(file_id=file.id, kind="thumbnail_256")
    )
    got = await _get(url.url)
    assert (got.status_code, got.content[:4], got.content[8:12]) == (200, b"RIFF", b"WEBP")
