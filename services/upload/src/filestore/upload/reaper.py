"""The reaper: ends upload sessions that expired before completion.

Each pass leases a batch of expired OPEN uploads from the metadata service (ClaimExpiredUploads),
so with several brokers running every upload is reaped by one of them only; a broker that dies
mid-pass lets its lease lapse and another finishes the job. For each upload it first frees
storage (aborts the multipart upload, deletes any object at the key), then ends the record as
EXPIRED, which releases the quota reservation and deletes the PENDING file. Storage first: if the
record were ended first and the storage call then failed, nothing would ever claim the upload
again and its parts would stay in storage for ever.

Every ``sweep_interval_s`` (and at start) the reaper also sweeps storage for multipart uploads that no
upload record holds: a multipart CreateUpload creates the storage upload (at the key of a file id it
chose) and then records its id with the upload in BeginUpload, and an attempt that dies in between, or
never learns whether BeginUpload committed (metadata unavailable), leaves one behind that nothing else
knows of; so does an abort of one BeginUpload did not record that failed. Listing storage is slow in a
busy bucket, which is why this happens here, in the background, and never on a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import structlog

from filestore.core.channels import translated_errors
from filestore.core.errors import FilestoreError
from filestore.core.keys import KeyKind, key_prefix
from filestore.core.reasons import Reason
from filestore.server import metrics
from filestore.server.storage import DEFAULT_STORE, OpenUpload
from filestore.v1 import metadata_service_pb2, resources_pb2

__all__ = [
    "SWEEP_INTERVAL_S",
    "UNATTACHED_GRACE",
    "Reaper",
    "ReaperStorage",
    "UploadBytes",
    "discard_upload_bytes",
]

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

log = structlog.get_logger("filestore.upload.reaper")

State = resources_pb2.UploadState
#: How often storage is swept for multipart uploads no record holds. Leftovers of dead attempts hold
#: no parts (no part URL is signed before BeginUpload records the upload), so they cost storage a
#: listing entry only.
SWEEP_INTERVAL_S = 600.0
#: How old an unattached storage upload must be to be aborted: a younger one may belong to a
#: CreateUpload still on its way to recording it (which takes one metadata call).
UNATTACHED_GRACE = timedelta(minutes=10)


class UploadBytes(Protocol):
    """What freeing an upload's bytes takes (:class:`filestore.server.storage.ObjectStore` has it)."""

    async def abort_multipart(self, key: str, upload_id: str) -> bool: ...
    async def delete(self, key: str) -> None: ...


class ReaperStorage(UploadBytes, Protocol):
    """What the reaper asks of storage: freeing bytes, and listing the multipart uploads it holds."""

    def list_multipart_uploads(self, prefix: str) -> AsyncIterator[list[OpenUpload]]: ...


async def discard_upload_bytes(store: UploadBytes, record: metadata_service_pb2.UploadRecord) -> None:
    """Free whatever storage holds for an upload that will never complete. Idempotent.

    The object is deleted for every kind: a multipart upload completed in storage by a call that
    then lost the race against the abort leaves an object too. The key is the file's own
    (``originals/{tenant}/{file_id}``), never shared, so deleting it cannot touch another file: only a
    completed upload's file can come to share another's object (dedup after verification).
    """
    if record.kind == resources_pb2.UPLOAD_KIND_DEDUP:
        return  # no bytes of its own: the file references a shared blob
    if record.storage_upload_id:
        await store.abort_multipart(record.storage_key, record.storage_upload_id)
    await store.delete(record.storage_key)


class Reaper:
    def __init__(
        self,
        *,
        metadata: MetadataServiceAsyncStub,
        store: ReaperStorage,
        batch: int = 100,
        lease_s: int = 300,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        unattached_grace: timedelta = UNATTACHED_GRACE,
        stores: Mapping[str, ReaperStorage] | None = None,
    ) -> None:
        """``store`` is the store named ``default``; ``stores`` every store by name (that one
        included): an upload's bytes are discarded in its own store, and every store is swept."""
        self._metadata = metadata
        self._store = store
        self._stores: dict[str, ReaperStorage] = dict(stores) if stores else {DEFAULT_STORE: store}
        self._batch = batch
        self._lease_s = lease_s
        self._sweep_interval_s = sweep_interval_s
        self._unattached_grace = unattached_grace

    async def reap_once(self) -> list[str]:
        """One pass: claims up to ``batch`` expired uploads and reaps them; answers the ids this
        reaper ended. An upload whose storage call fails is left to a later pass (its lease lapses)."""
        with translated_errors():
            claimed = await self._metadata.ClaimExpiredUploads(
                metadata_service_pb2.ClaimExpiredUploadsRequest(
                    limit=self._batch, lease_seconds=self._lease_s
                )
            )
        reaped: list[str] = []
        for record in claimed.uploads:
            try:
                own = self._stores.get(record.store or DEFAULT_STORE)
                if own is None:
                    log.warning("upload_reap_failed", upload_id=record.id, reason=Reason.UNKNOWN_STORE)
                    continue
                await discard_upload_bytes(own, record)
                with translated_errors():
                    await self._metadata.EndUploadRecord(
                        metadata_service_pb2.EndUploadRecordRequest(
                            upload_id=record.id, tenant=record.tenant, state=State.UPLOAD_STATE_EXPIRED
                        )
                    )
            except FilestoreError as error:
                log.warning("upload_reap_failed", upload_id=record.id, reason=error.reason)
                metrics.REAPER_UPLOADS.labels("failed").inc()
                continue
            log.info("upload_reaped", upload_id=record.id, file_id=record.file_id, tenant=record.tenant)
            metrics.REAPER_UPLOADS.labels("reaped").inc()
            reaped.append(record.id)
        return reaped

    async def sweep_unattached(self, *, now: datetime | None = None) -> list[str]:
        """One sweep: abort the multipart uploads open in storage under ``originals/`` that are older
        than the grace and that no OPEN upload record holds; answers the storage ids it aborted.

        Uploads an OPEN record holds are never touched, expired or not (those are the reaper's
        own business, and it releases their quota too). An abort that fails is left to the next sweep.
        """
        cutoff = (now or datetime.now(UTC)) - self._unattached_grace
        aborted: list[str] = []
        for store in self._stores.values():
            aborted.extend(await self._sweep_store(store, cutoff))
        return aborted

    async def _sweep_store(self, store: ReaperStorage, cutoff: datetime) -> list[str]:
        aborted: list[str] = []
        async for page in store.list_multipart_uploads(key_prefix(KeyKind.ORIGINAL)):
            old = [upload for upload in page if upload.initiated <= cutoff]
            if not old:
                continue
            with translated_errors():
                found = await self._metadata.FindAttachedStorageUploads(
                    metadata_service_pb2.FindAttachedStorageUploadsRequest(
                        uploads=[
                            metadata_service_pb2.StorageUpload(
                                key=upload.key, storage_upload_id=upload.upload_id
                            )
                            for upload in old
                        ]
                    )
                )
            held = {(upload.key, upload.storage_upload_id) for upload in found.uploads}
            for upload in old:
                if (upload.key, upload.upload_id) in held:
                    continue
                try:
                    await store.abort_multipart(upload.key, upload.upload_id)
                except FilestoreError as error:
                    log.warning("unattached_storage_upload_abort_failed", key=upload.key, reason=error.reason)
                    continue
                log.info(
                    "unattached_storage_upload_aborted",
                    key=upload.key,
                    storage_upload_id=upload.upload_id,
                    initiated=upload.initiated.isoformat(),
                )
                aborted.append(upload.upload_id)
        return aborted

    async def run(self, interval_s: float) -> None:
        """Pass after pass until cancelled, with a sweep at start and every ``sweep_interval_s``; a
        failed pass or sweep (metadata or storage down) is logged and retried."""
        next_sweep = time.monotonic()
        while True:
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self._sweep_interval_s
                await self._sweep_logged()
            try:
                reaped = await self.reap_once()
            except FilestoreError as error:
                log.warning("reaper_pass_failed", reason=error.reason)
                metrics.REAPER_PASSES.labels("failed").inc()
            except Exception:
                log.exception("reaper_pass_crashed")
                metrics.REAPER_PASSES.labels("failed").inc()
            else:
                metrics.REAPER_PASSES.labels("ok").inc()
                if len(reaped) == self._batch:
                    continue  # a backlog: keep going without waiting
            await asyncio.sleep(interval_s)

    async def _sweep_logged(self) -> None:
        try:
            aborted = await self.sweep_unattached()
        except FilestoreError as error:
            log.warning("storage_sweep_failed", reason=error.reason)
        except Exception:
            log.exception("storage_sweep_crashed")
        else:
            if aborted:
                log.info("storage_sweep_done", aborted=len(aborted))

    @staticmethod
    async def stop(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
