"""The access RPCs: AuthorizeRead (may this principal read this file, and where are its bytes) and
the grants that widen it: CreateGrant, ListGrants, DeleteGrant."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.auth import current_principal
from filestore.core.errors import InvalidArgument, NotFound, grant_not_found
from filestore.core.reasons import Reason
from filestore.metadata import convert
from filestore.metadata.db import store
from filestore.metadata.servicer.base import Context, ServicerBase
from filestore.metadata.servicer.unit_of_work import Idempotency
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2

__all__ = ["AccessRpcs"]


class AccessRpcs(ServicerBase):
    async def AuthorizeRead(
        self, request: pb.AuthorizeReadRequest, context: Context
    ) -> pb.AuthorizeReadResponse:
        principal = current_principal()
        if principal.is_service and not request.principal:
            raise InvalidArgument("service callers must name the principal", reason=Reason.INVALID_PRINCIPAL)
        async with self._unit.read_rows() as connection:
            file = await self._readable_file(
                connection,
                principal,
                tenant=request.tenant,
                file_id=request.file_id,
                reader=request.principal,
                include_deleted=True,
            )
            key = file.storage_key
            if file.blob_id is not None:
                key = (await store.get_blob(connection, tenant=file.tenant, blob_id=file.blob_id)).storage_key
            replicas = await self._ready_replica_stores(connection, file.id)
            return pb.AuthorizeReadResponse(
                file=convert.file_message(file, replica_stores=replicas), storage_key=key
            )

    async def CreateGrant(self, request: pb.CreateGrantRequest, context: Context) -> resources_pb2.Grant:
        principal = current_principal()
        grant = request.grant
        if not grant.principal or len(grant.principal) > 255:
            raise InvalidArgument("principal must be 1-255 characters", reason=Reason.INVALID_PRINCIPAL)
        permission = convert.permission_from_proto(grant.permission)
        expires = convert.from_timestamp(grant.expire_time) if grant.HasField("expire_time") else None
        if expires is not None and expires <= datetime.now(UTC):
            raise InvalidArgument("expire_time must be in the future", reason=Reason.INVALID_EXPIRY)

        async def create(session: AsyncSession) -> resources_pb2.Grant:
            file = await self._writable_file(
                session, principal, tenant="", file_id=grant.file_id, owner_only=True
            )
            row = await store.create_grant(
                session,
                tenant=file.tenant,
                file_id=file.id,
                principal=grant.principal,
                permission=permission,
                expires_at=expires,
            )
            return convert.grant(row)

        replay = Idempotency.of(
            request,
            request.request_id,
            resources_pb2.Grant,
            tenant=principal.tenant,
            caller=principal.subject,
        )
        return await self._unit.write(create, idempotency=replay)

    async def ListGrants(self, request: pb.ListGrantsRequest, context: Context) -> pb.ListGrantsResponse:
        principal = current_principal()
        async with self._unit.read() as session:
            file = await self._writable_file(
                session, principal, tenant="", file_id=request.file_id, owner_only=True
            )
            rows = await store.list_grants(session, tenant=file.tenant, file_id=file.id)
            return pb.ListGrantsResponse(grants=[convert.grant(row) for row in rows])

    async def DeleteGrant(self, request: pb.DeleteGrantRequest, context: Context) -> pb.DeleteGrantResponse:
        principal = current_principal()

        # No stored answer for request_id: revoking is idempotent by itself (a revoked grant keeps its
        # first revocation, and the answer is empty).
        async def revoke(session: AsyncSession) -> pb.DeleteGrantResponse:
            try:
                grant = await store.get_grant(session, tenant=principal.tenant, grant_id=request.grant_id)
                await self._writable_file(
                    session, principal, tenant="", file_id=grant.file_id, owner_only=True
                )
            except NotFound:
                raise grant_not_found(request.grant_id) from None
            await store.revoke_grant(session, tenant=grant.tenant, grant_id=grant.id)
            return pb.DeleteGrantResponse()

        return await self._unit.write(revoke)
