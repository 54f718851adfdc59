"""UploadService: hands out presigned requests and checks with storage what arrived.

The broker never touches file content: it signs requests, asks storage for metadata (HEAD), and
records state through the metadata service.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from botocore.exceptions import ClientError
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from filestore.core import events
from filestore.core.auth import Principal, current_principal
from filestore.core.clients import translated_errors
from filestore.core.errors import FailedPrecondition, NotFound, Unavailable, Unimplemented
from filestore.upload import validation
from filestore.upload.settings import UploadSettings
from filestore.v1 import (
    events_pb2,
    metadata_service_pb2,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

log = structlog.get_logger("filestore.upload")

Kind = resources_pb2.UploadKind
State = resources_pb2.UploadState


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class UploadServicer(upload_service_pb2_grpc.UploadServiceServicer):
    def __init__(
        self,
        settings: UploadSettings,
        *,
        metadata: MetadataServiceAsyncStub,
        storage: S3Client,
        presigner: S3Client,
        jetstream: JetStreamContext,
    ) -> None:
        self._settings = settings
        self._metadata = metadata
        self._storage = storage
        self._presigner = presigner
        self._js = jetstream
        self._subjects = events.Subjects(settings.nats.subject_prefix)

    async def CreateUpload(
        self, request: upload_service_pb2.CreateUploadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> upload_service_pb2.CreateUploadResponse:
        principal = current_principal()
        name = validation.clean_name(request.name)
        validation.check_size(request.size, maximum=self._settings.max_upload_bytes)
        content_type = validation.check_content_type(
            request.content_type, allowed=self._settings.allowed_content_types
        )
        sha256 = validation.check_sha256(request.sha256)
        if request.kind not in (Kind.UPLOAD_KIND_UNSPECIFIED, Kind.UPLOAD_KIND_SINGLE):
            raise Unimplemented(
                "only single PUT uploads are built in this release", reason="UPLOAD_KIND_NOT_IMPLEMENTED"
            )
        expires = datetime.now(UTC) + timedelta(seconds=self._settings.upload_ttl_s)
        begin = metadata_service_pb2.BeginUploadRequest(
            file=resources_pb2.File(
                tenant=principal.tenant,
                owner=principal.subject,
                name=name,
                declared_content_type=content_type,
                size=request.size,
                sha256=sha256,
                labels=dict(request.labels),
            ),
            kind=Kind.UPLOAD_KIND_SINGLE,
            expire_time=_timestamp(expires),
            request_id=request.request_id,
        )
        with translated_errors():
            began = await self._metadata.BeginUpload(begin)
        log.info("upload_created", upload_id=began.upload.id, file_id=began.file.id, size=request.size)
        return upload_service_pb2.CreateUploadResponse(
            upload=self._client_view(began.upload), file=began.file
        )

    async def GetUpload(
        self, request: upload_service_pb2.GetUploadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> resources_pb2.Upload:
        record = await self._own_record(request.upload_id, current_principal())
        return self._client_view(record)

    async def CompleteUpload(
        self, request: upload_service_pb2.CompleteUploadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> upload_service_pb2.CompleteUploadResponse:
        record = await self._own_record(request.upload_id, current_principal())
        if record.state in (State.UPLOAD_STATE_ABORTED, State.UPLOAD_STATE_EXPIRED):
            reason = "UPLOAD_ABORTED" if record.state == State.UPLOAD_STATE_ABORTED else "UPLOAD_EXPIRED"
            raise FailedPrecondition("the upload has ended and cannot be completed", reason=reason)
        head = await self._head_object(record.storage_key)
        if head is None:
            raise FailedPrecondition("storage holds no object for this upload yet", reason="OBJECT_MISSING")
        size = int(head["ContentLength"])
        if size != record.size:
            raise FailedPrecondition(
                f"storage holds {size} bytes, {record.size} were declared", reason="SIZE_MISMATCH"
            )
        self._check_stored_checksum(record, head)
        with translated_errors():
            completed = await self._metadata.CompleteUploadRecord(
                metadata_service_pb2.CompleteUploadRecordRequest(
                    upload_id=record.id, tenant=record.tenant, size=size, request_id=request.request_id
                )
            )
        # Published on every completion, repeats included: a completion whose publish failed is
        # repaired by completing again, and JetStream drops the duplicates by Nats-Msg-Id.
        await self._publish_object_created(record, etag=str(head["ETag"]).strip('"'), size=size)
        log.info("upload_completed", upload_id=record.id, file_id=record.file_id, size=size)
        return upload_service_pb2.CompleteUploadResponse(
            file=completed.file, upload=self._client_view(completed.upload)
        )

    async def SignParts(
        self, request: upload_service_pb2.SignPartsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> upload_service_pb2.SignPartsResponse:
        raise Unimplemented("multipart uploads are not built yet", reason="NOT_IMPLEMENTED_YET")

    async def AbortUpload(
        self, request: upload_service_pb2.AbortUploadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> upload_service_pb2.AbortUploadResponse:
        raise Unimplemented("aborting uploads is not built yet", reason="NOT_IMPLEMENTED_YET")

    async def _own_record(self, upload_id: str, principal: Principal) -> metadata_service_pb2.UploadRecord:
        """The upload record, if the caller may see it; another owner's upload is NOT_FOUND."""
        if not upload_id:
            raise NotFound("no such upload", reason="UPLOAD_NOT_FOUND")
        with translated_errors():
            record = await self._metadata.GetUploadRecord(
                metadata_service_pb2.GetUploadRecordRequest(upload_id=upload_id, tenant=principal.tenant)
            )
        if not principal.is_service and record.owner != principal.subject:
            raise NotFound("no such upload", reason="UPLOAD_NOT_FOUND")
        return record

    def _client_view(self, record: metadata_service_pb2.UploadRecord) -> resources_pb2.Upload:
        upload = resources_pb2.Upload(
            id=record.id,
            file_id=record.file_id,
            kind=record.kind,
            state=record.state,
            size=record.size,
            part_size=record.part_size,
            part_count=record.part_count,
            expire_time=record.expire_time,
        )
        if record.state == State.UPLOAD_STATE_OPEN and record.kind == Kind.UPLOAD_KIND_SINGLE:
            upload.request.CopyFrom(self._presign_put(record))
        return upload

    def _presign_put(self, record: metadata_service_pb2.UploadRecord) -> resources_pb2.PresignedRequest:
        """A PUT with the content type, length and (when declared) SHA-256 in its signature, so
        storage itself refuses any other body."""
        ttl = self._settings.presign_ttl_s
        params: dict[str, Any] = {
            "Bucket": self._settings.s3.bucket,
            "Key": record.storage_key,
            "ContentType": record.content_type,
            "ContentLength": record.size,
        }
        headers = {"Content-Type": record.content_type}
        if record.sha256:
            checksum = base64.b64encode(bytes.fromhex(record.sha256)).decode()
            params["ChecksumSHA256"] = checksum
            headers["x-amz-checksum-sha256"] = checksum
        url = self._presigner.generate_presigned_url("put_object", Params=params, ExpiresIn=ttl)
        return resources_pb2.PresignedRequest(
            method="PUT",
            url=url,
            headers=headers,
            expire_time=_timestamp(datetime.now(UTC) + timedelta(seconds=ttl)),
        )

    async def _head_object(self, key: str) -> dict[str, Any] | None:
        def head() -> dict[str, Any] | None:
            try:
                return dict(
                    self._storage.head_object(
                        Bucket=self._settings.s3.bucket, Key=key, ChecksumMode="ENABLED"
                    )
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise

        try:
            return await asyncio.to_thread(head)
        except ClientError as error:
            raise Unavailable(f"storage did not answer: {error}", reason="STORAGE_UNAVAILABLE") from error

    @staticmethod
    def _check_stored_checksum(record: metadata_service_pb2.UploadRecord, head: dict[str, Any]) -> None:
        stored = head.get("ChecksumSHA256")
        if not record.sha256 or not stored:
            return  # the processor verifies the digest from the bytes either way
        try:
            stored_hex = base64.b64decode(stored).hex()
        except (binascii.Error, ValueError):
            return
        if stored_hex != record.sha256:
            raise FailedPrecondition(
                "stored checksum differs from the declared one", reason="CHECKSUM_MISMATCH"
            )

    async def _publish_object_created(
        self, record: metadata_service_pb2.UploadRecord, *, etag: str, size: int
    ) -> None:
        event = events_pb2.ObjectCreated(
            bucket=self._settings.s3.bucket,
            key=record.storage_key,
            size=size,
            etag=etag,
            file_id=record.file_id,
            tenant=record.tenant,
            source=events_pb2.EVENT_SOURCE_BROKER,
            event_time=_timestamp(datetime.now(UTC)),
        )
        try:
            await events.publish(
                self._js, self._subjects.object_created, event, msg_id=events.object_created_msg_id(event)
            )
        except Exception as error:
            raise Unavailable(
                "the upload is stored but its event could not be published; complete again",
                reason="EVENT_PUBLISH_FAILED",
            ) from error
