"""The processing pipeline for one stored object. Every step is idempotent: an event may be
delivered again after a crash or a timeout, and the outcome must be the same.

Order: ``integrity`` (stream, SHA-256 and size) → ``sniff`` (libmagic on a Range read; the sniffed type
chooses the remaining steps) → ``scan`` (clamd INSTREAM) → ``thumbnail`` → ``ocr`` (one module each in
:mod:`filestore.processor.steps`). The *required* steps (by default integrity, sniff and scan) gate
READY: each must pass, or be skipped by policy. The others run after READY is announced, so slow
renderers never delay a file's availability; they record their outcome and never change the file's
state. A redelivered event resumes: steps that already passed are not run again, derivatives are
overwritten in place and registered once per kind.

This module orchestrates; the metadata service is reached only through
:class:`filestore.processor.catalogue.Catalogue`: a required-path file costs three calls from claim to
READY (the claim; integrity with its verified digest, which may point the file at content its tenant
already held, so the steps after it read that; the other required steps with the state they imply).
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from filestore.core.errors import FailedPrecondition, NotFound
from filestore.core.keys import original_key
from filestore.core.reasons import Reason
from filestore.processor.catalogue import Catalogue, Started
from filestore.processor.pipeline_config import StepName
from filestore.processor.replication import Replicator
from filestore.processor.scanner import ClamdScanner, Scanner
from filestore.processor.scratch import scratch_directory
from filestore.processor.settings import ProcessorSettings
from filestore.processor.steps import Heartbeat, PipelineStorage, Run, Step, StepOutcome, all_steps
from filestore.server import events, metrics, tracing
from filestore.server.storage import DEFAULT_STORE
from filestore.v1 import events_pb2, resources_pb2

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

__all__ = ["NotYetUploaded", "Pipeline", "Stage"]

log = structlog.get_logger("filestore.processor")


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


class NotYetUploaded(Exception):
    """The object arrived before its upload was completed: try again later."""


class Pipeline:
    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        metadata: MetadataServiceAsyncStub,
        store: PipelineStorage,
        jetstream: JetStreamContext,
        scanner: Scanner | None = None,
        stores: Mapping[str, PipelineStorage] | None = None,
        replicator: Replicator | None = None,
    ) -> None:
        """``store`` is the store named ``default``; ``stores`` every store by name (that one
        included): a file is read, and its derivatives written, in the store the catalogue records."""
        self._settings = settings
        self._config = settings.pipeline
        self._catalogue = Catalogue(metadata)
        self._stores: dict[str, PipelineStorage] = dict(stores) if stores else {DEFAULT_STORE: store}
        self._replicator = replicator
        if scanner is None and self._config.clamd_address is not None:
            scanner = ClamdScanner(
                self._config.clamd_address,
                timeout_s=self._config.scan_timeout_s,
                frame_bytes=self._config.scan_chunk_bytes,
            )
        if scanner is None:
            log.warning("scanning_off", detail="FILESTORE_CLAMD_ADDR=none: files become READY unscanned")
        self._steps = all_steps(self._config, scanner=scanner)
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
        workers can take them at once. Moving the file UPLOADED -> PROCESSING (StartProcessing) is the
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
        if stage is Stage.ENRICH:
            await self._enrich(event, await self._catalogue.start(tenant, file_id, claim=False), heartbeat)
            return
        started = await self._catalogue.start(tenant, file_id, claim=True)
        file = started.file
        key = _content_key(event.key, started)
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
                    file = await self._recheck(event, file, key, heartbeat)
                    if file.status != Status.FILE_STATUS_READY:
                        return
            if redelivered:
                await self._announce(file, event)
        else:
            if not started.claimed and not redelivered:
                log.info("claimed_elsewhere")
                return
            with contextlib.ExitStack() as cleanup:
                run = self._run(file, key, heartbeat)
                run.scratch = cleanup.enter_context(scratch_directory())
                # Each step reads the object anew. Storage's announcement of a replacement that lands
                # meanwhile finds the file claimed and is dropped, so compare the object before and
                # after instead: a change means the steps may have seen different bytes.
                run.etag = (await run.head()).etag
                file = await self._gate(run, started.settled)
                key = run.key
                if file.status == Status.FILE_STATUS_READY and run.etag != (await run.head()).etag:
                    file = await self._recheck(event, file, key, heartbeat)
                    if file.status != Status.FILE_STATUS_READY:
                        return
            await self._announce(file, event)
            log.info("processed", status=Status.Name(file.status))
            if file.status != Status.FILE_STATUS_READY:
                return
        await self._queue_enrichment(file, event, key)

    async def fail(self, event: events_pb2.ObjectCreated, reason: str) -> None:
        """The event exhausted its deliveries: the file ends FAILED with the reason (unless it already
        reached a terminal state, e.g. READY before an enrichment step kept failing, or is still PENDING)."""
        ref = events.file_ref(event)
        if ref is None:
            return
        tenant, file_id = ref
        try:
            file = (await self._catalogue.start(tenant, file_id, claim=False)).file
            if file.status not in (Status.FILE_STATUS_UPLOADED, Status.FILE_STATUS_PROCESSING):
                return
            file = (
                await self._catalogue.record(file, (), conclusion=(Status.FILE_STATUS_FAILED, reason))
            ).file
        except NotFound:
            return
        await self._announce(file, event)

    # ------------------------------------------------------------------------------ the stages

    async def _gate(self, run: Run, settled: frozenset[str]) -> resources_pb2.File:
        """The required steps; answers the file READY, QUARANTINED or FAILED.

        Integrity is recorded on its own: the digest it verified may point the file at a copy its
        tenant already held, and the steps after it read that copy. The rest are recorded together
        with the state they imply.
        """
        file = run.file
        if StepName.INTEGRITY not in settled:
            integrity = self._steps[StepName.INTEGRITY]
            outcome = await self._timed(run, integrity)
            recorded = await self._catalogue.record(
                file, [(integrity.name, outcome)], conclusion=outcome.stop
            )
            file = run.file = recorded.file
            if outcome.stop is not None or file.status != Status.FILE_STATUS_PROCESSING:
                return file
            if recorded.content_key != run.key:
                # The tenant held these bytes already: the file now shares that copy, and its own
                # object is being deleted. The remaining steps read the shared one; its ETag is their
                # baseline.
                log.info("content_deduplicated", key=recorded.content_key)
                run.key = recorded.content_key
                run.etag = (await run.head()).etag
        held: list[tuple[StepName, StepOutcome]] = []
        conclusion: tuple[Status.ValueType, str] = (Status.FILE_STATUS_READY, "")
        for step in self._required_after_integrity(run, settled):
            outcome = await self._timed(run, step)
            held.append((step.name, outcome))
            if outcome.stop is not None:
                conclusion = outcome.stop
                break
            if not outcome.settled:
                conclusion = (Status.FILE_STATUS_FAILED, f"{step.name.upper()}_FAILED")
                break
            if outcome.derivatives:
                # A render required for READY (a deployment may require thumbnails): its derivatives
                # are registered right after they were written, with the outcomes held before, so a
                # redelivery neither renders nor scans again.
                file = run.file = (await self._catalogue.record(file, held)).file
                held = []
        return (await self._catalogue.record(file, held, conclusion=conclusion)).file

    def _required_after_integrity(self, run: Run, settled: frozenset[str]) -> Iterator[Step]:
        """Sniff (again when its finding was lost), then the required steps its type calls for, in
        order. A generator: the type is known only once sniff ran, before the next step is chosen."""
        if StepName.SNIFF not in settled or not run.sniffed:
            yield self._steps[StepName.SNIFF]
        for step in self._steps.values():
            if step.name in (StepName.INTEGRITY, StepName.SNIFF) or step.name in settled:
                continue
            if step.name in self._config.required and step.applies(run.sniffed):
                yield step

    async def _enrich(self, event: events_pb2.ObjectCreated, started: Started, heartbeat: Heartbeat) -> None:
        file = started.file
        if file.status != Status.FILE_STATUS_READY:
            # Quarantined, reprocessed or deleted since it was queued: nothing to add to it.
            log.info("enrichment_skipped", status=Status.Name(file.status))
            return
        with contextlib.ExitStack() as cleanup:
            run = self._run(file, _content_key(event.key, started), heartbeat)
            if self._replicator is not None:
                # First: a copy in another region matters more than a thumbnail, and a failed copy
                # is retried with the event (the steps already settled are not run again).
                await run.beating(self._replicator.replicate(file, run.key))
            run.scratch = cleanup.enter_context(scratch_directory())
            for step in self._steps.values():
                if step.name in self._config.required or step.name in started.settled:
                    continue
                if not step.applies(run.sniffed):
                    continue
                outcome = await self._timed(run, step)
                recorded = await self._catalogue.record(file, [(step.name, outcome)])
                for derivative in recorded.derivatives:
                    log.info("derivative_registered", kind=derivative.kind, key=derivative.storage_key)

    async def _recheck(
        self, event: events_pb2.ObjectCreated, file: resources_pb2.File, key: str, heartbeat: Heartbeat
    ) -> resources_pb2.File:
        """Storage says a READY file's object was written: make sure its bytes are still the ones
        that were verified and scanned. Mostly they are (the announcement of the upload itself,
        arriving late); if not, the object was replaced after verification (a browser form may be
        submitted again until its policy expires), and the file is quarantined, which stops its
        downloads, rather than serving bytes nobody checked."""
        digest = await self._run(file, key, heartbeat).digest()
        if (digest.sha256, digest.size) == (file.sha256, file.size):
            log.info("content_unchanged")
            return file
        log.warning("content_changed", sha256=digest.sha256, size=digest.size, key=key)
        # Every file reading this object is quarantined, not only the one the event names: files
        # deduplicated onto it would otherwise go on serving the new, unchecked bytes.
        for changed in await self._catalogue.quarantine_content(file.tenant, key, "CONTENT_CHANGED"):
            await self._announce(changed, event)
            if changed.id == file.id:
                file = changed
        if file.status == Status.FILE_STATUS_READY:
            # Quarantined meanwhile by another delivery's call: read what it left.
            file = (await self._catalogue.start(file.tenant, file.id, claim=False)).file
        return file

    # ---------------------------------------------------------------------------- plumbing

    def _store_of(self, file: resources_pb2.File) -> PipelineStorage:
        """Where the file's original is (and so its derivatives go): the store the catalogue records."""
        store = self._stores.get(file.store or DEFAULT_STORE)
        if store is None:
            raise FailedPrecondition(
                f"store {file.store!r} is not configured here",
                reason=Reason.UNKNOWN_STORE,
                metadata={"store": file.store},
            )
        return store

    def _run(self, file: resources_pb2.File, key: str, heartbeat: Heartbeat) -> Run:
        return Run(
            file=file,
            key=key,
            heartbeat=heartbeat,
            store=self._store_of(file),
            chunk_bytes=self._settings.read_chunk_bytes,
            heartbeat_interval_s=self._heartbeat_interval_s,
            sniffed=file.sniffed_content_type,
        )

    async def _timed(self, run: Run, step: Step) -> StepOutcome:
        name = step.name.value
        started = time.monotonic()
        # A span per step, in the trace of the event; its duration (with the outcome) is also observed
        # in filestore_pipeline_step_duration_seconds, "error" when the step raised (to be retried).
        label = "error"
        try:
            with tracing.span(f"step {name}", attributes={"filestore.step": name}) as span:
                outcome = await step.run(run)
                label = Outcome.Name(outcome.outcome).removeprefix("STEP_OUTCOME_").lower()
                if span is not None:
                    span.set_attribute("filestore.outcome", label)
        finally:
            elapsed = time.monotonic() - started
            metrics.PIPELINE_STEP_DURATION.labels(name, label).observe(elapsed)
        log.info("step_done", step=name, outcome=Outcome.Name(outcome.outcome), ms=round(elapsed * 1000, 1))
        return outcome

    async def _queue_enrichment(
        self, file: resources_pb2.File, cause: events_pb2.ObjectCreated, key: str
    ) -> None:
        """Queue the optional steps (and replication) of a READY file, if it has any. The event queued
        names the object holding the file's bytes (``key``), so the enrichment reads that."""
        optional = [
            step
            for step in self._config.steps_for(file.sniffed_content_type)
            if step not in self._config.required
        ]
        # Replication runs in the enrichment stage too: with several stores every READY file goes there.
        replicates = self._replicator is not None and self._replicator.has_targets
        if file.sniffed_content_type and not optional and not replicates:
            return
        queued = events_pb2.ObjectCreated()
        queued.CopyFrom(cause)
        queued.key = key
        # Per file version: a reprocessed file is enriched again, a redelivered gate is not twice.
        await events.publish(
            self._js, self._subjects.file_enrich, queued, msg_id=f"enrich:{file.id}:{file.etag}"
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


def _content_key(key: str, started: Started) -> str:
    """The object holding the file's bytes, given the object an event names.

    They are the same, except for a file deduplicated after verification: its own object
    (``originals/{tenant}/{id}``, which the upload's events name) was deleted then, and it reads
    the copy the tenant already held, which the catalogue knows.
    """
    file = started.file
    if not file.deduplicated or key != original_key(file.tenant, file.id):
        return key
    return started.content_key
