"""The processing pipeline for one stored object. Every step is idempotent: an event may be
delivered again after a crash or a timeout, and the outcome must be the same.

Order: ``integrity`` (stream, SHA-256 and size) → ``sniff`` (libmagic on a Range read; the sniffed type
chooses the remaining steps) → ``scan`` (clamd INSTREAM) → ``thumbnail`` → ``ocr``. The *required* steps
(by default integrity, sniff and scan) gate READY: each must pass, or be skipped by policy. The others run
after READY is announced, so slow renderers never delay a file's availability; they record their outcome
and never change the file's state. A redelivered event resumes: steps that already passed are not run
again, derivatives are overwritten in place and registered once per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import io
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from PIL import Image

from filestore.core.channels import translated_errors
from filestore.core.errors import Aborted, NotFound, Unavailable
from filestore.core.keys import derivative_key, original_key
from filestore.core.reasons import Reason
from filestore.core.validation import MAX_EXTRACTED_TEXT_BYTES
from filestore.processor import media
from filestore.processor.pipeline_config import Step
from filestore.processor.scanner import ClamdScanner, Scanner
from filestore.processor.scratch import TooLarge, scratch_directory, spool
from filestore.processor.settings import ProcessorSettings
from filestore.server import events, metrics, tracing
from filestore.server.storage import ObjectHead
from filestore.v1 import events_pb2, metadata_service_pb2, resources_pb2

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

__all__ = ["Digest", "NotYetUploaded", "Pipeline", "PipelineStorage", "StepResult", "truncate_utf8"]

log = structlog.get_logger("filestore.processor")

T = TypeVar("T")
Heartbeat = Callable[[], Awaitable[None]]


class Stage(enum.Enum):
    """Which queue an event came from: the way to READY, or a READY file's optional steps."""

    GATE = "gate"
    ENRICH = "enrich"


Status = resources_pb2.FileStatus
Outcome = resources_pb2.StepOutcome
TERMINAL = frozenset(
    {
        Status.FILE_STATUS_READY,
        Status.FILE_STATUS_QUARANTINED,
        Status.FILE_STATUS_FAILED,
        Status.FILE_STATUS_DELETED,
    }
)
#: Events announced by storage itself (rather than by the broker or ReprocessFile).
STORAGE_SOURCES: Final = frozenset(
    {events_pb2.EVENT_SOURCE_SEAWEEDFS, events_pb2.EVENT_SOURCE_MINIO, events_pb2.EVENT_SOURCE_AWS_S3}
)
#: Outcomes a redelivery does not repeat; SKIPPED is "not applicable or refused by policy".
SETTLED: Final = frozenset({Outcome.STEP_OUTCOME_PASSED, Outcome.STEP_OUTCOME_SKIPPED})
OCR_DPI: Final = 300
THUMBNAIL_CONTENT_TYPE: Final = "image/webp"
#: What clamd (with AlertExceedsMax) answers when a limit stopped the scan.
SCAN_LIMIT_SIGNATURE: Final = "Heuristics.Limits.Exceeded"
#: How long the URL ffmpeg reads a video through stays valid.
TOOL_URL_TTL_S: Final = 900


class PipelineStorage(Protocol):
    """What the pipeline asks of storage (:class:`filestore.server.storage.ObjectStore` has it):
    reads of the object a run processes (a HEAD, one Range, whole-object streams with memory bounded
    by a chunk), a URL for the tools that read over HTTP, and derivative writes."""

    async def head(self, key: str) -> ObjectHead | None: ...
    async def read_range(self, key: str, *, start: int, length: int) -> bytes: ...
    def stream(self, key: str, *, chunk_bytes: int) -> Iterator[bytes]: ...
    def internal_get_url(self, key: str, *, expires_s: int) -> str: ...
    async def put(self, key: str, body: bytes, *, content_type: str) -> None: ...


class NotYetUploaded(Exception):
    """The object arrived before its upload was completed: try again later."""


@dataclass(frozen=True, slots=True)
class Digest:
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class StepResult:
    outcome: resources_pb2.StepOutcome.ValueType
    details: dict[str, str] = field(default_factory=dict)
    #: The file's end when this step decides it: (QUARANTINED or FAILED, reason).
    stop: tuple[resources_pb2.FileStatus.ValueType, str] | None = None


def passed(**details: str) -> StepResult:
    return StepResult(Outcome.STEP_OUTCOME_PASSED, details)


def skipped(reason: str, **details: str) -> StepResult:
    return StepResult(Outcome.STEP_OUTCOME_SKIPPED, {"reason": reason, **details})


def truncate_utf8(text: str, limit: int = MAX_EXTRACTED_TEXT_BYTES) -> str:
    """At most ``limit`` bytes of UTF-8, cut at a character boundary."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


@dataclass
class _Run:
    """One delivery of one event: where the object is, and the scratch files its steps share."""

    tenant: str
    file_id: str
    #: The object holding the file's bytes (see ``Pipeline._content_key``).
    key: str
    heartbeat: Heartbeat
    sniffed: str = ""
    #: The object's ETag when the run started reading it (see ``Pipeline.process``).
    etag: str = ""
    scratch: Path | None = None
    spooled: Path | None = None


class Pipeline:
    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        metadata: MetadataServiceAsyncStub,
        store: PipelineStorage,
        jetstream: JetStreamContext,
        scanner: Scanner | None = None,
    ) -> None:
        self._settings = settings
        self._config = settings.pipeline
        self._metadata = metadata
        self._store = store
        self._chunk_bytes = settings.read_chunk_bytes
        self._scanner: Scanner | None = scanner
        if scanner is None and self._config.clamd_address is not None:
            self._scanner = ClamdScanner(
                self._config.clamd_address,
                timeout_s=self._config.scan_timeout_s,
                frame_bytes=self._config.scan_chunk_bytes,
            )
        if self._scanner is None:
            log.warning("scanning_off", detail="FILESTORE_CLAMD_ADDR=none: files become READY unscanned")
        self._js = jetstream
        self._subjects = events.Subjects(settings.nats.subject_prefix)
        self._heartbeat_interval_s = max(1.0, settings.ack_wait_s / 3)

    # ---------------------------------------------------------------------------------- entry

    async def process(
        self,
        event: events_pb2.ObjectCreated,
        heartbeat: Heartbeat,
        *,
        redelivered: bool = False,
        stage: Stage = Stage.GATE,
    ) -> None:
        """Run one stage of the pipeline for the file the event names.

        GATE takes the file to READY, QUARANTINED or FAILED through the required steps, then queues
        a READY file's optional steps on ``files.file.enrich``; ENRICH runs those. Two queues, so a
        thumbnail or an OCR pass (seconds of CPU) never holds a slot another file needs to become
        READY.

        Two events can name the same upload (the bridge's and the broker's re-announcement), and two
        workers can take them at once. Moving the file UPLOADED -> PROCESSING under its etag is the
        claim: one worker wins; a first delivery that finds the file claimed leaves it to the winner.
        A redelivery is the winner's own event (the worker died), so it resumes the claimed file.

        A redelivery that finds the file already settled announces it again: the state change is
        committed before its event is published, so the delivery before may have died in between
        (a worker killed, metadata's answer lost, NATS down), and nothing else would ever publish it.
        The event's ``Nats-Msg-Id`` is per file and status, so JetStream drops the copy when the first
        publish did get through (redeliveries come within minutes, well inside its window). The
        enrichment is queued again for the same reason, under an id per file version.
        """
        ref = events.file_ref(event)
        if ref is None:
            log.info("event_ignored", key=event.key)
            return
        tenant, file_id = ref
        structlog.contextvars.bind_contextvars(file_id=file_id, stage=stage.value)
        file = await self._get_file(tenant, file_id)
        if stage is Stage.ENRICH:
            if file.status != Status.FILE_STATUS_READY:
                # Quarantined, reprocessed or deleted since it was queued: nothing to add to it.
                log.info("enrichment_skipped", status=Status.Name(file.status))
                return
            with contextlib.ExitStack() as cleanup:
                run = await self._run_for(event, tenant, file, heartbeat)
                run.scratch = cleanup.enter_context(scratch_directory())
                await self._enrich(run, file, await self._settled_steps(tenant, file_id))
            return
        if file.status in TERMINAL and file.status != Status.FILE_STATUS_READY:
            if redelivered:
                await self._announce(file, event)
            log.info("already_processed", status=Status.Name(file.status))
            return
        if file.status == Status.FILE_STATUS_PENDING:
            raise NotYetUploaded(file_id)
        if file.status == Status.FILE_STATUS_READY:
            if event.source in STORAGE_SOURCES and event.key == original_key(tenant, file_id):
                if file.deduplicated:
                    # Its bytes were verified to be content the tenant held, and it reads that copy:
                    # this object (the upload announced late, or a form submitted again) is none of
                    # the file's. Nothing serves it; the reconciler reports it as an orphan.
                    log.info("superseded_object_written", key=event.key)
                else:
                    file = await self._recheck(event, tenant, file, heartbeat)
                    if file.status != Status.FILE_STATUS_READY:
                        return
            if redelivered:
                await self._announce(file, event)
        else:
            if file.status == Status.FILE_STATUS_UPLOADED:
                claimed = await self._claim(tenant, file)
                if claimed is None:
                    log.info("claimed_elsewhere")
                    return
                file = claimed
            elif not redelivered:
                log.info("claimed_elsewhere")
                return
            with contextlib.ExitStack() as cleanup:
                run = await self._run_for(event, tenant, file, heartbeat)
                run.scratch = cleanup.enter_context(scratch_directory())
                # Each step reads the object anew. Storage's announcement of a replacement that lands
                # meanwhile finds the file claimed and is dropped, so compare the object before and
                # after instead: a change means the steps may have seen different bytes.
                run.etag = (await self._head(run)).etag
                file = await self._gate(run, file, await self._settled_steps(tenant, file_id))
                if file.status == Status.FILE_STATUS_READY and run.etag != (await self._head(run)).etag:
                    file = await self._recheck(event, tenant, file, heartbeat)
                    if file.status != Status.FILE_STATUS_READY:
                        return
            await self._announce(file, event)
            log.info("processed", status=Status.Name(file.status))
            if file.status != Status.FILE_STATUS_READY:
                return
        await self._queue_enrichment(file, event)

    async def _recheck(
        self, event: events_pb2.ObjectCreated, tenant: str, file: resources_pb2.File, heartbeat: Heartbeat
    ) -> resources_pb2.File:
        """Storage says a READY file's object was written: make sure its bytes are still the ones
        that were verified and scanned. Mostly they are (the announcement of the upload itself,
        arriving late); if not, the object was replaced after verification (a browser form may be
        submitted again until its policy expires), and the file is quarantined, which stops its
        downloads, rather than serving bytes nobody checked."""
        run = await self._run_for(event, tenant, file, heartbeat)
        digest = await self._blocking(run, self._stream_digest, run.key)
        if (digest.sha256, digest.size) == (file.sha256, file.size):
            log.info("content_unchanged")
            return file
        log.warning("content_changed", sha256=digest.sha256, size=digest.size, key=run.key)
        # Every file reading this object is quarantined, not only the one the event names: files
        # deduplicated onto it would otherwise go on serving the new, unchecked bytes.
        with translated_errors():
            quarantined = await self._metadata.QuarantineContent(
                metadata_service_pb2.QuarantineContentRequest(
                    tenant=tenant, storage_key=run.key, reason="CONTENT_CHANGED"
                )
            )
        for changed in quarantined.files:
            await self._announce(changed, event)
            if changed.id == file.id:
                file = changed
        if file.status == Status.FILE_STATUS_READY:
            # Quarantined meanwhile by another delivery's call: read what it left.
            file = await self._get_file(tenant, file.id)
        return file

    async def _run_for(
        self, event: events_pb2.ObjectCreated, tenant: str, file: resources_pb2.File, heartbeat: Heartbeat
    ) -> _Run:
        return _Run(
            tenant=tenant,
            file_id=file.id,
            key=await self._content_key(event.key, tenant, file),
            heartbeat=heartbeat,
            sniffed=file.sniffed_content_type,
        )

    async def _content_key(self, key: str, tenant: str, file: resources_pb2.File) -> str:
        """The object holding the file's bytes, given the object an event names.

        They are the same, except for a file deduplicated after verification: its own object
        (``originals/{tenant}/{id}``, which the upload's events name) was deleted then, and it reads
        the copy the tenant already held, which the catalogue knows.
        """
        if not file.deduplicated or key != original_key(tenant, file.id):
            return key
        with translated_errors():
            authorized = await self._metadata.AuthorizeRead(
                metadata_service_pb2.AuthorizeReadRequest(
                    file_id=file.id, tenant=tenant, principal=file.owner
                )
            )
        return authorized.storage_key

    async def _queue_enrichment(self, file: resources_pb2.File, cause: events_pb2.ObjectCreated) -> None:
        """Queue the optional steps of a READY file, if its type has any. The event queued names the
        object holding the file's bytes, so the enrichment reads that."""
        optional = [
            step
            for step in self._config.steps_for(file.sniffed_content_type)
            if step not in self._config.required
        ]
        if file.sniffed_content_type and not optional:
            return
        queued = events_pb2.ObjectCreated()
        queued.CopyFrom(cause)
        queued.key = await self._content_key(cause.key, file.tenant, file)
        # Per file version: a reprocessed file is enriched again, a redelivered gate is not twice.
        await events.publish(
            self._js, self._subjects.file_enrich, queued, msg_id=f"enrich:{file.id}:{file.etag}"
        )

    async def fail(self, event: events_pb2.ObjectCreated, reason: str) -> None:
        """The event exhausted its deliveries: the file ends FAILED with the reason (unless it already
        reached a terminal state, e.g. READY before an enrichment step kept failing, or is still PENDING)."""
        ref = events.file_ref(event)
        if ref is None:
            return
        tenant, file_id = ref
        try:
            file = await self._get_file(tenant, file_id)
            if file.status not in (Status.FILE_STATUS_UPLOADED, Status.FILE_STATUS_PROCESSING):
                return
            file = await self._transition(tenant, file_id, Status.FILE_STATUS_FAILED, reason=reason)
        except NotFound:
            return
        await self._announce(file, event)

    # ------------------------------------------------------------------------------ the steps

    async def _gate(self, run: _Run, file: resources_pb2.File, settled: set[str]) -> resources_pb2.File:
        """The required steps; answers the file READY, QUARANTINED or FAILED."""
        for step in (Step.INTEGRITY, Step.SNIFF):
            if step in settled and (step != Step.SNIFF or run.sniffed):
                continue
            file, result = await self._timed(run, step, file)
            if result.stop is not None:
                return await self._stop(run, file, result.stop)
        steps = self._config.steps_for(run.sniffed)
        for step in steps:
            if step in (Step.INTEGRITY, Step.SNIFF) or step not in self._config.required:
                continue
            if step in settled:
                continue
            file, result = await self._timed(run, step, file)
            if result.stop is not None:
                return await self._stop(run, file, result.stop)
            if result.outcome not in SETTLED:
                return await self._stop(run, file, (Status.FILE_STATUS_FAILED, f"{step.upper()}_FAILED"))
        return await self._transition(run.tenant, run.file_id, Status.FILE_STATUS_READY)

    async def _enrich(self, run: _Run, file: resources_pb2.File, settled: set[str]) -> None:
        for step in self._config.steps_for(run.sniffed or file.sniffed_content_type):
            if step in self._config.required or step in settled:
                continue
            await self._timed(run, step, file)

    async def _timed(
        self, run: _Run, step: Step, file: resources_pb2.File
    ) -> tuple[resources_pb2.File, StepResult]:
        started = time.monotonic()
        # A span per step, in the trace of the event; its duration (with the outcome) is also observed
        # in filestore_pipeline_step_duration_seconds, "error" when the step raised (to be retried).
        outcome = "error"
        try:
            with tracing.span(f"step {step.value}", attributes={"filestore.step": step.value}) as span:
                file, result = await self._run_step(run, step, file)
                await self._record(run.tenant, run.file_id, step, result.outcome, result.details)
                outcome = Outcome.Name(result.outcome).removeprefix("STEP_OUTCOME_").lower()
                if span is not None:
                    span.set_attribute("filestore.outcome", outcome)
        finally:
            elapsed = time.monotonic() - started
            metrics.PIPELINE_STEP_DURATION.labels(step.value, outcome).observe(elapsed)
        log.info(
            "step_done", step=step.value, outcome=Outcome.Name(result.outcome), ms=round(elapsed * 1000, 1)
        )
        return file, result

    async def _run_step(
        self, run: _Run, step: Step, file: resources_pb2.File
    ) -> tuple[resources_pb2.File, StepResult]:
        if step == Step.INTEGRITY:
            return await self._integrity(run, file)
        if step == Step.SNIFF:
            return file, await self._sniff(run, file)
        if step == Step.SCAN:
            return file, await self._scan(run, file)
        if step == Step.THUMBNAIL:
            return file, await self._thumbnail(run)
        return file, await self._ocr(run)

    async def _integrity(self, run: _Run, file: resources_pb2.File) -> tuple[resources_pb2.File, StepResult]:
        digest = await self._blocking(run, self._stream_digest, run.key)
        with translated_errors():
            file = await self._metadata.RecordVerifiedContent(
                metadata_service_pb2.RecordVerifiedContentRequest(
                    file_id=run.file_id, tenant=run.tenant, sha256=digest.sha256, size=digest.size
                )
            )
        details = {"sha256": digest.sha256, "size": str(digest.size)}
        if file.status == Status.FILE_STATUS_QUARANTINED:
            # The metadata service already quarantined it (CHECKSUM_MISMATCH); nothing left to do.
            return file, StepResult(
                Outcome.STEP_OUTCOME_FAILED, details, stop=(file.status, file.status_reason)
            )
        content_key = await self._content_key(run.key, run.tenant, file)
        if content_key != run.key:
            # The tenant held these bytes already: the file now shares that copy, and its own object
            # is being deleted. The remaining steps read the shared one; its ETag is their baseline.
            log.info("content_deduplicated", key=content_key)
            run.key = content_key
            run.etag = (await self._head(run)).etag
            details["deduplicated"] = "true"
        return file, passed(**details)

    def _stream_digest(self, key: str) -> Digest:
        hasher = hashlib.sha256()
        size = 0
        for chunk in self._store.stream(key, chunk_bytes=self._chunk_bytes):
            hasher.update(chunk)
            size += len(chunk)
        return Digest(sha256=hasher.hexdigest(), size=size)

    async def _sniff(self, run: _Run, file: resources_pb2.File) -> StepResult:
        head = await self._beating(
            run, self._store.read_range(run.key, start=0, length=self._config.sniff_bytes)
        )
        sniffed = media.sniff(head)
        run.sniffed = sniffed
        await self._record_facts(run, sniffed_content_type=sniffed)
        judged = media.judge_types(file.declared_content_type, sniffed)
        details = {
            "declared": file.declared_content_type,
            "sniffed": sniffed,
            "agrees": "true" if judged.agrees else "false",
        }
        if judged.disguised_executable:
            return StepResult(
                Outcome.STEP_OUTCOME_FAILED,
                details,
                stop=(Status.FILE_STATUS_QUARANTINED, "CONTENT_TYPE_MISMATCH"),
            )
        return passed(**details)

    async def _scan(self, run: _Run, file: resources_pb2.File) -> StepResult:
        if self._scanner is None:
            # The deployment says it has no scanner (FILESTORE_CLAMD_ADDR=none), as ffmpeg or
            # tesseract may be missing: the file's record says it was not scanned, and
            # ReprocessFile scans it once a scanner is configured.
            return skipped("TOOL_MISSING", detail="no virus scanner is configured: the file was not scanned")
        scanner = self._scanner
        if file.size > self._config.scan_max_bytes:
            # Fail closed: content the scanner cannot take is never served unscanned.
            return StepResult(
                Outcome.STEP_OUTCOME_SKIPPED,
                {"reason": "TOO_LARGE_TO_SCAN", "limit": str(self._config.scan_max_bytes)},
                stop=(Status.FILE_STATUS_FAILED, "TOO_LARGE_TO_SCAN"),
            )
        chunks = self._store.stream(run.key, chunk_bytes=self._chunk_bytes)
        verdict = await self._blocking(run, scanner.scan, chunks)
        if verdict.signature.startswith(SCAN_LIMIT_SIGNATURE):
            # clamd stopped at one of its limits: the content was not fully scanned, which is no
            # verdict on it. Fail closed, as for objects over scan_max_bytes.
            return StepResult(
                Outcome.STEP_OUTCOME_SKIPPED,
                {"reason": "TOO_LARGE_TO_SCAN", "limit": verdict.signature},
                stop=(Status.FILE_STATUS_FAILED, "TOO_LARGE_TO_SCAN"),
            )
        if not verdict.clean:
            log.warning("malware_found", signature=verdict.signature)
            return StepResult(
                Outcome.STEP_OUTCOME_FAILED,
                {"signature": verdict.signature, "scanner": "clamav"},
                stop=(Status.FILE_STATUS_QUARANTINED, "MALWARE_FOUND"),
            )
        return passed(scanner="clamav")

    async def _thumbnail(self, run: _Run) -> StepResult:
        try:
            if run.sniffed.startswith("video/"):
                url = self._store.internal_get_url(run.key, expires_s=TOOL_URL_TTL_S)
                frame = await self._beating(
                    run, media.video_frame(url, timeout_s=self._config.tool_timeout_s)
                )
                made = await self._blocking(run, self._thumbnails_of_bytes, frame)
            else:
                path = await self._spooled(run)
                made = await self._blocking(run, self._thumbnails_of_file, path, run.sniffed)
        except TooLarge as error:
            return skipped("OBJECT_TOO_LARGE", size=str(error.size), limit=str(error.limit))
        except media.ImageTooLarge as error:
            return skipped(
                "IMAGE_TOO_LARGE", width=str(error.width), height=str(error.height), limit=str(error.limit)
            )
        except media.ToolMissing as error:
            return skipped("TOOL_MISSING", detail=str(error))
        except media.ToolFailed as error:
            return StepResult(
                Outcome.STEP_OUTCOME_FAILED, {"reason": "UNREADABLE", "detail": str(error)[:500]}
            )
        kinds = []
        for size, data in sorted(made.items()):
            kind = f"thumbnail_{size}"
            await self._write_derivative(run, kind, data, THUMBNAIL_CONTENT_TYPE)
            kinds.append(kind)
        return passed(derivatives=",".join(kinds))

    def _thumbnails_of_file(self, path: Path, sniffed: str) -> dict[int, bytes]:
        sizes = self._config.thumbnail_sizes
        max_pixels = self._config.max_image_pixels
        if sniffed == "application/pdf":
            with media.pdf_first_page(path, max_pixels=max_pixels, dpi=96) as page:
                return media.thumbnails_webp(page, sizes)
        with media.open_image(path, max_pixels=max_pixels) as image:
            return media.thumbnails_webp(image, sizes)

    def _thumbnails_of_bytes(self, data: bytes) -> dict[int, bytes]:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > self._config.max_image_pixels:
                raise media.ImageTooLarge(width, height, self._config.max_image_pixels)
            return media.thumbnails_webp(image, self._config.thumbnail_sizes)

    async def _ocr(self, run: _Run) -> StepResult:
        try:
            path = await self._spooled(run)
            source = "ocr"
            if run.sniffed == "application/pdf":
                text = await self._blocking(run, media.pdf_text, path)
                if text:
                    source = "text_layer"
                else:
                    image_path = await self._blocking(run, self._pdf_page_png, path)
                    text = await self._beating(run, self._tesseract(image_path))
            else:
                image_path = await self._blocking(run, self._ocr_input, path)
                text = await self._beating(run, self._tesseract(image_path))
        except TooLarge as error:
            return skipped("OBJECT_TOO_LARGE", size=str(error.size), limit=str(error.limit))
        except media.ImageTooLarge as error:
            return skipped(
                "IMAGE_TOO_LARGE", width=str(error.width), height=str(error.height), limit=str(error.limit)
            )
        except media.ToolMissing as error:
            return skipped("TOOL_MISSING", detail=str(error))
        except media.ToolFailed as error:
            return StepResult(
                Outcome.STEP_OUTCOME_FAILED, {"reason": "UNREADABLE", "detail": str(error)[:500]}
            )
        stored = truncate_utf8(text)
        if stored:
            await self._record_facts(run, extracted_text=stored)
        return passed(source=source, chars=str(len(stored)), truncated="true" if stored != text else "false")

    async def _tesseract(self, image_path: Path) -> str:
        return await media.ocr(
            image_path, languages=self._config.ocr_languages, timeout_s=self._config.tool_timeout_s
        )

    def _ocr_input(self, path: Path) -> Path:
        """An image tesseract reads, after the pixel guard: the original when Leptonica reads its format
        reliably, else a PNG of its first frame."""
        with media.open_image(path, max_pixels=self._config.max_image_pixels) as image:
            if image.format in ("PNG", "JPEG", "TIFF"):
                return path
            target = path.with_name("ocr.png")
            image.convert("RGB").save(target, format="PNG")
            return target

    def _pdf_page_png(self, path: Path) -> Path:
        target = path.with_name("page1.png")
        with media.pdf_first_page(path, max_pixels=self._config.max_image_pixels, dpi=OCR_DPI) as page:
            page.save(target, format="PNG")
        return target

    async def _spooled(self, run: _Run) -> Path:
        """The original in the run's scratch directory (bounded by max_render_bytes), once per run."""
        if run.spooled is None:
            assert run.scratch is not None
            size = (await self._head(run)).size
            if size > self._config.max_render_bytes:
                raise TooLarge(size, self._config.max_render_bytes)
            chunks = self._store.stream(run.key, chunk_bytes=self._chunk_bytes)
            run.spooled = await self._blocking(run, spool, chunks, run.scratch / "original")
        return run.spooled

    async def _write_derivative(self, run: _Run, kind: str, data: bytes, content_type: str) -> None:
        """Write first, then register: a crash in between leaves an object that the next delivery
        overwrites, never a record pointing at nothing. Re-registering a kind replaces it."""
        key = derivative_key(run.tenant, run.file_id, kind)
        await self._beating(run, self._store.put(key, data, content_type=content_type))
        with translated_errors():
            derivative = await self._metadata.CreateDerivative(
                metadata_service_pb2.CreateDerivativeRequest(
                    tenant=run.tenant,
                    derivative=resources_pb2.Derivative(
                        file_id=run.file_id, kind=kind, size=len(data), content_type=content_type
                    ),
                )
            )
        if derivative.storage_key != key:
            log.warning("derivative_key_differs", expected=key, registered=derivative.storage_key)

    # ---------------------------------------------------------------------------- plumbing

    async def _beating(self, run: _Run, work: Awaitable[T]) -> T:
        """Await ``work`` while telling JetStream every ack_wait/3 that the event is in progress, so a
        long step is not redelivered to another worker while this one is busy."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._heartbeat_interval_s)
                if done:
                    return task.result()
                await run.heartbeat()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _head(self, run: _Run) -> ObjectHead:
        """The HEAD of the object the run reads. It must be there: a missing one is retried and then
        dead-lettered, like any read storage refuses."""
        head = await self._beating(run, self._store.head(run.key))
        if head is None:
            raise Unavailable(f"{run.key} is not in storage", reason=Reason.STORAGE_UNAVAILABLE)
        return head

    async def _blocking(self, run: _Run, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await self._beating(run, asyncio.to_thread(fn, *args, **kwargs))

    async def _stop(
        self, run: _Run, file: resources_pb2.File, stop: tuple[resources_pb2.FileStatus.ValueType, str]
    ) -> resources_pb2.File:
        status, reason = stop
        if file.status == status:
            return file
        return await self._transition(run.tenant, run.file_id, status, reason=reason)

    async def _settled_steps(self, tenant: str, file_id: str) -> set[str]:
        with translated_errors():
            listed = await self._metadata.ListProcessingResults(
                metadata_service_pb2.ListProcessingResultsRequest(file_id=file_id, tenant=tenant)
            )
        return {result.step for result in listed.results if result.outcome in SETTLED}

    async def _record_facts(
        self, run: _Run, *, sniffed_content_type: str = "", extracted_text: str = ""
    ) -> None:
        with translated_errors():
            await self._metadata.RecordFileFacts(
                metadata_service_pb2.RecordFileFactsRequest(
                    file_id=run.file_id,
                    tenant=run.tenant,
                    sniffed_content_type=sniffed_content_type,
                    extracted_text=extracted_text,
                )
            )

    async def _get_file(self, tenant: str, file_id: str) -> resources_pb2.File:
        with translated_errors():
            return await self._metadata.GetFile(
                metadata_service_pb2.GetFileRequest(file_id=file_id, tenant=tenant, include_deleted=True)
            )

    async def _claim(self, tenant: str, file: resources_pb2.File) -> resources_pb2.File | None:
        """The file moved to PROCESSING by this worker, or None when another worker got there first."""
        while file.status == Status.FILE_STATUS_UPLOADED:
            try:
                return await self._transition(tenant, file.id, Status.FILE_STATUS_PROCESSING, etag=file.etag)
            except Aborted as error:
                if error.reason != Reason.ETAG_MISMATCH:
                    raise
            # Changed since it was read: claimed by another worker, or an UPLOADED file edited
            # (renamed, relabelled), which is worth another try.
            file = await self._get_file(tenant, file.id)
        return None

    async def _transition(
        self,
        tenant: str,
        file_id: str,
        status: resources_pb2.FileStatus.ValueType,
        *,
        reason: str = "",
        etag: str = "",
    ) -> resources_pb2.File:
        with translated_errors():
            return await self._metadata.TransitionFile(
                metadata_service_pb2.TransitionFileRequest(
                    file_id=file_id, tenant=tenant, status=status, reason=reason, etag=etag
                )
            )

    async def _record(
        self,
        tenant: str,
        file_id: str,
        step: str,
        outcome: resources_pb2.StepOutcome.ValueType,
        details: dict[str, str],
    ) -> None:
        with translated_errors():
            await self._metadata.RecordProcessingResult(
                metadata_service_pb2.RecordProcessingResultRequest(
                    tenant=tenant,
                    result=resources_pb2.ProcessingResult(
                        file_id=file_id, step=step, outcome=outcome, details=details
                    ),
                )
            )

    async def _announce(self, file: resources_pb2.File, cause: events_pb2.ObjectCreated) -> None:
        if file.status not in TERMINAL or file.status == Status.FILE_STATUS_DELETED:
            return
        now = Timestamp()
        now.FromDatetime(datetime.now(UTC))
        event = events_pb2.FileStatusChanged(
            file_id=file.id,
            tenant=file.tenant,
            status=file.status,
            reason=file.status_reason,
            event_time=now,
            trace=cause.trace,
        )
        await events.publish(
            self._js,
            self._subjects.file_ready,
            event,
            msg_id=f"{file.id}:{Status.Name(file.status)}",
        )
