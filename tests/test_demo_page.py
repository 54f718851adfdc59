"""The demo page as the stack serves it (`make run` prints its URL): Chromium opens it, it signs in with
the stack's development identity (``dev`` of tenant ``dev``), uploads what is dropped on it through the
browser face and presigned URLs, and lists the files with their live status. Nothing is faked: the
real stack, the real bundle of the browser client, the real processor (clamd with the EICAR signature).

A screenshot of the page after an upload is written to the test's tmp dir and, when
``FILESTORE_TEST_ARTIFACTS`` names a directory, copied there (``demo-page.png``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import random
import shutil
import uuid
from pathlib import Path

import grpc
import httpx
import jwt
import pytest
from PIL import Image, ImageDraw
from playwright.async_api import Browser, FilePayload, Page, Route
from playwright.async_api import Error as PlaywrightError

from filestore.stack import Stack
from filestore.stack.demo import DEV_SUBJECT, DEV_TENANT, IDENTITY_PATH
from filestore.v1 import download_service_pb2
from tests.support import ClientFactory

pytestmark = pytest.mark.local_stack  # the page is served by the stack's demo component

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
#: Waits for the pipeline to settle a file (not an assertion on speed: a busy machine is slow).
SETTLE_MS = 180_000


async def open_demo_page(chromium: Browser, stack: Stack) -> Page:
    context = await chromium.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    page.on("pageerror", lambda error: print(f"page error: {error}"))
    await page.goto(stack.endpoints.demo_url)
    await page.wait_for_function("document.body.dataset.ready === 'true'")
    return page


def _png() -> bytes:
    image = Image.new("RGB", (640, 400), "#2557d6")
    ImageDraw.Draw(image).ellipse((180, 60, 460, 340), fill="#ffd33d")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _save_artifact(source: Path) -> None:
    artifacts = os.environ.get("FILESTORE_TEST_ARTIFACTS", "").strip()
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, Path(artifacts) / source.name)


async def test_two_dropped_files_upload_with_progress_and_are_listed_ready_with_a_working_share_link(
    chromium: Browser, stack: Stack, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    picture = FilePayload(name=f"picture-{run}.png", mimeType="image/png", buffer=_png())
    data = random.Random(run).randbytes(7 * 1024 * 1024)
    archive = FilePayload(name=f"data-{run}.bin", mimeType="application/octet-stream", buffer=data)
    page = await open_demo_page(chromium, stack)
    try:
        await page.set_input_files("#file-input", [picture, archive])
        for name in (picture["name"], archive["name"]):
            item = page.locator(f'li.upload-item[data-name="{name}"][data-state="done"]')
            await item.wait_for(timeout=SETTLE_MS)
            assert await item.locator("progress").evaluate("bar => bar.value / bar.max") == 1
        assert await page.locator("#total-progress").evaluate("bar => bar.value / bar.max") == 1
        assert await page.locator("#total-summary").text_content() == (
            "All uploads finished: 2 of 2 files uploaded."
        )
        for name in (picture["name"], archive["name"]):
            await page.locator(f'li.file-item[data-name="{name}"][data-status="READY"]').wait_for(
                timeout=SETTLE_MS
            )
        done = page.locator(f'li.upload-item[data-name="{archive["name"]}"] .upload-state')
        assert await done.text_content() == "Uploaded and ready"
        # The processor made a thumbnail of the picture; the page shows it.
        picture_row = page.locator(f'li.file-item[data-name="{picture["name"]}"]')
        await picture_row.locator(".thumb img").wait_for(timeout=SETTLE_MS)
        # The share link is a signed URL anyone can download the bytes with.
        archive_row = page.locator(f'li.file-item[data-name="{archive["name"]}"]')
        await archive_row.get_by_role("button", name=f"Share a link to {archive['name']}").click()
        share_url = archive_row.locator(".share-url")
        await share_url.wait_for()
        url = await share_url.input_value()
        label = await archive_row.locator(".share-label").text_content()
        screenshot = tmp_path / "demo-page.png"
        await page.screenshot(path=str(screenshot), full_page=True)
    finally:
        await page.context.close()

    assert (label or "").startswith(f"Anyone with this link can download {archive['name']} until ")
    async with httpx.AsyncClient() as http:
        downloaded = await http.get(url)
    assert downloaded.status_code == 200
    assert hashlib.sha256(downloaded.content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    _save_artifact(screenshot)


async def test_an_upload_paused_and_resumed_from_its_buttons_completes(
    chromium: Browser, stack: Stack
) -> None:
    """The first PUT to storage is held until the page has paused (which cuts it) and resumed."""
    name = f"paused-{uuid.uuid4().hex[:8]}.bin"
    body = random.Random(name).randbytes(3 * 1024 * 1024)
    page = await open_demo_page(chromium, stack)
    in_flight, released = asyncio.Event(), asyncio.Event()
    puts: list[str] = []  # the URLs of the PUTs to storage

    async def hold_the_first_put(route: Route) -> None:
        if route.request.method != "PUT":  # the thumbnails of files listed already
            await route.continue_()
            return
        puts.append(route.request.url)
        if len(puts) == 1:
            in_flight.set()
            await released.wait()
            with contextlib.suppress(PlaywrightError):  # the page cut it when it paused
                await route.abort()
            return
        await route.continue_()

    try:
        await page.route(f"{stack.endpoints.s3_endpoint}/**", hold_the_first_put)
        await page.set_input_files(
            "#file-input", [FilePayload(name=name, mimeType="text/plain", buffer=body)]
        )
        await in_flight.wait()
        item = page.locator(f'li.upload-item[data-name="{name}"]')
        await item.get_by_role("button", name=f"Pause {name}").click()
        await page.locator(f'li.upload-item[data-name="{name}"][data-state="paused"]').wait_for()
        paused_text = await item.locator(".upload-state").text_content()
        pause_all = await page.locator("#pause-all").text_content()
        await item.get_by_role("button", name=f"Resume {name}").click()
        released.set()
        await page.locator(f'li.file-item[data-name="{name}"][data-status="READY"]').wait_for(
            timeout=SETTLE_MS
        )
        final_text = await item.locator(".upload-state").text_content()
    finally:
        released.set()
        await page.context.close()

    assert (paused_text or "").startswith("Paused at ")
    assert pause_all == "Resume all"
    assert final_text == "Uploaded and ready"
    assert len(puts) == 2  # the one cut by the pause, then the one after the resume


async def test_an_eicar_file_ends_quarantined_and_is_offered_no_download(
    chromium: Browser, stack: Stack, client_for: ClientFactory
) -> None:
    name = f"eicar-{uuid.uuid4().hex[:8]}.txt"
    page = await open_demo_page(chromium, stack)
    try:
        await page.set_input_files(
            "#file-input", [FilePayload(name=name, mimeType="text/plain", buffer=b"a note\n" + EICAR + b"\n")]
        )
        row = page.locator(f'li.file-item[data-name="{name}"][data-status="QUARANTINED"]')
        await row.wait_for(timeout=SETTLE_MS)
        file_id = await row.get_attribute("data-file-id")
        buttons = await row.get_by_role("button").all_text_contents()
        reason = await row.locator(".file-reason").text_content()
        badge = await row.locator(".badge").text_content()
    finally:
        await page.context.close()

    assert buttons == []  # neither Download nor Share link
    assert badge == "QUARANTINED"
    assert (reason or "").startswith("Quarantined: it will never be served.")
    # And the download service refuses it to the page's user, whatever a page would try.
    assert file_id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client_for(DEV_SUBJECT, DEV_TENANT).download.GetDownloadUrl(
            download_service_pb2.GetDownloadUrlRequest(file_id=file_id)
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_the_file_chooser_is_reached_by_keyboard_and_labelled(chromium: Browser, stack: Stack) -> None:
    page = await open_demo_page(chromium, stack)
    try:
        focused: list[str] = []
        for _ in range(6):
            await page.keyboard.press("Tab")
            focused.append(await page.evaluate("document.activeElement.id || document.activeElement.tagName"))
            if focused[-1] == "file-input":
                break
        chooser = page.get_by_label("Choose files to upload")
        chooser_id = await chooser.get_attribute("id")
        multiple = await chooser.get_attribute("multiple")
        live = await page.locator("#announcer").get_attribute("aria-live")
        progress_live = await page.locator("#total-summary").get_attribute("aria-live")
    finally:
        await page.context.close()

    assert focused[-1] == "file-input", focused
    assert (chooser_id, multiple) == ("file-input", "")
    assert (live, progress_live) == ("polite", "polite")


async def test_the_development_identity_is_for_the_page_itself_and_the_face_serves_no_page(
    stack: Stack,
) -> None:
    demo = stack.endpoints.demo_url.rstrip("/")
    async with httpx.AsyncClient() as http:
        own = await http.get(f"{demo}{IDENTITY_PATH}")
        other_page = await http.get(f"{demo}{IDENTITY_PATH}", headers={"Origin": "https://elsewhere.example"})
        cross_site = await http.get(f"{demo}{IDENTITY_PATH}", headers={"Sec-Fetch-Site": "cross-site"})
        rebound = await http.get(f"{demo}{IDENTITY_PATH}", headers={"Host": "attacker.example"})
        by_name = await http.get(f"{demo}/", headers={"Host": f"localhost:{stack.config.ports.demo}"})
        face_root = await http.get(f"{stack.endpoints.edge_url}/")

    identity = own.json()
    claims = jwt.decode(identity["token"], stack.endpoints.auth_secret, algorithms=["HS256"])
    assert (claims["sub"], claims["tenant"], claims["roles"]) == (DEV_SUBJECT, DEV_TENANT, [])
    assert claims["exp"] - claims["iat"] == 3600
    assert identity["edgeUrl"] == stack.endpoints.edge_url
    assert "access-control-allow-origin" not in own.headers
    assert (other_page.status_code, cross_site.status_code, rebound.status_code) == (403, 403, 421)
    assert "token" not in other_page.text
    assert "token" not in rebound.text
    # The same machine by another name is another origin: sent to the one the face and bucket allow.
    assert (by_name.status_code, by_name.headers["location"]) == (307, demo + "/")
    # The browser face has no page and no identity to hand out: POSTed RPCs only.
    assert face_root.status_code == 405
