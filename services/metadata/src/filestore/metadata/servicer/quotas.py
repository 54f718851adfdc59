"""The quota RPCs: GetQuota and SetQuota."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.auth import current_principal, require_service
from filestore.core.errors import InvalidArgument, PermissionDenied
from filestore.core.reasons import Reason
from filestore.metadata import convert
from filestore.metadata.db import store
from filestore.metadata.servicer.base import Context, ServicerBase
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2

__all__ = ["QuotaRpcs"]


class QuotaRpcs(ServicerBase):
    async def GetQuota(self, request: pb.GetQuotaRequest, context: Context) -> resources_pb2.Quota:
        principal = current_principal()
        tenant = request.tenant if principal.is_service else principal.tenant
        if not principal.is_service and request.owner not in ("", principal.subject):
            raise PermissionDenied(
                "you may read your own and your tenant's quota", reason=Reason.QUOTA_NOT_YOURS
            )
        if not tenant:
            raise InvalidArgument("service callers must name the tenant", reason=Reason.INVALID_TENANT)
        async with self._unit.read() as session:
            row = await store.get_quota(session, tenant=tenant, owner=request.owner)
            if row is None:
                return resources_pb2.Quota(tenant=tenant, owner=request.owner, limit_bytes=-1)
            return convert.quota(row)

    async def SetQuota(self, request: pb.SetQuotaRequest, context: Context) -> resources_pb2.Quota:
        require_service()
        if not request.tenant:
            raise InvalidArgument("tenant is required", reason=Reason.INVALID_TENANT)
        if request.limit_bytes < 0:
            raise InvalidArgument("limit_bytes must not be negative", reason=Reason.INVALID_LIMIT)

        async def set_limit(session: AsyncSession) -> resources_pb2.Quota:
            row = await store.set_quota(
                session, tenant=request.tenant, owner=request.owner, limit_bytes=request.limit_bytes
            )
            return convert.quota(row)

        return await self._unit.write(set_limit)
