"""The processing pipeline against the real components: SeaweedFS, NATS JetStream, clamd (with the shipped
EICAR signature), tesseract, PDFium, ffmpeg. Its own stack, where every step gates READY, so the READY
event means that thumbnails and OCR are done too; a five-second ack wait makes redelivery quick."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from nats.aio.msg import Msg
from PIL import Image, ImageDraw, ImageFont

from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.server import events as core_events
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.stack.probes import probe_grpc_health
from filestore.stack.process import ManagedProcess
from filestore.v1 import (
    download_service_pb2,
    download_service_pb2_grpc,
    events_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    processor_service_pb2,
    processor_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)
from tests.catalogue import in_an_hour
from tests.storage import admin_storage
from tests.support import connect_nats, free_port, rpc_error, service_token, stack_channel

WAIT_S = 90.0
Status = resources_pb2.FileStatus
Outcome = resources_pb2.StepOutcome
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
ALL_STEPS = "integrity,sniff,scan,thumbnail,ocr"


@pytest.fixture(scope="module")
async def pipeline_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    config = StackConfig(
        home=tmp_path_factory.mktemp("pipeline"),
        ports=StackPorts.free(),
        ready_timeout_s=60.0,
        extra_env={
            "processor": {
                "FILESTORE_PIPELINE_REQUIRED": ALL_STEPS,
                "FILESTORE_WORKER_ACK_WAIT_S": "5",
                "FILESTORE_WORKER_CONCURRENCY": "2",
            }
        },
    )
    async with Stack(config) as stack:
        yield stack


class Events:
    """FileStatusChanged events by file id, so tests wait on the real event."""

    def __init__(self) -> None:
        self.seen: dict[str, list[events_pb2.FileStatusChanged]] = {}
        self._changed = asyncio.Condition()

    async def on_message(self, message: Msg) -> None:
        event = events_pb2.FileStatusChanged.FromString(message.data)
        async with self._changed:
            self.seen.setdefault(event.file_id, []).append(event)
            self._changed.notify_all()

    async def wait_for(self, file_id: str, *, nth: int = 1) -> events_pb2.FileStatusChanged:
        """The file's ``nth`` event (a reprocessed file has more than one)."""

        async def seen() -> events_pb2.FileStatusChanged:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.seen.get(file_id, ())) >= nth)
                return self.seen[file_id][nth - 1]

        return await asyncio.wait_for(seen(), WAIT_S)


class User:
    def __init__(self, stack: Stack, channels: list[grpc.aio.Channel]) -> None:
        endpoints = stack.endpoints
        token = mint_token(endpoints.auth_secret, subject="alice", tenant="acme")
        service = service_token(stack)

        def channel(address: str, bearer: str) -> grpc.aio.Channel:
            opened = insecure_channel(address, token=lambda: bearer)
            channels.append(opened)
            return opened

        self.upload = upload_service_pb2_grpc.UploadServiceStub(channel(endpoints.upload_addr, token))
        self.metadata = metadata_service_pb2_grpc.MetadataServiceStub(channel(endpoints.metadata_addr, token))
        self.service_metadata = metadata_service_pb2_grpc.MetadataServiceStub(
            channel(endpoints.metadata_addr, service)
        )
        self.processor = processor_service_pb2_grpc.ProcessorServiceStub(
            channel(endpoints.processor_addr, token)
        )
        self.download = download_service_pb2_grpc.DownloadServiceStub(channel(endpoints.download_addr, token))
        self.storage = admin_storage(stack)
        self.bucket = endpoints.bucket

    async def put(self, body: bytes, *, name: str, content_type: str) -> str:
        created = await self.upload.CreateUpload(
            upload_service_pb2.CreateUploadRequest(
                name=name, size=len(body), content_type=content_type, sha256=hashlib.sha256(body).hexdigest()
            )
        )
        request = created.upload.request
        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.put(request.url, content=body, headers=dict(request.headers))
        assert response.status_code == 200, response.text
        await self.upload.CompleteUpload(
            upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id)
        )
        file_id: str = created.file.id
        return file_id

    async def steps(self, file_id: str) -> dict[str, resources_pb2.ProcessingResult]:
        status = await self.processor.GetProcessingStatus(
            processor_service_pb2.GetProcessingStatusRequest(file_id=file_id)
        )
        return {result.step: result for result in status.results}

    async def derivatives(self, file_id: str) -> list[resources_pb2.Derivative]:
        listed = await self.service_metadata.ListDerivatives(
            metadata_service_pb2.ListDerivativesRequest(file_id=file_id, tenant="acme")
        )
        return list(listed.derivatives)


@pytest.fixture
async def world(pipeline_stack: Stack) -> AsyncIterator[tuple[User, Events]]:
    channels: list[grpc.aio.Channel] = []
    collector = Events()
    connection = await connect_nats(pipeline_stack.endpoints)
    await connection.subscribe("files.file.ready", cb=collector.on_message)
    await connection.flush()
    yield User(pipeline_stack, channels), collector
    await connection.close()
    for channel in channels:
        await channel.close()


def text_png(words: str, *, scale: int = 1) -> bytes:
    font = ImageFont.load_default(size=72 * scale)
    image = Image.new("RGB", (1400 * scale, 220 * scale), "white")
    ImageDraw.Draw(image).text((40 * scale, 60 * scale), words, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def photo_jpeg(width: int = 1600, height: int = 1000) -> bytes:
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    ImageDraw.Draw(image).ellipse((200, 200, 900, 800), fill=(200, 40, 40))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def bomb_png(side: int = 50_000, rows: int = 20) -> bytes:
    """A PNG whose header promises side x side RGB pixels (7.5 GB decoded) in a few KB: the pixel data
    holds only the first rows, as in a real bomb, which needs no more to make a naive decoder allocate."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * (side * 3)
    data = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def webp_size(user: User, key: str) -> tuple[int, int]:
    body = user.storage.get_object(Bucket=user.bucket, Key=key)["Body"].read()
    with Image.open(io.BytesIO(body)) as image:
        assert image.format == "WEBP"
        return image.size


async def test_eicar_is_quarantined_and_never_downloadable(world: tuple[User, Events]) -> None:
    user, events = world
    file_id = await user.put(b"a note\n" + EICAR + b"\n", name="note.txt", content_type="text/plain")
    event = await events.wait_for(file_id)
    assert (event.status, event.reason) == (Status.FILE_STATUS_QUARANTINED, "MALWARE_FOUND")
    scan = (await user.steps(file_id))["scan"]
    assert scan.outcome == Outcome.STEP_OUTCOME_FAILED
    assert "eicar" in scan.details["signature"].lower()
    refused = await rpc_error(
        user.download.GetDownloadUrl(download_service_pb2.GetDownloadUrlRequest(file_id=file_id))
    )
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "FILE_QUARANTINED")


async def test_a_jpeg_gets_webp_thumbnails(world: tuple[User, Events]) -> None:
    user, events = world
    file_id = await user.put(photo_jpeg(), name="holiday.jpg", content_type="image/jpeg")
    assert (await events.wait_for(file_id)).status == Status.FILE_STATUS_READY
    steps = await user.steps(file_id)
    assert {name: steps[name].outcome for name in ("integrity", "sniff", "scan", "thumbnail", "ocr")} == {
        name: Outcome.STEP_OUTCOME_PASSED for name in ("integrity", "sniff", "scan", "thumbnail", "ocr")
    }
    assert steps["sniff"].details["sniffed"] == "image/jpeg"
    [thumbnail] = await user.derivatives(file_id)
    assert (thumbnail.kind, thumbnail.content_type) == ("thumbnail_256", "image/webp")
    assert thumbnail.storage_key == f"derivatives/acme/{file_id}/thumbnail_256"
    assert webp_size(user, thumbnail.storage_key) == (256, 160)  # aspect ratio kept


async def test_ocr_text_of_a_png_is_searchable(world: tuple[User, Events]) -> None:
    user, events = world
    file_id = await user.put(text_png("Quarterly ledger zebra"), name="scan.png", content_type="image/png")
    assert (await events.wait_for(file_id)).status == Status.FILE_STATUS_READY
    assert (await user.steps(file_id))["ocr"].details["source"] == "ocr"
    found = await user.metadata.ListFiles(metadata_service_pb2.ListFilesRequest(text_contains="zebra"))
    assert file_id in {file.id for file in found.files}
    missing = await user.metadata.ListFiles(metadata_service_pb2.ListFilesRequest(text_contains="giraffe"))
    assert file_id not in {file.id for file in missing.files}


async def test_a_scanned_pdf_gets_a_thumbnail_and_ocr(world: tuple[User, Events]) -> None:
    user, events = world
    out = io.BytesIO()
    # Pillow writes the page as an image: a PDF without a text layer, so OCR has to read it.
    Image.open(io.BytesIO(text_png("Invoice walrus"))).save(out, format="PDF", resolution=150)
    file_id = await user.put(out.getvalue(), name="invoice.pdf", content_type="application/pdf")
    assert (await events.wait_for(file_id)).status == Status.FILE_STATUS_READY
    steps = await user.steps(file_id)
    assert steps["ocr"].details["source"] == "ocr"
    assert [d.kind for d in await user.derivatives(file_id)] == ["thumbnail_256"]
    found = await user.metadata.ListFiles(metadata_service_pb2.ListFilesRequest(text_contains="walrus"))
    assert file_id in {file.id for file in found.files}


async def test_a_video_gets_a_frame_thumbnail(world: tuple[User, Events], tmp_path: Path) -> None:
    user, events = world
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None, "make test installs ffmpeg"
    video = tmp_path / "clip.mp4"
    made = await asyncio.create_subprocess_exec(
        ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=2:size=320x240:rate=10",
        "-pix_fmt", "yuv420p", str(video),
    )  # fmt: skip
    assert await made.wait() == 0
    file_id = await user.put(
        await asyncio.to_thread(video.read_bytes), name="clip.mp4", content_type="video/mp4"
    )
    assert (await events.wait_for(file_id)).status == Status.FILE_STATUS_READY
    [thumbnail] = await user.derivatives(file_id)
    assert webp_size(user, thumbnail.storage_key) == (256, 192)


async def test_an_executable_declared_as_png_is_quarantined(world: tuple[User, Events]) -> None:
    user, events = world
    body = await asyncio.to_thread(Path(shutil.which("true") or "/bin/true").read_bytes)
    file_id = await user.put(body, name="cute-cat.png", content_type="image/png")
    event = await events.wait_for(file_id)
    assert (event.status, event.reason) == (Status.FILE_STATUS_QUARANTINED, "CONTENT_TYPE_MISMATCH")
    file = await user.metadata.GetFile(metadata_service_pb2.GetFileRequest(file_id=file_id))
    assert file.sniffed_content_type.startswith("application/x-")
    sniff = (await user.steps(file_id))["sniff"]
    assert (sniff.outcome, sniff.details["declared"], sniff.details["agrees"]) == (
        Outcome.STEP_OUTCOME_FAILED,
        "image/png",
        "false",
    )


async def test_a_digest_mismatch_is_quarantined(world: tuple[User, Events], pipeline_stack: Stack) -> None:
    user, events = world
    declared = os.urandom(4096)
    stored = os.urandom(4096)
    # The catalogue expects one digest; storage holds other bytes of the same size (a broken or
    # malicious writer that bypassed the signed upload). Only the processor's own reading can tell.
    began = await user.service_metadata.BeginUpload(
        metadata_service_pb2.BeginUploadRequest(
            file=resources_pb2.File(
                tenant="acme",
                owner="alice",
                name="swapped.bin",
                declared_content_type="application/octet-stream",
                size=len(declared),
                sha256=hashlib.sha256(declared).hexdigest(),
            ),
            kind=resources_pb2.UPLOAD_KIND_SINGLE,
            expire_time=in_an_hour(),
        )
    )
    user.storage.put_object(Bucket=user.bucket, Key=began.upload.storage_key, Body=stored)
    await user.service_metadata.CompleteUploadRecord(
        metadata_service_pb2.CompleteUploadRecordRequest(
            upload_id=began.upload.id, tenant="acme", size=len(stored)
        )
    )
    connection = await connect_nats(pipeline_stack.endpoints)
    try:
        event = events_pb2.ObjectCreated(
            bucket=user.bucket,
            key=began.upload.storage_key,
            size=len(stored),
            etag="swapped",
            file_id=began.file.id,
            tenant="acme",
            source=events_pb2.EVENT_SOURCE_BROKER,
        )
        await core_events.publish(
            connection.jetstream(),
            "files.object.created",
            event,
            msg_id=core_events.object_created_msg_id(event),
        )
    finally:
        await connection.close()
    changed = await events.wait_for(began.file.id)
    assert (changed.status, changed.reason) == (Status.FILE_STATUS_QUARANTINED, "CHECKSUM_MISMATCH")
    integrity = (await user.steps(began.file.id))["integrity"]
    assert integrity.outcome == Outcome.STEP_OUTCOME_FAILED
    assert integrity.details["sha256"] == hashlib.sha256(stored).hexdigest()


async def test_a_decompression_bomb_is_refused_without_decoding(
    world: tuple[User, Events], pipeline_stack: Stack
) -> None:
    user, events = world
    bomb = bomb_png()
    assert len(bomb) < 8192
    file_id = await user.put(bomb, name="huge.png", content_type="image/png")
    assert (await events.wait_for(file_id)).status == Status.FILE_STATUS_READY
    steps = await user.steps(file_id)
    for name in ("thumbnail", "ocr"):
        assert steps[name].outcome == Outcome.STEP_OUTCOME_SKIPPED
        assert steps[name].details["reason"] == "IMAGE_TOO_LARGE"
        assert (steps[name].details["width"], steps[name].details["height"]) == ("50000", "50000")
    assert await user.derivatives(file_id) == []
    processor = pipeline_stack.process("processor")
    assert processor.running
    # Decoding it would have taken 7.5 GB.
    assert peak_rss_mib(processor.pid) < 400


def peak_rss_mib(pid: int | None) -> float:
    assert pid is not None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_two_workers_share_the_queue(
    world: tuple[User, Events], pipeline_stack: Stack, tmp_path: Path
) -> None:
    user, events = world
    first = pipeline_stack.process("processor")
    env = dict(first.env)
    env["FILESTORE_LISTEN"] = f"127.0.0.1:{free_port()}"
    env["FILESTORE_METRICS_PORT"] = str(free_port())  # the first one's port is taken
    second = ManagedProcess("processor-2", first.argv, log_path=tmp_path / "processor-2.log", env=env)
    second.start()
    try:
        await asyncio.wait_for(_serving(env["FILESTORE_LISTEN"]), 60)
        bodies = [text_png(f"Batch number {index} kiwi") for index in range(8)]
        file_ids = await asyncio.gather(
            *(user.put(body, name=f"page-{i}.png", content_type="image/png") for i, body in enumerate(bodies))
        )
        for file_id in file_ids:
            assert (await events.wait_for(file_id)).status == Status.FILE_STATUS_READY
        first_log = await asyncio.to_thread(first.log_path.read_text)
        second_log = await asyncio.to_thread(second.log_path.read_text)
        by_first = {f for f in file_ids if f'"file_id": "{f}"' in first_log}
        by_second = {f for f in file_ids if f'"file_id": "{f}"' in second_log}
        assert by_first, "the stack's processor took no event"
        assert by_second, "the second processor took no event"
        for file_id in file_ids:
            assert len(events.seen[file_id]) == 1
            assert [d.kind for d in await user.derivatives(file_id)] == ["thumbnail_256"]
    finally:
        await second.stop(10)


async def _serving(address: str) -> None:
    for _ in range(300):  # wait_for bounds it in time; this bounds it in count
        if (await probe_grpc_health(address))[0]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{address} never became SERVING")


async def test_a_worker_killed_mid_step_resumes_without_duplicates(
    world: tuple[User, Events], pipeline_stack: Stack
) -> None:
    user, events = world
    # A large page of text: OCR (the last step) takes seconds, after the thumbnail is registered.
    file_id = await user.put(
        text_png("Resilient heron " * 3, scale=3), name="big.png", content_type="image/png"
    )

    async def thumbnail_registered() -> None:
        # The pipeline publishes nothing between steps; its recorded results are the observable signal.
        for _ in range(2000):
            if "thumbnail" in await user.steps(file_id):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the thumbnail step never ran")

    await asyncio.wait_for(thumbnail_registered(), WAIT_S)
    await pipeline_stack.kill("processor")
    assert file_id not in events.seen  # killed before the end: READY must come from the redelivery
    await pipeline_stack.restart("processor")
    assert (await events.wait_for(file_id)).status == Status.FILE_STATUS_READY
    assert len(events.seen[file_id]) == 1
    steps = await user.steps(file_id)
    assert steps["ocr"].outcome == Outcome.STEP_OUTCOME_PASSED
    assert steps["thumbnail"].attempts == 1  # settled steps are not run again
    assert [d.kind for d in await user.derivatives(file_id)] == ["thumbnail_256"]
    found = await user.metadata.ListFiles(metadata_service_pb2.ListFilesRequest(text_contains="heron"))
    assert file_id in {file.id for file in found.files}


async def test_reprocessing_runs_every_step_again_and_replaces_derivatives(
    world: tuple[User, Events],
) -> None:
    user, events = world
    file_id = await user.put(text_png("Reprocessed walrus memo"), name="memo.png", content_type="image/png")
    assert (await events.wait_for(file_id)).status == Status.FILE_STATUS_READY
    first_run = await user.steps(file_id)
    answer = await user.processor.ReprocessFile(processor_service_pb2.ReprocessFileRequest(file_id=file_id))
    # Queued again: back to UPLOADED with no results, so that no step is skipped as already done.
    assert answer.status.status == Status.FILE_STATUS_UPLOADED
    assert list(answer.status.results) == []
    assert (await events.wait_for(file_id, nth=2)).status == Status.FILE_STATUS_READY
    second_run = await user.steps(file_id)
    assert set(second_run) == set(first_run)
    for step, result in second_run.items():
        assert result.outcome == first_run[step].outcome, step
        assert result.attempts == 1, step  # run afresh, not a retry of the first run
        assert result.update_time.ToDatetime() > first_run[step].update_time.ToDatetime(), step
    assert [d.kind for d in await user.derivatives(file_id)] == ["thumbnail_256"]
    found = await user.metadata.ListFiles(metadata_service_pb2.ListFilesRequest(text_contains="walrus"))
    assert file_id in {file.id for file in found.files}


async def test_a_quarantined_file_is_scanned_again(world: tuple[User, Events]) -> None:
    user, events = world
    file_id = await user.put(EICAR, name="again.txt", content_type="text/plain")
    assert (await events.wait_for(file_id)).status == Status.FILE_STATUS_QUARANTINED
    await user.processor.ReprocessFile(processor_service_pb2.ReprocessFileRequest(file_id=file_id))
    event = await events.wait_for(file_id, nth=2)
    assert (event.status, event.reason) == (Status.FILE_STATUS_QUARANTINED, "MALWARE_FOUND")


async def test_reprocessing_is_for_stored_files_and_their_owners(
    world: tuple[User, Events], pipeline_stack: Stack
) -> None:
    user, events = world
    file_id = await user.put(b"plain words\n", name="words.txt", content_type="text/plain")
    assert (await events.wait_for(file_id)).status == Status.FILE_STATUS_READY
    await user.metadata.CreateGrant(
        metadata_service_pb2.CreateGrantRequest(
            grant=resources_pb2.Grant(
                file_id=file_id, principal="bob", permission=resources_pb2.PERMISSION_READ
            )
        )
    )
    endpoints = pipeline_stack.endpoints
    tokens = {
        "bob": mint_token(endpoints.auth_secret, subject="bob", tenant="acme"),
        "eve": mint_token(endpoints.auth_secret, subject="alice", tenant="other"),
    }
    pending = await user.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(name="later.txt", size=5, content_type="text/plain")
    )

    async def refusal(token: str, target: str) -> tuple[grpc.StatusCode, str]:
        async with stack_channel(endpoints, endpoints.processor_addr, token=lambda: token) as channel:
            stub = processor_service_pb2_grpc.ProcessorServiceStub(channel)
            error = await rpc_error(
                stub.ReprocessFile(processor_service_pb2.ReprocessFileRequest(file_id=target))
            )
        return error.code, error.reason

    alice = mint_token(endpoints.auth_secret, subject="alice", tenant="acme")
    assert await refusal(tokens["bob"], file_id) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_FILE_OWNER")
    assert await refusal(tokens["eve"], file_id) == (grpc.StatusCode.NOT_FOUND, "FILE_NOT_FOUND")
    assert await refusal(alice, pending.file.id) == (grpc.StatusCode.FAILED_PRECONDITION, "FILE_NOT_STORED")
    assert await refusal(alice, "no-such-file") == (grpc.StatusCode.NOT_FOUND, "FILE_NOT_FOUND")
    # Nothing was queued: the file is still READY after its one run.
    status = await user.processor.GetProcessingStatus(
        processor_service_pb2.GetProcessingStatusRequest(file_id=file_id)
    )
    assert status.status == Status.FILE_STATUS_READY
    assert len(events.seen[file_id]) == 1


async def test_bytes_replaced_while_the_file_is_processed_are_quarantined(world: tuple[User, Events]) -> None:
    # A browser form can be submitted again until its policy expires. Here the second submission lands
    # once the integrity step has passed, while the slower steps (scan, thumbnail, OCR) still read.
    user, events = world
    # Two valid PNGs of one length (a PNG may carry trailing bytes): the policy pins the length.
    body, replacement = text_png("Original page"), text_png("Swapped page")
    length = max(len(body), len(replacement))
    body, replacement = body.ljust(length, b"\0"), replacement.ljust(length, b"\0")
    created = await user.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name="page.png",
            size=len(body),
            content_type="image/png",
            kind=resources_pb2.UPLOAD_KIND_POST_POLICY,
        )
    )
    form = created.upload.request

    async def submit(content: bytes) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            answer = await http.post(
                form.url, data=dict(form.form_fields), files={"file": ("page.png", content, "image/png")}
            )
        assert answer.status_code in (200, 201, 204), answer.text

    await submit(body)
    await user.upload.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id))
    file_id = created.file.id
    for _ in range(3000):  # at most a minute; the step usually passes within a second
        if "integrity" in await user.steps(file_id):
            break
        await asyncio.sleep(0.02)
    await submit(replacement)
    event = await events.wait_for(file_id)
    assert (event.status, event.reason) == (Status.FILE_STATUS_QUARANTINED, "CONTENT_CHANGED")
