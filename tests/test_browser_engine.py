"""The browser client's upload engine in Chromium against real SeaweedFS and the real broker.

The page's engine talks to an UploadApi whose calls cross to this process (Playwright's exposed
function) and go to the broker over gRPC: a fake at the API boundary only, so these tests need no
browser face. Every byte goes from the page to storage through the presigned URLs, as in production."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from playwright.async_api import Page, Request

from filestore.v1 import download_service_pb2, resources_pb2, upload_service_pb2
from tests.browser import PageSite
from tests.support import Client, StatusEvents, get_file

pytestmark = pytest.mark.local_stack  # the stack's CORS must allow the test pages' origin

MIB = 1024 * 1024
PART_SIZE = 5 * MIB
#: Five parts: four of 5 MiB and a last one of 3 MiB.
SIZE = 23 * MIB

_REQUESTS: dict[str, type[Message]] = {
    "CreateUpload": upload_service_pb2.CreateUploadRequest,
    "GetUpload": upload_service_pb2.GetUploadRequest,
    "SignParts": upload_service_pb2.SignPartsRequest,
    "CompleteUpload": upload_service_pb2.CompleteUploadRequest,
    "AbortUpload": upload_service_pb2.AbortUploadRequest,
}


async def bridge_to_broker(page: Page, client: Client) -> None:
    """``window.filestoreCall(method, requestJson)``: the UploadService call made with ``client``'s
    token over gRPC, answered as protobuf JSON (or the error's code and message)."""

    async def call(method: str, request: dict[str, Any]) -> dict[str, Any]:
        rpc: Callable[[Message], Awaitable[Message]] = getattr(client.upload, method)
        try:
            response = await rpc(json_format.ParseDict(request, _REQUESTS[method]()))
        except grpc.aio.AioRpcError as error:
            return {"error": {"code": error.code().value[0], "message": error.details() or ""}}
        return {"response": json_format.MessageToDict(response)}

    await page.expose_function("filestoreCall", call)


def file_body(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def part_puts(page: Page) -> list[int]:
    """The part numbers of the PUTs the page sends from now on (preflights are OPTIONS, not counted)."""
    numbers: list[int] = []

    def seen(request: Request) -> None:
        if request.method == "PUT":
            query = httpx.URL(request.url).params
            numbers.append(int(query.get("partNumber", "0")))

    page.on("request", seen)
    return numbers


async def stored_object_sha256(client: Client, file_id: str) -> str:
    url = await client.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=file_id))
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.get(url.url)
    assert response.status_code == 200
    return hashlib.sha256(response.content).hexdigest()


async def test_multipart_upload_from_the_page_stores_the_exact_bytes(
    web_page: Page, page_site: PageSite, alice: Client, status_events: StatusEvents
) -> None:
    body = file_body(SIZE, seed=1)
    (page_site.root / "multipart.bin").write_bytes(body)
    await bridge_to_broker(web_page, alice)
    puts = part_puts(web_page)

    await web_page.evaluate(
        "([size]) => harness.start('/multipart.bin', 'multipart.bin', 1700000000000,"
        " { multipartThreshold: 0, partSize: size, resumeStore: 'memory' })",
        [PART_SIZE],
    )
    result = await web_page.evaluate("harness.finish()")

    assert result["kind"] == "multipart"
    assert (result["partsSent"], result["partsResumed"], result["bytesSent"]) == (5, 0, SIZE)
    assert sorted(puts) == [1, 2, 3, 4, 5]
    await status_events.wait_for_status(result["fileId"], resources_pb2.FILE_STATUS_READY)
    file = await get_file(alice, result["fileId"])
    assert (file.size, file.sha256) == (SIZE, hashlib.sha256(body).hexdigest())
    assert await stored_object_sha256(alice, file.id) == hashlib.sha256(body).hexdigest()


async def test_a_reload_mid_upload_resumes_with_only_the_missing_parts(
    web_page: Page, page_site: PageSite, alice: Client, status_events: StatusEvents
) -> None:
    body = file_body(SIZE, seed=2)
    (page_site.root / "resumed.bin").write_bytes(body)
    await bridge_to_broker(web_page, alice)
    start = (
        "([size]) => harness.start('/resumed.bin', 'resumed.bin', 1700000000001,"
        " { multipartThreshold: 0, partSize: size, concurrency: 1, signBatch: 2 })"
    )
    await web_page.evaluate(start, [PART_SIZE])
    await web_page.wait_for_function("harness.partsSent >= 2")
    await web_page.reload()  # the page's state is gone but for localStorage
    await web_page.wait_for_function("document.getElementById('state').textContent === 'ready'")
    record = await web_page.evaluate(
        "Object.entries(localStorage).filter(([key]) => key.startsWith('filestore-upload:'))"
        ".map(([, value]) => JSON.parse(value))"
    )
    assert len(record) == 1
    upload = await alice.upload.GetUpload(
        upload_service_pb2.GetUploadRequest(upload_id=record[0]["uploadId"])
    )
    stored = {part.part_number for part in upload.uploaded_parts}
    assert len(stored) >= 2  # the parts the first page saw complete (and possibly the one cut by the reload)

    puts = part_puts(web_page)
    await web_page.evaluate(start, [PART_SIZE])
    result = await web_page.evaluate("harness.finish()")

    assert result["uploadId"] == upload.id
    assert "resumed" in result["events"]
    assert sorted(puts) == sorted(set(range(1, 6)) - stored)
    assert (result["partsSent"], result["partsResumed"]) == (5 - len(stored), len(stored))
    assert await web_page.evaluate("localStorage.length") == 0  # a completed upload is forgotten
    await status_events.wait_for_status(result["fileId"], resources_pb2.FILE_STATUS_READY)
    file = await get_file(alice, result["fileId"])
    assert file.sha256 == hashlib.sha256(body).hexdigest()
    assert await stored_object_sha256(alice, file.id) == hashlib.sha256(body).hexdigest()
