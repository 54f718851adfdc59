"""The browser client end to end: a page in Chromium calls the browser face (filestore-edge) over
Connect with the user's token, sends the bytes to SeaweedFS through presigned URLs, and watches the
file until the processor has verified it; nothing between the page and the services is faked."""

from __future__ import annotations

import hashlib
import random

import pytest
from playwright.async_api import Browser, Page

from filestore.core.auth import mint_token
from filestore.stack import Stack
from filestore.v1 import upload_service_pb2
from tests.browser import PageSite, bridge_to_broker, part_puts
from tests.support import ClientFactory, fresh_tenant

pytestmark = pytest.mark.local_stack  # the stack's face and bucket must allow the test pages' origin

MIB = 1024 * 1024
PART_SIZE = 5 * MIB
#: The issue's large file: 300 MB (MiB here), in 19 parts of 16 MiB sent 4 at a time.
LARGE_SIZE = 300 * MIB
LARGE_PART_SIZE = 16 * MIB


def user_token(stack: Stack, tenant: str, subject: str = "alice") -> str:
    return mint_token(stack.endpoints.auth_secret, subject=subject, tenant=tenant)


async def connected_page(browser: Browser, site: PageSite, stack: Stack, token: str) -> Page:
    """A page of its own browser context (its own localStorage: another browser, as far as the client
    can tell), talking to the face with ``token``."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{site.origin}/index.html")
    await page.wait_for_function("document.getElementById('state').textContent === 'ready'")
    await page.evaluate("([base, token]) => harness.connect(base, token)", [stack.endpoints.edge_url, token])
    return page


@pytest.mark.parametrize(("size", "kind"), [(MIB, "single"), (23 * MIB, "multipart")])
async def test_a_file_uploaded_from_the_page_through_the_face_becomes_ready(
    chromium: Browser, page_site: PageSite, stack: Stack, size: int, kind: str
) -> None:
    body = random.Random(size).randbytes(size)
    (page_site.root / f"e2e-{kind}.bin").write_bytes(body)
    page = await connected_page(chromium, page_site, stack, user_token(stack, fresh_tenant()))
    try:
        await page.evaluate(
            "([path, size]) => harness.start(path, 'e2e.bin', 1, { multipartThreshold: 8 * 1024 * 1024,"
            " partSize: size, resumeStore: 'memory' })",
            [f"/e2e-{kind}.bin", PART_SIZE],
        )
        result = await page.evaluate("harness.finish()")
        settled = await page.evaluate("fileId => harness.settle(fileId)", result["fileId"])
    finally:
        await page.context.close()

    assert (result["kind"], result["bytesSent"]) == (kind, size)
    assert settled == {"status": "READY", "sha256": hashlib.sha256(body).hexdigest()}


# Once, on SQLite: the database changes nothing of the path the bytes take (the smaller files above
# and the resume below run on both), and 300 MB twice would double the longest test of the suite.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
async def test_a_300_mb_upload_reloaded_midway_resumes_with_only_the_missing_parts_and_becomes_ready(
    chromium: Browser, page_site: PageSite, stack: Stack, client_for: ClientFactory
) -> None:
    # Served by the page site, as the other files are: a Blob the page assembles from 300 MB of its
    # own buffers fails in Chromium's blob transport (ERR_BLOB_OUT_OF_MEMORY) once PUTs read it.
    rng = random.Random(300)
    body = b"".join(rng.randbytes(MIB) for _ in range(LARGE_SIZE // MIB))  # randbytes stops at 256 MiB
    (page_site.root / "large.bin").write_bytes(body)
    tenant = fresh_tenant()
    token = user_token(stack, tenant)
    start = (
        "([partSize, reloadAfter]) => harness.start('/large.bin', 'large.bin', 1700000000300,"
        " { partSize }, {}, 0, reloadAfter)"
    )
    page = await connected_page(chromium, page_site, stack, token)
    try:
        # The page reloads itself in the event of the 6th part, with the next ones in flight: a
        # reload at that point of the upload whatever the speed of storage.
        async with page.expect_navigation(timeout=120_000):
            await page.evaluate(start, [LARGE_PART_SIZE, 6])
        await page.wait_for_function("document.getElementById('state').textContent === 'ready'")
        records = await page.evaluate(
            "Object.entries(localStorage).filter(([key]) => key.startsWith('filestore-upload:'))"
            ".map(([, value]) => JSON.parse(value))"
        )
        assert len(records) == 1  # all the page kept of its upload
        upload = await client_for("alice", tenant).upload.GetUpload(
            upload_service_pb2.GetUploadRequest(upload_id=records[0]["uploadId"])
        )
        stored = {part.part_number for part in upload.uploaded_parts}
        assert 6 <= len(stored) < upload.part_count == 19

        # The same file picked again after the reload: only what storage lacks is sent.
        await page.evaluate(
            "([base, token]) => harness.connect(base, token)", [stack.endpoints.edge_url, token]
        )
        puts = part_puts(page)
        await page.evaluate(start, [LARGE_PART_SIZE, 0])
        result = await page.evaluate("harness.finish()")
        settled = await page.evaluate("fileId => harness.settle(fileId)", result["fileId"])
    finally:
        await page.context.close()
        (page_site.root / "large.bin").unlink()

    assert (result["uploadId"], result["kind"]) == (upload.id, "multipart")
    assert result["progress"]["last"]["bytesSent"] == LARGE_SIZE  # the resumed parts counted as sent
    assert "resumed" in result["events"]
    # Parts cut by the reload may have reached storage after GetUpload above: the resumed page counts them.
    assert result["partsResumed"] >= len(stored)
    assert len(puts) == len(set(puts)) == result["partsSent"] == 19 - result["partsResumed"]
    assert set(puts).isdisjoint(stored)
    assert settled == {"status": "READY", "sha256": hashlib.sha256(body).hexdigest()}


async def test_another_browser_resumes_knowing_only_the_file_id(
    chromium: Browser, page_site: PageSite, stack: Stack, client_for: ClientFactory
) -> None:
    body = random.Random(7).randbytes(23 * MIB)
    (page_site.root / "elsewhere.bin").write_bytes(body)
    tenant = fresh_tenant()
    token = user_token(stack, tenant)
    options = f"{{ multipartThreshold: 0, partSize: {PART_SIZE}, concurrency: 1 }}"
    first = await connected_page(chromium, page_site, stack, token)
    try:
        await first.evaluate(f"harness.start('/elsewhere.bin', 'elsewhere.bin', 1, {options}, {{}}, 2)")
        await first.wait_for_function("harness.task.paused")
        started = await first.evaluate("harness.events.find((event) => event.type === 'started')")
    finally:
        await first.context.close()  # that browser, and its localStorage, are gone
    file_id = started["fileId"]
    upload = await client_for("alice", tenant).upload.GetUpload(
        upload_service_pb2.GetUploadRequest(upload_id=started["uploadId"])
    )
    stored = {part.part_number for part in upload.uploaded_parts}
    assert len(stored) >= 2  # the parts sent before the pause (and possibly the one it cut)

    second = await connected_page(chromium, page_site, stack, token)
    try:
        puts = part_puts(second)
        await second.evaluate(
            f"fileId => harness.start('/elsewhere.bin', 'elsewhere.bin', 2, {options}, {{ fileId }})", file_id
        )
        result = await second.evaluate("harness.finish()")
        settled = await second.evaluate("fileId => harness.settle(fileId)", file_id)
    finally:
        await second.context.close()

    assert result["fileId"] == file_id
    assert result["partsResumed"] >= 2
    assert (
        sorted(puts) == list(range(1 + result["partsResumed"], 6)) or len(puts) == 5 - result["partsResumed"]
    )
    assert settled == {"status": "READY", "sha256": hashlib.sha256(body).hexdigest()}


async def test_another_tenants_file_reads_as_not_found(
    chromium: Browser, page_site: PageSite, stack: Stack
) -> None:
    (page_site.root / "mine.bin").write_bytes(b"only mine")
    owner = await connected_page(chromium, page_site, stack, user_token(stack, fresh_tenant()))
    stranger = await connected_page(chromium, page_site, stack, user_token(stack, fresh_tenant(), "mallory"))
    try:
        await owner.evaluate("harness.start('/mine.bin', 'mine.txt', 1, { resumeStore: 'memory' })")
        result = await owner.evaluate("harness.finish()")
        seen = await stranger.evaluate("fileId => harness.settle(fileId)", result["fileId"])
    finally:
        await owner.context.close()
        await stranger.context.close()

    assert seen == {"error": {"code": 5, "reason": "FILE_NOT_FOUND"}}


async def test_a_page_from_an_origin_not_allowed_is_refused_by_the_face_and_by_storage(
    chromium: Browser, page_site: PageSite, stack: Stack, client_for: ClientFactory
) -> None:
    """The same page served as http://localhost:<port>, an origin the stack does not allow."""
    (page_site.root / "foreign.bin").write_bytes(random.Random(8).randbytes(6 * MIB))
    foreign = page_site.origin.replace("127.0.0.1", "localhost")
    tenant = fresh_tenant()
    alice = client_for("alice", tenant)
    context = await chromium.new_context()
    try:
        page = await context.new_page()
        await bridge_to_broker(page, alice)
        await page.goto(f"{foreign}/index.html")
        await page.wait_for_function("document.getElementById('state').textContent === 'ready'")
        quick = "{ maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 2, uniform: Math.random }"
        options = f"{{ multipartThreshold: 0, partSize: {PART_SIZE}, resumeStore: 'memory', retry: {quick} }}"

        # Storage: URLs signed by the broker (through the test's bridge) are refused from this origin.
        await page.evaluate(f"harness.start('/foreign.bin', 'foreign.bin', 1, {options})")
        refused_by_storage = await page.evaluate("harness.finish()")
        started = await page.evaluate("harness.events.find((event) => event.type === 'started')")

        # The face: the same calls over Connect fail before reaching any service.
        await page.evaluate(
            "([base, token]) => harness.connect(base, token)",
            [stack.endpoints.edge_url, user_token(stack, tenant)],
        )
        await page.evaluate(f"harness.start('/foreign.bin', 'foreign.bin', 2, {options})")
        refused_by_face = await page.evaluate("harness.finish()")
    finally:
        await context.close()

    # Storage's CORS refusal reaches the page as no answer: retried, then reported as unavailable.
    assert refused_by_storage["error"]["reason"] == "STORAGE_UNAVAILABLE"
    upload = await alice.upload.GetUpload(upload_service_pb2.GetUploadRequest(upload_id=started["uploadId"]))
    assert list(upload.uploaded_parts) == []
    # A refused preflight reaches the page as no answer at all, retried as such, then reported.
    assert refused_by_face["error"]["reason"] == "NETWORK_ERROR"
    assert refused_by_face["error"]["retryable"] is True
    # The face let nothing through: the tenant's one open upload is the bridged one.
    still_open = await alice.upload.ListOpenUploads(upload_service_pb2.ListOpenUploadsRequest())
    assert [open_upload.id for open_upload in still_open.uploads] == [started["uploadId"]]
