"""Deletes objects that no file needs any more, after the transaction that orphaned them commits.

The RPC that orphaned them waits for the deletions a short while, so that in the usual case the objects
are gone when it answers, but never longer than one attempt of a storage control call
(``FILESTORE_S3_CONTROL_TIMEOUT_S``) nor past what the RPC has left: its own work (the record) is
done, and a stopped or slow store must not hold up its answer. What is not deleted by then
goes on in the background, tried again while storage does not answer. A delete that still fails only
leaves garbage (never loses data): it is logged with the key, and the reconciler finds such objects
later (as it does when the process stops with deletions pending).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import structlog
from botocore.exceptions import ClientError

from filestore.core.errors import Unavailable
from filestore.server import deadlines, s3
from filestore.server.settings import S3Settings

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

log = structlog.get_logger("filestore.metadata.janitor")

#: Pauses before trying again a deletion storage did not answer; then it is left to the reconciler.
RETRY_DELAYS_S: Final = (1.0, 2.0, 5.0, 10.0, 30.0)


class ObjectJanitor:
    def __init__(self, storage: S3Settings | None) -> None:
        """Without ``storage`` nothing is deleted (each key is logged, for the reconciler)."""
        self._storage = s3.storage_client(storage) if storage is not None else None
        self._bucket = storage.bucket if storage is not None else ""
        #: As long as one attempt of a control call may take: storage that answers at all is waited for.
        self._wait_s = storage.control_timeout_s if storage is not None else 0.0
        self._pending: set[asyncio.Task[None]] = set()

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete ``keys``; returns when they are deleted, or after the wait (they go on meanwhile)."""
        if not keys:
            return
        if self._storage is None:
            for key in keys:
                log.warning("orphaned_object_kept", key=key, why="no storage configured")
            return
        task = asyncio.create_task(self._delete_all(self._storage, list(keys)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.wait({task}, timeout=deadlines.call_timeout(self._wait_s))

    async def close(self) -> None:
        """At shutdown: deletions still pending stop here, and are left to the reconciler."""
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def _delete_all(self, storage: S3Client, keys: list[str]) -> None:
        # The task outlives the RPC that started it: its deadline is not this work's.
        deadlines.outside_rpc()
        for key in keys:
            await self._delete_one(storage, key)

    async def _delete_one(self, storage: S3Client, key: str) -> None:
        for delay in (*RETRY_DELAYS_S, None):
            try:
                await s3.control_call(storage.delete_object, Bucket=self._bucket, Key=key)
            except ClientError as error:
                # Refused (permissions, a bucket gone): asking again would not change the answer.
                log.warning("orphaned_object_delete_failed", key=key, error=str(error))
                return
            except Unavailable as error:
                if delay is None:
                    log.warning("orphaned_object_delete_failed", key=key, error=error.message)
                    return
                log.info("orphaned_object_delete_retried", key=key, error=error.message, delay_s=delay)
                await asyncio.sleep(delay)
            else:
                log.info("orphaned_object_deleted", key=key)
                return
