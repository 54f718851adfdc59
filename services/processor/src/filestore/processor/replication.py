"""Replication: a READY file's original copied to every other store its tenant's residency allows,
when the tenant's storage policy asks for it (``replicate``).

It runs in the processor's enrichment stage (after READY, off every RPC's path), before the optional
steps, and is idempotent: a copy already READY in the catalogue is not made again, a redelivery
copies what is still missing. Each copy is recorded PENDING, made (:meth:`ObjectStore.copy_from`:
server-side within one endpoint, else streamed GET -> multipart PUT in bounded memory), checked by
size, and recorded READY; the catalogue refuses a store the residency excludes, so a replica never
lands outside it. The reconciler copies again a READY replica whose object went missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

from filestore.core.channels import translated_errors
from filestore.core.errors import Unavailable
from filestore.core.reasons import Reason
from filestore.server.storage import DEFAULT_STORE, ObjectStore
from filestore.v1 import metadata_service_pb2, resources_pb2

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub

__all__ = ["Replicator"]

log = structlog.get_logger("filestore.processor.replication")

_PENDING = metadata_service_pb2.REPLICA_STATE_PENDING
_READY = metadata_service_pb2.REPLICA_STATE_READY


class Replicator:
    def __init__(self, metadata: MetadataServiceAsyncStub, stores: Mapping[str, ObjectStore]) -> None:
        self._metadata = metadata
        self._stores = dict(stores)

    @property
    def has_targets(self) -> bool:
        """Whether there is anywhere to copy to (more than one store)."""
        return len(self._stores) > 1

    async def replicate(self, file: resources_pb2.File, key: str) -> list[str]:
        """Copy the READY ``file``'s original (at ``key``) where its policy wants copies; answers the
        stores copied to now."""
        if not self.has_targets:
            return []
        with translated_errors():
            policy = await self._metadata.GetStoragePolicy(
                metadata_service_pb2.GetStoragePolicyRequest(tenant=file.tenant)
            )
        if not policy.replicate:
            return []
        own = file.store or DEFAULT_STORE
        source = self._stores.get(own)
        if source is None:
            log.warning("replication_skipped", why="the file's store is not configured here", store=own)
            return []
        allowed = set(policy.allowed_stores)
        targets = [
            name
            for name in sorted(self._stores)
            if name != own and name not in file.replica_stores and (not allowed or name in allowed)
        ]
        copied: list[str] = []
        for name in targets:
            await self._record(file.id, name, _PENDING)
            head = await self._stores[name].copy_from(source, key)
            if head.size != file.size:
                raise Unavailable(
                    f"the copy in {name!r} holds {head.size} bytes, not {file.size}",
                    reason=Reason.STORAGE_UNAVAILABLE,
                )
            await self._record(file.id, name, _READY)
            log.info("replica_copied", store=name, key=key, size=head.size)
            copied.append(name)
        return copied

    async def _record(
        self, file_id: str, store: str, state: metadata_service_pb2.ReplicaState.ValueType
    ) -> None:
        with translated_errors():
            await self._metadata.RecordReplica(
                metadata_service_pb2.RecordReplicaRequest(file_id=file_id, store=store, state=state)
            )
