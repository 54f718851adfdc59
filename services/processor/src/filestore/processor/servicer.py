"""ProcessorService: the processing status of files (steering RPCs come with the full pipeline)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from filestore.core.auth import current_principal
from filestore.core.clients import translated_errors
from filestore.core.errors import Unimplemented
from filestore.v1 import metadata_service_pb2, processor_service_pb2, processor_service_pb2_grpc

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub


class ProcessorServicer(processor_service_pb2_grpc.ProcessorServiceServicer):
    def __init__(self, *, metadata: MetadataServiceAsyncStub) -> None:
        self._metadata = metadata

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
        raise Unimplemented("reprocessing is not built yet", reason="NOT_IMPLEMENTED_YET")

    async def ListDeadLetters(
        self,
        request: processor_service_pb2.ListDeadLettersRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> processor_service_pb2.ListDeadLettersResponse:
        raise Unimplemented("dead-letter listing is not built yet", reason="NOT_IMPLEMENTED_YET")

    async def ReplayDeadLetter(
        self,
        request: processor_service_pb2.ReplayDeadLetterRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> processor_service_pb2.ReplayDeadLetterResponse:
        raise Unimplemented("dead-letter replay is not built yet", reason="NOT_IMPLEMENTED_YET")
