"""ProcessorService: the processing status of files, reprocessing, and the dead letters."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from filestore.core.auth import current_principal, require_service
from filestore.core.channels import translated_errors
from filestore.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    file_not_found,
)
from filestore.core.reasons import Reason
from filestore.processor.dead_letters import DEAD_LETTER_DELIVERIES, DEAD_LETTER_DETAIL, DEAD_LETTER_REASON
from filestore.processor.lifecycle import LifecycleJob
from filestore.processor.worker import MalformedEvent, parse_event
from filestore.server import events
from filestore.server.pagetokens import PageTokens, request_fingerprint
from filestore.server.settings import NatsSettings
from filestore.v1 import (
    events_pb2,
    metadata_service_pb2,
    processor_service_pb2,
    processor_service_pb2_grpc,
    resources_pb2,
)

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub


log = structlog.get_logger("filestore.processor")
Status = resources_pb2.FileStatus

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: How much of a malformed message a dead letter shows: enough to tell what it is, while a page of
#: 500 letters stays far below gRPC's 4 MiB message limit.
MAX_PAYLOAD_BYTES = 1024
#: Where a run of the pipeline ends; ReprocessFile takes a file from any of them back to UPLOADED.
OUTCOMES = frozenset({Status.FILE_STATUS_READY, Status.FILE_STATUS_QUARANTINED, Status.FILE_STATUS_FAILED})


class ProcessorServicer(processor_service_pb2_grpc.ProcessorServiceServicer):
    def __init__(
        self,
        *,
        metadata: MetadataServiceAsyncStub,
        jetstream: JetStreamContext,
        nats: NatsSettings,
        page_token_secret: str,
        lifecycle: LifecycleJob | None = None,
    ) -> None:
        """``lifecycle``: the job RestoreFile hands a restore to (None: RestoreFile is unavailable)."""
        self._metadata = metadata
        self._lifecycle = lifecycle
        self._js = jetstream
        self._stream = nats.stream
        self._subjects = events.Subjects(nats.subject_prefix)
        self._page_tokens = PageTokens(page_token_secret, purpose="ListDeadLetters")

    async def GetProcessingStatus(
        self,
        request: processor_service_pb2.GetProcessingStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> processor_service_pb2.ProcessingStatus:
        principal = current_principal()
        with translated_errors():
            # AuthorizeRead: only those who may read a file may see how its processing went.
            authorized = await self._metadata.AuthorizeRead(
                metadata_service_pb2.AuthorizeReadRequest(
                    file_id=request.file_id, tenant=principal.tenant, principal=principal.subject
                )
            )
            results = await self._metadata.ListProcessingResults(
                metadata_service_pb2.ListProcessingResultsRequest(
                    file_id=request.file_id, tenant=principal.tenant
                )
            )
        file = authorized.file
        return processor_service_pb2.ProcessingStatus(
            file_id=file.id, status=file.status, status_reason=file.status_reason, results=results.results
        )

    async def ReprocessFile(
        self, request: processor_service_pb2.ReprocessFileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> processor_service_pb2.ReprocessFileResponse:
        authorized = await self._authorize_reprocess(request)
        file = authorized.file
        if file.status == Status.FILE_STATUS_DELETED:
            raise file_not_found(request.file_id)
        if file.status == Status.FILE_STATUS_PENDING:
            raise FailedPrecondition(
                "the file's upload has not completed",
                reason=Reason.FILE_NOT_STORED,
                metadata={"file_id": file.id},
            )
        with translated_errors():
            if file.status in OUTCOMES:
                # Concurrent calls need no etag: the second finds the file UPLOADED (a no-op move) and
                # publishes under the same message id, which JetStream drops as a duplicate.
                file = await self._metadata.TransitionFile(
                    metadata_service_pb2.TransitionFileRequest(
                        file_id=file.id,
                        tenant=file.tenant,
                        status=Status.FILE_STATUS_UPLOADED,
                        request_id=request.request_id,
                    )
                )
            if file.status == Status.FILE_STATUS_UPLOADED:
                await self._queue(file, storage_key=authorized.storage_key)
            results = await self._metadata.ListProcessingResults(
                metadata_service_pb2.ListProcessingResultsRequest(file_id=file.id, tenant=file.tenant)
            )
        log.info("file_requeued", file_id=file.id, status=Status.Name(file.status))
        return processor_service_pb2.ReprocessFileResponse(
            status=processor_service_pb2.ProcessingStatus(
                file_id=file.id,
                status=file.status,
                status_reason=file.status_reason,
                results=results.results,
            )
        )

    async def _authorize_reprocess(
        self, request: processor_service_pb2.ReprocessFileRequest
    ) -> metadata_service_pb2.AuthorizeReadResponse:
        """The file and where its bytes are, if the caller is a service or the file's owner."""
        principal = current_principal()
        with translated_errors():
            if principal.is_service:
                file = await self._metadata.GetFile(
                    metadata_service_pb2.GetFileRequest(file_id=request.file_id, tenant=request.tenant)
                )
                reader, tenant = file.owner, file.tenant
            else:
                reader, tenant = principal.subject, principal.tenant
            authorized = await self._metadata.AuthorizeRead(
                metadata_service_pb2.AuthorizeReadRequest(
                    file_id=request.file_id, tenant=tenant, principal=reader
                )
            )
        if authorized.file.owner != reader:
            raise PermissionDenied(
                "only the file's owner may have it processed again",
                reason=Reason.NOT_FILE_OWNER,
                metadata={"file_id": request.file_id},
            )
        return authorized

    async def _queue(self, file: resources_pb2.File, *, storage_key: str) -> None:
        event = events_pb2.ObjectCreated(
            key=storage_key,
            size=file.size,
            file_id=file.id,
            tenant=file.tenant,
            source=events_pb2.EVENT_SOURCE_REPROCESS,
            event_time=Timestamp(seconds=int(time.time())),
        )
        try:
            # One message per version of the file: a retried call, or a second caller, is dropped as
            # a duplicate instead of running the pipeline twice.
            await events.publish(
                self._js, self._subjects.object_created, event, msg_id=f"reprocess:{file.id}:{file.etag}"
            )
        except Exception as error:
            raise Unavailable(
                "the file could not be queued; call again", reason=Reason.EVENT_PUBLISH_FAILED
            ) from error

    async def ListDeadLetters(
        self,
        request: processor_service_pb2.ListDeadLettersRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> processor_service_pb2.ListDeadLettersResponse:
        require_service()
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be 0..{MAX_PAGE_SIZE}", reason=Reason.INVALID_PAGE_SIZE)
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        fingerprint = request_fingerprint(request)
        sequence = 1
        if request.page_token:
            position = self._page_tokens.decode(request.page_token, fingerprint=fingerprint)
            sequence = int(position.get("s", "1"))
        letters: list[processor_service_pb2.DeadLetter] = []
        while len(letters) <= page_size:
            raw = await self._next_dead_letter(sequence)
            if raw is None:
                break
            letters.append(self._dead_letter(raw))
            sequence = (raw.seq or sequence) + 1
        token = ""
        if len(letters) > page_size:
            token = self._page_tokens.encode({"s": letters[page_size].id}, fingerprint=fingerprint)
            letters = letters[:page_size]
        return processor_service_pb2.ListDeadLettersResponse(dead_letters=letters, next_page_token=token)

    async def ReplayDeadLetter(
        self,
        request: processor_service_pb2.ReplayDeadLetterRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> processor_service_pb2.ReplayDeadLetterResponse:
        require_service()
        # Ids are stream sequences, unsigned 64-bit numbers in ASCII digits: str.isdigit alone takes
        # other scripts' digits, and JetStream answers a larger number as a bad request.
        given = request.dead_letter_id
        if not (given.isascii() and given.isdigit() and len(given) <= 20 and int(given) < 2**64):
            raise NotFound("no such dead letter", reason=Reason.DEAD_LETTER_NOT_FOUND)
        sequence = int(given)
        raw = await self._next_dead_letter(sequence)
        if raw is None or raw.seq != sequence:
            raise NotFound("no such dead letter", reason=Reason.DEAD_LETTER_NOT_FOUND)
        try:
            parse_event(raw.data or b"")
        except MalformedEvent as malformed:
            # Checked against this version's idea of an event, so the dead letter of an event from a
            # newer publisher is replayable once the processors are upgraded; garbage never is.
            raise FailedPrecondition(
                f"the dead letter is not a valid event ({malformed}); replayed, it would only come back",
                reason=Reason.DEAD_LETTER_MALFORMED,
                metadata={"dead_letter_id": request.dead_letter_id},
            ) from None
        original = (raw.subject or "").removeprefix(self._subjects.dead_letter(""))
        # A fresh message id: the original one may still sit in the duplicate window.
        await self._js.publish(
            original,
            raw.data or b"",
            headers={"Nats-Msg-Id": f"replay:{sequence}", "Content-Type": events.PROTOBUF_CONTENT_TYPE},
        )
        await self._js.delete_msg(self._stream, sequence)
        return processor_service_pb2.ReplayDeadLetterResponse()

    async def _next_dead_letter(self, sequence: int) -> RawStreamMsg | None:
        try:
            return await self._js.get_msg(
                self._stream, seq=sequence, subject=self._subjects.dead_letter(">"), next=True
            )
        except NotFoundError:
            return None

    def _dead_letter(self, raw: RawStreamMsg) -> processor_service_pb2.DeadLetter:
        headers = raw.headers or {}
        data = raw.data or b""
        created = Timestamp()
        if raw.time is not None:
            created.FromDatetime(raw.time)
        letter = processor_service_pb2.DeadLetter(
            id=str(raw.seq),
            subject=(raw.subject or "").removeprefix(self._subjects.dead_letter("")),
            reason=headers.get(DEAD_LETTER_REASON, ""),
            deliveries=int(headers.get(DEAD_LETTER_DELIVERIES, "0") or 0),
            create_time=created,
            detail=headers.get(DEAD_LETTER_DETAIL, ""),
        )
        try:
            letter.event.CopyFrom(parse_event(data))
        except MalformedEvent:
            # Bytes that are not an event: shown as they are, never as the partial event protobuf
            # would make of them.
            letter.payload = data[:MAX_PAYLOAD_BYTES]
            letter.payload_size = len(data)
        return letter

    async def RestoreFile(
        self, request: processor_service_pb2.RestoreFileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> resources_pb2.File:
        principal = current_principal()
        tenant = request.tenant if principal.is_service else principal.tenant
        with translated_errors():
            begun = await self._metadata.BeginRestore(
                metadata_service_pb2.BeginRestoreRequest(
                    file_id=request.file_id,
                    tenant=tenant,
                    principal="" if principal.is_service else principal.subject,
                )
            )
        if not begun.HasField("action"):
            return begun.file
        if self._lifecycle is None:
            raise Unavailable("restores are not configured here", reason=Reason.STORAGE_UNAVAILABLE)
        # The copy is a control call (server-side): the RPC waits for it, and answers the file readable.
        await self._lifecycle.perform(begun.action)
        with translated_errors():
            file: resources_pb2.File = await self._metadata.GetFile(
                metadata_service_pb2.GetFileRequest(file_id=request.file_id, tenant=begun.file.tenant)
            )
        return file
