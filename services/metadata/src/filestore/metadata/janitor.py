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
from typing import Final, Protocol

import structlog

from filestore.core.errors import Unavailable
from filestore.server import deadlines
from filestore.server.storage import StorageRefused

__all__ = ["RETRY_DELAYS_S", "EveryStore", "ObjectDeleter", "ObjectJanitor"]

log = structlog.get_logger("filestore.metadata.janitor")

#: Pauses before trying again a deletion storage did not answer; then it is left to the reconciler.
RETRY_DELAYS_S: Final = (1.0, 2.0, 5.0, 10.0, 30.0)


class ObjectDeleter(Protocol):
    """What the janitor asks of storage (:class:`filestore.server.storage.ObjectStore` has it):
    delete an object, a missing one being no error; a refusal is ``StorageRefused``, silence
    ``Unavailable``."""

    async def delete(self, key: str) -> None: ...


class EveryStore:
    """Deletes a key in every store. A key is made from a file's id, so the same key in two stores is
    the same file's original and its replica (or a derivative and its copy): what the catalogue no
    longer needs in one store it needs in none. A store that does not hold the key answers the delete
    as done, so this costs one request per store and needs no lookup of where copies are."""

    def __init__(self, stores: Sequence[ObjectDeleter]) -> None:
        self._stores = list(stores)

    async def delete(self, key: str) -> None:
        for store in self._stores:
            await store.delete(key)


class ObjectJanitor:
    def __init__(self, store: ObjectDeleter | None, *, wait_s: float) -> None:
        """Without ``store`` nothing is deleted (each key is logged, for the reconciler). ``wait_s`` is
        as long as one attempt of a control call may take: storage that answers at all is waited for."""
        self._store = store
        self._wait_s = wait_s if store is not None else 0.0
        self._pending: set[asyncio.Task[None]] = set()

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete ``keys``; returns when they are deleted, or after the wait (they go on meanwhile)."""
        if not keys:
            return
        if self._store is None:
            for key in keys:
                log.warning("orphaned_object_kept", key=key, why="no storage configured")
            return
        task = asyncio.create_task(self._delete_all(self._store, list(keys)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.wait({task}, timeout=deadlines.call_timeout(self._wait_s))

    async def close(self) -> None:
        """At shutdown: deletions still pending stop here, and are left to the reconciler."""
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def _delete_all(self, store: ObjectDeleter, keys: list[str]) -> None:
        # The task outlives the RPC that started it: its deadline is not this work's.
        deadlines.outside_rpc()
        for key in keys:
            await self._delete_one(store, key)

    async def _delete_one(self, store: ObjectDeleter, key: str) -> None:
        for delay in (*RETRY_DELAYS_S, None):
            try:
                await store.delete(key)
            except StorageRefused as error:
                # Refused (permissions, a bucket gone): asking again would not change the answer.
                log.warning("orphaned_object_delete_failed", key=key, error=error.message)
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
