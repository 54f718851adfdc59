"""DownloadService: authorizes through the metadata service, then signs a short-lived GET."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from filestore.core.auth import current_principal
from filestore.core.clients import translated_errors
from filestore.core.errors import FailedPrecondition, InvalidArgument, Unimplemented
from filestore.download.settings import DownloadSettings
from filestore.v1 import download_service_pb2, download_service_pb2_grpc, metadata_service_pb2, resources_pb2

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

log = structlog.get_logger("filestore.download")

Status = resources_pb2.FileStatus
#: Why a file that exists and may be read is still not served, by state.
_REFUSALS = {
    Status.FILE_STATUS_PENDING: "FILE_PENDING",
    Status.FILE_STATUS_UPLOADED: "FILE_PROCESSING",
    Status.FILE_STATUS_PROCESSING: "FILE_PROCESSING",
    Status.FILE_STATUS_QUARANTINED: "FILE_QUARANTINED",
    Status.FILE_STATUS_FAILED: "FILE_FAILED",
    Status.FILE_STATUS_DELETED: "FILE_DELETED",
}


def content_disposition(name: str) -> str:
    """RFC 6266 ``attachment`` with an ASCII fallback and the exact name in ``filename*`` (RFC 5987)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    return f"attachment; filename=\"{fallback or 'download'}\"; filename*=UTF-8''{quote(name, safe='')}"


class DownloadServicer(download_service_pb2_grpc.DownloadServiceServicer):
    def __init__(
        self, settings: DownloadSettings, *, metadata: MetadataServiceAsyncStub, presigner: S3Client
    ) -> None:
        self._settings = settings
        self._metadata = metadata
        self._presigner = presigner

    async def GetDownloadUrl(
        self, request: download_service_pb2.GetDownloadUrlRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> download_service_pb2.DownloadUrl:
        principal = current_principal()
        ttl = self._ttl(request.ttl_seconds)
        with translated_errors():
            authorized = await self._metadata.AuthorizeRead(
                metadata_service_pb2.AuthorizeReadRequest(
                    file_id=request.file_id, tenant=principal.tenant, principal=principal.subject
                )
            )
        file = authorized.file
        if file.status != Status.FILE_STATUS_READY:
            reason = _REFUSALS.get(file.status, "FILE_NOT_READY")
            raise FailedPrecondition(f"the file is not ready to download ({reason})", reason=reason)
        content_type = file.sniffed_content_type or file.declared_content_type
        disposition = content_disposition(file.name)
        url = self._presigner.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self._settings.s3.bucket,
                "Key": authorized.storage_key,
                "ResponseContentType": content_type,
                "ResponseContentDisposition": disposition,
            },
            ExpiresIn=ttl,
        )
        expires = Timestamp()
        expires.FromDatetime(datetime.now(UTC) + timedelta(seconds=ttl))
        log.info("download_signed", file_id=file.id, ttl_s=ttl)
        return download_service_pb2.DownloadUrl(
            file_id=file.id,
            url=url,
            expire_time=expires,
            content_type=content_type,
            content_disposition=disposition,
            size=file.size,
        )

    async def BatchGetDownloadUrls(
        self,
        request: download_service_pb2.BatchGetDownloadUrlsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> download_service_pb2.BatchGetDownloadUrlsResponse:
        raise Unimplemented("batch downloads are not built yet", reason="NOT_IMPLEMENTED_YET")

    async def GetDerivativeUrl(
        self,
        request: download_service_pb2.GetDerivativeUrlRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> download_service_pb2.DownloadUrl:
        raise Unimplemented("derivative downloads are not built yet", reason="NOT_IMPLEMENTED_YET")

    def _ttl(self, asked: int) -> int:
        if asked < 0:
            raise InvalidArgument("ttl_seconds must not be negative", reason="INVALID_TTL")
        if asked == 0:
            return self._settings.default_ttl_s
        return max(self._settings.min_ttl_s, min(asked, self._settings.max_ttl_s))
