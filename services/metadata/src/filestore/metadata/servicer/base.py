"""What every group of metadata RPCs shares: the unit of work, the object janitor, the page tokens, and
the access checks that answer NOT_FOUND for a file the caller may not see or change.

The store answers a file it cannot find in the tenant with :func:`filestore.core.errors.file_not_found`
already, so the RPCs let that error through; they translate only where the answer differs (an upload
or a grant whose file is gone is ``UPLOAD_NOT_FOUND`` or ``GRANT_NOT_FOUND``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from filestore.core.auth import Principal
from filestore.core.errors import InvalidArgument, file_not_found
from filestore.core.reasons import Reason
from filestore.core.validation import check_content_type, check_labels, check_sha256, clean_name
from filestore.metadata.db import models, store
from filestore.metadata.janitor import ObjectJanitor
from filestore.metadata.servicer.unit_of_work import UnitOfWork
from filestore.server.pagetokens import PageTokens
from filestore.server.storage import StoreSet
from filestore.v1 import metadata_service_pb2_grpc, resources_pb2

__all__ = ["Context", "ServicerBase"]

Context = grpc.aio.ServicerContext[Any, Any]


class ServicerBase(metadata_service_pb2_grpc.MetadataServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        objects: ObjectJanitor,
        page_token_secret: str,
        stores: StoreSet | None = None,
    ) -> None:
        """``stores``: the stores this service is configured with, which lifecycle rules are checked
        against (their names and storage classes); None accepts any well-formed name."""
        self._unit = UnitOfWork(sessions)
        self._stores = stores
        self._objects = objects
        self._page_tokens = PageTokens(page_token_secret, purpose="ListFiles")
        self._upload_page_tokens = PageTokens(page_token_secret, purpose="ListUploadRecords")

    @staticmethod
    def _cursor_of(tokens: PageTokens, page_token: str, *, fingerprint: str) -> store.KeysetCursor | None:
        """Where the page asked for by ``page_token`` starts (None: the first page). The token must
        have been issued by :meth:`_token_of` for a request of the same ``fingerprint``."""
        if not page_token:
            return None
        position = tokens.decode(page_token, fingerprint=fingerprint)
        try:
            return store.KeysetCursor(created_at=datetime.fromisoformat(position["c"]), id=position["i"])
        except (KeyError, TypeError, ValueError):
            raise InvalidArgument("the page token is malformed", reason=Reason.INVALID_PAGE_TOKEN) from None

    @staticmethod
    def _token_of(tokens: PageTokens, cursor: store.KeysetCursor | None, *, fingerprint: str) -> str:
        """The page token of the page after ``cursor`` ("" when there is none)."""
        if cursor is None:
            return ""
        return tokens.encode({"c": cursor.created_at.isoformat(), "i": cursor.id}, fingerprint=fingerprint)

    @staticmethod
    def _tenant(principal: Principal, requested: str) -> str | None:
        return principal.acting_tenant(requested)

    async def _readable_file(
        self,
        db: store.Executor,
        principal: Principal,
        *,
        tenant: str,
        file_id: str,
        reader: str,
        include_deleted: bool = False,
    ) -> Row[Any]:
        """The file (a Row) if ``reader`` may read it; otherwise NOT_FOUND, exactly as if it did not
        exist."""
        scope = self._tenant(principal, tenant)
        file = await store.get_file(db, tenant=scope, file_id=file_id, include_deleted=include_deleted)
        if principal.is_service and not reader:
            return file
        who = reader if principal.is_service else principal.subject
        if not await store.is_permitted(db, file=file, principal=who, permission=models.Permission.READ):
            raise file_not_found(file_id)
        return file

    async def _writable_file(
        self,
        db: store.Executor,
        principal: Principal,
        *,
        tenant: str,
        file_id: str,
        include_deleted: bool = False,
        owner_only: bool = False,
    ) -> Row[Any]:
        """The file (a Row) if the caller may change it (the owner, a WRITE grant unless
        ``owner_only``, or a service); otherwise NOT_FOUND, exactly as if it did not exist."""
        scope = self._tenant(principal, tenant)
        file = await store.get_file(db, tenant=scope, file_id=file_id, include_deleted=include_deleted)
        if principal.is_service or file.owner == principal.subject:
            return file
        if not owner_only and await store.is_permitted(
            db, file=file, principal=principal.subject, permission=models.Permission.WRITE
        ):
            return file
        raise file_not_found(file_id)

    @staticmethod
    async def _ready_replica_stores(db: store.Executor, file_id: str) -> list[str]:
        """The stores holding a READY copy of the file's original (besides its own)."""
        replicas = (await store.list_replicas(db, file_ids=[file_id]))[file_id]
        return [replica.store for replica in replicas if replica.state is models.ReplicaState.READY]

    @staticmethod
    def _creator(principal: Principal, file: resources_pb2.File) -> tuple[str, str]:
        """The tenant and owner a new file is made for: the caller's own, or those a service names."""
        tenant = file.tenant if principal.is_service else principal.tenant
        owner = file.owner if principal.is_service else principal.subject
        if not tenant or not owner:
            raise InvalidArgument(
                "service callers must name the tenant and owner", reason=Reason.INVALID_OWNER
            )
        return tenant, owner

    @staticmethod
    def _declared(file: resources_pb2.File) -> tuple[str, str, str, dict[str, str]]:
        return (
            clean_name(file.name),
            check_content_type(file.declared_content_type),
            check_sha256(file.sha256),
            check_labels(file.labels),
        )
