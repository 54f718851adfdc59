"""MetadataService: the gRPC face of the catalogue. One session and one transaction per RPC; the
data rules (lifecycle, quotas, tenancy, idempotency races) live in :mod:`filestore.metadata.db.store`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from filestore.core.auth import Principal, current_principal, require_service
from filestore.core.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    file_not_found,
    grant_not_found,
    upload_not_found,
)
from filestore.core.keys import KeyKind, derivative_key, key_prefix
from filestore.core.reasons import Reason
from filestore.core.validation import (
    MAX_EXTRACTED_TEXT_BYTES,
    MAX_NAME_CHARS,
    check_content_type,
    check_labels,
    check_sha256,
    clean_name,
)
from filestore.metadata import convert
from filestore.metadata.db import models, store
from filestore.metadata.janitor import ObjectJanitor
from filestore.server.pagetokens import PageTokens, request_fingerprint
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import metadata_service_pb2_grpc, resources_pb2

Context = grpc.aio.ServicerContext[Any, Any]
M = TypeVar("M", bound=Message)

DEFAULT_PAGE_SIZE = 50
UPDATABLE_FILE_FIELDS = frozenset({"name", "labels", "visibility"})
# Matched whole (fullmatch): `$` would also accept a trailing newline.
DERIVATIVE_KIND = re.compile(r"[a-z0-9_]{1,64}")
PIPELINE_STEP = re.compile(r"[a-z0-9_]{1,64}")
REASON = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
#: FindAttachedStorageUploads looks up at most this many (a page of ListMultipartUploads).
MAX_STORAGE_UPLOADS_PER_CALL = 1000


class _Replayed(Exception):
    """Rolls back a transaction whose request was answered concurrently under the same request_id."""

    def __init__(self, response: bytes) -> None:
        super().__init__("replayed")
        self.response = response


class MetadataServicer(metadata_service_pb2_grpc.MetadataServiceServicer):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, objects: ObjectJanitor, page_token_secret: str
    ) -> None:
        self._sessions = sessions
        self._objects = objects
        self._page_tokens = PageTokens(page_token_secret, purpose="ListFiles")

    # ------------------------------------------------------------------------------ helpers

    async def _idempotent(
        self,
        *,
        tenant: str,
        method: str,
        request: Message,
        request_id: str,
        response_type: type[M],
        run: Callable[[AsyncSession], Awaitable[M]],
        fingerprint: Message | None = None,
        replayed: Callable[[AsyncSession, M], Awaitable[M]] | None = None,
    ) -> M:
        """Run ``run`` in one transaction; with a request_id, a replay answers the stored first answer
        and a different request under the same id is ALREADY_EXISTS (REQUEST_ID_REUSED).

        ``fingerprint`` (default: the request) is what "the same request" means; fields a caller
        derives afresh on every retry, such as an expiry computed from the current time, stay out.
        ``replayed``, when given, turns the first answer into the answer a replay gets (the resource
        as it is now rather than as it was created).
        """
        async with self._sessions() as session:
            if not request_id:
                async with session.begin():
                    return await run(session)
            identity = fingerprint if fingerprint is not None else request
            request_hash = hashlib.sha256(identity.SerializeToString(deterministic=True)).hexdigest()
            try:
                async with session.begin():
                    stored = await store.get_idempotent(
                        session,
                        tenant=tenant,
                        method=method,
                        request_id=request_id,
                        request_hash=request_hash,
                    )
                    if stored is not None:
                        first = response_type.FromString(stored.response)
                        return await replayed(session, first) if replayed else first
                    response = await run(session)
                    saved = await store.save_idempotent(
                        session,
                        tenant=tenant,
                        method=method,
                        request_id=request_id,
                        request_hash=request_hash,
                        response=response.SerializeToString(),
                    )
                    if saved.replayed:
                        # A concurrent twin committed first: undo our work, answer its answer.
                        raise _Replayed(saved.record.response)
                    return response
            except _Replayed as twin:
                first = response_type.FromString(twin.response)
                if replayed is None:
                    return first
                async with session.begin():
                    return await replayed(session, first)

    @staticmethod
    def _tenant(principal: Principal, requested: str) -> str | None:
        return principal.acting_tenant(requested)

    async def _readable_file(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        tenant: str,
        file_id: str,
        reader: str,
        include_deleted: bool = False,
    ) -> models.File:
        """The file if ``reader`` may read it; otherwise NOT_FOUND, exactly as if it did not exist."""
        scope = self._tenant(principal, tenant)
        try:
            file = await store.get_file(
                session, tenant=scope, file_id=file_id, include_deleted=include_deleted
            )
        except NotFound:
            raise file_not_found(file_id) from None
        if principal.is_service and not reader:
            return file
        who = reader if principal.is_service else principal.subject
        if not await store.is_permitted(session, file=file, principal=who, permission=models.Permission.READ):
            raise file_not_found(file_id)
        return file

    # ------------------------------------------------------------------------------ files

    async def GetFile(self, request: pb.GetFileRequest, context: Context) -> resources_pb2.File:
        principal = current_principal()
        async with self._sessions() as session, session.begin():
            file = await self._readable_file(
                session,
                principal,
                tenant=request.tenant,
                file_id=request.file_id,
                reader="",
                include_deleted=request.include_deleted,
            )
            return convert.file_message(file)

    async def ListFiles(self, request: pb.ListFilesRequest, context: Context) -> pb.ListFilesResponse:
        principal = current_principal()
        tenant = request.tenant if principal.is_service else principal.tenant
        if not tenant:
            raise InvalidArgument("service callers must name the tenant", reason=Reason.INVALID_TENANT)
        page_size = self._page_size(request.page_size)
        filters = self._file_filter(request, principal)
        fingerprint = request_fingerprint(request)
        after = None
        if request.page_token:
            position = self._page_tokens.decode(request.page_token, fingerprint=fingerprint)
            try:
                after = store.FileCursor(created_at=datetime.fromisoformat(position["c"]), id=position["i"])
            except (KeyError, ValueError):
                raise InvalidArgument(
                    "the page token is malformed", reason=Reason.INVALID_PAGE_TOKEN
                ) from None
        async with self._sessions() as session, session.begin():
            page = await store.list_files(
                session, tenant=tenant, filters=filters, page_size=page_size, after=after
            )
        token = ""
        if page.next_cursor is not None:
            token = self._page_tokens.encode(
                {"c": page.next_cursor.created_at.isoformat(), "i": page.next_cursor.id},
                fingerprint=fingerprint,
            )
        return pb.ListFilesResponse(
            files=[convert.file_message(f) for f in page.files], next_page_token=token
        )

    async def CreateFile(self, request: pb.CreateFileRequest, context: Context) -> resources_pb2.File:
        principal = current_principal()
        tenant = request.file.tenant if principal.is_service else principal.tenant
        owner = request.file.owner if principal.is_service else principal.subject
        if not tenant or not owner:
            raise InvalidArgument(
                "service callers must name the tenant and owner", reason=Reason.INVALID_OWNER
            )
        name, content_type, sha256, labels = self._declared(request.file)
        if request.file.size < 0:
            raise InvalidArgument("size must not be negative", reason=Reason.INVALID_SIZE)
        visibility = convert.visibility_from_proto(request.file.visibility)

        async def run(session: AsyncSession) -> resources_pb2.File:
            file = await store.create_file(
                session,
                tenant=tenant,
                owner=owner,
                name=name,
                declared_content_type=content_type,
                size=request.file.size,
                sha256=sha256 or None,
                labels=labels,
                visibility=visibility,
            )
            return convert.file_message(file)

        return await self._idempotent(
            tenant=tenant,
            method=f"CreateFile:{owner}",
            request=request,
            request_id=request.request_id,
            response_type=resources_pb2.File,
            run=run,
        )

    async def UpdateFile(self, request: pb.UpdateFileRequest, context: Context) -> resources_pb2.File:
        principal = current_principal()
        paths = list(request.update_mask.paths)
        if not paths or any(path not in UPDATABLE_FILE_FIELDS for path in paths):
            raise InvalidArgument(
                f"update_mask must name some of {', '.join(sorted(UPDATABLE_FILE_FIELDS))}",
                reason=Reason.INVALID_UPDATE_MASK,
            )
        changes: dict[str, Any] = {}
        if "name" in paths:
            changes["name"] = clean_name(request.file.name)
        if "labels" in paths:
            changes["labels"] = check_labels(request.file.labels)
        if "visibility" in paths:
            changes["visibility"] = convert.visibility_from_proto(request.file.visibility)
        expected = self._etag(request.file.etag)
        tenant = self._tenant(principal, request.file.tenant) or ""

        async def run(session: AsyncSession) -> resources_pb2.File:
            file = await self._writable_file(session, principal, tenant=tenant, file_id=request.file.id)
            updated = await store.update_file(
                session, tenant=file.tenant, file_id=file.id, expected_version=expected, **changes
            )
            return convert.file_message(updated)

        return await self._idempotent(
            tenant=tenant or "*",
            method=f"UpdateFile:{principal.subject}",
            request=request,
            request_id=request.request_id,
            response_type=resources_pb2.File,
            run=run,
        )

    async def DeleteFile(self, request: pb.DeleteFileRequest, context: Context) -> resources_pb2.File:
        principal = current_principal()
        expected = self._etag(request.etag)
        tenant = self._tenant(principal, request.tenant) or ""
        orphaned: list[str] = []

        async def run(session: AsyncSession) -> resources_pb2.File:
            file = await self._writable_file(
                session,
                principal,
                tenant=tenant,
                file_id=request.file_id,
                include_deleted=True,
                owner_only=True,
            )
            deletion = await store.delete_file(
                session, tenant=file.tenant, file_id=file.id, expected_version=expected
            )
            orphaned.extend(deletion.orphaned_storage_keys)
            return convert.file_message(deletion.file)

        answer = await self._idempotent(
            tenant=tenant or "*",
            method=f"DeleteFile:{principal.subject}",
            request=request,
            request_id=request.request_id,
            response_type=resources_pb2.File,
            run=run,
        )
        # After the commit: deleting bytes first would lose them if the transaction then failed.
        await self._objects.delete(orphaned)
        return answer

    async def TransitionFile(self, request: pb.TransitionFileRequest, context: Context) -> resources_pb2.File:
        principal = current_principal()
        target = convert.file_status_from_proto(request.status)
        if target is None:
            raise InvalidArgument("status must be set", reason=Reason.INVALID_STATUS)
        expected = self._etag(request.etag)
        scope = self._tenant(principal, request.tenant)

        async def run(session: AsyncSession) -> resources_pb2.File:
            if not principal.is_service:
                # Clients move their own files only, and only to DELETED: the pipeline states belong
                # to the services (a client marking its PENDING file READY would skip verification
                # and the quota settlement).
                await self._owned_file(session, principal, request.file_id)
                if target != models.FileStatus.DELETED:
                    raise PermissionDenied(
                        "only Filestore services move files along the pipeline",
                        reason=Reason.SERVICE_ROLE_REQUIRED,
                    )
            try:
                file = await store.transition_file(
                    session,
                    tenant=scope,
                    file_id=request.file_id,
                    to_status=target,
                    reason=request.reason or None,
                    expected_version=expected,
                )
            except NotFound:
                raise file_not_found(request.file_id) from None
            return convert.file_message(file)

        return await self._idempotent(
            tenant=scope or "*",
            method=f"TransitionFile:{principal.subject}",
            request=request,
            request_id=request.request_id,
            response_type=resources_pb2.File,
            run=run,
        )

    async def RecordVerifiedContent(
        self, request: pb.RecordVerifiedContentRequest, context: Context
    ) -> resources_pb2.File:
        principal = current_principal()
        if not principal.is_service:
            raise file_not_found(request.file_id)
        if len(request.sha256) != 64 or any(c not in "0123456789abcdef" for c in request.sha256):
            raise InvalidArgument("sha256 must be 64 lower-case hex characters", reason=Reason.INVALID_SHA256)
        scope = self._tenant(principal, request.tenant)
        superseded: list[str] = []
        async with self._sessions() as session, session.begin():
            try:
                file = await store.get_file(
                    session, tenant=scope, file_id=request.file_id, include_deleted=True
                )
            except NotFound:
                raise file_not_found(request.file_id) from None
            matches = (not file.sha256 or file.sha256 == request.sha256) and request.size == file.size
            file = await store.update_file_facts(
                session, tenant=scope, file_id=file.id, verified_sha256=request.sha256
            )
            if matches and file.blob_id is None:
                # Verified content becomes a dedup target for its tenant; a mismatch never does. When
                # the tenant already holds it, the file shares that copy and its own becomes garbage.
                blob = await store.register_blob(
                    session,
                    tenant=file.tenant,
                    sha256=request.sha256,
                    size=request.size,
                    storage_key=file.storage_key,
                )
                link = await store.link_file_blob(
                    session, tenant=file.tenant, file_id=file.id, blob_id=blob.id
                )
                file = link.file
                superseded.extend(link.orphaned_storage_keys)
            elif not matches and file.status == models.FileStatus.PROCESSING:
                reason = "CHECKSUM_MISMATCH" if file.sha256 != request.sha256 else "SIZE_MISMATCH"
                file = await store.transition_file(
                    session,
                    tenant=scope,
                    file_id=file.id,
                    to_status=models.FileStatus.QUARANTINED,
                    reason=reason,
                )
            answer = convert.file_message(file)
        # After the commit, as DeleteFile does: were the transaction to fail, the bytes would be lost.
        await self._objects.delete(superseded)
        return answer

    async def QuarantineContent(
        self, request: pb.QuarantineContentRequest, context: Context
    ) -> pb.QuarantineContentResponse:
        require_service()
        if not request.tenant:
            raise InvalidArgument("tenant is required", reason=Reason.INVALID_TENANT)
        if not request.storage_key.startswith(key_prefix(KeyKind.ORIGINAL, request.tenant)):
            raise InvalidArgument(
                "storage_key must be an original's key of the tenant", reason=Reason.INVALID_STORAGE_KEY
            )
        if not REASON.fullmatch(request.reason):
            raise InvalidArgument("reason must be UPPER_SNAKE, 1-64 characters", reason=Reason.INVALID_REASON)
        async with self._sessions() as session, session.begin():
            files = await store.quarantine_content(
                session, tenant=request.tenant, storage_key=request.storage_key, reason=request.reason
            )
            return pb.QuarantineContentResponse(files=[convert.file_message(file) for file in files])

    # ------------------------------------------------------------------------------ uploads

    async def BeginUpload(self, request: pb.BeginUploadRequest, context: Context) -> pb.BeginUploadResponse:
        principal = current_principal()
        tenant = request.file.tenant if principal.is_service else principal.tenant
        owner = request.file.owner if principal.is_service else principal.subject
        if not tenant or not owner:
            raise InvalidArgument(
                "service callers must name the tenant and owner", reason=Reason.INVALID_OWNER
            )
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
        name, content_type, sha256, labels = self._declared(request.file)
        expires = convert.from_timestamp(request.expire_time)

        async def run(session: AsyncSession) -> pb.BeginUploadResponse:
            await store.reserve_quota(session, tenant=tenant, owner=owner, nbytes=size)
            # A digest proves nothing (anyone may have learnt it), so only the owner of content the
            # tenant holds gets it without sending it; everyone else uploads, and dedup happens
            # once the processor has verified the bytes (RecordVerifiedContent).
            blob = (
                await store.find_dedup_blob(session, tenant=tenant, owner=owner, sha256=sha256)
                if sha256
                else None
            )
            dedup = blob is not None and blob.size == size
            file = await store.create_file(
                session,
                tenant=tenant,
                owner=owner,
                name=name,
                declared_content_type=content_type,
                size=size,
                sha256=sha256 or None,
                labels=labels,
                blob_id=blob.id if dedup and blob is not None else None,
            )
            upload = await store.record_upload(
                session,
                tenant=tenant,
                file_id=file.id,
                kind=models.UploadKind.DEDUP if dedup else kind,
                part_size=0 if dedup else request.part_size,
                part_count=0 if dedup else request.part_count,
                expires_at=expires,
                reserved_bytes=size,
                part_checksum=models.PartChecksum.NONE if dedup else part_checksum,
            )
            if dedup:
                # Verified content of this tenant already holds these bytes: no transfer, the upload is
                # complete at once and the file UPLOADED (the pipeline still runs for the new record).
                outcome = await store.complete_upload(
                    session, tenant=tenant, upload_id=upload.id, actual_size=size
                )
                file, upload = outcome.file, outcome.upload
            return pb.BeginUploadResponse(
                file=convert.file_message(file), upload=convert.upload_record(upload, file)
            )

        async def as_it_is_now(
            session: AsyncSession, first: pb.BeginUploadResponse
        ) -> pb.BeginUploadResponse:
            # A retry must see what happened since the first answer: the broker finds the storage
            # upload it attached there, instead of searching storage for it.
            upload, file = await self._upload_and_file(session, principal, tenant, first.upload.id)
            return pb.BeginUploadResponse(
                file=convert.file_message(file), upload=convert.upload_record(upload, file)
            )

        # The expiry is computed afresh by the broker on every retry: not part of "the same request".
        fingerprint = pb.BeginUploadRequest()
        fingerprint.CopyFrom(request)
        fingerprint.ClearField("expire_time")
        # Keyed by owner too: two users of a tenant may pick the same request_id independently.
        return await self._idempotent(
            tenant=tenant,
            method=f"BeginUpload:{owner}",
            request=request,
            request_id=request.request_id,
            response_type=pb.BeginUploadResponse,
            run=run,
            fingerprint=fingerprint,
            replayed=as_it_is_now,
        )

    async def GetUploadRecord(self, request: pb.GetUploadRecordRequest, context: Context) -> pb.UploadRecord:
        principal = current_principal()
        scope = self._tenant(principal, request.tenant)
        async with self._sessions() as session, session.begin():
            upload, file = await self._upload_and_file(session, principal, scope, request.upload_id)
            return convert.upload_record(upload, file)

    async def AttachStorageUpload(
        self, request: pb.AttachStorageUploadRequest, context: Context
    ) -> pb.UploadRecord:
        principal = require_service()
        if not request.storage_upload_id:
            raise InvalidArgument("storage_upload_id is required", reason=Reason.INVALID_STORAGE_UPLOAD_ID)
        scope = self._tenant(principal, request.tenant)
        async with self._sessions() as session, session.begin():
            upload, file = await self._upload_and_file(session, principal, scope, request.upload_id)
            upload = await store.attach_storage_upload(
                session,
                tenant=upload.tenant,
                upload_id=upload.id,
                storage_upload_id=request.storage_upload_id,
            )
            return convert.upload_record(upload, file)

    async def CompleteUploadRecord(
        self, request: pb.CompleteUploadRecordRequest, context: Context
    ) -> pb.CompleteUploadRecordResponse:
        principal = current_principal()
        scope = self._tenant(principal, request.tenant)
        if request.size < 0:
            raise InvalidArgument("size must not be negative", reason=Reason.INVALID_SIZE)

        async def run(session: AsyncSession) -> pb.CompleteUploadRecordResponse:
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

        return await self._idempotent(
            tenant=scope or "*",
            method="CompleteUploadRecord",
            request=request,
            request_id=request.request_id,
            response_type=pb.CompleteUploadRecordResponse,
            run=run,
        )

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

        async def run(session: AsyncSession) -> pb.UploadRecord:
            upload, _ = await self._upload_and_file(session, principal, scope, request.upload_id)
            outcome = await store.end_upload(
                session, tenant=upload.tenant, upload_id=upload.id, to_state=to_state
            )
            return convert.upload_record(outcome.upload, outcome.file)

        return await self._idempotent(
            tenant=scope or "*",
            method="EndUploadRecord",
            request=request,
            request_id=request.request_id,
            response_type=pb.UploadRecord,
            run=run,
        )

    async def ClaimExpiredUploads(
        self, request: pb.ClaimExpiredUploadsRequest, context: Context
    ) -> pb.ClaimExpiredUploadsResponse:
        require_service()
        if not 1 <= request.limit <= 500:
            raise InvalidArgument("limit must be 1..500", reason=Reason.INVALID_LIMIT)
        if not 1 <= request.lease_seconds <= 3600:
            raise InvalidArgument("lease_seconds must be 1..3600", reason=Reason.INVALID_LEASE)
        async with self._sessions() as session, session.begin():
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
        async with self._sessions() as session, session.begin():
            held = await store.attached_storage_uploads(
                session, ((upload.key, upload.storage_upload_id) for upload in request.uploads)
            )
        return pb.FindAttachedStorageUploadsResponse(
            uploads=[upload for upload in request.uploads if (upload.key, upload.storage_upload_id) in held]
        )

    async def _upload_and_file(
        self, session: AsyncSession, principal: Principal, scope: str | None, upload_id: str
    ) -> tuple[models.Upload, models.File]:
        try:
            upload = await store.get_upload(session, tenant=scope, upload_id=upload_id)
            file = await store.get_file(
                session, tenant=upload.tenant, file_id=upload.file_id, include_deleted=True
            )
        except NotFound:
            raise upload_not_found(upload_id) from None
        if not principal.is_service and file.owner != principal.subject:
            raise upload_not_found(upload_id)
        return upload, file

    # ------------------------------------------------------------------------------ access

    async def AuthorizeRead(
        self, request: pb.AuthorizeReadRequest, context: Context
    ) -> pb.AuthorizeReadResponse:
        principal = current_principal()
        if principal.is_service and not request.principal:
            raise InvalidArgument("service callers must name the principal", reason=Reason.INVALID_PRINCIPAL)
        async with self._sessions() as session, session.begin():
            file = await self._readable_file(
                session,
                principal,
                tenant=request.tenant,
                file_id=request.file_id,
                reader=request.principal,
                include_deleted=True,
            )
            key = file.storage_key
            if file.blob_id is not None:
                key = (await store.get_blob(session, tenant=file.tenant, blob_id=file.blob_id)).storage_key
            return pb.AuthorizeReadResponse(file=convert.file_message(file), storage_key=key)

    async def CreateGrant(self, request: pb.CreateGrantRequest, context: Context) -> resources_pb2.Grant:
        principal = current_principal()
        grant = request.grant
        if not grant.principal or len(grant.principal) > 255:
            raise InvalidArgument("principal must be 1-255 characters", reason=Reason.INVALID_PRINCIPAL)
        permission = convert.permission_from_proto(grant.permission)
        expires = convert.from_timestamp(grant.expire_time) if grant.HasField("expire_time") else None
        if expires is not None and expires <= datetime.now(UTC):
            raise InvalidArgument("expire_time must be in the future", reason=Reason.INVALID_EXPIRY)

        async def run(session: AsyncSession) -> resources_pb2.Grant:
            file = await self._writable_file(
                session, principal, tenant="", file_id=grant.file_id, owner_only=True
            )
            row = await store.create_grant(
                session,
                tenant=file.tenant,
                file_id=file.id,
                principal=grant.principal,
                permission=permission,
                expires_at=expires,
            )
            return convert.grant(row)

        return await self._idempotent(
            tenant=principal.tenant,
            method=f"CreateGrant:{principal.subject}",
            request=request,
            request_id=request.request_id,
            response_type=resources_pb2.Grant,
            run=run,
        )

    async def ListGrants(self, request: pb.ListGrantsRequest, context: Context) -> pb.ListGrantsResponse:
        principal = current_principal()
        async with self._sessions() as session, session.begin():
            file = await self._writable_file(
                session, principal, tenant="", file_id=request.file_id, owner_only=True
            )
            rows = await store.list_grants(session, tenant=file.tenant, file_id=file.id)
            return pb.ListGrantsResponse(grants=[convert.grant(row) for row in rows])

    async def DeleteGrant(self, request: pb.DeleteGrantRequest, context: Context) -> pb.DeleteGrantResponse:
        principal = current_principal()
        async with self._sessions() as session, session.begin():
            try:
                grant = await store.get_grant(session, tenant=principal.tenant, grant_id=request.grant_id)
                await self._writable_file(
                    session, principal, tenant="", file_id=grant.file_id, owner_only=True
                )
            except NotFound:
                raise grant_not_found(request.grant_id) from None
            await store.revoke_grant(session, tenant=grant.tenant, grant_id=grant.id)
        return pb.DeleteGrantResponse()

    # ------------------------------------------------------------------------------ processing

    async def CreateDerivative(
        self, request: pb.CreateDerivativeRequest, context: Context
    ) -> resources_pb2.Derivative:
        principal = require_service()
        derivative = request.derivative
        if not DERIVATIVE_KIND.fullmatch(derivative.kind):
            raise InvalidArgument("kind must be [a-z0-9_]{1,64}", reason=Reason.INVALID_KIND)
        content_type = check_content_type(derivative.content_type.split(";")[0])
        if len(derivative.content_type) > 255:
            raise InvalidArgument(
                "content_type is longer than 255 characters", reason=Reason.INVALID_CONTENT_TYPE
            )
        if derivative.size < 0:
            raise InvalidArgument("size must not be negative", reason=Reason.INVALID_SIZE)
        scope = self._tenant(principal, request.tenant)
        async with self._sessions() as session, session.begin():
            try:
                file = await store.get_file(
                    session, tenant=scope, file_id=derivative.file_id, include_deleted=True
                )
            except NotFound:
                raise file_not_found(derivative.file_id) from None
            row = await store.add_derivative(
                session,
                tenant=file.tenant,
                file_id=file.id,
                kind=derivative.kind,
                storage_key=derivative_key(file.tenant, file.id, derivative.kind),
                size=derivative.size,
                content_type=derivative.content_type or content_type,
            )
            return convert.derivative(row)

    async def ListDerivatives(
        self, request: pb.ListDerivativesRequest, context: Context
    ) -> pb.ListDerivativesResponse:
        principal = current_principal()
        async with self._sessions() as session, session.begin():
            file = await self._readable_file(
                session, principal, tenant=request.tenant, file_id=request.file_id, reader=""
            )
            rows = await store.list_derivatives(session, tenant=file.tenant, file_id=file.id)
            return pb.ListDerivativesResponse(derivatives=[convert.derivative(row) for row in rows])

    async def RecordProcessingResult(
        self, request: pb.RecordProcessingResultRequest, context: Context
    ) -> resources_pb2.ProcessingResult:
        principal = current_principal()
        if not principal.is_service:
            raise file_not_found(request.result.file_id)
        outcome = convert.step_outcome_from_proto(request.result.outcome)
        if outcome is None:
            raise InvalidArgument("outcome must be set", reason=Reason.INVALID_OUTCOME)
        if not PIPELINE_STEP.fullmatch(request.result.step):
            raise InvalidArgument("step must be [a-z0-9_]{1,64}", reason=Reason.INVALID_STEP)
        scope = self._tenant(principal, request.tenant)
        async with self._sessions() as session, session.begin():
            try:
                row = await store.set_processing_result(
                    session,
                    tenant=scope,
                    file_id=request.result.file_id,
                    step=request.result.step,
                    outcome=outcome,
                    details=dict(request.result.details),
                )
            except NotFound:
                raise file_not_found(request.result.file_id) from None
            return convert.processing_result(row)

    async def ListProcessingResults(
        self, request: pb.ListProcessingResultsRequest, context: Context
    ) -> pb.ListProcessingResultsResponse:
        principal = current_principal()
        async with self._sessions() as session, session.begin():
            file = await self._readable_file(
                session,
                principal,
                tenant=request.tenant,
                file_id=request.file_id,
                reader="",
                include_deleted=True,
            )
            rows = await store.list_processing_results(session, tenant=file.tenant, file_id=file.id)
            return pb.ListProcessingResultsResponse(results=[convert.processing_result(row) for row in rows])

    # ------------------------------------------------------------------------------ quotas

    async def GetQuota(self, request: pb.GetQuotaRequest, context: Context) -> resources_pb2.Quota:
        principal = current_principal()
        tenant = request.tenant if principal.is_service else principal.tenant
        if not principal.is_service and request.owner not in ("", principal.subject):
            raise PermissionDenied(
                "you may read your own and your tenant's quota", reason=Reason.QUOTA_NOT_YOURS
            )
        if not tenant:
            raise InvalidArgument("service callers must name the tenant", reason=Reason.INVALID_TENANT)
        async with self._sessions() as session, session.begin():
            row = await store.get_quota(session, tenant=tenant, owner=request.owner)
            if row is None:
                return resources_pb2.Quota(tenant=tenant, owner=request.owner, limit_bytes=-1)
            return convert.quota(row)

    async def SetQuota(self, request: pb.SetQuotaRequest, context: Context) -> resources_pb2.Quota:
        require_service()
        if not request.tenant:
            raise InvalidArgument("tenant is required", reason=Reason.INVALID_TENANT)
        if request.limit_bytes < 0:
            raise InvalidArgument("limit_bytes must not be negative", reason=Reason.INVALID_LIMIT)
        async with self._sessions() as session, session.begin():
            row = await store.set_quota(
                session, tenant=request.tenant, owner=request.owner, limit_bytes=request.limit_bytes
            )
            return convert.quota(row)

    # ------------------------------------------------------------------------------ internals

    @staticmethod
    def _etag(etag: str) -> int | None:
        if not etag:
            return None
        if not (etag.isascii() and etag.isdigit()):  # isdigit alone takes other scripts' digits
            raise InvalidArgument("etag is not one this service issued", reason=Reason.INVALID_ETAG)
        return int(etag)

    async def _owned_file(self, session: AsyncSession, principal: Principal, file_id: str) -> models.File:
        try:
            file = await store.get_file(
                session, tenant=principal.tenant, file_id=file_id, include_deleted=True
            )
        except NotFound:
            raise file_not_found(file_id) from None
        if file.owner != principal.subject:
            raise file_not_found(file_id)
        return file

    async def _writable_file(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        tenant: str,
        file_id: str,
        include_deleted: bool = False,
        owner_only: bool = False,
    ) -> models.File:
        """The file if the caller may change it (the owner, a WRITE grant unless ``owner_only``, or a
        service); otherwise NOT_FOUND, exactly as if it did not exist."""
        scope = self._tenant(principal, tenant)
        try:
            file = await store.get_file(
                session, tenant=scope, file_id=file_id, include_deleted=include_deleted
            )
        except NotFound:
            raise file_not_found(file_id) from None
        if principal.is_service or file.owner == principal.subject:
            return file
        if not owner_only and await store.is_permitted(
            session, file=file, principal=principal.subject, permission=models.Permission.WRITE
        ):
            return file
        raise file_not_found(file_id)

    @staticmethod
    def _declared(file: resources_pb2.File) -> tuple[str, str, str, dict[str, str]]:
        return (
            clean_name(file.name),
            check_content_type(file.declared_content_type),
            check_sha256(file.sha256),
            check_labels(file.labels),
        )

    @staticmethod
    def _page_size(asked: int) -> int:
        if asked < 0 or asked > store.MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be 0..{store.MAX_PAGE_SIZE}",
                reason=Reason.INVALID_PAGE_SIZE,
                metadata={"max_page_size": str(store.MAX_PAGE_SIZE)},
            )
        return asked or DEFAULT_PAGE_SIZE

    @staticmethod
    def _file_filter(request: pb.ListFilesRequest, principal: Principal) -> store.FileFilter:
        statuses = set()
        for status in request.statuses:
            converted = convert.file_status_from_proto(status)
            if converted is None:
                raise InvalidArgument("statuses must not hold UNSPECIFIED", reason=Reason.INVALID_FILTER)
            statuses.add(converted)
        created_after = (
            convert.from_timestamp(request.created_after) if request.HasField("created_after") else None
        )
        created_before = (
            convert.from_timestamp(request.created_before) if request.HasField("created_before") else None
        )
        if created_after and created_before and created_after >= created_before:
            raise InvalidArgument("created_after must be before created_before", reason=Reason.INVALID_FILTER)
        if len(request.text_contains) > 256 or len(request.name_prefix) > MAX_NAME_CHARS:
            raise InvalidArgument("text or name filter too long", reason=Reason.INVALID_FILTER)
        owner = request.owner or None
        if not principal.is_service:
            # Listing is not grant-aware, so naming another owner would list that owner's private
            # files: a user lists their own (GetFile/AuthorizeRead answer what grants allow).
            if owner not in (None, principal.subject):
                raise InvalidArgument("users list their own files only", reason=Reason.INVALID_FILTER)
            owner = principal.subject
        return store.FileFilter(
            owner=owner,
            statuses=frozenset(statuses),
            content_type_prefix=request.content_type_prefix or None,
            created_after=created_after,
            created_before=created_before,
            labels=dict(request.labels) or None,
            # Names are stored in NFC (clean_name): a prefix typed in another form finds them too.
            name_prefix=unicodedata.normalize("NFC", request.name_prefix) or None,
            text_contains=request.text_contains or None,
        )

    async def RecordFileFacts(
        self, request: pb.RecordFileFactsRequest, context: Context
    ) -> resources_pb2.File:
        principal = require_service()
        sniffed = request.sniffed_content_type
        sniffed = check_content_type(sniffed) if sniffed else ""
        # Bounds the row and the text_contains scan; the processor truncates to it before.
        if len(request.extracted_text.encode("utf-8")) > MAX_EXTRACTED_TEXT_BYTES:
            raise InvalidArgument(
                f"extracted_text is longer than {MAX_EXTRACTED_TEXT_BYTES} bytes of UTF-8",
                reason=Reason.TEXT_TOO_LONG,
            )
        scope = self._tenant(principal, request.tenant)
        async with self._sessions() as session, session.begin():
            try:
                file = await store.update_file_facts(
                    session,
                    tenant=scope,
                    file_id=request.file_id,
                    sniffed_content_type=sniffed or None,
                    extracted_text=request.extracted_text or None,
                )
            except NotFound:
                raise file_not_found(request.file_id) from None
            return convert.file_message(file)
