"""The file RPCs: GetFile, ListFiles, CreateFile, UpdateFile, DeleteFile, TransitionFile."""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from filestore.core.auth import Principal, current_principal
from filestore.core.errors import InvalidArgument, PermissionDenied, file_not_found
from filestore.core.reasons import Reason
from filestore.core.validation import MAX_NAME_CHARS, check_labels, clean_name
from filestore.metadata import convert
from filestore.metadata.db import models, store
from filestore.metadata.servicer.base import Context, ServicerBase
from filestore.metadata.servicer.unit_of_work import Idempotency
from filestore.server.pagetokens import request_fingerprint
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2

__all__ = ["FileRpcs"]

DEFAULT_PAGE_SIZE = 50
UPDATABLE_FILE_FIELDS = frozenset({"name", "labels", "visibility"})


class FileRpcs(ServicerBase):
    async def GetFile(self, request: pb.GetFileRequest, context: Context) -> resources_pb2.File:
        principal = current_principal()
        async with self._unit.read_rows() as connection:
            file = await self._readable_file(
                connection,
                principal,
                tenant=request.tenant,
                file_id=request.file_id,
                reader="",
                include_deleted=request.include_deleted,
            )
            replicas = await self._ready_replica_stores(connection, file.id)
            return convert.file_message(file, replica_stores=replicas)

    async def ListFiles(self, request: pb.ListFilesRequest, context: Context) -> pb.ListFilesResponse:
        principal = current_principal()
        tenant = request.tenant if principal.is_service else principal.tenant
        if not tenant:
            raise InvalidArgument("service callers must name the tenant", reason=Reason.INVALID_TENANT)
        page_size = self._page_size(request.page_size)
        filters = self._file_filter(request, principal)
        fingerprint = request_fingerprint(request)
        after = self._cursor_of(self._page_tokens, request.page_token, fingerprint=fingerprint)
        async with self._unit.read() as session:
            page = await store.list_files(
                session, tenant=tenant, filters=filters, page_size=page_size, after=after
            )
        return pb.ListFilesResponse(
            files=[convert.file_message(f) for f in page.files],
            next_page_token=self._token_of(self._page_tokens, page.next_cursor, fingerprint=fingerprint),
        )

    async def CreateFile(self, request: pb.CreateFileRequest, context: Context) -> resources_pb2.File:
        principal = current_principal()
        tenant, owner = self._creator(principal, request.file)
        name, content_type, sha256, labels = self._declared(request.file)
        if request.file.size < 0:
            raise InvalidArgument("size must not be negative", reason=Reason.INVALID_SIZE)
        visibility = convert.visibility_from_proto(request.file.visibility)

        async def create(session: AsyncSession) -> resources_pb2.File:
            file = await store.create_file(
                session,
                tenant=tenant,
                owner=owner,
                name=name,
                declared_content_type=content_type,
                size=request.file.size,
                sha256=sha256 or None,
                labels=labels,
                visibility=visibility,
            )
            return convert.file_message(file)

        replay = Idempotency.of(request, request.request_id, resources_pb2.File, tenant=tenant, caller=owner)
        return await self._unit.write(create, idempotency=replay)

    async def UpdateFile(self, request: pb.UpdateFileRequest, context: Context) -> resources_pb2.File:
        principal = current_principal()
        paths = list(request.update_mask.paths)
        if not paths or any(path not in UPDATABLE_FILE_FIELDS for path in paths):
            raise InvalidArgument(
                f"update_mask must name some of {', '.join(sorted(UPDATABLE_FILE_FIELDS))}",
                reason=Reason.INVALID_UPDATE_MASK,
            )
        changes: dict[str, Any] = {}
        if "name" in paths:
            changes["name"] = clean_name(request.file.name)
        if "labels" in paths:
            changes["labels"] = check_labels(request.file.labels)
        if "visibility" in paths:
            changes["visibility"] = convert.visibility_from_proto(request.file.visibility)
        expected = self._etag(request.file.etag)
        tenant = self._tenant(principal, request.file.tenant) or ""

        async def update(session: AsyncSession) -> resources_pb2.File:
            file = await self._writable_file(session, principal, tenant=tenant, file_id=request.file.id)
            updated = await store.update_file(
                session, tenant=file.tenant, file_id=file.id, expected_version=expected, **changes
            )
            return convert.file_message(updated)

        replay = Idempotency.of(
            request, request.request_id, resources_pb2.File, tenant=tenant, caller=principal.subject
        )
        return await self._unit.write(update, idempotency=replay)

    async def DeleteFile(self, request: pb.DeleteFileRequest, context: Context) -> resources_pb2.File:
        principal = current_principal()
        expected = self._etag(request.etag)
        tenant = self._tenant(principal, request.tenant) or ""
        orphaned: list[str] = []

        async def delete(session: AsyncSession) -> resources_pb2.File:
            file = await self._writable_file(
                session,
                principal,
                tenant=tenant,
                file_id=request.file_id,
                include_deleted=True,
                owner_only=True,
            )
            deletion = await store.delete_file(
                session, tenant=file.tenant, file_id=file.id, expected_version=expected
            )
            orphaned.extend(deletion.orphaned_storage_keys)
            return convert.file_message(deletion.file)

        replay = Idempotency.of(
            request, request.request_id, resources_pb2.File, tenant=tenant, caller=principal.subject
        )
        answer = await self._unit.write(delete, idempotency=replay)
        # After the commit: deleting bytes first would lose them if the transaction then failed.
        await self._objects.delete(orphaned)
        return answer

    async def TransitionFile(self, request: pb.TransitionFileRequest, context: Context) -> resources_pb2.File:
        principal = current_principal()
        target = convert.file_status_from_proto(request.status)
        if target is None:
            raise InvalidArgument("status must be set", reason=Reason.INVALID_STATUS)
        expected = self._etag(request.etag)
        scope = self._tenant(principal, request.tenant)

        async def transition(session: AsyncSession) -> resources_pb2.File:
            if not principal.is_service:
                # Clients move their own files only, and only to DELETED: the pipeline states belong
                # to the services (a client marking its PENDING file READY would skip verification
                # and the quota settlement).
                await self._owned_file(session, principal, request.file_id)
                if target != models.FileStatus.DELETED:
                    raise PermissionDenied(
                        "only Filestore services move files along the pipeline",
                        reason=Reason.SERVICE_ROLE_REQUIRED,
                    )
            file = await store.transition_file(
                session,
                tenant=scope,
                file_id=request.file_id,
                to_status=target,
                reason=request.reason or None,
                expected_version=expected,
            )
            return convert.file_message(file)

        replay = Idempotency.of(
            request, request.request_id, resources_pb2.File, tenant=scope, caller=principal.subject
        )
        return await self._unit.write(transition, idempotency=replay)

    @staticmethod
    def _etag(etag: str) -> int | None:
        if not etag:
            return None
        if not (etag.isascii() and etag.isdigit()):  # isdigit alone takes other scripts' digits
            raise InvalidArgument("etag is not one this service issued", reason=Reason.INVALID_ETAG)
        return int(etag)

    async def _owned_file(
        self, session: AsyncSession, principal: Principal, file_id: str
    ) -> models.FileColumns:
        file = await store.get_file(session, tenant=principal.tenant, file_id=file_id, include_deleted=True)
        if file.owner != principal.subject:
            raise file_not_found(file_id)
        return file

    @staticmethod
    def _page_size(asked: int) -> int:
        if asked < 0 or asked > store.MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be 0..{store.MAX_PAGE_SIZE}",
                reason=Reason.INVALID_PAGE_SIZE,
                metadata={"max_page_size": str(store.MAX_PAGE_SIZE)},
            )
        return asked or DEFAULT_PAGE_SIZE

    @staticmethod
    def _file_filter(request: pb.ListFilesRequest, principal: Principal) -> store.FileFilter:
        statuses = set()
        for status in request.statuses:
            converted = convert.file_status_from_proto(status)
            if converted is None:
                raise InvalidArgument("statuses must not hold UNSPECIFIED", reason=Reason.INVALID_FILTER)
            statuses.add(converted)
        created_after = (
            convert.from_timestamp(request.created_after) if request.HasField("created_after") else None
        )
        created_before = (
            convert.from_timestamp(request.created_before) if request.HasField("created_before") else None
        )
        if created_after and created_before and created_after >= created_before:
            raise InvalidArgument("created_after must be before created_before", reason=Reason.INVALID_FILTER)
        if len(request.text_contains) > 256 or len(request.name_prefix) > MAX_NAME_CHARS:
            raise InvalidArgument("text or name filter too long", reason=Reason.INVALID_FILTER)
        owner = request.owner or None
        if not principal.is_service:
            # Listing is not grant-aware, so naming another owner would list that owner's private
            # files: a user lists their own (GetFile/AuthorizeRead answer what grants allow).
            if owner not in (None, principal.subject):
                raise InvalidArgument("users list their own files only", reason=Reason.INVALID_FILTER)
            owner = principal.subject
        return store.FileFilter(
            owner=owner,
            statuses=frozenset(statuses),
            content_type_prefix=request.content_type_prefix or None,
            created_after=created_after,
            created_before=created_before,
            labels=dict(request.labels) or None,
            # Names are stored in NFC (clean_name): a prefix typed in another form finds them too.
            name_prefix=unicodedata.normalize("NFC", request.name_prefix) or None,
            text_contains=request.text_contains or None,
        )
