"""The upload RPCs: BeginUpload, GetUploadRecord, CompleteUploadRecord, EndUploadRecord,
ListUploadRecords, and the reaper's ClaimExpiredUploads and FindAttachedStorageUploads; AttachStorageUpload,
still declared in the contract, answers UNIMPLEMENTED (BeginUpload records the storage upload)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from filestore.core.auth import Principal, current_principal, require_service
from filestore.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unimplemented,
    upload_not_found,
)
from filestore.core.reasons import Reason
from filestore.metadata import convert
from filestore.metadata.db import models, store
from filestore.metadata.servicer.base import Context, ServicerBase
from filestore.metadata.servicer.placement import check_store_names
from filestore.metadata.servicer.unit_of_work import Idempotency, orm_session
from filestore.server.pagetokens import request_fingerprint
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2

__all__ = ["UploadRpcs"]

#: FindAttachedStorageUploads looks up at most this many (a page of ListMultipartUploads).
MAX_STORAGE_UPLOADS_PER_CALL = 1000
#: ListUploadRecords' page when the caller asks for none.
DEFAULT_UPLOAD_PAGE_SIZE = 10
#: The longest storage upload id an upload row holds (the column's width).
MAX_STORAGE_UPLOAD_ID = 1024


def _is_canonical_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _check_storage_upload(request: pb.BeginUploadRequest, kind: models.UploadKind) -> None:
    """The file id and storage upload a broker chose for BeginUpload: a MULTIPART upload comes with
    the storage upload the broker created at the key of the file id it chose, any other kind with no
    storage upload (a file id of its own is allowed, though the broker sends none)."""
    if request.file_id or request.storage_upload_id:
        require_service()  # users never name ids nor storage's uploads
    multipart = kind is models.UploadKind.MULTIPART
    if multipart != bool(request.storage_upload_id) or len(request.storage_upload_id) > MAX_STORAGE_UPLOAD_ID:
        raise InvalidArgument(
            "a MULTIPART upload needs the storage upload created for it, and only a MULTIPART upload "
            f"has one (at most {MAX_STORAGE_UPLOAD_ID} characters)",
            reason=Reason.INVALID_STORAGE_UPLOAD_ID,
        )
    if request.storage_upload_id and not request.file_id:
        raise InvalidArgument(
            "file_id is required with a storage_upload_id (the storage upload is at its key)",
            reason=Reason.INVALID_FILE_ID,
        )
    if request.file_id and not _is_canonical_uuid(request.file_id):
        raise InvalidArgument(
            "file_id must be a UUID in canonical form (lower-case, 36 characters)",
            reason=Reason.INVALID_FILE_ID,
        )


class UploadRpcs(ServicerBase):
    async def BeginUpload(self, request: pb.BeginUploadRequest, context: Context) -> pb.BeginUploadResponse:
        principal = current_principal()
        tenant, owner = self._creator(principal, request.file)
        kind = convert.upload_kind_from_proto(request.kind)
        if kind is None or kind == models.UploadKind.DEDUP:
            raise InvalidArgument(
                "kind must be SINGLE, POST_POLICY or MULTIPART", reason=Reason.INVALID_UPLOAD_KIND
            )
        if not request.HasField("expire_time"):
            raise InvalidArgument("expire_time is required", reason=Reason.INVALID_EXPIRY)
        part_checksum = convert.part_checksum_from_proto(request.part_checksum_algorithm)
        if part_checksum is None or (
            part_checksum is not models.PartChecksum.NONE and kind is not models.UploadKind.MULTIPART
        ):
            raise InvalidArgument(
                "part_checksum_algorithm must be CRC32 or SHA256, and only for MULTIPART",
                reason=Reason.INVALID_CHECKSUM_ALGORITHM,
            )
        size = request.file.size
        if size < 0:
            raise InvalidArgument("size must not be negative", reason=Reason.INVALID_SIZE)
        if size == 0 and kind is models.UploadKind.MULTIPART:
            # Storage completes a multipart upload from one part at least; an empty file is SINGLE.
            raise InvalidArgument("a MULTIPART upload cannot be empty", reason=Reason.INVALID_SIZE)
        _check_storage_upload(request, kind)
        offered = check_store_names(request.stores)
        name, content_type, sha256, labels = self._declared(request.file)
        expires = convert.from_timestamp(request.expire_time)

        # Core statements on a plain connection: the hottest write of the catalogue needs nothing of
        # the ORM, and answers from the values it wrote.
        async def begin(connection: AsyncConnection) -> pb.BeginUploadResponse:
            # Residency first: nothing is reserved, nor any URL signed, for a store it excludes.
            placed = await store.choose_store(
                connection, tenant=tenant, offered=offered, default=models.DEFAULT_STORE
            )
            if request.storage_upload_id and offered and placed != offered[0]:
                # The broker created the multipart upload in the store it offered first.
                raise FailedPrecondition(
                    "the tenant's residency excludes the store the multipart upload was created in",
                    reason=Reason.RESIDENCY_VIOLATION,
                    metadata={"tenant": tenant, "store": offered[0]},
                )
            await store.reserve_quota(connection, tenant=tenant, owner=owner, nbytes=size)
            # A digest proves nothing (anyone may have learnt it), so only the owner of content the
            # tenant holds gets it without sending it; everyone else uploads, and dedup happens
            # once the processor has verified the bytes (RecordVerifiedContent).
            blob = (
                await store.find_dedup_blob(
                    connection, tenant=tenant, owner=owner, sha256=sha256, store=placed
                )
                if sha256
                else None
            )
            dedup = blob is not None and blob.size == size
            file: models.FileColumns = await store.create_file(
                connection,
                tenant=tenant,
                owner=owner,
                name=name,
                declared_content_type=content_type,
                size=size,
                sha256=sha256 or None,
                labels=labels,
                blob_id=blob.id if dedup and blob is not None else None,
                file_id=request.file_id or None,
                store=placed,
            )
            upload: models.UploadColumns = await store.record_upload(
                connection,
                file=file,
                kind=models.UploadKind.DEDUP if dedup else kind,
                part_size=0 if dedup else request.part_size,
                part_count=0 if dedup else request.part_count,
                expires_at=expires,
                reserved_bytes=size,
                part_checksum=models.PartChecksum.NONE if dedup else part_checksum,
                # A DEDUP upload moves no bytes: its answer holding no storage upload tells the
                # broker to abort the one it created.
                storage_upload_id=None if dedup else request.storage_upload_id or None,
            )
            if dedup:
                # Verified content of this tenant already holds these bytes: no transfer, the upload is
                # complete at once and the file UPLOADED (the pipeline still runs for the new record).
                async with orm_session(connection) as session:
                    outcome = await store.complete_upload(
                        session, tenant=tenant, upload_id=upload.id, actual_size=size
                    )
                file, upload = outcome.file, outcome.upload
            return pb.BeginUploadResponse(
                file=convert.file_message(file), upload=convert.upload_record(upload, file)
            )

        async def as_it_is_now(db: store.Executor, first: pb.BeginUploadResponse) -> pb.BeginUploadResponse:
            # A retry must see what happened since the first answer (completed, ended); the storage
            # upload is the first attempt's, and the broker aborts the one it created for the retry.
            upload, file = await self._upload_and_file(db, principal, tenant, first.upload.id)
            return pb.BeginUploadResponse(
                file=convert.file_message(file), upload=convert.upload_record(upload, file)
            )

        replay = Idempotency.of(
            request,
            request.request_id,
            pb.BeginUploadResponse,
            tenant=tenant,
            # Keyed by owner too: two users of a tenant may pick the same request_id independently.
            caller=owner,
            # The broker chooses these afresh on every attempt: not part of "the same request".
            leave_out=("expire_time", "file_id", "storage_upload_id"),
            replayed=as_it_is_now,
        )
        try:
            return await self._unit.write_rows(begin, idempotency=replay)
        except IntegrityError:
            # Rolled back. A file id the caller chose that some file has is its mistake, told as such;
            # anything else is ours (INTERNAL). Looked up only now: a fresh UUID never collides.
            if request.file_id and await self._file_exists(request.file_id):
                raise AlreadyExists(
                    "file_id is in use; choose a fresh UUID",
                    reason=Reason.FILE_ID_IN_USE,
                    metadata={"file_id": request.file_id},
                ) from None
            raise

    async def GetUploadRecord(self, request: pb.GetUploadRecordRequest, context: Context) -> pb.UploadRecord:
        principal = current_principal()
        scope = self._tenant(principal, request.tenant)
        async with self._unit.read_rows() as connection:
            upload, file = await self._upload_and_file(connection, principal, scope, request.upload_id)
            return convert.upload_record(upload, file)

    async def AttachStorageUpload(
        self, request: pb.AttachStorageUploadRequest, context: Context
    ) -> pb.UploadRecord:
        # Declared still (the contract never deletes an RPC), served no more: nothing calls it.
        raise Unimplemented("AttachStorageUpload is removed: BeginUpload records the storage upload")

    async def CompleteUploadRecord(
        self, request: pb.CompleteUploadRecordRequest, context: Context
    ) -> pb.CompleteUploadRecordResponse:
        principal = current_principal()
        scope = self._tenant(principal, request.tenant)
        if request.size < 0:
            raise InvalidArgument("size must not be negative", reason=Reason.INVALID_SIZE)

        async def complete(session: AsyncSession) -> pb.CompleteUploadRecordResponse:
            upload, _ = await self._upload_and_file(session, principal, scope, request.upload_id)
            # One step, exactly once: a racing duplicate (client call and storage event) changes
            # nothing, so the quota is never settled twice; an aborted upload cannot complete.
            outcome = await store.complete_upload(
                session, tenant=upload.tenant, upload_id=upload.id, actual_size=request.size
            )
            return pb.CompleteUploadRecordResponse(
                file=convert.file_message(outcome.file),
                upload=convert.upload_record(outcome.upload, outcome.file),
            )

        replay = Idempotency.of(request, request.request_id, pb.CompleteUploadRecordResponse, tenant=scope)
        return await self._unit.write(complete, idempotency=replay)

    async def EndUploadRecord(self, request: pb.EndUploadRecordRequest, context: Context) -> pb.UploadRecord:
        principal = current_principal()
        states = {
            resources_pb2.UPLOAD_STATE_ABORTED: models.UploadState.ABORTED,
            resources_pb2.UPLOAD_STATE_EXPIRED: models.UploadState.EXPIRED,
        }
        to_state = states.get(request.state)
        if to_state is None:
            raise InvalidArgument("state must be ABORTED or EXPIRED", reason=Reason.INVALID_UPLOAD_STATE)
        scope = self._tenant(principal, request.tenant)

        async def end(session: AsyncSession) -> pb.UploadRecord:
            upload, _ = await self._upload_and_file(session, principal, scope, request.upload_id)
            outcome = await store.end_upload(
                session, tenant=upload.tenant, upload_id=upload.id, to_state=to_state
            )
            return convert.upload_record(outcome.upload, outcome.file)

        replay = Idempotency.of(request, request.request_id, pb.UploadRecord, tenant=scope)
        return await self._unit.write(end, idempotency=replay)

    async def ClaimExpiredUploads(
        self, request: pb.ClaimExpiredUploadsRequest, context: Context
    ) -> pb.ClaimExpiredUploadsResponse:
        require_service()
        if not 1 <= request.limit <= 500:
            raise InvalidArgument("limit must be 1..500", reason=Reason.INVALID_LIMIT)
        if not 1 <= request.lease_seconds <= 3600:
            raise InvalidArgument("lease_seconds must be 1..3600", reason=Reason.INVALID_LEASE)

        async def claim(session: AsyncSession) -> pb.ClaimExpiredUploadsResponse:
            uploads = await store.claim_expired_uploads(
                session, lease=timedelta(seconds=request.lease_seconds), limit=request.limit
            )
            records = []
            for upload in uploads:
                file = await store.get_file(
                    session, tenant=upload.tenant, file_id=upload.file_id, include_deleted=True
                )
                records.append(convert.upload_record(upload, file))
            return pb.ClaimExpiredUploadsResponse(uploads=records)

        return await self._unit.write(claim)

    async def FindAttachedStorageUploads(
        self, request: pb.FindAttachedStorageUploadsRequest, context: Context
    ) -> pb.FindAttachedStorageUploadsResponse:
        require_service()
        if len(request.uploads) > MAX_STORAGE_UPLOADS_PER_CALL:
            raise InvalidArgument(
                f"at most {MAX_STORAGE_UPLOADS_PER_CALL} uploads per call",
                reason=Reason.TOO_MANY_UPLOADS,
                metadata={"max_uploads": str(MAX_STORAGE_UPLOADS_PER_CALL)},
            )
        async with self._unit.read() as session:
            held = await store.attached_storage_uploads(
                session, ((upload.key, upload.storage_upload_id) for upload in request.uploads)
            )
        return pb.FindAttachedStorageUploadsResponse(
            uploads=[upload for upload in request.uploads if (upload.key, upload.storage_upload_id) in held]
        )

    async def ListUploadRecords(
        self, request: pb.ListUploadRecordsRequest, context: Context
    ) -> pb.ListUploadRecordsResponse:
        principal = current_principal()
        # Whose uploads: the caller's own, or those a service names (as for whom a file is made).
        tenant, owner = self._creator(
            principal, resources_pb2.File(tenant=request.tenant, owner=request.owner)
        )
        if request.page_size < 0:
            raise InvalidArgument(
                "page_size must not be negative",
                reason=Reason.INVALID_PAGE_SIZE,
                metadata={"max_page_size": str(store.MAX_UPLOAD_PAGE_SIZE)},
            )
        # The token is bound to what is listed: whose uploads and which file (a user's own request
        # names no tenant or owner, so those are added to the fingerprint explicitly).
        scoped = pb.ListUploadRecordsRequest()
        scoped.CopyFrom(request)
        scoped.tenant, scoped.owner = tenant, owner
        fingerprint = request_fingerprint(scoped)
        after = self._cursor_of(self._upload_page_tokens, request.page_token, fingerprint=fingerprint)
        async with self._unit.read() as session:
            page = await store.list_open_uploads(
                session,
                tenant=tenant,
                owner=owner,
                file_id=request.file_id,
                page_size=request.page_size or DEFAULT_UPLOAD_PAGE_SIZE,
                after=after,
            )
        return pb.ListUploadRecordsResponse(
            uploads=[convert.upload_record(upload, file) for upload, file in page.uploads],
            next_page_token=self._token_of(
                self._upload_page_tokens, page.next_cursor, fingerprint=fingerprint
            ),
        )

    async def _file_exists(self, file_id: str) -> bool:
        async with self._unit.read_rows() as connection:
            try:
                await store.get_file(connection, tenant=None, file_id=file_id, include_deleted=True)
            except NotFound:
                return False
        return True

    async def _upload_and_file(
        self, db: store.Executor, principal: Principal, scope: str | None, upload_id: str
    ) -> tuple[Row[Any], Row[Any]]:
        try:
            upload = await store.get_upload(db, tenant=scope, upload_id=upload_id)
            file = await store.get_file(
                db, tenant=upload.tenant, file_id=upload.file_id, include_deleted=True
            )
        except NotFound:
            raise upload_not_found(upload_id) from None
        if not principal.is_service and file.owner != principal.subject:
            raise upload_not_found(upload_id)
        return upload, file
