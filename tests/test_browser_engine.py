"""The browser client's upload engine in Chromium against real SeaweedFS and the real broker.

The page's engine talks to an UploadApi whose calls cross to this process (Playwright's exposed
function) and go to the broker over gRPC: a fake at the API boundary only, so these tests need no
browser face. Every byte goes from the page to storage through the presigned URLs, as in production."""

from __future__ import annotations

import hashlib
import random

import grpc
import httpx
import pytest
from playwright.async_api import Page, Route

from filestore.v1 import download_service_pb2, resources_pb2, upload_service_pb2
from tests.browser import PageSite, bridge_to_broker, part_puts
from tests.support import Client, StatusEvents, get_file

pytestmark = pytest.mark.local_stack  # the stack's CORS must allow the test pages' origin

MIB = 1024 * 1024
PART_SIZE = 5 * MIB
#: Five parts: four of 5 MiB and a last one of 3 MiB.
SIZE = 23 * MIB


def file_body(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


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
    assert sorted(puts) == [1, 2, 3, 4, 5]  # each part once
    last = result["progress"]["last"]
    assert (last["bytesSent"], last["totalBytes"], last["partsDone"], last["partCount"]) == (SIZE, SIZE, 5, 5)
    assert result["progress"]["outOfRange"] == 0
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
        "([size, pauseAfter]) => harness.start('/resumed.bin', 'resumed.bin', 1700000000001,"
        " { multipartThreshold: 0, partSize: size, concurrency: 1, signBatch: 2 }, {}, pauseAfter)"
    )
    # Paused in the event of the second part, so the reload comes mid-upload however fast storage is.
    await web_page.evaluate(start, [PART_SIZE, 2])
    await web_page.wait_for_function("harness.task.paused")
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
    await web_page.evaluate(start, [PART_SIZE, 0])
    result = await web_page.evaluate("harness.finish()")

    assert result["uploadId"] == upload.id
    assert "resumed" in result["events"]
    assert sorted(puts) == sorted(set(range(1, 6)) - stored)
    assert (result["partsSent"], result["partsResumed"]) == (5 - len(stored), len(stored))
    # Progress counts the resumed parts from the start, and the rewound bytes of cut attempts never linger.
    assert result["progress"]["last"]["bytesSent"] == SIZE
    assert result["progress"]["outOfRange"] == 0
    assert await web_page.evaluate("localStorage.length") == 0  # a completed upload is forgotten
    await status_events.wait_for_status(result["fileId"], resources_pb2.FILE_STATUS_READY)
    file = await get_file(alice, result["fileId"])
    assert file.sha256 == hashlib.sha256(body).hexdigest()
    assert await stored_object_sha256(alice, file.id) == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("checksum", ["sha256", "none"])
async def test_parts_carry_the_checksum_asked_for(
    web_page: Page, page_site: PageSite, alice: Client, status_events: StatusEvents, checksum: str
) -> None:
    body = file_body(11 * MIB, seed=3)
    (page_site.root / f"{checksum}.bin").write_bytes(body)
    await bridge_to_broker(web_page, alice)
    await web_page.evaluate(
        "([path, size, checksum]) => harness.start(path, 'c.bin', 1, { multipartThreshold: 0, partSize: size,"
        " partChecksum: checksum, resumeStore: 'memory' })",
        [f"/{checksum}.bin", PART_SIZE, checksum],
    )
    result = await web_page.evaluate("harness.finish()")

    upload = await alice.upload.GetUpload(upload_service_pb2.GetUploadRequest(upload_id=result["uploadId"]))
    expected = {
        "sha256": resources_pb2.CHECKSUM_ALGORITHM_SHA256,
        "none": resources_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED,
    }[checksum]
    assert upload.part_checksum_algorithm == expected
    assert result["partsSent"] == 3
    await status_events.wait_for_status(result["fileId"], resources_pb2.FILE_STATUS_READY)
    assert await stored_object_sha256(alice, result["fileId"]) == hashlib.sha256(body).hexdigest()


async def test_a_small_file_goes_in_one_put_with_its_sha256(
    web_page: Page, page_site: PageSite, alice: Client, status_events: StatusEvents
) -> None:
    body = file_body(MIB, seed=4)
    (page_site.root / "small.bin").write_bytes(body)
    await bridge_to_broker(web_page, alice)
    puts = part_puts(web_page)
    await web_page.evaluate("harness.start('/small.bin', 'small.bin', 1, { resumeStore: 'memory' })")
    result = await web_page.evaluate("harness.finish()")

    assert (result["kind"], result["partsSent"], result["bytesSent"]) == ("single", 1, MIB)
    assert puts == [0]  # one PUT of the whole object, no part number
    file = await get_file(alice, result["fileId"])
    assert file.sha256 == hashlib.sha256(body).hexdigest()  # declared by the page, signed into the PUT
    await status_events.wait_for_status(result["fileId"], resources_pb2.FILE_STATUS_READY)
    assert await stored_object_sha256(alice, file.id) == file.sha256


async def test_a_refused_request_is_a_typed_error_with_the_errorinfo_reason(
    web_page: Page, page_site: PageSite, alice: Client
) -> None:
    (page_site.root / "typed.bin").write_bytes(b"x")
    await bridge_to_broker(web_page, alice)
    await web_page.evaluate(
        "harness.start('/typed.bin', 't.bin', 1, { resumeStore: 'memory' }, { contentType: 'not a type' })"
    )
    outcome = await web_page.evaluate("harness.finish()")

    assert outcome["error"]["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert outcome["error"]["reason"] == "INVALID_CONTENT_TYPE"
    assert outcome["error"]["retryable"] is False


async def test_pause_then_resume_completes_and_abort_ends_the_upload(
    web_page: Page, page_site: PageSite, alice: Client, status_events: StatusEvents
) -> None:
    body = file_body(SIZE, seed=5)
    (page_site.root / "paused.bin").write_bytes(body)
    await bridge_to_broker(web_page, alice)
    options = f"{{ multipartThreshold: 0, partSize: {PART_SIZE}, concurrency: 1, resumeStore: 'memory' }}"
    puts = part_puts(web_page)
    await web_page.evaluate(f"harness.start('/paused.bin', 'paused.bin', 1, {options}, {{}}, 1)")
    await web_page.wait_for_function("harness.task.paused")
    await web_page.evaluate("harness.task.resume()")
    result = await web_page.evaluate("harness.finish()")

    # Part 1 was stored before the pause; part 2, cut by it, is sent again after the resume.
    assert set(puts) == {1, 2, 3, 4, 5}
    assert puts.count(1) == 1
    # The cut attempt's bytes were taken back: sent again, they are counted once.
    assert result["progress"]["last"]["bytesSent"] == SIZE
    assert result["progress"]["outOfRange"] == 0
    assert result["events"].count("paused") == result["events"].count("unpaused") == 1
    assert result["partsSent"] == 5
    await status_events.wait_for_status(result["fileId"], resources_pb2.FILE_STATUS_READY)
    assert await stored_object_sha256(alice, result["fileId"]) == hashlib.sha256(body).hexdigest()

    # A second upload, aborted after its first part: the broker ends it and storage drops its parts.
    # Remembered in localStorage this time (the default store), so that forgetting it shows.
    remembered = f"{{ multipartThreshold: 0, partSize: {PART_SIZE}, concurrency: 1 }}"
    await web_page.evaluate(f"harness.start('/paused.bin', 'aborted.bin', 2, {remembered}, {{}}, 1)")
    await web_page.wait_for_function("harness.task.paused")
    upload_id = await web_page.evaluate("harness.events.find((event) => event.type === 'started').uploadId")
    await web_page.evaluate("harness.task.abort()")
    outcome = await web_page.evaluate("harness.finish()")

    assert outcome["error"]["reason"] == "ABORTED"
    upload = await alice.upload.GetUpload(upload_service_pb2.GetUploadRequest(upload_id=upload_id))
    assert upload.state == resources_pb2.UPLOAD_STATE_ABORTED
    assert await web_page.evaluate("localStorage.length") == 0  # an aborted upload is not resumed


async def test_transient_and_expired_answers_from_storage_are_retried_and_renewed(
    web_page: Page, page_site: PageSite, alice: Client, status_events: StatusEvents
) -> None:
    """Faults injected on the wire (Playwright answers in storage's place, once each): a 503 for part
    2 is retried after a backoff; a 403 "Request has expired" for part 3 has its URL signed again."""
    body = file_body(SIZE, seed=6)
    (page_site.root / "faults.bin").write_bytes(body)
    calls = await bridge_to_broker(web_page, alice)
    cors = {"Access-Control-Allow-Origin": page_site.origin, "Access-Control-Expose-Headers": "ETag"}
    faults = {
        2: {"status": 503, "body": "<Error><Code>ServiceUnavailable</Code></Error>"},
        3: {
            "status": 403,
            "body": "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
        },
    }

    async def fault_once(route: Route) -> None:
        number = int(httpx.URL(route.request.url).params.get("partNumber", "0"))
        fault = faults.pop(number, None) if route.request.method == "PUT" else None
        if fault is None:
            await route.continue_()
            return
        await route.fulfill(status=fault["status"], body=fault["body"], headers=cors)

    await web_page.route("**/*partNumber=*", fault_once)
    puts = part_puts(web_page)
    policy = "{ maxAttempts: 4, baseDelayMs: 1, maxDelayMs: 5, uniform: Math.random }"
    await web_page.evaluate(
        f"harness.start('/faults.bin', 'faults.bin', 1, {{ multipartThreshold: 0, partSize: {PART_SIZE},"
        f" resumeStore: 'memory', retry: {policy} }})"
    )
    result = await web_page.evaluate("harness.finish()")

    assert faults == {}  # both faults were served
    assert "retrying" in result["events"]
    assert "url-renewed" in result["events"]
    assert sorted(puts) == [1, 2, 2, 3, 3, 4, 5]
    # Signed in batches growing 1, 2, 4, ... (the first PUT waits for one part's hash), and part 3
    # alone again once storage called its URL expired (the lanes make these calls in any order).
    signed = sorted(request["partNumbers"] for method, request in calls if method == "SignParts")
    assert signed == [[1], [2, 3], [3], [4, 5]]
    await status_events.wait_for_status(result["fileId"], resources_pb2.FILE_STATUS_READY)
    assert await stored_object_sha256(alice, result["fileId"]) == hashlib.sha256(body).hexdigest()
