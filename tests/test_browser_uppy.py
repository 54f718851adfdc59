"""The Uppy adapter (clients/uppy) in Chromium: Uppy's own Core, Dashboard, S3 plugin and Golden
Retriever on a page, signing through the browser face with the user's token, the bytes PUT to
SeaweedFS, the file verified by the processor; nothing between the page and the services is faked."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from filestore.core.auth import mint_token
from filestore.stack import Stack
from filestore.v1 import resources_pb2, upload_service_pb2
from tests.browser import PageSite, part_puts
from tests.support import ClientFactory, fresh_tenant

pytestmark = pytest.mark.local_stack  # the stack's face and bucket must allow the test pages' origin

MIB = 1024 * 1024
PART_SIZE = 5 * MIB
#: 8 parts of 5 MiB, the last 3 MiB (not a multiple: the short last part is the plan's too).
BIG = 38 * MIB
PARTS = 8
ADAPTER = {"multipartThreshold": 8 * MIB, "partSize": PART_SIZE}


def user_token(stack: Stack, tenant: str) -> str:
    return mint_token(stack.endpoints.auth_secret, subject="alice", tenant=tenant)


async def uppy_page(page: Page, site: PageSite, stack: Stack, token: str, limit: int = 4) -> None:
    """Loads the Uppy page (again, after a reload) and mounts Uppy signing through the face."""
    await page.goto(f"{site.origin}/uppy/index.html")
    await page.wait_for_function("document.getElementById('state').textContent === 'ready'")
    await page.evaluate(
        "([base, token, options, limit]) => uppyHarness.start(base, token, options, limit)",
        [stack.endpoints.edge_url, token, ADAPTER, limit],
    )


def write(site: PageSite, name: str, size: int, seed: int) -> bytes:
    body = random.Random(seed).randbytes(size)
    (site.root / name).write_bytes(body)
    return body


async def test_files_uploaded_through_the_dashboard_become_ready(
    chromium: Browser, page_site: PageSite, stack: Stack, tmp_path: Path
) -> None:
    """A small file picked through the Dashboard's file chooser (one PUT) and a multipart one added from
    the page: both READY, with the bytes sent."""
    big = write(page_site, "uppy-big.bin", BIG, 1)
    small = random.Random(2).randbytes(MIB)
    picked = tmp_path / "small.bin"
    picked.write_bytes(small)
    context = await chromium.new_context()
    page = await context.new_page()
    try:
        puts = part_puts(page)
        await uppy_page(page, page_site, stack, user_token(stack, fresh_tenant()))
        # The person's way first: the Dashboard's "browse files" opens the file chooser.
        async with page.expect_file_chooser() as chooser:
            await page.locator("#dashboard .uppy-Dashboard-browse").first.click()
        await (await chooser.value).set_files(str(picked))
        await page.evaluate("uppyHarness.addFile('/uppy-big.bin', 'big.bin')")
        outcome = await page.evaluate("uppyHarness.upload()")
        ids = {file["name"]: file["fileId"] for file in outcome["successful"]}
        settled = {name: await page.evaluate("id => uppyHarness.settle(id)", ids[name]) for name in ids}
    finally:
        await context.close()

    assert outcome["failed"] == []
    assert settled == {
        "big.bin": {"status": "READY", "sha256": hashlib.sha256(big).hexdigest()},
        "small.bin": {"status": "READY", "sha256": hashlib.sha256(small).hexdigest()},
    }
    # Eight part PUTs and the small file's one PUT (no partNumber: 0).
    assert sorted(puts) == [0, *range(1, PARTS + 1)]


async def test_pause_and_resume_through_uppy(chromium: Browser, page_site: PageSite, stack: Stack) -> None:
    body = write(page_site, "uppy-paused.bin", BIG, 3)
    context = await chromium.new_context()
    page = await context.new_page()
    try:
        puts = part_puts(page)
        await uppy_page(page, page_site, stack, user_token(stack, fresh_tenant()), 1)
        uppy_id = await page.evaluate("uppyHarness.addFile('/uppy-paused.bin', 'paused.bin')")
        await page.evaluate("id => { window.paused = uppyHarness.whenParts(2, id, true) }", uppy_id)
        await page.evaluate("() => { window.uploading = uppyHarness.upload() }")
        await page.evaluate("window.paused")
        paused = await page.evaluate("id => uppyHarness.uppy.getFile(id).isPaused", uppy_id)
        sent_before_resume = await page.evaluate("uppyHarness.partsUploaded.length")
        await page.evaluate("id => uppyHarness.uppy.pauseResume(id)", uppy_id)
        outcome = await page.evaluate("window.uploading")
        file_id = outcome["successful"][0]["fileId"]
        settled = await page.evaluate("id => uppyHarness.settle(id)", file_id)
    finally:
        await context.close()

    assert paused is True
    assert sent_before_resume == 2
    assert settled == {"status": "READY", "sha256": hashlib.sha256(body).hexdigest()}
    # Every part went; a part cut by the pause was sent again, nothing else twice.
    assert set(puts) == set(range(1, PARTS + 1))
    assert len(puts) <= PARTS + 1


async def test_a_reload_mid_upload_resumes_with_golden_retriever_sending_only_missing_parts(
    chromium: Browser, page_site: PageSite, stack: Stack, client_for: ClientFactory
) -> None:
    body = write(page_site, "uppy-reload.bin", BIG, 4)
    tenant = fresh_tenant()
    token = user_token(stack, tenant)
    context = await chromium.new_context()
    page = await context.new_page()
    try:
        await uppy_page(page, page_site, stack, token, 1)
        uppy_id = await page.evaluate("uppyHarness.addFile('/uppy-reload.bin', 'reload.bin')")
        await page.evaluate("id => { window.reached = uppyHarness.whenParts(3, id, false) }", uppy_id)
        await page.evaluate("() => { uppyHarness.upload() }")
        await page.evaluate("window.reached")
        state = await page.evaluate("id => uppyHarness.uppy.getFile(id).s3Multipart", uppy_id)

        await page.reload()  # the part in flight is cut; Golden Retriever kept the file and its upload
        puts = part_puts(page)
        await uppy_page(page, page_site, stack, token, 1)
        assert await page.evaluate("uppyHarness.restored") is True
        outcome = await page.evaluate("uppyHarness.resumeRestored()")
        listed = await page.evaluate("uppyHarness.listed")
        settled = await page.evaluate("id => uppyHarness.settle(id)", state["key"])
        upload = await client_for("alice", tenant).upload.GetUpload(
            upload_service_pb2.GetUploadRequest(upload_id=state["uploadId"])
        )
    finally:
        await context.close()

    assert outcome == {"successful": [{"name": "reload.bin", "fileId": state["key"]}], "failed": []}
    # What storage held when Uppy asked (listParts: GetUpload's uploaded_parts): the three parts Uppy
    # saw finish, and those sent (one at a time) before the reload landed, if any had reached storage.
    assert listed[:3] == [1, 2, 3]
    assert listed == list(range(1, len(listed) + 1))
    assert len(listed) < PARTS
    assert sorted(puts) == sorted(set(range(1, PARTS + 1)) - set(listed))
    assert upload.state == resources_pb2.UPLOAD_STATE_COMPLETED
    assert settled == {"status": "READY", "sha256": hashlib.sha256(body).hexdigest()}


async def test_a_file_removed_mid_upload_aborts_its_upload(
    chromium: Browser, page_site: PageSite, stack: Stack, client_for: ClientFactory
) -> None:
    write(page_site, "uppy-removed.bin", BIG, 5)
    tenant = fresh_tenant()
    context = await chromium.new_context()
    page = await context.new_page()
    try:
        await uppy_page(page, page_site, stack, user_token(stack, tenant), 1)
        uppy_id = await page.evaluate("uppyHarness.addFile('/uppy-removed.bin', 'removed.bin')")
        await page.evaluate("id => { window.reached = uppyHarness.whenParts(2, id, false) }", uppy_id)
        await page.evaluate("() => { uppyHarness.upload() }")
        await page.evaluate("window.reached")
        upload_id = await page.evaluate("id => uppyHarness.uppy.getFile(id).s3Multipart.uploadId", uppy_id)
        await page.evaluate("id => uppyHarness.uppy.removeFile(id)", uppy_id)
        aborted = await page.evaluate("uppyHarness.aborted")
    finally:
        await context.close()

    upload = await client_for("alice", tenant).upload.GetUpload(
        upload_service_pb2.GetUploadRequest(upload_id=upload_id)
    )
    assert aborted == upload_id
    assert upload.state == resources_pb2.UPLOAD_STATE_ABORTED
