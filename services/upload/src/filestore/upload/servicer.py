"""UploadService: hands out presigned requests and checks with storage what arrived.

The broker never touches file content: it signs requests, makes control calls to storage
(HEAD, multipart bookkeeping), and records state through the metadata service.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from filestore.core.auth import Principal, current_principal
from filestore.core.channels import translated_errors
from filestore.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FilestoreError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    upload_ended,
    upload_not_found,
)
from filestore.core.keys import original_key
from filestore.core.reasons import Reason
from filestore.server import events, metrics
from filestore.server.sigv4 import ChecksumName, PartChecksum, PartToSign, PostPolicy, PresignedUrl
from filestore.server.storage import DEFAULT_STORE, ObjectHead, StoredPart
from filestore.upload import validation
from filestore.upload.plan import PartPlan, plan_parts
from filestore.upload.reaper import UploadBytes, discard_upload_bytes
from filestore.upload.session import SessionTokens, UploadSession, parts_not_accepted
from filestore.upload.settings import MAX_OBJECT_BYTES, SINGLE_PUT_LIMIT, UploadSettings
from filestore.v1 import (
    events_pb2,
    metadata_service_pb2,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

log = structlog.get_logger("filestore.upload")

Kind = resources_pb2.UploadKind
State = resources_pb2.UploadState
Record = metadata_service_pb2.UploadRecord
Context = grpc.aio.ServicerContext[Any, Any]

#: SignParts signs at most this many parts per call (the contract says so).
MAX_PARTS_PER_SIGN = 1000
_PUT_URLS = metrics.PRESIGNED_URLS.labels("put")
_POST_POLICIES = metrics.PRESIGNED_URLS.labels("post_policy")
_PART_URLS = metrics.PRESIGNED_URLS.labels("part")
#: The storage checksum each part carries, by the upload's declared algorithm (none when unset).
_PART_CHECKSUMS: dict[int, ChecksumName] = {
    resources_pb2.CHECKSUM_ALGORITHM_CRC32: "crc32",
    resources_pb2.CHECKSUM_ALGORITHM_SHA256: "sha256",
}
#: States in which an upload has ended without its bytes: it can no longer be completed.
_ENDED_UNCOMPLETED = frozenset({State.UPLOAD_STATE_ABORTED, State.UPLOAD_STATE_EXPIRED})
#: BeginUpload's answers that say its transaction recorded nothing: the request was refused before
#: or inside it, and rolled back. UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL and a cancelled call are
#: not among them: the transaction may have committed and only its answer been lost.
_REFUSED = (
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Aborted,
    ResourceExhausted,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
)


class BrokerStorage(UploadBytes, Protocol):
    """What the broker asks of storage (:class:`filestore.server.storage.ObjectStore` has it): control
    calls that never carry file content, and the URLs clients send the content with."""

    async def head(self, key: str) -> ObjectHead | None: ...
    async def create_multipart(
        self, key: str, *, content_type: str, checksum_algorithm: ChecksumName | None = None
    ) -> str: ...
    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None: ...
    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], checksums: Mapping[int, PartChecksum]
    ) -> bool: ...
    def presign_put(
        self, key: str, *, content_type: str, size: int, sha256_hex: str = "", expires_s: int
    ) -> PresignedUrl: ...
    def post_policy(self, key: str, *, content_type: str, size: int, expires_s: int) -> PostPolicy: ...
    def presign_parts(
        self, key: str, *, upload_id: str, parts: Iterable[PartToSign], expires_s: int
    ) -> list[PresignedUrl]: ...


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _past_expiry(record: Record) -> bool:
    return record.HasField("expire_time") and record.expire_time.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)


def _plan_of(record: Record) -> PartPlan:
    return PartPlan(size=record.size, part_size=record.part_size, part_count=record.part_count)


def _parts_to_sign(
    request: upload_service_pb2.SignPartsRequest, session: UploadSession
) -> tuple[list[int], dict[int, PartChecksum]]:
    """The part numbers SignParts was asked for and their checksums, checked against the upload's
    plan and part checksum algorithm: the same checks whether the facts came from a session token
    or from the catalogue."""
    numbers = list(request.part_numbers)
    if not numbers:
        raise InvalidArgument("name at least one part number", reason=Reason.INVALID_PART_NUMBER)
    if len(numbers) > MAX_PARTS_PER_SIGN:
        raise InvalidArgument(
            f"at most {MAX_PARTS_PER_SIGN} parts per call",
            reason=Reason.TOO_MANY_PARTS,
            metadata={"max_parts": str(MAX_PARTS_PER_SIGN)},
        )
    plan = session.plan
    for number in numbers:
        plan.part_length(number)  # refuses numbers outside 1..part_count
    checksums = validation.part_checksums(
        numbers,
        request.part_sha256,
        request.part_crc32,
        algorithm=_PART_CHECKSUMS.get(session.part_checksum_algorithm),
    )
    return numbers, checksums


def _current_parts(record: Record, parts: list[StoredPart]) -> dict[int, StoredPart]:
    """One part per part number. SeaweedFS (4.48) lists *every* copy of a part that was sent
    again, in no reliable order, where S3 keeps only the last. The copy to use is one with the
    planned size if there is one (our URLs pin the length, so another size was not sent through
    them), and among those the latest."""
    plan = _plan_of(record)
    chosen: dict[int, StoredPart] = {}
    for part in parts:
        try:
            planned = plan.part_length(part.part_number)
        except InvalidArgument:
            planned = -1  # beyond the plan: reported by the completion check

        def rank(candidate: StoredPart, planned: int = planned) -> tuple[bool, float]:
            return (candidate.size == planned, candidate.last_modified)

        current = chosen.get(part.part_number)
        if current is None or rank(part) > rank(current):
            chosen[part.part_number] = part
    return chosen


#: ListOpenUploads' page: the default, and the most, each a listing of parts in storage at worst.
DEFAULT_OPEN_UPLOADS_PAGE = 10
MAX_OPEN_UPLOADS_PAGE = 25


#: CreateUpload's placement hints: the longest region name, the most round-trip times.
MAX_REGION_CHARS = 63
MAX_STORE_RTTS = 64


class UploadServicer(upload_service_pb2_grpc.UploadServiceServicer):
    def __init__(
        self,
        settings: UploadSettings,
        *,
        metadata: MetadataServiceAsyncStub,
        store: BrokerStorage,
        jetstream: JetStreamContext,
        stores: Mapping[str, BrokerStorage] | None = None,
    ) -> None:
        """``store`` is the store named ``default`` (``FILESTORE_S3_*``); ``stores`` every store by
        name, that one included (only it when not given)."""
        self._settings = settings
        self._metadata = metadata
        self._stores: dict[str, BrokerStorage] = dict(stores) if stores else {DEFAULT_STORE: store}
        self._js = jetstream
        self._subjects = events.Subjects(settings.nats.subject_prefix)
        self._sessions = SessionTokens(settings.session_key)

    # ------------------------------------------------------------------------------ RPCs

    async def CreateUpload(
        self, request: upload_service_pb2.CreateUploadRequest, context: Context
    ) -> upload_service_pb2.CreateUploadResponse:
        principal = current_principal()
        name = validation.clean_name(request.name)
        maximum, type_lists = self._settings.limits_for(principal.tenant)
        if request.size > MAX_OBJECT_BYTES:
            # Larger than any object storage can hold: a malformed request, not a policy limit.
            raise InvalidArgument(
                f"size must be at most {MAX_OBJECT_BYTES} bytes", reason=Reason.INVALID_SIZE
            )
        validation.check_size(request.size, maximum=maximum)
        content_type = validation.check_content_type(request.content_type, allowed=type_lists)
        sha256 = validation.check_sha256(request.sha256)
        kind, plan = self._choose_kind(request)
        checksum_algorithm = request.part_checksum_algorithm
        if checksum_algorithm and checksum_algorithm not in _PART_CHECKSUMS:
            raise InvalidArgument(
                "part_checksum_algorithm must be CRC32 or SHA256", reason=Reason.INVALID_CHECKSUM_ALGORITHM
            )
        expires = datetime.now(UTC) + timedelta(seconds=self._settings.upload_ttl_s)
        offered = await self._placement(principal, request)
        file_id = storage_upload_id = ""
        if kind == Kind.UPLOAD_KIND_MULTIPART:
            # Storage's upload is made before the catalogue records it: in the one store chosen.
            offered = offered[:1]
            # The storage upload first, at the key of a file id chosen here, so that BeginUpload
            # records it in the transaction that opens the upload: one metadata write per create.
            file_id = str(uuid.uuid4())
            storage_upload_id = await self._storage(offered[0]).create_multipart(
                original_key(principal.tenant, file_id),
                content_type=content_type,
                checksum_algorithm=_PART_CHECKSUMS.get(checksum_algorithm),
            )
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
            kind=kind,
            part_size=plan.part_size if plan else 0,
            part_count=plan.part_count if plan else 0,
            expire_time=_timestamp(expires),
            request_id=request.request_id,
            part_checksum_algorithm=(
                checksum_algorithm
                if kind == Kind.UPLOAD_KIND_MULTIPART
                else resources_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED
            ),
            file_id=file_id,
            storage_upload_id=storage_upload_id,
            stores=offered,
        )
        began = await self._begin_upload(begin)
        record = began.upload
        if record.kind == Kind.UPLOAD_KIND_DEDUP:
            await self._publish_dedup(record)
        log.info(
            "upload_created",
            upload_id=record.id,
            file_id=began.file.id,
            size=request.size,
            kind=Kind.Name(record.kind),
        )
        upload = self._client_view(record, caller=principal)
        if (
            record.kind == Kind.UPLOAD_KIND_MULTIPART
            and record.state == State.UPLOAD_STATE_OPEN
            and record.storage_upload_id  # none only on a record older than this broker: see SignParts
            and record.part_checksum_algorithm not in _PART_CHECKSUMS
        ):
            # Without a declared checksum a part URL needs nothing from the client: a first batch
            # saves it a round trip. With one, every URL must carry its part's checksum.
            first = range(1, min(record.part_count, self._settings.first_part_urls) + 1)
            upload.part_urls.extend(self._sign_parts(UploadSession.of(record, principal), first, {}))
        return upload_service_pb2.CreateUploadResponse(upload=upload, file=began.file)

    async def GetUpload(
        self, request: upload_service_pb2.GetUploadRequest, context: Context
    ) -> resources_pb2.Upload:
        principal = current_principal()
        record = await self._own_record(request.upload_id, principal)
        return await self._resumable_view(record, principal)

    async def ListOpenUploads(
        self, request: upload_service_pb2.ListOpenUploadsRequest, context: Context
    ) -> upload_service_pb2.ListOpenUploadsResponse:
        principal = current_principal()
        if not 0 <= request.page_size <= MAX_OPEN_UPLOADS_PAGE:
            # Bounded well below the catalogue's own maximum: every multipart upload on a page costs
            # a listing of its parts in storage.
            raise InvalidArgument(
                f"page_size must be between 0 and {MAX_OPEN_UPLOADS_PAGE}",
                reason=Reason.INVALID_PAGE_SIZE,
                metadata={"max_page_size": str(MAX_OPEN_UPLOADS_PAGE)},
            )
        with translated_errors():
            page = await self._metadata.ListUploadRecords(
                metadata_service_pb2.ListUploadRecordsRequest(
                    page_size=request.page_size or DEFAULT_OPEN_UPLOADS_PAGE,
                    page_token=request.page_token,
                    file_id=request.file_id,
                    tenant=principal.tenant,
                    owner=principal.subject,
                )
            )
        uploads = await asyncio.gather(*(self._resumable_view(record, principal) for record in page.uploads))
        return upload_service_pb2.ListOpenUploadsResponse(
            uploads=uploads, next_page_token=page.next_page_token
        )

    async def _resumable_view(self, record: Record, principal: Principal) -> resources_pb2.Upload:
        """The upload as GetUpload answers it: the client view, and for an OPEN multipart upload the
        parts storage holds (one listing of storage per 1,000 parts)."""
        upload = self._client_view(record, caller=principal)
        if (
            record.kind == Kind.UPLOAD_KIND_MULTIPART
            and record.state == State.UPLOAD_STATE_OPEN
            and record.storage_upload_id
        ):
            parts = await self._storage(record.store).list_parts(record.storage_key, record.storage_upload_id)
            current = _current_parts(record, parts or [])
            for number in sorted(current):
                part = current[number]
                upload.uploaded_parts.add(part_number=number, size=part.size, etag=part.etag)
        return upload

    async def SignParts(
        self, request: upload_service_pb2.SignPartsRequest, context: Context
    ) -> upload_service_pb2.SignPartsResponse:
        principal = current_principal()
        if not request.upload_id:
            raise upload_not_found(request.upload_id)
        session = (
            self._sessions.verify(request.session_token, upload_id=request.upload_id, principal=principal)
            if request.session_token
            else None
        )
        if session is not None and session.storage_upload_id:
            # The broker's own token: no catalogue read. An upload completed or aborted since the
            # token was issued gets URLs that storage refuses (see filestore.upload.session).
            numbers, checksums = _parts_to_sign(request, session)
        else:
            record = await self._own_record(request.upload_id, principal)
            if record.kind != Kind.UPLOAD_KIND_MULTIPART:
                raise FailedPrecondition("only multipart uploads have parts", reason=Reason.NOT_MULTIPART)
            # An OPEN multipart record holds its storage upload since BeginUpload records both in one
            # transaction. One without was opened by a broker of an earlier release (which attached
            # the storage upload in a second call) that died before attaching it: no part was ever
            # signed for it, and the reaper ends it at its expiry; the client creates another.
            if (
                record.state != State.UPLOAD_STATE_OPEN
                or _past_expiry(record)
                or not record.storage_upload_id
            ):
                raise parts_not_accepted()
            session = UploadSession.of(record, principal)
            numbers, checksums = _parts_to_sign(request, session)
        return upload_service_pb2.SignPartsResponse(part_urls=self._sign_parts(session, numbers, checksums))

    async def CompleteUpload(
        self, request: upload_service_pb2.CompleteUploadRequest, context: Context
    ) -> upload_service_pb2.CompleteUploadResponse:
        record = await self._own_record(request.upload_id, current_principal())
        if record.state in _ENDED_UNCOMPLETED:
            raise upload_ended(record.id, State.Name(record.state).removeprefix("UPLOAD_STATE_"))
        if record.kind == Kind.UPLOAD_KIND_DEDUP:
            # Completed at creation; answering again is the idempotent "completing twice", and
            # publishing again repairs a creation whose publish failed.
            response = await self._record_completion(record, size=record.size, request_id=request.request_id)
            await self._publish_dedup(record)
            return response
        if record.state == State.UPLOAD_STATE_OPEN and _past_expiry(record):
            raise FailedPrecondition("the upload expired before completion", reason=Reason.UPLOAD_EXPIRED)
        if record.kind == Kind.UPLOAD_KIND_MULTIPART and record.state == State.UPLOAD_STATE_OPEN:
            head = await self._complete_in_storage(record, request.part_checksums)
        else:
            found = await self._storage(record.store).head(record.storage_key)
            if found is None:
                raise FailedPrecondition(
                    "storage holds no object for this upload yet", reason=Reason.OBJECT_MISSING
                )
            head = found
        if head.size != record.size:
            raise FailedPrecondition(
                f"storage holds {head.size} bytes, {record.size} were declared",
                reason=Reason.SIZE_MISMATCH,
                metadata={"stored_bytes": str(head.size), "declared_bytes": str(record.size)},
            )
        if record.kind != Kind.UPLOAD_KIND_MULTIPART:
            # A multipart object has no whole-object SHA-256 in S3 (only a checksum of the parts'
            # checksums), so for multipart the declared digest is verified by the processor.
            self._check_stored_checksum(record, head)
        response = await self._record_completion(record, size=head.size, request_id=request.request_id)
        # Published on every completion, repeats included: a completion whose publish failed is
        # repaired by completing again, and JetStream drops the duplicates by Nats-Msg-Id.
        await self._publish_object_created(record, etag=head.etag, size=head.size)
        log.info("upload_completed", upload_id=record.id, file_id=record.file_id, size=head.size)
        return response

    async def AbortUpload(
        self, request: upload_service_pb2.AbortUploadRequest, context: Context
    ) -> upload_service_pb2.AbortUploadResponse:
        record = await self._own_record(request.upload_id, current_principal())
        if record.state == State.UPLOAD_STATE_COMPLETED:
            raise upload_ended(record.id, "COMPLETED")
        if record.state == State.UPLOAD_STATE_EXPIRED:
            return upload_service_pb2.AbortUploadResponse(upload=self._client_view(record))
        if record.state == State.UPLOAD_STATE_OPEN:
            # The record ends first: from then on CompleteUpload refuses it, so no completion can
            # be recorded for bytes we are about to delete. (Ended second, a completion racing
            # with this abort could mark the file UPLOADED after its object was deleted.)
            with translated_errors():
                record = await self._metadata.EndUploadRecord(
                    metadata_service_pb2.EndUploadRecordRequest(
                        upload_id=record.id,
                        tenant=record.tenant,
                        state=State.UPLOAD_STATE_ABORTED,
                        request_id=request.request_id,
                    )
                )
        # Also for an upload that was already ABORTED: a retry finishes a cleanup that failed.
        try:
            await discard_upload_bytes(self._storage(record.store), record)
        except Unavailable as error:
            raise Unavailable(
                "the upload is aborted but storage could not be cleaned up yet; abort again",
                reason=Reason.STORAGE_UNAVAILABLE,
            ) from error
        log.info("upload_aborted", upload_id=record.id, file_id=record.file_id)
        return upload_service_pb2.AbortUploadResponse(upload=self._client_view(record))

    async def ListStores(
        self, request: upload_service_pb2.ListStoresRequest, context: Context
    ) -> upload_service_pb2.ListStoresResponse:
        current_principal()
        return upload_service_pb2.ListStoresResponse(stores=self._listed_stores)

    # ------------------------------------------------------------------------------ helpers

    @property
    def _listed_stores(self) -> list[resources_pb2.Store]:
        configured = self._settings.stores
        ordered = sorted(configured, key=lambda config: (config.name != configured.default, config.name))
        return [
            resources_pb2.Store(
                name=config.name,
                region=config.region,
                # The bucket's URL at the address clients use: any answer (403 included) times a trip.
                probe_url=f"{config.public_endpoint.rstrip('/')}/{config.bucket}",
                default=config.name == configured.default,
            )
            for config in ordered
            if config.name in self._stores
        ]

    def _storage(self, name: str) -> BrokerStorage:
        """The store a record names (empty: one recorded before there were several, ``default``)."""
        store = self._stores.get(name or DEFAULT_STORE)
        if store is None:
            raise FailedPrecondition(
                f"store {name!r} is not configured here",
                reason=Reason.UNKNOWN_STORE,
                metadata={"store": name},
            )
        return store

    async def _placement(
        self, principal: Principal, request: upload_service_pb2.CreateUploadRequest
    ) -> list[str]:
        """The stores to offer the catalogue for a new file, best first: those in the client's
        preferred region, then those it measured, fastest first, then the default, then the rest;
        less those the tenant's residency excludes (the catalogue checks again: it decides)."""
        if len(request.preferred_region) > MAX_REGION_CHARS or len(request.store_rtts) > MAX_STORE_RTTS:
            raise InvalidArgument(
                f"preferred_region: at most {MAX_REGION_CHARS} characters; store_rtts: at most "
                f"{MAX_STORE_RTTS} entries",
                reason=Reason.TOO_MANY_VALUES,
            )
        configured = self._settings.stores
        rtts = {entry.store: entry.rtt_ms for entry in request.store_rtts if entry.rtt_ms >= 0}

        def rank(name: str) -> tuple[int, int, str]:
            config = configured.get(name)
            in_region = (
                bool(request.preferred_region)
                and config is not None
                and (config.region == request.preferred_region)
            )
            if in_region:
                return (0, rtts.get(name, 0), name)
            if name in rtts:
                return (1, rtts[name], name)
            return (2 if name == configured.default else 3, 0, name)

        ordered = sorted(self._stores, key=rank)
        if len(ordered) == 1:
            return ordered
        with translated_errors():
            policy = await self._metadata.GetStoragePolicy(
                metadata_service_pb2.GetStoragePolicyRequest(tenant=principal.tenant)
            )
        allowed = set(policy.allowed_stores)
        placed = [name for name in ordered if not allowed or name in allowed]
        if not placed:
            raise FailedPrecondition(
                "the tenant's residency allows none of this deployment's stores",
                reason=Reason.RESIDENCY_VIOLATION,
                metadata={"tenant": principal.tenant},
            )
        return placed

    def _choose_kind(
        self, request: upload_service_pb2.CreateUploadRequest
    ) -> tuple[resources_pb2.UploadKind.ValueType, PartPlan | None]:
        kind = request.kind
        if kind == Kind.UPLOAD_KIND_UNSPECIFIED:
            wants_parts = request.part_size > 0 or request.size > self._settings.multipart_threshold_bytes
            kind = Kind.UPLOAD_KIND_MULTIPART if wants_parts else Kind.UPLOAD_KIND_SINGLE
        if kind == Kind.UPLOAD_KIND_MULTIPART:
            validation.check_multipart_size(request.size)
            return kind, plan_parts(request.size, requested_part_size=request.part_size)
        if kind not in (Kind.UPLOAD_KIND_SINGLE, Kind.UPLOAD_KIND_POST_POLICY):
            raise InvalidArgument(
                "kind must be SINGLE, POST_POLICY or MULTIPART (DEDUP is decided by the broker)",
                reason=Reason.INVALID_UPLOAD_KIND,
            )
        if request.part_size:
            raise InvalidArgument("part_size is for MULTIPART uploads only", reason=Reason.INVALID_PART_SIZE)
        if request.size > SINGLE_PUT_LIMIT:
            raise InvalidArgument(
                f"a single request carries at most {SINGLE_PUT_LIMIT} bytes; use MULTIPART",
                reason=Reason.INVALID_SIZE,
                metadata={"max_bytes": str(SINGLE_PUT_LIMIT)},
            )
        return kind, None

    async def _begin_upload(
        self, begin: metadata_service_pb2.BeginUploadRequest
    ) -> metadata_service_pb2.BeginUploadResponse:
        """BeginUpload, then one rule for the storage upload the create made for it (if any): it stays
        only if the answer's record holds it. Otherwise it goes at once (best effort): refused (quota,
        validation), a DEDUP answer (no bytes to move), a replay (the record holds the first
        attempt's). Creating it only once the answer is known would take a second metadata write
        (AttachStorageUpload, as before), and skipping it when dedup is possible (a declared sha256)
        would too whenever the dedup does not happen; an abort on these rarer paths is cheaper.

        When the outcome is unknown (metadata unavailable, the deadline passed, the call cancelled:
        the transaction may have committed, and aborting would leave a recorded upload without its
        storage upload), it stays, and so does one whose abort failed, or whose broker died before
        BeginUpload: the reaper's sweep aborts what no record holds (:meth:`Reaper.sweep_unattached`).
        """
        created = begin.storage_upload_id
        try:
            with translated_errors():
                began: metadata_service_pb2.BeginUploadResponse = await self._metadata.BeginUpload(begin)
        except _REFUSED:
            if created:
                await self._abort_unrecorded(begin, reason="refused")
            raise
        if created and began.upload.storage_upload_id != created:
            await self._abort_unrecorded(
                begin, reason="dedup" if began.upload.kind == Kind.UPLOAD_KIND_DEDUP else "replay"
            )
        return began

    async def _abort_unrecorded(self, begin: metadata_service_pb2.BeginUploadRequest, *, reason: str) -> None:
        key = original_key(begin.file.tenant, begin.file_id)
        try:
            await self._storage(begin.stores[0] if begin.stores else DEFAULT_STORE).abort_multipart(
                key, begin.storage_upload_id
            )
        except FilestoreError as error:
            log.warning(
                "unrecorded_storage_upload_abort_failed",
                key=key,
                storage_upload_id=begin.storage_upload_id,
                why=reason,
                reason=error.reason,
            )

    async def _complete_in_storage(self, record: Record, given: Mapping[int, str]) -> ObjectHead:
        """Complete the multipart upload from storage's own part list, after checking that every
        planned part is there with its planned size (and, for an upload created with a checksum
        algorithm, that each part's checksum is known). Nothing changes when a check fails."""
        store = self._storage(record.store)
        parts = (
            await store.list_parts(record.storage_key, record.storage_upload_id)
            if record.storage_upload_id
            else []
        )
        if parts is not None:
            current = _current_parts(record, parts)
            self._check_parts(record, current)
            chosen = [current[number] for number in sorted(current)]
            checksums = self._part_checksums(record, chosen, given)
            if await store.complete_multipart(
                record.storage_key, record.storage_upload_id, chosen, checksums
            ):
                head = await store.head(record.storage_key)
                if head is None:
                    raise Unavailable(
                        "storage lost the object it just assembled", reason=Reason.STORAGE_UNAVAILABLE
                    )
                return head
        # Storage no longer knows the multipart upload: a concurrent or earlier completion
        # assembled it (and then the object is there), or it was aborted (and it is not).
        head = await store.head(record.storage_key)
        if head is None:
            raise FailedPrecondition("storage holds none of the parts", reason=Reason.PARTS_MISSING)
        return head

    @staticmethod
    def _part_checksums(
        record: Record, parts: list[StoredPart], given: Mapping[int, str]
    ) -> dict[int, PartChecksum]:
        """Each part's checksum for the completion: storage's own where its part list has one,
        else the client's (storage checks those against the parts it holds)."""
        algorithm = _PART_CHECKSUMS.get(record.part_checksum_algorithm)
        if algorithm is None:
            return {}
        checksums: dict[int, PartChecksum] = {}
        missing: list[int] = []
        for part in parts:
            if part.checksum is not None and part.checksum.algorithm == algorithm:
                checksums[part.part_number] = part.checksum
            elif part.part_number in given:
                checksums[part.part_number] = validation.part_checksum(
                    algorithm, part.part_number, given[part.part_number]
                )
            else:
                missing.append(part.part_number)
        if missing:
            raise InvalidArgument(
                f"{len(missing)} parts need their {algorithm.upper()} in part_checksums (storage lists none)",
                reason=Reason.PART_CHECKSUM_REQUIRED,
                metadata={"missing_count": str(len(missing)), "first_part_number": str(missing[0])},
            )
        return checksums

    @staticmethod
    def _check_parts(record: Record, by_number: dict[int, StoredPart]) -> None:
        plan = _plan_of(record)
        missing = [n for n in range(1, plan.part_count + 1) if n not in by_number]
        if missing:
            raise FailedPrecondition(
                f"{len(missing)} of {plan.part_count} parts are missing",
                reason=Reason.PARTS_MISSING,
                metadata={"missing_count": str(len(missing)), "first_missing": str(missing[0])},
            )
        unplanned = sorted(set(by_number) - set(range(1, plan.part_count + 1)))
        if unplanned:
            raise FailedPrecondition(
                f"storage holds parts beyond the plan ({unplanned[0]})",
                reason=Reason.SIZE_MISMATCH,
                metadata={"part_number": str(unplanned[0])},
            )
        for number in range(1, plan.part_count + 1):
            expected = plan.part_length(number)
            if by_number[number].size != expected:
                raise FailedPrecondition(
                    f"part {number} holds {by_number[number].size} bytes, {expected} were planned",
                    reason=Reason.SIZE_MISMATCH,
                    metadata={"part_number": str(number), "expected_bytes": str(expected)},
                )

    async def _record_completion(
        self, record: Record, *, size: int, request_id: str
    ) -> upload_service_pb2.CompleteUploadResponse:
        with translated_errors():
            completed = await self._metadata.CompleteUploadRecord(
                metadata_service_pb2.CompleteUploadRecordRequest(
                    upload_id=record.id, tenant=record.tenant, size=size, request_id=request_id
                )
            )
        return upload_service_pb2.CompleteUploadResponse(
            file=completed.file, upload=self._client_view(completed.upload)
        )

    async def _own_record(self, upload_id: str, principal: Principal) -> Record:
        """The upload record, if the caller may see it; another owner's upload is NOT_FOUND."""
        if not upload_id:
            raise upload_not_found(upload_id)
        with translated_errors():
            record = await self._metadata.GetUploadRecord(
                metadata_service_pb2.GetUploadRecordRequest(upload_id=upload_id, tenant=principal.tenant)
            )
        if not principal.is_service and record.owner != principal.subject:
            raise upload_not_found(upload_id)
        return record

    def _client_view(self, record: Record, *, caller: Principal | None = None) -> resources_pb2.Upload:
        """The upload as its caller sees it; an OPEN multipart upload handed to ``caller`` carries
        a session token bound to them (CompleteUpload and AbortUpload end the upload and give none)."""
        upload = resources_pb2.Upload(
            id=record.id,
            file_id=record.file_id,
            kind=record.kind,
            state=record.state,
            size=record.size,
            part_size=record.part_size,
            part_count=record.part_count,
            expire_time=record.expire_time,
            part_checksum_algorithm=record.part_checksum_algorithm,
        )
        if record.state == State.UPLOAD_STATE_OPEN and not _past_expiry(record):
            if record.kind == Kind.UPLOAD_KIND_SINGLE:
                upload.request.CopyFrom(self._presign_put(record))
            elif record.kind == Kind.UPLOAD_KIND_POST_POLICY:
                upload.request.CopyFrom(self._presign_post(record))
            elif record.kind == Kind.UPLOAD_KIND_MULTIPART and caller is not None:
                upload.session_token = self._sessions.issue(UploadSession.of(record, caller))
        return upload

    def _presign_put(self, record: Record) -> resources_pb2.PresignedRequest:
        """A PUT with the content type, length and (when declared) SHA-256 in its signature, so
        storage itself refuses any other body."""
        signed = self._storage(record.store).presign_put(
            record.storage_key,
            content_type=record.content_type,
            size=record.size,
            sha256_hex=record.sha256,
            expires_s=self._settings.presign_ttl_s,
        )
        _PUT_URLS.inc()
        return resources_pb2.PresignedRequest(
            method="PUT", url=signed.url, headers=signed.headers, expire_time=_timestamp(signed.expires_at)
        )

    def _presign_post(self, record: Record) -> resources_pb2.PresignedRequest:
        """A browser form: the policy pins key, content type and exact length
        (``content-length-range`` with both ends equal to the declared size)."""
        policy = self._storage(record.store).post_policy(
            record.storage_key,
            content_type=record.content_type,
            size=record.size,
            expires_s=self._settings.presign_ttl_s,
        )
        _POST_POLICIES.inc()
        return resources_pb2.PresignedRequest(
            method="POST",
            url=policy.url,
            form_fields=policy.fields,
            expire_time=_timestamp(policy.expires_at),
        )

    def _sign_parts(
        self, session: UploadSession, numbers: range | list[int], checksums: dict[int, PartChecksum]
    ) -> list[resources_pb2.PartUrl]:
        plan = session.plan
        parts = [PartToSign(number, plan.part_length(number), checksums.get(number)) for number in numbers]
        signed = self._storage(session.store).presign_parts(
            session.storage_key,
            upload_id=session.storage_upload_id,
            parts=parts,
            expires_s=self._settings.presign_ttl_s,
        )
        # One batch shares one expiry: its timestamp is built once and copied into each URL.
        expire_time = _timestamp(signed[0].expires_at) if signed else None
        urls = [
            resources_pb2.PartUrl(
                part_number=part.number,
                size=part.size,
                request=resources_pb2.PresignedRequest(
                    method="PUT", url=url.url, headers=url.headers, expire_time=expire_time
                ),
            )
            for part, url in zip(parts, signed, strict=True)
        ]
        _PART_URLS.inc(len(urls))
        return urls

    @staticmethod
    def _check_stored_checksum(record: Record, head: ObjectHead) -> None:
        if not record.sha256 or not head.checksum_sha256:
            return  # the processor verifies the digest from the bytes either way
        try:
            stored_hex = base64.b64decode(head.checksum_sha256, validate=True).hex()
        except (binascii.Error, ValueError):
            return
        if stored_hex != record.sha256:
            raise FailedPrecondition(
                "stored checksum differs from the declared one", reason=Reason.CHECKSUM_MISMATCH
            )

    async def _publish_dedup(self, record: Record) -> None:
        """The new file shares a verified blob, but the pipeline still runs for the new record:
        the event names the blob's key (where the bytes are) and the new file. Its message id is
        the file's, not the object version's: the blob's own event had that one, and JetStream
        would drop this one as its duplicate."""
        await self._publish_object_created(
            record,
            etag="",
            size=record.size,
            msg_id=hashlib.sha256(f"dedup\0{record.tenant}\0{record.file_id}".encode()).hexdigest(),
        )

    async def _publish_object_created(
        self, record: Record, *, etag: str, size: int, msg_id: str | None = None
    ) -> None:
        config = self._settings.stores.get(record.store or DEFAULT_STORE)
        event = events_pb2.ObjectCreated(
            bucket=config.bucket if config is not None else self._settings.s3.bucket,
            key=record.storage_key,
            size=size,
            etag=etag,
            file_id=record.file_id,
            tenant=record.tenant,
            source=events_pb2.EVENT_SOURCE_BROKER,
            event_time=_timestamp(datetime.now(UTC)),
        )
        version_id = events.object_created_msg_id(event)
        try:
            duplicate = await events.publish(
                self._js, self._subjects.object_created, event, msg_id=msg_id or version_id
            )
            if duplicate and msg_id is None:
                # The storage-event bridge announced this object version first, and the processor set
                # that announcement aside because the upload was not complete yet. Announce the
                # completed upload under an id of its own so that the pipeline runs for it.
                await events.publish(
                    self._js, self._subjects.object_created, event, msg_id=f"{version_id}:completed"
                )
        except Exception as error:
            log.warning("event_publish_failed", error=repr(error))
            raise Unavailable(
                "the upload is stored but its event could not be published; complete again",
                reason=Reason.EVENT_PUBLISH_FAILED,
            ) from error
