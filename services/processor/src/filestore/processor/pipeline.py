"""The processing pipeline for one stored object. Every step is idempotent: an event may be
delivered again after a crash or a timeout, and the outcome must be the same."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from filestore.core import events
from filestore.core.clients import translated_errors
from filestore.core.errors import NotFound, Unavailable
from filestore.processor.settings import ProcessorSettings
from filestore.v1 import events_pb2, metadata_service_pb2, resources_pb2

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

log = structlog.get_logger("filestore.processor")

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
ORIGINALS_PREFIX = "originals/"


class NotYetUploaded(Exception):
    """The object arrived before its upload was completed: try again later."""


@dataclass(frozen=True, slots=True)
class Digest:
    sha256: str
    size: int


def file_ref(event: events_pb2.ObjectCreated) -> tuple[str, str] | None:
    """(tenant, file_id) of an event: from the event, else from an ``originals/{tenant}/{id}`` key.
    Objects elsewhere (derivatives, foreign keys) are not ours to process."""
    if event.file_id and event.tenant:
        return event.tenant, event.file_id
    if event.key.startswith(ORIGINALS_PREFIX):
        parts = event.key[len(ORIGINALS_PREFIX) :].split("/")
        if len(parts) == 2 and all(parts):
            return parts[0], parts[1]
    return None


class Pipeline:
    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        metadata: MetadataServiceAsyncStub,
        storage: S3Client,
        jetstream: JetStreamContext,
    ) -> None:
        self._settings = settings
        self._metadata = metadata
        self._storage = storage
        self._js = jetstream
        self._subjects = events.Subjects(settings.nats.subject_prefix)

    async def process(
        self, event: events_pb2.ObjectCreated, heartbeat: Callable[[], Awaitable[None]]
    ) -> None:
        ref = file_ref(event)
        if ref is None:
            log.info("event_ignored", key=event.key)
            return
        tenant, file_id = ref
        structlog.contextvars.bind_contextvars(file_id=file_id)
        file = await self._get_file(tenant, file_id)
        if file.status in TERMINAL:
            log.info("already_processed", status=Status.Name(file.status))
            return
        if file.status == Status.FILE_STATUS_PENDING:
            raise NotYetUploaded(file_id)
        if file.status == Status.FILE_STATUS_UPLOADED:
            file = await self._transition(tenant, file_id, Status.FILE_STATUS_PROCESSING)

        digest = await self._stream_digest(event.bucket or self._settings.s3.bucket, event.key, heartbeat)
        with translated_errors():
            file = await self._metadata.RecordVerifiedContent(
                metadata_service_pb2.RecordVerifiedContentRequest(
                    file_id=file_id, tenant=tenant, sha256=digest.sha256, size=digest.size
                )
            )
        passed = file.status != Status.FILE_STATUS_QUARANTINED
        await self._record(
            tenant,
            file_id,
            "integrity",
            Outcome.STEP_OUTCOME_PASSED if passed else Outcome.STEP_OUTCOME_FAILED,
            {"sha256": digest.sha256, "size": str(digest.size)},
        )
        if file.status == Status.FILE_STATUS_PROCESSING:
            file = await self._transition(tenant, file_id, Status.FILE_STATUS_READY)
        await self._announce(file, event)
        log.info("processed", status=Status.Name(file.status))

    async def fail(self, event: events_pb2.ObjectCreated, reason: str) -> None:
        """The event exhausted its deliveries: the file ends FAILED with the reason."""
        ref = file_ref(event)
        if ref is None:
            return
        tenant, file_id = ref
        try:
            file = await self._transition(tenant, file_id, Status.FILE_STATUS_FAILED, reason=reason)
        except NotFound:
            return
        await self._announce(file, event)

    async def _get_file(self, tenant: str, file_id: str) -> resources_pb2.File:
        with translated_errors():
            return await self._metadata.GetFile(
                metadata_service_pb2.GetFileRequest(file_id=file_id, tenant=tenant, include_deleted=True)
            )

    async def _transition(
        self, tenant: str, file_id: str, status: resources_pb2.FileStatus.ValueType, *, reason: str = ""
    ) -> resources_pb2.File:
        with translated_errors():
            return await self._metadata.TransitionFile(
                metadata_service_pb2.TransitionFileRequest(
                    file_id=file_id, tenant=tenant, status=status, reason=reason
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

    async def _stream_digest(self, bucket: str, key: str, heartbeat: Callable[[], Awaitable[None]]) -> Digest:
        """SHA-256 and size of the stored object, read in fixed-size chunks (memory does not grow
        with the object), with heartbeats so a long read is not redelivered to another worker."""
        chunk = self._settings.read_chunk_bytes

        def read() -> Digest:
            hasher = hashlib.sha256()
            size = 0
            body = self._storage.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                for part in body.iter_chunks(chunk):
                    hasher.update(part)
                    size += len(part)
            finally:
                body.close()
            return Digest(sha256=hasher.hexdigest(), size=size)

        reading = asyncio.ensure_future(asyncio.to_thread(read))
        interval = max(1.0, self._settings.ack_wait_s / 3)
        try:
            while True:
                done, _ = await asyncio.wait({reading}, timeout=interval)
                if done:
                    return reading.result()
                await heartbeat()
        except (ClientError, BotoCoreError) as error:
            raise Unavailable(
                f"cannot read {key} from storage: {error}", reason="STORAGE_UNAVAILABLE"
            ) from error
        finally:
            if not reading.done():
                reading.cancel()

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
