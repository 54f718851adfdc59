"""The processing RPCs, what the pipeline records about a file. The processor walks one road:
StartProcessing claims a file and answers what a run needs, RecordProcessingOutcome records steps with
their facts, derivatives and the state they imply, one transaction each; QuarantineContent stops
content that changed. The finer RPCs they replaced for the processor (RecordVerifiedContent,
RecordFileFacts, RecordProcessingResult, CreateDerivative) share their checks and store functions.
The reads: ListDerivatives and ListProcessingResults."""

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
        _check_sha256(request.sha256)
        scope = self._tenant(principal, request.tenant)
        superseded: list[str] = []

        async def record(session: AsyncSession) -> resources_pb2.File:
            verified = await store.record_verified_content(
                session, tenant=scope, file_id=request.file_id, sha256=request.sha256, size=request.size
            )
            superseded.extend(verified.orphaned_storage_keys)
            return convert.file_message(verified.file)

        answer = await self._unit.write(record)
        # After the commit, as DeleteFile does: were the transaction to fail, the bytes would be lost.
        await self._objects.delete(superseded)
        return answer

    async def RecordFileFacts(
        self, request: pb.RecordFileFactsRequest, context: Context
    ) -> resources_pb2.File:
        principal = require_service()
        sniffed = _checked_facts(request.sniffed_content_type, request.extracted_text)
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
        outcome = _checked_outcome(request.result)
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
        content_type = _checked_derivative(derivative)
        scope = self._tenant(principal, request.tenant)

        async def create(session: AsyncSession) -> resources_pb2.Derivative:
            file = await store.get_file(
                session, tenant=scope, file_id=derivative.file_id, include_deleted=True
            )
            return await _register_derivative(session, file, derivative, content_type)

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

    async def StartProcessing(
        self, request: pb.StartProcessingRequest, context: Context
    ) -> pb.StartProcessingResponse:
        principal = require_service()
        scope = self._tenant(principal, request.tenant)

        async def answer(session: AsyncSession, claim: store.FileClaim) -> pb.StartProcessingResponse:
            file = claim.file
            rows = await store.list_processing_results(session, tenant=file.tenant, file_id=file.id)
            return pb.StartProcessingResponse(
                file=convert.file_message(file),
                content_key=file.storage_key,
                results=[convert.processing_result(row) for row in rows],
                claimed=claim.claimed,
            )

        if not request.claim:
            async with self._unit.read() as session:
                file = await store.get_file(
                    session, tenant=scope, file_id=request.file_id, include_deleted=True
                )
                return await answer(session, store.FileClaim(file=file, claimed=False))

        async def start(session: AsyncSession) -> pb.StartProcessingResponse:
            return await answer(
                session, await store.claim_file(session, tenant=scope, file_id=request.file_id)
            )

        return await self._unit.write(start)

    async def RecordProcessingOutcome(
        self, request: pb.RecordProcessingOutcomeRequest, context: Context
    ) -> pb.RecordProcessingOutcomeResponse:
        principal = require_service()
        outcomes = [(result, _checked_outcome(result)) for result in request.results]
        verified = request.verified_content if request.HasField("verified_content") else None
        if verified is not None:
            _check_sha256(verified.sha256)
            if verified.size < 0:
                raise InvalidArgument("size must not be negative", reason=Reason.INVALID_SIZE)
        sniffed = _checked_facts(request.sniffed_content_type, request.extracted_text)
        derivatives = [(derivative, _checked_derivative(derivative)) for derivative in request.derivatives]
        target = _checked_conclusion(request.status, request.status_reason)
        scope = self._tenant(principal, request.tenant)
        superseded: list[str] = []

        async def record(session: AsyncSession) -> pb.RecordProcessingOutcomeResponse:
            file: models.FileColumns = await store.get_file(session, tenant=scope, file_id=request.file_id)
            content = None
            if verified is not None:
                content = await store.record_verified_content(
                    session, tenant=scope, file_id=file.id, sha256=verified.sha256, size=verified.size
                )
                file = content.file
                superseded.extend(content.orphaned_storage_keys)
            results = []
            for result, outcome in outcomes:
                details = dict(result.details)
                if content is not None and content.deduplicated:
                    details["deduplicated"] = "true"
                row = await store.record_step_outcome(
                    session, tenant=scope, file_id=file.id, step=result.step, outcome=outcome, details=details
                )
                results.append(convert.processing_result(row))
            if sniffed or request.extracted_text:
                file = await store.update_file_facts(
                    session,
                    tenant=scope,
                    file_id=file.id,
                    sniffed_content_type=sniffed or None,
                    extracted_text=request.extracted_text or None,
                )
            registered = [
                await _register_derivative(session, file, derivative, content_type)
                for derivative, content_type in derivatives
            ]
            # Content that does not match what the file declared has quarantined it: no step's
            # verdict may take it anywhere else.
            if target is not None and (content is None or content.matched):
                file = await store.transition_file(
                    session,
                    tenant=scope,
                    file_id=file.id,
                    to_status=target,
                    reason=request.status_reason or None,
                )
            return pb.RecordProcessingOutcomeResponse(
                file=convert.file_message(file),
                content_key=file.storage_key,
                results=results,
                derivatives=registered,
            )

        answer = await self._unit.write(record)
        # After the commit, as DeleteFile does: were the transaction to fail, the bytes would be lost.
        await self._objects.delete(superseded)
        return answer


#: The states a processing outcome may take a file to.
_CONCLUSIONS = frozenset({models.FileStatus.READY, models.FileStatus.QUARANTINED, models.FileStatus.FAILED})


def _check_sha256(sha256: str) -> None:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise InvalidArgument("sha256 must be 64 lower-case hex characters", reason=Reason.INVALID_SHA256)


def _checked_outcome(result: resources_pb2.ProcessingResult) -> models.ProcessingOutcome:
    outcome = convert.step_outcome_from_proto(result.outcome)
    if outcome is None:
        raise InvalidArgument("outcome must be set", reason=Reason.INVALID_OUTCOME)
    if not PIPELINE_STEP.fullmatch(result.step):
        raise InvalidArgument("step must be [a-z0-9_]{1,64}", reason=Reason.INVALID_STEP)
    return outcome


def _checked_facts(sniffed_content_type: str, extracted_text: str) -> str:
    """The sniffed type as stored ("" for none), once both facts are within their limits."""
    sniffed = check_content_type(sniffed_content_type) if sniffed_content_type else ""
    # Bounds the row and the text_contains scan; the processor truncates to it before.
    if len(extracted_text.encode("utf-8")) > MAX_EXTRACTED_TEXT_BYTES:
        raise InvalidArgument(
            f"extracted_text is longer than {MAX_EXTRACTED_TEXT_BYTES} bytes of UTF-8",
            reason=Reason.TEXT_TOO_LONG,
        )
    return sniffed


def _checked_derivative(derivative: resources_pb2.Derivative) -> str:
    """The derivative's content type without parameters, once kind, type and size are valid."""
    if not DERIVATIVE_KIND.fullmatch(derivative.kind):
        raise InvalidArgument("kind must be [a-z0-9_]{1,64}", reason=Reason.INVALID_KIND)
    content_type = check_content_type(derivative.content_type.split(";")[0])
    if len(derivative.content_type) > 255:
        raise InvalidArgument(
            "content_type is longer than 255 characters", reason=Reason.INVALID_CONTENT_TYPE
        )
    if derivative.size < 0:
        raise InvalidArgument("size must not be negative", reason=Reason.INVALID_SIZE)
    return content_type


def _checked_conclusion(status: resources_pb2.FileStatus.ValueType, reason: str) -> models.FileStatus | None:
    if status == resources_pb2.FILE_STATUS_UNSPECIFIED:
        return None
    target = convert.file_status_from_proto(status)
    if target not in _CONCLUSIONS:
        raise InvalidArgument("status must be READY, QUARANTINED or FAILED", reason=Reason.INVALID_STATUS)
    if target != models.FileStatus.READY and not REASON.fullmatch(reason):
        raise InvalidArgument(
            "status_reason must be UPPER_SNAKE, 1-64 characters", reason=Reason.INVALID_REASON
        )
    return target


async def _register_derivative(
    session: AsyncSession, file: models.FileColumns, derivative: resources_pb2.Derivative, content_type: str
) -> resources_pb2.Derivative:
    """One per file and kind, at the key the catalogue builds (never one the caller names)."""
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
