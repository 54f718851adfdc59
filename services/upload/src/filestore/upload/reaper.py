"""The reaper: ends upload sessions that expired before completion.

Each pass leases a batch of expired OPEN uploads from the metadata service (ClaimExpiredUploads),
so with several brokers running every upload is reaped by one of them only; a broker that dies
mid-pass lets its lease lapse and another finishes the job. For each upload it first frees
storage (aborts the multipart upload, deletes any object at the key), then ends the record as
EXPIRED, which releases the quota reservation and deletes the PENDING file. Storage first: if the
record were ended first and the storage call then failed, nothing would ever claim the upload
again and its parts would stay in storage for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from filestore.core import metrics
from filestore.core.clients import translated_errors
from filestore.core.errors import FilestoreError
from filestore.upload.storage import ObjectStore
from filestore.v1 import metadata_service_pb2, resources_pb2

__all__ = ["Reaper", "discard_upload_bytes"]

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

log = structlog.get_logger("filestore.upload.reaper")

State = resources_pb2.UploadState


async def discard_upload_bytes(store: ObjectStore, record: metadata_service_pb2.UploadRecord) -> None:
    """Free whatever storage holds for an upload that will never complete. Idempotent.

    The object is deleted for every kind: a multipart upload completed in storage by a call that
    then lost the race against the abort leaves an object too. The key is the file's own
    (``originals/{tenant}/{file_id}``), never shared, so deleting it cannot touch another file.
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
        store: ObjectStore,
        batch: int = 100,
        lease_s: int = 300,
    ) -> None:
        self._metadata = metadata
        self._store = store
        self._batch = batch
        self._lease_s = lease_s

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
                await discard_upload_bytes(self._store, record)
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

    async def run(self, interval_s: float) -> None:
        """Pass after pass until cancelled; a failed pass (metadata down) is logged and retried."""
        while True:
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

    @staticmethod
    async def stop(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
