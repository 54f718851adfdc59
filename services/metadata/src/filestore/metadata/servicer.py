"""MetadataService: the gRPC face of the catalogue. One session and one transaction per RPC; the
data rules (lifecycle, quotas, tenancy, idempotency races) live in :mod:`filestore.metadata.db.store`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from filestore.core.auth import Principal, current_principal
from filestore.core.errors import InvalidArgument, NotFound, Unimplemented
from filestore.metadata import convert
from filestore.metadata.db import models, store
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import metadata_service_pb2_grpc, resources_pb2

Context = grpc.aio.ServicerContext[Any, Any]
M = TypeVar("M", bound=Message)


class _Replayed(Exception):
    """Rolls back a transaction whose request was answered concurrently under the same request_id."""

    def __init__(self, response: bytes) -> None:
        super().__init__("replayed")
        self.response = response


def _not_built(what: str) -> Unimplemented:
    return Unimplemented(f"{what} is not built yet", reason="NOT_IMPLEMENTED_YET")


def _file_not_found(file_id: str) -> NotFound:
    return NotFound("no such file", reason="FILE_NOT_FOUND", metadata={"file_id": file_id})


class MetadataServicer(metadata_service_pb2_grpc.MetadataServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

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
    ) -> M:
        """Run ``run`` in one transaction; with a request_id, a replay answers the stored first answer
        and a different request under the same id is ALREADY_EXISTS (REQUEST_ID_REUSED).

        ``fingerprint`` (default: the request) is what "the same request" means; fields a caller
        derives afresh on every retry, such as an expiry computed from the current time, stay out.
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
                        return response_type.FromString(stored.response)
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
            except _Replayed as replayed:
                return response_type.FromString(replayed.response)

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
            raise _file_not_found(file_id) from None
        if principal.is_service and not reader:
            return file
        who = reader if principal.is_service else principal.subject
        if not await store.is_permitted(session, file=file, principal=who, permission=models.Permission.READ):
            raise _file_not_found(file_id)
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
        raise _not_built("ListFiles")

    async def CreateFile(self, request: pb.CreateFileRequest, context: Context) -> resources_pb2.File:
        raise _not_built("CreateFile")

    async def UpdateFile(self, request: pb.UpdateFileRequest, context: Context) -> resources_pb2.File:
        raise _not_built("UpdateFile")

    async def DeleteFile(self, request: pb.DeleteFileRequest, context: Context) -> resources_pb2.File:
        raise _not_built("DeleteFile")

    async def TransitionFile(self, request: pb.TransitionFileRequest, context: Context) -> resources_pb2.File:
        principal = current_principal()
        target = convert.file_status_from_proto(request.status)
        if target is None:
            raise InvalidArgument("status must be set", reason="INVALID_STATUS")
        expected = self._etag(request.etag)
        scope = self._tenant(principal, request.tenant)

        async def run(session: AsyncSession) -> resources_pb2.File:
            if not principal.is_service:
                # Clients move their own files only; the pipeline states belong to the services.
                await self._owned_file(session, principal, request.file_id)
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
                raise _file_not_found(request.file_id) from None
            return convert.file_message(file)

        return await self._idempotent(
            tenant=scope or "*",
            method="TransitionFile",
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
            raise _file_not_found(request.file_id)
        if len(request.sha256) != 64 or any(c not in "0123456789abcdef" for c in request.sha256):
            raise InvalidArgument("sha256 must be 64 lower-case hex characters", reason="INVALID_SHA256")
        scope = self._tenant(principal, request.tenant)
        async with self._sessions() as session, session.begin():
            try:
                file = await store.get_file(
                    session, tenant=scope, file_id=request.file_id, include_deleted=True
                )
            except NotFound:
                raise _file_not_found(request.file_id) from None
            matches = (not file.sha256 or file.sha256 == request.sha256) and request.size == file.size
            file = await store.update_file_facts(
                session, tenant=scope, file_id=file.id, verified_sha256=request.sha256
            )
            if matches and file.blob_id is None:
                # Verified content becomes a dedup target for its tenant; a mismatch never does.
                blob = await store.register_blob(
                    session,
                    tenant=file.tenant,
                    sha256=request.sha256,
                    size=request.size,
                    storage_key=file.storage_key,
                )
                file = await store.link_file_blob(
                    session, tenant=file.tenant, file_id=file.id, blob_id=blob.id
                )
            elif not matches and file.status == models.FileStatus.PROCESSING:
                reason = "CHECKSUM_MISMATCH" if file.sha256 != request.sha256 else "SIZE_MISMATCH"
                file = await store.transition_file(
                    session,
                    tenant=scope,
                    file_id=file.id,
                    to_status=models.FileStatus.QUARANTINED,
                    reason=reason,
                )
            return convert.file_message(file)

    # ------------------------------------------------------------------------------ uploads

    async def BeginUpload(self, request: pb.BeginUploadRequest, context: Context) -> pb.BeginUploadResponse:
        principal = current_principal()
        tenant = request.file.tenant if principal.is_service else principal.tenant
        owner = request.file.owner if principal.is_service else principal.subject
        if not tenant or not owner:
            raise InvalidArgument("service callers must name the tenant and owner", reason="INVALID_OWNER")
        kind = convert.upload_kind_from_proto(request.kind)
        if kind is None or kind == models.UploadKind.DEDUP:
            raise InvalidArgument(
                "kind must be SINGLE, POST_POLICY or MULTIPART", reason="INVALID_UPLOAD_KIND"
            )
        if not request.HasField("expire_time"):
            raise InvalidArgument("expire_time is required", reason="INVALID_EXPIRY")
        size = request.file.size

        async def run(session: AsyncSession) -> pb.BeginUploadResponse:
            await store.reserve_quota(session, tenant=tenant, owner=owner, nbytes=size)
            file = await store.create_file(
                session,
                tenant=tenant,
                owner=owner,
                name=request.file.name,
                declared_content_type=request.file.declared_content_type,
                size=size,
                sha256=request.file.sha256 or None,
                labels=dict(request.file.labels),
            )
            upload = await store.record_upload(
                session,
                tenant=tenant,
                file_id=file.id,
                kind=kind,
                part_size=request.part_size,
                part_count=request.part_count,
                expires_at=convert.from_timestamp(request.expire_time),
                reserved_bytes=size,
            )
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
        raise _not_built("AttachStorageUpload")

    async def CompleteUploadRecord(
        self, request: pb.CompleteUploadRecordRequest, context: Context
    ) -> pb.CompleteUploadRecordResponse:
        principal = current_principal()
        scope = self._tenant(principal, request.tenant)
        if request.size < 0:
            raise InvalidArgument("size must not be negative", reason="INVALID_SIZE")

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
        raise _not_built("EndUploadRecord")

    async def ClaimExpiredUploads(
        self, request: pb.ClaimExpiredUploadsRequest, context: Context
    ) -> pb.ClaimExpiredUploadsResponse:
        raise _not_built("ClaimExpiredUploads")

    async def _upload_and_file(
        self, session: AsyncSession, principal: Principal, scope: str | None, upload_id: str
    ) -> tuple[models.Upload, models.File]:
        try:
            upload = await store.get_upload(session, tenant=scope, upload_id=upload_id)
            file = await store.get_file(
                session, tenant=upload.tenant, file_id=upload.file_id, include_deleted=True
            )
        except NotFound:
            raise NotFound("no such upload", reason="UPLOAD_NOT_FOUND") from None
        if not principal.is_service and file.owner != principal.subject:
            raise NotFound("no such upload", reason="UPLOAD_NOT_FOUND")
        return upload, file

    # ------------------------------------------------------------------------------ access

    async def AuthorizeRead(
        self, request: pb.AuthorizeReadRequest, context: Context
    ) -> pb.AuthorizeReadResponse:
        principal = current_principal()
        if principal.is_service and not request.principal:
            raise InvalidArgument("service callers must name the principal", reason="INVALID_PRINCIPAL")
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
        raise _not_built("CreateGrant")

    async def ListGrants(self, request: pb.ListGrantsRequest, context: Context) -> pb.ListGrantsResponse:
        raise _not_built("ListGrants")

    async def DeleteGrant(self, request: pb.DeleteGrantRequest, context: Context) -> pb.DeleteGrantResponse:
        raise _not_built("DeleteGrant")

    # ------------------------------------------------------------------------------ processing

    async def CreateDerivative(
        self, request: pb.CreateDerivativeRequest, context: Context
    ) -> resources_pb2.Derivative:
        raise _not_built("CreateDerivative")

    async def ListDerivatives(
        self, request: pb.ListDerivativesRequest, context: Context
    ) -> pb.ListDerivativesResponse:
        raise _not_built("ListDerivatives")

    async def RecordProcessingResult(
        self, request: pb.RecordProcessingResultRequest, context: Context
    ) -> resources_pb2.ProcessingResult:
        principal = current_principal()
        if not principal.is_service:
            raise _file_not_found(request.result.file_id)
        outcome = convert.step_outcome_from_proto(request.result.outcome)
        if outcome is None:
            raise InvalidArgument("outcome must be set", reason="INVALID_OUTCOME")
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
                raise _file_not_found(request.result.file_id) from None
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
        raise _not_built("GetQuota")

    async def SetQuota(self, request: pb.SetQuotaRequest, context: Context) -> resources_pb2.Quota:
        raise _not_built("SetQuota")

    # ------------------------------------------------------------------------------ internals

    @staticmethod
    def _etag(etag: str) -> int | None:
        if not etag:
            return None
        if not etag.isdigit():
            raise InvalidArgument("etag is not one this service issued", reason="INVALID_ETAG")
        return int(etag)

    async def _owned_file(self, session: AsyncSession, principal: Principal, file_id: str) -> models.File:
        try:
            file = await store.get_file(
                session, tenant=principal.tenant, file_id=file_id, include_deleted=True
            )
        except NotFound:
            raise _file_not_found(file_id) from None
        if file.owner != principal.subject:
            raise _file_not_found(file_id)
        return file
