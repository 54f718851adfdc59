"""The processing RPCs, what the pipeline records about a file: RecordVerifiedContent, RecordFileFacts,
RecordProcessingResult, CreateDerivative, QuarantineContent; and the reads of it, ListDerivatives and
ListProcessingResults."""

from __future__ import annotations

import re

from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.auth import current_principal, require_service
from filestore.core.errors import InvalidArgument, file_not_found
from filestore.core.keys import KeyKind, derivative_key, key_prefix
from filestore.core.reasons import Reason
from filestore.core.validation import MAX_EXTRACTED_TEXT_BYTES, check_content_type
from filestore.metadata import convert
from filestore.metadata.db import models, store
from filestore.metadata.servicer.base import Context, ServicerBase
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2

__all__ = ["ProcessingRpcs"]

# Matched whole (fullmatch): `$` would also accept a trailing newline.
DERIVATIVE_KIND = re.compile(r"[a-z0-9_]{1,64}")
PIPELINE_STEP = re.compile(r"[a-z0-9_]{1,64}")
REASON = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


class ProcessingRpcs(ServicerBase):
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

        async def record(session: AsyncSession) -> resources_pb2.File:
            file = await store.get_file(session, tenant=scope, file_id=request.file_id, include_deleted=True)
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
            return convert.file_message(file)

        answer = await self._unit.write(record)
        # After the commit, as DeleteFile does: were the transaction to fail, the bytes would be lost.
        await self._objects.delete(superseded)
        return answer

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

        async def record(session: AsyncSession) -> resources_pb2.File:
            file = await store.update_file_facts(
                session,
                tenant=scope,
                file_id=request.file_id,
                sniffed_content_type=sniffed or None,
                extracted_text=request.extracted_text or None,
            )
            return convert.file_message(file)

        return await self._unit.write(record)

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

        async def record(session: AsyncSession) -> resources_pb2.ProcessingResult:
            row = await store.set_processing_result(
                session,
                tenant=scope,
                file_id=request.result.file_id,
                step=request.result.step,
                outcome=outcome,
                details=dict(request.result.details),
            )
            return convert.processing_result(row)

        return await self._unit.write(record)

    async def ListProcessingResults(
        self, request: pb.ListProcessingResultsRequest, context: Context
    ) -> pb.ListProcessingResultsResponse:
        principal = current_principal()
        async with self._unit.read() as session:
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

        async def create(session: AsyncSession) -> resources_pb2.Derivative:
            file = await store.get_file(
                session, tenant=scope, file_id=derivative.file_id, include_deleted=True
            )
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

        return await self._unit.write(create)

    async def ListDerivatives(
        self, request: pb.ListDerivativesRequest, context: Context
    ) -> pb.ListDerivativesResponse:
        principal = current_principal()
        async with self._unit.read() as session:
            file = await self._readable_file(
                session, principal, tenant=request.tenant, file_id=request.file_id, reader=""
            )
            rows = await store.list_derivatives(session, tenant=file.tenant, file_id=file.id)
            return pb.ListDerivativesResponse(derivatives=[convert.derivative(row) for row in rows])

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

        async def quarantine(session: AsyncSession) -> pb.QuarantineContentResponse:
            files = await store.quarantine_content(
                session, tenant=request.tenant, storage_key=request.storage_key, reason=request.reason
            )
            return pb.QuarantineContentResponse(files=[convert.file_message(file) for file in files])

        return await self._unit.write(quarantine)
