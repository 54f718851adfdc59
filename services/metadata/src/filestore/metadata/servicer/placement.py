"""The placement RPCs: GetStoragePolicy, SetStoragePolicy (a tenant's residency and replication)
and RecordReplica (the replication worker's record of a copy)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.auth import current_principal, require_service
from filestore.core.errors import InvalidArgument
from filestore.core.reasons import Reason
from filestore.metadata import convert
from filestore.metadata.db import store
from filestore.metadata.db.store._sql import _load_file
from filestore.metadata.servicer.base import Context, ServicerBase
from filestore.v1 import metadata_service_pb2 as pb

__all__ = ["MAX_STORES", "PlacementRpcs", "check_store_names"]

#: The most stores a request may name.
MAX_STORES: Final = 64
_STORE_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_store_names(names: Sequence[str]) -> list[str]:
    """Store names as the services configure them (``[a-z0-9-]``, 1-63), at most :data:`MAX_STORES`."""
    if len(names) > MAX_STORES:
        raise InvalidArgument(
            f"at most {MAX_STORES} stores", reason=Reason.TOO_MANY_VALUES, metadata={"max": str(MAX_STORES)}
        )
    for name in names:
        if not _STORE_NAME.match(name):
            raise InvalidArgument(
                "a store name is 1-63 characters of [a-z0-9-]",
                reason=Reason.UNKNOWN_STORE,
                metadata={"store": name[:64]},
            )
    return list(names)


class PlacementRpcs(ServicerBase):
    async def GetStoragePolicy(
        self, request: pb.GetStoragePolicyRequest, context: Context
    ) -> pb.StoragePolicy:
        principal = current_principal()
        tenant = request.tenant if principal.is_service else principal.tenant
        if not tenant:
            raise InvalidArgument("service callers must name the tenant", reason=Reason.INVALID_TENANT)
        async with self._unit.read_rows() as connection:
            return convert.storage_policy(await store.get_residency(connection, tenant=tenant))

    async def SetStoragePolicy(
        self, request: pb.SetStoragePolicyRequest, context: Context
    ) -> pb.StoragePolicy:
        require_service()
        policy = request.policy
        if not policy.tenant:
            raise InvalidArgument("policy.tenant is required", reason=Reason.INVALID_TENANT)
        allowed = check_store_names(policy.allowed_stores)

        async def set_policy(session: AsyncSession) -> pb.StoragePolicy:
            residency = await store.set_residency(
                session, tenant=policy.tenant, allowed_stores=allowed, replicate=policy.replicate
            )
            return convert.storage_policy(residency)

        return await self._unit.write(set_policy)

    async def RecordReplica(self, request: pb.RecordReplicaRequest, context: Context) -> pb.Replica:
        require_service()
        (name,) = check_store_names([request.store])
        state = convert.replica_state_from_proto(request.state)
        if state is None:
            raise InvalidArgument("state is required", reason=Reason.INVALID_STATUS)

        async def record(session: AsyncSession) -> pb.Replica:
            file = await _load_file(session, tenant=None, file_id=request.file_id, include_deleted=False)
            return convert.replica(await store.record_replica(session, file=file, store=name, state=state))

        return await self._unit.write(record)
