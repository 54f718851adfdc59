"""DownloadService: authorizes through the metadata service, then signs a short-lived GET.

What a URL serves is decided here, not by the stored object: the Content-Type is pinned to the type
sniffed from the bytes, and Content-Disposition is ``attachment`` unless the caller asked for inline
and the type is one a browser renders without running code (never HTML, SVG, XML or scripts).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from filestore.core.auth import Principal, current_principal
from filestore.core.channels import translated_errors
from filestore.core.errors import (
    FailedPrecondition,
    FilestoreError,
    InvalidArgument,
    Unavailable,
    derivative_not_found,
    file_not_found,
)
from filestore.core.reasons import Reason
from filestore.download.cdn import CdnUrls
from filestore.download.settings import DownloadSettings
from filestore.server import events, metrics
from filestore.server.sigv4 import PresignedUrl
from filestore.server.storage import DEFAULT_STORE
from filestore.v1 import (
    download_service_pb2,
    download_service_pb2_grpc,
    events_pb2,
    metadata_service_pb2,
    resources_pb2,
)

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

log = structlog.get_logger("filestore.download")

Status = resources_pb2.FileStatus
MAX_BATCH = 100
_GET_URLS = metrics.PRESIGNED_URLS.labels("get")
_CDN_URLS = metrics.PRESIGNED_URLS.labels("cdn")
#: Why a file that exists and may be read is still not served, by state.
_REFUSALS = {
    Status.FILE_STATUS_PENDING: Reason.FILE_PENDING,
    Status.FILE_STATUS_UPLOADED: Reason.FILE_PROCESSING,
    Status.FILE_STATUS_PROCESSING: Reason.FILE_PROCESSING,
    Status.FILE_STATUS_QUARANTINED: Reason.FILE_QUARANTINED,
    Status.FILE_STATUS_FAILED: Reason.FILE_FAILED,
    Status.FILE_STATUS_DELETED: Reason.FILE_DELETED,
}
#: Types a browser renders without executing anything; only these may be served inline or via CDN.
SAFE_TO_RENDER = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "application/pdf",
        "text/plain",
        "video/mp4",
        "video/webm",
        "audio/mpeg",
        "audio/ogg",
        "audio/wav",
    }
)
FALLBACK_TYPE = "application/octet-stream"


def content_disposition(name: str, *, inline: bool = False) -> str:
    """RFC 6266: an ASCII ``filename`` fallback and the exact name in ``filename*`` (RFC 5987)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback or 'download'}\"; filename*=UTF-8''{quote(name, safe='')}"


def served_type(file: resources_pb2.File) -> str:
    """The type a response carries: what the bytes are (sniffed), else what was declared."""
    return (file.sniffed_content_type or file.declared_content_type or FALLBACK_TYPE).lower()


def _stored_safe(file: resources_pb2.File) -> bool:
    """Whether the Content-Type stored with the object (the declared one, pinned by the upload URL)
    is safe to render. A CDN serves that header, not the sniffed type: text declared as HTML sniffs
    as text/plain, yet a browser would render it as HTML from the CDN's origin."""
    return (file.declared_content_type or FALLBACK_TYPE).lower() in SAFE_TO_RENDER


class DownloadSigning(Protocol):
    """What the signer asks of storage: GET URLs for clients, signed for the store's public endpoint
    (:class:`filestore.server.storage.ObjectStore` has it). Signing is computation only: no call to
    storage is made."""

    def presign_get(
        self,
        key: str,
        *,
        expires_s: int,
        response_content_type: str = "",
        response_content_disposition: str = "",
    ) -> PresignedUrl: ...


@dataclass(frozen=True, slots=True)
class _Authorized:
    file: resources_pb2.File
    storage_key: str


class DownloadServicer(download_service_pb2_grpc.DownloadServiceServicer):
    def __init__(
        self,
        settings: DownloadSettings,
        *,
        metadata: MetadataServiceAsyncStub,
        store: DownloadSigning,
        jetstream: JetStreamContext | None,
        cdn: CdnUrls | None,
        stores: Mapping[str, DownloadSigning] | None = None,
    ) -> None:
        """``store`` is the store named ``default``; ``stores`` every store by name (that one
        included): a URL is signed for the store holding the file (or its nearest replica)."""
        self._settings = settings
        self._metadata = metadata
        self._stores: dict[str, DownloadSigning] = dict(stores) if stores else {DEFAULT_STORE: store}
        self._js = jetstream
        self._cdn = cdn
        self._subjects = events.Subjects(settings.nats.subject_prefix if settings.nats else "files")

    async def GetDownloadUrl(
        self, request: download_service_pb2.GetDownloadUrlRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> download_service_pb2.DownloadUrl:
        return await self._file_url(current_principal(), request)

    async def BatchGetDownloadUrls(
        self,
        request: download_service_pb2.BatchGetDownloadUrlsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> download_service_pb2.BatchGetDownloadUrlsResponse:
        principal = current_principal()
        if len(request.requests) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} files per batch", reason=Reason.TOO_MANY_FILES)

        async def one(
            item: download_service_pb2.GetDownloadUrlRequest,
        ) -> download_service_pb2.BatchDownloadUrlResult:
            try:
                url = await self._file_url(principal, item)
            except FilestoreError as error:
                return download_service_pb2.BatchDownloadUrlResult(
                    file_id=item.file_id, error_reason=error.reason
                )
            return download_service_pb2.BatchDownloadUrlResult(file_id=item.file_id, download_url=url)

        results = await asyncio.gather(*(one(item) for item in request.requests))
        return download_service_pb2.BatchGetDownloadUrlsResponse(results=results)

    async def GetDerivativeUrl(
        self,
        request: download_service_pb2.GetDerivativeUrlRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> download_service_pb2.DownloadUrl:
        principal = current_principal()
        ttl = self._ttl(request.ttl_seconds)
        authorized = await self._authorize(principal, request.file_id)
        with translated_errors():
            listed = await self._metadata.ListDerivatives(
                metadata_service_pb2.ListDerivativesRequest(file_id=request.file_id, tenant=principal.tenant)
            )
        derivative = next((d for d in listed.derivatives if d.kind == request.kind), None)
        if derivative is None:
            raise derivative_not_found(request.file_id, request.kind)
        content_type = derivative.content_type.split(";")[0].strip().lower() or FALLBACK_TYPE
        inline = content_type in SAFE_TO_RENDER
        disposition = content_disposition(f"{authorized.file.name}.{request.kind}", inline=inline)
        # Derivatives are written to the file's own store, and are not replicated.
        url, expires = self._presign(
            authorized.file.store, derivative.storage_key, content_type, disposition, ttl
        )
        await self._audit(authorized.file, principal, derivative_kind=request.kind, expires=expires)
        return download_service_pb2.DownloadUrl(
            file_id=authorized.file.id,
            url=url,
            expire_time=_timestamp(expires),
            content_type=content_type,
            content_disposition=disposition,
            size=derivative.size,
        )

    async def _file_url(
        self, principal: Principal, request: download_service_pb2.GetDownloadUrlRequest
    ) -> download_service_pb2.DownloadUrl:
        ttl = self._ttl(request.ttl_seconds)
        authorized = await self._authorize(principal, request.file_id)
        file = authorized.file
        content_type = served_type(file)
        safe = content_type in SAFE_TO_RENDER
        inline = safe and request.disposition == download_service_pb2.DISPOSITION_INLINE
        disposition = content_disposition(file.name, inline=inline)
        public = file.visibility == resources_pb2.VISIBILITY_PUBLIC
        if self._cdn is not None and public and safe and _stored_safe(file):
            # The CDN serves the stored headers, so only types safe to render go that way.
            expires = datetime.now(UTC) + timedelta(seconds=ttl)
            url = self._cdn.url(authorized.storage_key, expires=expires)
            _CDN_URLS.inc()
        else:
            store = self._nearest(file, request.preferred_region)
            url, expires = self._presign(store, authorized.storage_key, content_type, disposition, ttl)
        await self._audit(file, principal, derivative_kind="", expires=expires)
        log.info("download_signed", file_id=file.id, ttl_s=ttl, inline=inline)
        return download_service_pb2.DownloadUrl(
            file_id=file.id,
            url=url,
            expire_time=_timestamp(expires),
            content_type=content_type,
            content_disposition=disposition,
            size=file.size,
        )

    async def _authorize(self, principal: Principal, file_id: str) -> _Authorized:
        if not file_id:
            raise file_not_found(file_id)
        with translated_errors():
            authorized = await self._metadata.AuthorizeRead(
                metadata_service_pb2.AuthorizeReadRequest(
                    file_id=file_id, tenant=principal.tenant, principal=principal.subject
                )
            )
        if authorized.file.status != Status.FILE_STATUS_READY:
            reason = _REFUSALS.get(authorized.file.status, Reason.FILE_NOT_READY)
            raise FailedPrecondition(f"the file is not ready to download ({reason})", reason=reason)
        if authorized.file.archived:
            # The catalogue's tier decides: SeaweedFS would serve an archived object all the same.
            raise FailedPrecondition(
                "the file is archived; restore it first (ProcessorService.RestoreFile)",
                reason=Reason.FILE_ARCHIVED,
                metadata={"file_id": authorized.file.id, "storage_class": authorized.file.storage_class},
            )
        return _Authorized(file=authorized.file, storage_key=authorized.storage_key)

    def _nearest(self, file: resources_pb2.File, preferred_region: str) -> str:
        """The store to sign for: of the file's own store and its READY replicas (those this signer
        knows), the first in ``preferred_region``; the file's own store when none is there."""
        own = file.store or DEFAULT_STORE
        if preferred_region:
            configured = self._settings.stores
            for name in (own, *file.replica_stores):
                config = configured.get(name)
                if name in self._stores and config is not None and config.region == preferred_region:
                    return name
        return own

    def _presign(
        self, store_name: str, key: str, content_type: str, disposition: str, ttl: int
    ) -> tuple[str, datetime]:
        store = self._stores.get(store_name or DEFAULT_STORE)
        if store is None:
            raise FailedPrecondition(
                f"store {store_name!r} is not configured here",
                reason=Reason.UNKNOWN_STORE,
                metadata={"store": store_name},
            )
        signed = store.presign_get(
            key,
            expires_s=ttl,
            response_content_type=content_type,
            response_content_disposition=disposition,
        )
        _GET_URLS.inc()
        return signed.url, signed.expires_at

    async def _audit(
        self, file: resources_pb2.File, principal: Principal, *, derivative_kind: str, expires: datetime
    ) -> None:
        """One audit event per URL handed out. Fails closed: no audit record, no URL."""
        if self._js is None:
            return
        event = events_pb2.FileDownloaded(
            file_id=file.id,
            tenant=file.tenant,
            principal=principal.subject,
            derivative_kind=derivative_kind,
            expire_time=_timestamp(expires),
            event_time=_timestamp(datetime.now(UTC)),
        )
        try:
            await events.publish(self._js, self._subjects.file_downloaded, event, msg_id=str(uuid.uuid4()))
        except Exception as error:
            raise Unavailable(
                "the download could not be audited; retry", reason=Reason.AUDIT_UNAVAILABLE
            ) from error

    def _ttl(self, asked: int) -> int:
        if asked < 0:
            raise InvalidArgument("ttl_seconds must not be negative", reason=Reason.INVALID_TTL)
        if asked == 0:
            return self._settings.default_ttl_s
        return max(self._settings.min_ttl_s, min(asked, self._settings.max_ttl_s))


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
