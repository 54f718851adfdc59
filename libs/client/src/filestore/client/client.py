"""The SDK: :class:`AsyncClient` (asyncio) and :class:`Client`, its synchronous facade.

Bytes never pass through Filestore's services: the broker answers presigned URLs and this client
sends the bytes to storage itself (one PUT, or parts in parallel), then asks the broker to complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import mimetypes
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import httpx
from google.protobuf import timestamp_pb2

from filestore.client.connection import Endpoints
from filestore.client.errors import FailedPrecondition, FilestoreError, InvalidArgument, NotFound
from filestore.client.progress import ProgressCallback, ProgressTracker, TransferEvent
from filestore.client.retry import RpcRetryCallback, call_with_retries
from filestore.client.sources import (
    ByteSource,
    SourceIdentity,
    UploadInput,
    crc32_of_range,
    open_source,
    sha256_of_range,
)
from filestore.client.state import ResumeState, StateStore, default_state_dir
from filestore.client.transfer import MIB, Signer, StorageTransfer, TransferOptions, run_pipelined
from filestore.core.channels import service_channel
from filestore.core.reasons import Reason
from filestore.core.tls import client_ssl_context
from filestore.v1 import (
    download_service_pb2,
    download_service_pb2_grpc,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)

__all__ = ["AsyncClient", "Client", "DownloadResult", "FileInfo", "UploadResult"]

T = TypeVar("T")
Kind = resources_pb2.UploadKind
UploadState = resources_pb2.UploadState
#: ``TransferOptions.part_checksum`` as CreateUpload declares it, and back.
_ALGORITHMS = {
    "crc32": resources_pb2.CHECKSUM_ALGORITHM_CRC32,
    "sha256": resources_pb2.CHECKSUM_ALGORITHM_SHA256,
    "none": resources_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED,
}
_NAMES = {number: name for name, number in _ALGORITHMS.items() if name != "none"}
FileStatus = resources_pb2.FileStatus

#: SignPartsRequest carries at most this many parts (``TOO_MANY_PARTS`` beyond).
_MAX_PARTS_PER_SIGN = 1000
#: Multipart parts are hashed and signed in groups of this many bytes (at least one part), one
#: SignParts per group. The broker's CPU is per call (~2.5 ms for a call arriving alone, a URL
#: ~0.03 ms of it), so with the 16 MiB parts it picks a GiB takes 8 calls, not 64. Bytes, not
#: parts, bound what a group costs whatever the part size: the first PUT waits for its group's
#: hashing (128 MiB is ~70 ms of CRC32 on one core, ~110 ms of SHA-256, against ~10 ms for a
#: single part), and the parts hashed ahead of their PUT, one group beyond one per lane at most,
#: stay few enough for the PUT's second read to find them in the page cache.
_SIGN_GROUP_BYTES = 128 * MIB

#: States a file does not leave on its own: processing is over.
SETTLED_STATUSES: frozenset[int] = frozenset(
    {
        FileStatus.FILE_STATUS_READY,
        FileStatus.FILE_STATUS_QUARANTINED,
        FileStatus.FILE_STATUS_FAILED,
        FileStatus.FILE_STATUS_DELETED,
    }
)


@dataclass(frozen=True, slots=True)
class UploadResult:
    """The uploaded file (UPLOADED, or READY at once when deduplicated) and what it took."""

    file: resources_pb2.File
    upload_id: str
    #: ``single``, ``multipart`` or ``dedup`` (no bytes moved).
    kind: str
    #: Parts (or the one object) sent by this call.
    parts_sent: int
    #: Parts storage already held from an earlier, interrupted run.
    parts_resumed: int
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class DownloadResult:
    file: resources_pb2.File
    path: Path
    #: Bytes already on disk from an earlier, interrupted download (0 for a fresh one).
    resumed_from: int


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A file with what the processor found (one result per pipeline step, and the derivatives) and
    what lifecycle rules did to it (tier changes, expiry, purge, restores), oldest first."""

    file: resources_pb2.File
    results: Sequence[resources_pb2.ProcessingResult]
    derivatives: Sequence[resources_pb2.Derivative]
    lifecycle: Sequence[metadata_service_pb2.LifecycleAction] = ()


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _local_name(name: str, fallback: str) -> str:
    """A file name safe to create locally from a display name: no directories, no hidden files."""
    base = re.split(r"[/\\]", name)[-1].strip().lstrip(".")
    base = "".join(ch for ch in base if ch.isprintable())
    return base or fallback


@dataclass(frozen=True, slots=True)
class _FileSpec:
    """What CreateUpload is told about the file."""

    name: str
    content_type: str
    labels: dict[str, str]
    sha256: str


@dataclass(frozen=True, slots=True)
class _PartPlan:
    """The broker's plan: equal parts of ``part_size`` bytes, the last one holding the rest."""

    size: int
    part_size: int
    count: int

    def offset(self, number: int) -> int:
        return (number - 1) * self.part_size

    def length(self, number: int) -> int:
        return min(self.part_size, self.size - self.offset(number))


@dataclass(slots=True)
class _UploadSession:
    """The session token the broker handed out with the upload (CreateUpload, or GetUpload on a
    resume), shared by every SignParts of the upload: with it SignParts skips the catalogue read. Not
    kept in the resume state: a resume takes a fresh one from GetUpload."""

    token: str

    def forget(self) -> None:
        # The brokers no longer accept it (their key changed): sign through the catalogue instead.
        self.token = ""


@dataclass(slots=True)
class _PartUrls:
    """One multipart upload's part URLs, by part number: CreateUpload's first ones, then SignParts',
    a group of parts to a call. A URL near its expiry, or refused by storage as expired, is signed
    again alone."""

    #: One SignParts for these parts (checksums and session token are the caller's).
    sign: Callable[[list[int]], Awaitable[Mapping[int, resources_pb2.PresignedRequest]]]
    urls: dict[int, resources_pb2.PresignedRequest]

    async def signers(self, group: list[int]) -> list[Signer]:
        """The group's signers, every URL the group lacks signed first, in one call."""
        unsigned = [number for number in group if number not in self.urls]
        if unsigned:
            self.urls.update(await self.sign(unsigned))
        return [self._signer(number) for number in group]

    def _signer(self, number: int) -> Signer:
        async def url(*, renew: bool) -> resources_pb2.PresignedRequest:
            if renew:
                self.urls.update(await self.sign([number]))
            return self.urls[number]

        return url


def _deduplicated(created: upload_service_pb2.CreateUploadResponse, tracker: ProgressTracker) -> UploadResult:
    tracker.done = tracker.total
    tracker.emit(TransferEvent.COMPLETED, detail="deduplicated: no bytes sent")
    return UploadResult(created.file, created.upload.id, "dedup", 0, 0, 0)


def _download_paths(destination: Path, file: resources_pb2.File) -> tuple[Path, Path, int]:
    """(final path, partial path, bytes already in the partial file). The partial file's name
    carries the file id, so bytes of one file never continue another's."""
    target = destination / _local_name(file.name, file.id) if destination.is_dir() else destination
    partial = target.with_name(f".{target.name}.{_local_name(file.id, 'file')}.partial")
    return target, partial, partial.stat().st_size if partial.exists() else 0


class AsyncClient:
    """Filestore for asyncio code. Use ``async with AsyncClient(endpoints) as client: ...``.

    ``http`` lets the caller supply the ``httpx.AsyncClient`` used for storage (proxies, TLS,
    event hooks); the SDK then leaves closing it to the caller. ``state_dir`` is where upload resume
    states live (see :mod:`filestore.client.state`). ``on_rpc_retry`` hears every RPC the client
    retries (see :data:`filestore.client.retry.RpcRetryCallback`), for metrics or logs: a retried call
    that then succeeds raises nothing, so this is the only place its failed attempts show.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        options: TransferOptions | None = None,
        state_dir: Path | None = None,
        http: httpx.AsyncClient | None = None,
        rpc_timeout_s: float = 30.0,
        on_rpc_retry: RpcRetryCallback | None = None,
    ) -> None:
        self.endpoints = endpoints
        self._on_rpc_retry = on_rpc_retry
        self.options = options or TransferOptions()
        self._state = StateStore(state_dir or default_state_dir())
        self._rpc_timeout_s = rpc_timeout_s
        self._owns_http = http is None
        # One connection per part in flight, kept alive between parts (HTTP/1.1: storage speaks it
        # everywhere, and one TCP stream per part is what makes parallel parts parallel).
        connections = self.options.concurrency + 2
        tls = endpoints.tls
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(self.options.timeout_s),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            # Storage is verified against the services' CA as well as the system's: a private store
            # (the TLS stack's) signs with the CA, a public one (AWS S3) with a public CA.
            verify=client_ssl_context(ca_file=tls.ca_file, system_roots=True)
            if tls and tls.ca_file
            else True,
        )
        self._transfer = StorageTransfer(self._http, self.options)
        self._channels: list[grpc.aio.Channel] = []
        self._upload: upload_service_pb2_grpc.UploadServiceAsyncStub | None = None
        self._metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub | None = None
        self._download: download_service_pb2_grpc.DownloadServiceAsyncStub | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
        self._upload = self._metadata = self._download = None
        if self._owns_http:
            await self._http.aclose()

    # Channels are opened on first use, inside the running loop they will serve.
    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = service_channel(address, token=self.endpoints.token_provider(), tls=self.endpoints.tls)
        self._channels.append(channel)
        return channel

    @property
    def _uploads(self) -> upload_service_pb2_grpc.UploadServiceAsyncStub:
        if self._upload is None:
            self._upload = upload_service_pb2_grpc.UploadServiceStub(self._channel(self.endpoints.upload))
        return self._upload

    @property
    def _files(self) -> metadata_service_pb2_grpc.MetadataServiceAsyncStub:
        if self._metadata is None:
            self._metadata = metadata_service_pb2_grpc.MetadataServiceStub(
                self._channel(self.endpoints.metadata)
            )
        return self._metadata

    @property
    def _downloads(self) -> download_service_pb2_grpc.DownloadServiceAsyncStub:
        if self._download is None:
            self._download = download_service_pb2_grpc.DownloadServiceStub(
                self._channel(self.endpoints.download)
            )
        return self._download

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """One RPC with the API's retry rule. Every call made here is safe to repeat: reads,
        signing, and mutations that carry a ``request_id``."""
        observer = self._on_rpc_retry
        # The request message names the method: CreateUploadRequest is CreateUpload's.
        name = type(request).__name__.removesuffix("Request")

        def on_retry(attempt: int, error: FilestoreError, delay_s: float) -> None:
            if observer is not None:
                observer(name, error, attempt, delay_s)

        return await call_with_retries(
            lambda: method(request, timeout=self._rpc_timeout_s), self.options.retry, on_retry=on_retry
        )

    # ------------------------------------------------------------------ uploads

    async def upload(
        self,
        source: UploadInput,
        *,
        name: str | None = None,
        content_type: str | None = None,
        labels: Mapping[str, str] | None = None,
        sha256: str = "",
        progress: ProgressCallback | None = None,
        resume: bool = True,
    ) -> UploadResult:
        """Upload a path, a seekable binary file object, or bytes.

        Up to ``options.multipart_threshold`` bytes go in one PUT whose SHA-256 storage checks; larger
        ones in parts (``options.concurrency`` at a time, each part's checksum, CRC32 by default,
        signed into its URL; the parts hashed and signed a group of 128 MiB to a SignParts call).
        With ``resume`` (paths only), an interrupted multipart upload of the same unchanged file
        continues where it stopped: only the parts storage does not hold are sent again.
        ``name`` defaults to the file's name, ``content_type`` to a guess from the name.
        """
        opened = open_source(source)
        try:
            display = name or opened.name or "upload.bin"
            spec = _FileSpec(
                name=display,
                content_type=content_type or mimetypes.guess_type(display)[0] or "application/octet-stream",
                labels=dict(labels or {}),
                sha256=sha256,
            )
            tracker = ProgressTracker(progress, opened.size)
            if opened.size <= self.options.multipart_threshold:
                return await self._upload_single(opened, spec, tracker)
            return await self._upload_multipart(opened, spec, tracker, resume=resume)
        finally:
            opened.close()

    def _create_request(
        self, source: ByteSource, spec: _FileSpec, kind: resources_pb2.UploadKind.ValueType
    ) -> upload_service_pb2.CreateUploadRequest:
        return upload_service_pb2.CreateUploadRequest(
            name=spec.name,
            size=source.size,
            content_type=spec.content_type,
            sha256=spec.sha256,
            kind=kind,
            part_size=self.options.part_size if kind == Kind.UPLOAD_KIND_MULTIPART else 0,
            part_checksum_algorithm=(
                _ALGORITHMS[self.options.part_checksum]
                if kind == Kind.UPLOAD_KIND_MULTIPART
                else resources_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED
            ),
            labels=spec.labels,
            # A retried CreateUpload then answers the same upload instead of opening a second one.
            request_id=str(uuid.uuid4()),
        )

    async def _upload_single(
        self, source: ByteSource, spec: _FileSpec, tracker: ProgressTracker
    ) -> UploadResult:
        # The digest is signed into the PUT (storage refuses other bytes) and makes dedup possible;
        # below the multipart threshold reading the bytes once more is cheap.
        if not spec.sha256:
            digest = await asyncio.to_thread(sha256_of_range, source, 0, source.size)
            spec = dataclasses.replace(spec, sha256=digest)
        created = await self._call(
            self._uploads.CreateUpload, self._create_request(source, spec, Kind.UPLOAD_KIND_SINGLE)
        )
        upload = created.upload
        if upload.kind == Kind.UPLOAD_KIND_DEDUP:
            return _deduplicated(created, tracker)
        tracker.emit(TransferEvent.STARTED)
        current = upload.request

        async def sign(*, renew: bool) -> resources_pb2.PresignedRequest:
            nonlocal current
            if renew:  # GetUpload signs an OPEN single upload's request again
                fresh = await self._call(
                    self._uploads.GetUpload, upload_service_pb2.GetUploadRequest(upload_id=upload.id)
                )
                current = fresh.request
            return current

        await self._transfer.put_range(source, 0, source.size, sign=sign, tracker=tracker)
        tracker.emit(TransferEvent.PART_SENT)
        file = await self._complete(upload.id, source)
        tracker.emit(TransferEvent.COMPLETED)
        return UploadResult(file, upload.id, "single", 1, 0, source.size)

    async def _complete(
        self, upload_id: str, source: ByteSource, part_checksums: Mapping[int, str] | None = None
    ) -> resources_pb2.File:
        if not await asyncio.to_thread(source.unchanged):
            raise FailedPrecondition(
                "the file changed while it was being uploaded; upload it again",
                reason=Reason.LOCAL_FILE_CHANGED,
            )
        done = await self._call(
            self._uploads.CompleteUpload,
            upload_service_pb2.CompleteUploadRequest(
                upload_id=upload_id, request_id=str(uuid.uuid4()), part_checksums=part_checksums or {}
            ),
        )
        return done.file

    async def _resumable(self, state: ResumeState) -> resources_pb2.Upload | None:
        """The upload a state file points at, if it can still take parts (or is already complete)."""
        try:
            upload = await self._call(
                self._uploads.GetUpload, upload_service_pb2.GetUploadRequest(upload_id=state.upload_id)
            )
        except NotFound:
            return None  # reaped, or another user's: start over
        if upload.state in (UploadState.UPLOAD_STATE_OPEN, UploadState.UPLOAD_STATE_COMPLETED):
            return upload
        return None

    async def _abort_quietly(self, upload_id: str) -> None:
        """Release an abandoned upload's reservation now rather than when the reaper comes by."""
        with contextlib.suppress(FilestoreError):  # already ended, or not ours: nothing to release
            await self.abort_upload(upload_id)

    async def _earlier_upload(
        self, spec: _FileSpec, identity: SourceIdentity, state_path: Path
    ) -> tuple[ResumeState, resources_pb2.Upload] | None:
        """The interrupted upload of this very file, if a state file names one that is still usable;
        any other state at that path is cleared (and its upload aborted)."""
        state = self._state.load(state_path)
        if state is None:
            return None
        upload = None
        if (state.source, state.name, state.content_type) == (identity, spec.name, spec.content_type):
            upload = await self._resumable(state)
        else:
            await self._abort_quietly(state.upload_id)
        if upload is None:
            self._state.remove(state_path)
            return None
        return state, upload

    async def _upload_multipart(
        self, source: ByteSource, spec: _FileSpec, tracker: ProgressTracker, *, resume: bool
    ) -> UploadResult:
        identity = source.identity if resume else None
        state_path = self._state.path_for(identity.path, self.endpoints.upload) if identity else None
        earlier = await self._earlier_upload(spec, identity, state_path) if identity and state_path else None
        first_urls: dict[int, resources_pb2.PresignedRequest] = {}
        if earlier is not None:
            state, upload = earlier
            if upload.state == UploadState.UPLOAD_STATE_COMPLETED:
                return await self._already_completed(upload, state_path, tracker)
        else:
            created = await self._call(
                self._uploads.CreateUpload, self._create_request(source, spec, Kind.UPLOAD_KIND_MULTIPART)
            )
            upload = created.upload
            if upload.kind == Kind.UPLOAD_KIND_DEDUP:
                return _deduplicated(created, tracker)
            state = ResumeState(
                upload_id=upload.id,
                file_id=upload.file_id,
                source=identity or SourceIdentity("", source.size, 0),
                name=spec.name,
                content_type=spec.content_type,
                part_size=upload.part_size,
                part_count=upload.part_count,
            )
            # Empty when the upload declares part checksums: each part is signed with its own.
            first_urls = {part.part_number: part.request for part in upload.part_urls}
            tracker.emit(TransferEvent.STARTED)
        plan, session = (
            _PartPlan(source.size, upload.part_size, upload.part_count),
            _UploadSession(upload.session_token),
        )
        # Storage's own list decides what is there (a part whose size is off is sent again).
        state.parts = {
            p.part_number: p.etag for p in upload.uploaded_parts if p.size == plan.length(p.part_number)
        }
        stored = len(state.parts)
        if stored:
            tracker.done = sum(plan.length(number) for number in state.parts)
            tracker.emit(TransferEvent.RESUMED, detail=f"{stored} of {plan.count} parts already stored")
        if state_path is not None:
            self._state.save(state_path, state)
        missing = [number for number in range(1, plan.count + 1) if number not in state.parts]
        # The upload's own algorithm, not this run's options: a resumed upload was created (and
        # storage told) with the first run's.
        algorithm = _NAMES.get(upload.part_checksum_algorithm)
        digests: dict[int, str] = {}
        # Hashing runs in the loop's default executor, which also serves the chunk reads of every
        # PUT in flight: a bound on hashing threads keeps those reads from queueing behind it.
        hashing = asyncio.Semaphore(max(1, min(self.options.concurrency, os.cpu_count() or 1)))

        async def digest_of(number: int) -> str:
            assert algorithm is not None
            async with hashing:
                digests[number] = await self._part_digest(algorithm, source, plan, number)
            return digests[number]

        urls = _PartUrls(
            lambda numbers: self._sign_parts(state.upload_id, numbers, algorithm, digests, session),
            first_urls,
        )

        async def prepare(group: list[int]) -> list[Signer]:
            """Hash the group's parts (a full read of each) and sign them in one SignParts: done
            ahead, while earlier parts are on the wire, so that neither delays a part's PUT."""
            if algorithm:
                await asyncio.gather(*(digest_of(number) for number in group))
            return await urls.signers(group)

        async def send(number: int, sign: Signer) -> None:
            state.parts[number] = await self._transfer.put_range(
                source,
                plan.offset(number),
                plan.length(number),
                sign=sign,
                tracker=tracker,
                part_number=number,
            )
            if state_path is not None:
                self._state.save(state_path, state)
            tracker.emit(TransferEvent.PART_SENT, part_number=number)

        # One part prepared ahead per lane (a group at a time, see _SIGN_GROUP_BYTES): enough that a
        # free lane finds its next part ready, few enough that the second read of each part (the
        # PUT's) still finds it in the page cache.
        concurrency = self.options.concurrency
        group = max(1, min(_SIGN_GROUP_BYTES // plan.part_size, _MAX_PARTS_PER_SIGN))
        await run_pipelined(missing, prepare, send, concurrency, ahead=concurrency, group=group)
        if algorithm:
            # Completing needs every part's checksum: storage may not list them (SeaweedFS does
            # not), and parts an earlier run sent were not hashed by this one.
            await asyncio.gather(*(digest_of(number) for number in state.parts if number not in digests))
        file = await self._complete(state.upload_id, source, digests)
        if state_path is not None:
            self._state.remove(state_path)
        tracker.emit(TransferEvent.COMPLETED)
        sent_bytes = sum(plan.length(number) for number in missing)
        return UploadResult(file, state.upload_id, "multipart", len(missing), stored, sent_bytes)

    async def _already_completed(
        self, upload: resources_pb2.Upload, state_path: Path | None, tracker: ProgressTracker
    ) -> UploadResult:
        """The last run completed the upload but stopped before forgetting its state."""
        if state_path is not None:
            self._state.remove(state_path)
        tracker.done = tracker.total
        tracker.emit(TransferEvent.COMPLETED, detail="already completed")
        file = await self.get_file(upload.file_id)
        return UploadResult(file, upload.id, "multipart", 0, upload.part_count, 0)

    @staticmethod
    async def _part_digest(algorithm: str, source: ByteSource, plan: _PartPlan, number: int) -> str:
        """The lower-case hex ``algorithm`` digest of part ``number`` (a full read of it)."""
        of_range = crc32_of_range if algorithm == "crc32" else sha256_of_range
        return await asyncio.to_thread(of_range, source, plan.offset(number), plan.length(number))

    async def _sign_parts(
        self,
        upload_id: str,
        numbers: list[int],
        algorithm: str | None,
        digests: Mapping[int, str],
        session: _UploadSession,
    ) -> dict[int, resources_pb2.PresignedRequest]:
        """Part ``numbers``' URLs (at most ``_MAX_PARTS_PER_SIGN``) from one SignParts, each part
        signed with its ``algorithm`` digest when the upload declares one, and with the upload's
        session token while the broker takes it (refused: signed again through the catalogue)."""
        request = upload_service_pb2.SignPartsRequest(
            upload_id=upload_id, part_numbers=numbers, session_token=session.token
        )
        if algorithm is not None:
            checksums = request.part_crc32 if algorithm == "crc32" else request.part_sha256
            checksums.update({number: digests[number] for number in numbers})
        try:
            signed = await self._call(self._uploads.SignParts, request)
        except InvalidArgument as error:
            if error.reason != Reason.SESSION_TOKEN_INVALID or not request.session_token:
                raise
            session.forget()
            request.session_token = ""
            signed = await self._call(self._uploads.SignParts, request)
        return {part.part_number: part.request for part in signed.part_urls}

    async def abort_upload(self, upload_id: str) -> resources_pb2.Upload:
        aborted = await self._call(
            self._uploads.AbortUpload,
            upload_service_pb2.AbortUploadRequest(upload_id=upload_id, request_id=str(uuid.uuid4())),
        )
        return aborted.upload

    # ------------------------------------------------------------------ downloads

    async def download(
        self, file_id: str, destination: str | os.PathLike[str], *, progress: ProgressCallback | None = None
    ) -> DownloadResult:
        """Download a READY file to ``destination`` (a file path, or a directory to put the file's
        name in). The bytes land in a hidden ``.partial`` file beside it; an interrupted download
        continues from there with a Range request, and the file appears under its name only once
        its size and SHA-256 check out."""
        file = await self.get_file(file_id)
        target, partial, resumed_from = await asyncio.to_thread(_download_paths, Path(destination), file)
        tracker = ProgressTracker(progress, file.size)
        current: resources_pb2.PresignedRequest | None = None

        async def sign(*, renew: bool) -> resources_pb2.PresignedRequest:
            nonlocal current
            if current is None or renew:
                url = await self.download_url(file_id)
                current = resources_pb2.PresignedRequest(
                    method="GET", url=url.url, expire_time=url.expire_time
                )
            return current

        await self._transfer.get_to_file(
            partial, size=file.size, sha256=file.sha256, sign=sign, tracker=tracker
        )
        os.replace(partial, target)
        tracker.emit(TransferEvent.COMPLETED)
        return DownloadResult(file, target, min(resumed_from, file.size))

    async def download_url(
        self, file_id: str, *, ttl_s: int = 0, inline: bool = False
    ) -> download_service_pb2.DownloadUrl:
        """A short-lived GET URL anyone holding it may use (``ttl_s`` 0: the service's default)."""
        disposition = (
            download_service_pb2.DISPOSITION_INLINE
            if inline
            else download_service_pb2.DISPOSITION_UNSPECIFIED
        )
        return await self._call(
            self._downloads.GetDownloadUrl,
            download_service_pb2.GetDownloadUrlRequest(
                file_id=file_id, ttl_seconds=ttl_s, disposition=disposition
            ),
        )

    # ------------------------------------------------------------------ files and grants

    async def get_file(self, file_id: str) -> resources_pb2.File:
        return await self._call(self._files.GetFile, metadata_service_pb2.GetFileRequest(file_id=file_id))

    async def file_info(self, file_id: str) -> FileInfo:
        file, results, derivatives, lifecycle = await asyncio.gather(
            self.get_file(file_id),
            self._call(
                self._files.ListProcessingResults,
                metadata_service_pb2.ListProcessingResultsRequest(file_id=file_id),
            ),
            self._call(
                self._files.ListDerivatives, metadata_service_pb2.ListDerivativesRequest(file_id=file_id)
            ),
            self._call(
                self._files.ListLifecycleActions,
                metadata_service_pb2.ListLifecycleActionsRequest(file_id=file_id),
            ),
        )
        return FileInfo(file, list(results.results), list(derivatives.derivatives), list(lifecycle.actions))

    async def list_files_page(
        self,
        *,
        page_size: int = 50,
        page_token: str = "",
        name_prefix: str = "",
        statuses: Collection[resources_pb2.FileStatus.ValueType] = (),
    ) -> tuple[list[resources_pb2.File], str]:
        """One page of the caller's files, newest first, and the token of the next ("" at the end)."""
        page = await self._call(
            self._files.ListFiles,
            metadata_service_pb2.ListFilesRequest(
                page_size=page_size, page_token=page_token, name_prefix=name_prefix, statuses=statuses
            ),
        )
        return list(page.files), page.next_page_token

    async def list_files(
        self,
        *,
        name_prefix: str = "",
        statuses: Collection[resources_pb2.FileStatus.ValueType] = (),
        page_size: int = 100,
    ) -> AsyncIterator[resources_pb2.File]:
        """Every file of the caller, newest first, fetched page by page as the caller iterates."""
        token = ""
        while True:
            files, token = await self.list_files_page(
                page_size=page_size, page_token=token, name_prefix=name_prefix, statuses=statuses
            )
            for file in files:
                yield file
            if not token:
                return

    async def delete_file(self, file_id: str) -> resources_pb2.File:
        return await self._call(
            self._files.DeleteFile,
            metadata_service_pb2.DeleteFileRequest(file_id=file_id, request_id=str(uuid.uuid4())),
        )

    async def share(
        self,
        file_id: str,
        principal: str,
        *,
        permission: resources_pb2.Permission.ValueType = resources_pb2.PERMISSION_READ,
        expires_in: timedelta | None = None,
    ) -> resources_pb2.Grant:
        """Let ``principal`` (a user of the same tenant) read (or also update) the file."""
        grant = resources_pb2.Grant(file_id=file_id, principal=principal, permission=permission)
        if expires_in is not None:
            grant.expire_time.CopyFrom(_timestamp(datetime.now(UTC) + expires_in))
        return await self._call(
            self._files.CreateGrant,
            metadata_service_pb2.CreateGrantRequest(grant=grant, request_id=str(uuid.uuid4())),
        )

    async def wait_until_processed(
        self, file_id: str, *, timeout_s: float = 120.0, poll_s: float = 0.2
    ) -> resources_pb2.File:
        """Poll until the processor's verdict (READY, QUARANTINED, FAILED) or deletion; answers the
        file. Polling backs off to 2 s; ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        delay = poll_s
        while True:
            file = await self.get_file(file_id)
            if file.status in SETTLED_STATUSES:
                return file
            if time.monotonic() + delay > deadline:
                raise TimeoutError(
                    f"file {file_id} still {FileStatus.Name(file.status)} after {timeout_s:g} s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)


class Client:
    """The synchronous facade: the same methods as :class:`AsyncClient`, blocking.

    It runs its own event loop (``asyncio.Runner``), so it cannot be used from inside a running
    loop; use :class:`AsyncClient` there. Ctrl-C cancels the call in progress cleanly (an upload
    keeps its resume state) and raises ``KeyboardInterrupt``.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        options: TransferOptions | None = None,
        state_dir: Path | None = None,
        rpc_timeout_s: float = 30.0,
        on_rpc_retry: RpcRetryCallback | None = None,
    ) -> None:
        self._runner = asyncio.Runner()
        self._client = AsyncClient(
            endpoints,
            options=options,
            state_dir=state_dir,
            rpc_timeout_s=rpc_timeout_s,
            on_rpc_retry=on_rpc_retry,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._runner.run(self._client.close())
        finally:
            self._runner.close()

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(call)

    def upload(
        self,
        source: UploadInput,
        *,
        name: str | None = None,
        content_type: str | None = None,
        labels: Mapping[str, str] | None = None,
        sha256: str = "",
        progress: ProgressCallback | None = None,
        resume: bool = True,
    ) -> UploadResult:
        return self._run(
            self._client.upload(
                source,
                name=name,
                content_type=content_type,
                labels=labels,
                sha256=sha256,
                progress=progress,
                resume=resume,
            )
        )

    def download(
        self, file_id: str, destination: str | os.PathLike[str], *, progress: ProgressCallback | None = None
    ) -> DownloadResult:
        return self._run(self._client.download(file_id, destination, progress=progress))

    def download_url(
        self, file_id: str, *, ttl_s: int = 0, inline: bool = False
    ) -> download_service_pb2.DownloadUrl:
        return self._run(self._client.download_url(file_id, ttl_s=ttl_s, inline=inline))

    def get_file(self, file_id: str) -> resources_pb2.File:
        return self._run(self._client.get_file(file_id))

    def file_info(self, file_id: str) -> FileInfo:
        return self._run(self._client.file_info(file_id))

    def list_files_page(
        self,
        *,
        page_size: int = 50,
        page_token: str = "",
        name_prefix: str = "",
        statuses: Collection[resources_pb2.FileStatus.ValueType] = (),
    ) -> tuple[list[resources_pb2.File], str]:
        return self._run(
            self._client.list_files_page(
                page_size=page_size, page_token=page_token, name_prefix=name_prefix, statuses=statuses
            )
        )

    def delete_file(self, file_id: str) -> resources_pb2.File:
        return self._run(self._client.delete_file(file_id))

    def share(
        self,
        file_id: str,
        principal: str,
        *,
        permission: resources_pb2.Permission.ValueType = resources_pb2.PERMISSION_READ,
        expires_in: timedelta | None = None,
    ) -> resources_pb2.Grant:
        return self._run(self._client.share(file_id, principal, permission=permission, expires_in=expires_in))

    def abort_upload(self, upload_id: str) -> resources_pb2.Upload:
        return self._run(self._client.abort_upload(upload_id))

    def wait_until_processed(self, file_id: str, *, timeout_s: float = 120.0) -> resources_pb2.File:
        return self._run(self._client.wait_until_processed(file_id, timeout_s=timeout_s))
