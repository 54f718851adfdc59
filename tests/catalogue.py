"""The metadata catalogue as the tests drive and read it: requests built the way the services build
them, and the tenants' rows read from the database itself (not through the API under test), so a
test can prove that a refused call changed nothing."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from filestore.core.errors import FilestoreError
from filestore.metadata.db import models
from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2
from tests.support import rpc_error

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub as MetadataStub

#: The ErrorInfo domain of every refusal the metadata service answers.
METADATA_DOMAIN = "metadata.filestore.v1"

Snapshot = dict[str, list[tuple[Any, ...]]]


async def catalogue_snapshot(stack: Stack, *tenants: str) -> Snapshot:
    """Every row of the tenants' files, blobs, uploads, grants, quotas, idempotency keys, derivatives
    and processing results, read from the database itself (not through the API under test)."""
    engine = create_async_engine(stack.endpoints.database_url)
    snapshot: Snapshot = {}
    try:
        async with engine.connect() as connection:
            file_ids = select(models.File.id).where(models.File.tenant.in_(tenants))
            for table in models.Base.metadata.sorted_tables:
                if "tenant" in table.c:
                    where = table.c.tenant.in_(tenants)
                elif "file_id" in table.c:
                    where = table.c.file_id.in_(file_ids)
                else:  # pragma: no cover - every table is scoped one of the two ways
                    raise AssertionError(f"table {table.name} is not tenant-scoped")
                rows = (await connection.execute(select(table).where(where))).all()
                snapshot[table.name] = sorted((tuple(row) for row in rows), key=repr)
    finally:
        await engine.dispose()
    return snapshot


async def refused_without_change(
    stack: Stack, tenants: tuple[str, ...], call: Awaitable[object], code: grpc.StatusCode, reason: str
) -> FilestoreError:
    """The call fails with ``code`` and ``reason`` (and the metadata service's domain), and not one
    row changed."""
    before = await catalogue_snapshot(stack, *tenants)
    error = await rpc_error(call)
    assert (error.code, error.reason) == (code, reason), str(error)
    assert error.domain == METADATA_DOMAIN
    assert await catalogue_snapshot(stack, *tenants) == before
    return error


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def in_an_hour() -> Timestamp:
    """An upload's expiry as a broker sets it when the upload begins."""
    return timestamp(datetime.now(UTC) + timedelta(hours=1))


async def create_file(
    stub: MetadataStub,
    *,
    name: str = "a.txt",
    content_type: str = "text/plain",
    size: int = 10,
    labels: dict[str, str] | None = None,
    tenant: str = "",
    owner: str = "",
    request_id: str = "",
) -> resources_pb2.File:
    """CreateFile as a user (tenant and owner from the token) or, naming them, as a service."""
    file = resources_pb2.File(
        name=name,
        declared_content_type=content_type,
        size=size,
        labels=labels or {},
        tenant=tenant,
        owner=owner,
    )
    created: resources_pb2.File = await stub.CreateFile(
        pb.CreateFileRequest(file=file, request_id=request_id)
    )
    return created


async def list_all(stub: MetadataStub, request: pb.ListFilesRequest) -> list[resources_pb2.File]:
    """Every page of a listing."""
    files: list[resources_pb2.File] = []
    request.page_size = request.page_size or 1000
    while True:
        page = await stub.ListFiles(request)
        files.extend(page.files)
        if not page.next_page_token:
            return files
        request.page_token = page.next_page_token


async def move(
    service: MetadataStub, file: resources_pb2.File, *path: resources_pb2.FileStatus.ValueType
) -> resources_pb2.File:
    """The file after a service moved it through ``path``, one TransitionFile a state."""
    for status in path:
        file = await service.TransitionFile(
            pb.TransitionFileRequest(file_id=file.id, tenant=file.tenant, status=status)
        )
    return file


def begin_upload_request(tenant: str, owner: str, size: int, request_id: str = "") -> pb.BeginUploadRequest:
    """BeginUpload as the broker sends it for a single PUT of ``size`` bytes, open for an hour."""
    return pb.BeginUploadRequest(
        file=resources_pb2.File(
            tenant=tenant,
            owner=owner,
            name="up.bin",
            declared_content_type="application/octet-stream",
            size=size,
        ),
        kind=resources_pb2.UPLOAD_KIND_SINGLE,
        expire_time=in_an_hour(),
        request_id=request_id,
    )


def begin_multipart_request(
    tenant: str,
    owner: str,
    *,
    part_size: int,
    part_count: int,
    size: int,
    storage_upload_id: str,
    request_id: str = "",
) -> pb.BeginUploadRequest:
    """BeginUpload as the broker sends it for a multipart upload: with a file id it chose and the
    storage upload it created at that file's key (``storage_upload_id``; metadata does not check it
    with storage, so a test that never uses the upload may pass any)."""
    request = begin_upload_request(tenant, owner, size, request_id=request_id)
    request.kind = resources_pb2.UPLOAD_KIND_MULTIPART
    request.part_size, request.part_count = part_size, part_count
    request.file_id = str(uuid.uuid4())
    request.storage_upload_id = storage_upload_id
    return request
