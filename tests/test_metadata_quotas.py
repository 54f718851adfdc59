"""Quotas against the real stack, on SQLite and on PostgreSQL: a tenant's and an owner's limit, bytes
reserved when an upload begins, settled to the real size when it completes, released when it ends
without bytes or its file is deleted; an upload that would exceed a limit is refused, concurrent ones
included, and changes nothing."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import pytest

from filestore.core.errors import error_from_rpc
from filestore.stack import Stack
from filestore.v1 import events_pb2, resources_pb2, upload_service_pb2
from filestore.v1 import metadata_service_pb2 as pb
from tests.catalogue import begin_upload_request, catalogue_snapshot, list_all, refused_without_change
from tests.support import Client, ClientFactory, StatusEvents, rpc_error, upload_file

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub as MetadataStub

Status = resources_pb2.FileStatus
Code = grpc.StatusCode


async def quota(stub: MetadataStub, tenant: str = "", owner: str = "") -> tuple[int, int, int]:
    """(limit, used, reserved) bytes; a user's stub answers for the user's own tenant."""
    answer = await stub.GetQuota(pb.GetQuotaRequest(tenant=tenant, owner=owner))
    return answer.limit_bytes, answer.used_bytes, answer.reserved_bytes


# ------------------------------------------------------------------------------------ setting


async def test_without_a_quota_a_tenant_is_unlimited(client_for: ClientFactory, tenant: str) -> None:
    assert await quota(client_for("alice", tenant).metadata) == (-1, 0, 0)


async def test_only_a_service_sets_a_quota(stack: Stack, client_for: ClientFactory, tenant: str) -> None:
    await refused_without_change(
        stack,
        (tenant,),
        client_for("alice", tenant).metadata.SetQuota(pb.SetQuotaRequest(tenant=tenant, limit_bytes=10**12)),
        Code.PERMISSION_DENIED,
        "SERVICE_ROLE_REQUIRED",
    )


async def test_a_negative_limit_is_invalid(stack: Stack, service_metadata: MetadataStub, tenant: str) -> None:
    await refused_without_change(
        stack,
        (tenant,),
        service_metadata.SetQuota(pb.SetQuotaRequest(tenant=tenant, limit_bytes=-5)),
        Code.INVALID_ARGUMENT,
        "INVALID_LIMIT",
    )


async def test_a_quota_set_answers_its_limit_with_nothing_used(
    service_metadata: MetadataStub, tenant: str
) -> None:
    set_to = await service_metadata.SetQuota(pb.SetQuotaRequest(tenant=tenant, limit_bytes=100_000))
    assert (set_to.limit_bytes, set_to.used_bytes, set_to.reserved_bytes) == (100_000, 0, 0)


# ------------------------------------------------------------------------------------ accounting


@dataclass(frozen=True)
class InUse:
    """A tenant limited to 100,000 bytes, alice in it to 80,000, with 30,000 of hers stored."""

    alice: Client
    file: resources_pb2.File
    announced: events_pb2.FileStatusChanged


@pytest.fixture
async def in_use(
    service_metadata: MetadataStub, client_for: ClientFactory, status_events: StatusEvents, tenant: str
) -> InUse:
    await service_metadata.SetQuota(pb.SetQuotaRequest(tenant=tenant, limit_bytes=100_000))
    await service_metadata.SetQuota(pb.SetQuotaRequest(tenant=tenant, owner="alice", limit_bytes=80_000))
    alice = client_for("alice", tenant)
    file = await upload_file(
        alice, os.urandom(30_000), name="data.bin", content_type="application/octet-stream"
    )
    assert file.status == Status.FILE_STATUS_UPLOADED
    # The pipeline writes to the catalogue until the file is READY: let it finish before a test's
    # "changes nothing" checks take their snapshots.
    announced = await status_events.wait_for(file.id)
    return InUse(alice, file, announced)


async def test_a_completed_upload_settles_to_its_real_size(in_use: InUse) -> None:
    assert await quota(in_use.alice.metadata) == (100_000, 30_000, 0)
    assert await quota(in_use.alice.metadata, owner="alice") == (80_000, 30_000, 0)


async def test_beginning_an_upload_reserves_its_size(
    service_metadata: MetadataStub, in_use: InUse, tenant: str
) -> None:
    await service_metadata.BeginUpload(begin_upload_request(tenant, "alice", 40_000))
    assert await quota(service_metadata, tenant, "alice") == (80_000, 30_000, 40_000)


@pytest.fixture
async def aborted(
    service_metadata: MetadataStub, in_use: InUse, tenant: str
) -> tuple[pb.BeginUploadResponse, pb.UploadRecord]:
    """An upload of 40,000 bytes of alice's that ended without bytes."""
    began = await service_metadata.BeginUpload(begin_upload_request(tenant, "alice", 40_000))
    ended = await service_metadata.EndUploadRecord(
        pb.EndUploadRecordRequest(
            upload_id=began.upload.id, tenant=tenant, state=resources_pb2.UPLOAD_STATE_ABORTED
        )
    )
    return began, ended


async def test_an_upload_that_ends_without_bytes_releases_its_reservation(
    service_metadata: MetadataStub, aborted: tuple[pb.BeginUploadResponse, pb.UploadRecord], tenant: str
) -> None:
    _, ended = aborted
    assert ended.state == resources_pb2.UPLOAD_STATE_ABORTED
    assert await quota(service_metadata, tenant, "alice") == (80_000, 30_000, 0)


async def test_an_upload_that_ends_without_bytes_deletes_its_file(
    service_metadata: MetadataStub, aborted: tuple[pb.BeginUploadResponse, pb.UploadRecord], tenant: str
) -> None:
    began, _ = aborted
    aborted_file = await service_metadata.GetFile(
        pb.GetFileRequest(file_id=began.file.id, tenant=tenant, include_deleted=True)
    )
    assert aborted_file.status == Status.FILE_STATUS_DELETED


async def test_the_owners_quota_refuses_an_upload_that_would_exceed_it(
    stack: Stack, service_metadata: MetadataStub, in_use: InUse, tenant: str
) -> None:
    # 30,000 used + 50,001 > 80,000: the owner's quota binds alice before the tenant's does.
    refused = await refused_without_change(
        stack,
        (tenant,),
        service_metadata.BeginUpload(begin_upload_request(tenant, "alice", 50_001)),
        Code.RESOURCE_EXHAUSTED,
        "QUOTA_EXCEEDED",
    )
    assert (refused.metadata["scope"], refused.metadata["limit_bytes"]) == ("owner", "80000")


async def test_the_tenants_quota_refuses_an_upload_through_the_broker(
    stack: Stack, client_for: ClientFactory, service_metadata: MetadataStub, in_use: InUse, tenant: str
) -> None:
    # bob has no quota of his own: 30,000 used + 60,000 reserved + 10,001 > the tenant's 100,000.
    await service_metadata.BeginUpload(begin_upload_request(tenant, "bob", 60_000))
    before = await catalogue_snapshot(stack, tenant)
    through_broker = await rpc_error(
        client_for("bob", tenant).upload.CreateUpload(
            upload_service_pb2.CreateUploadRequest(
                name="big.bin", size=10_001, content_type="application/octet-stream"
            )
        )
    )
    assert (through_broker.code, through_broker.reason) == (Code.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    assert through_broker.metadata["scope"] == "tenant"
    assert await catalogue_snapshot(stack, tenant) == before


async def test_deleting_a_stored_file_gives_its_bytes_back(
    service_metadata: MetadataStub, in_use: InUse, tenant: str
) -> None:
    # Its bytes and no others: bob's reservation stays.
    await service_metadata.BeginUpload(begin_upload_request(tenant, "bob", 60_000))
    assert in_use.announced.status == Status.FILE_STATUS_READY
    await in_use.alice.metadata.DeleteFile(pb.DeleteFileRequest(file_id=in_use.file.id))
    assert await quota(service_metadata, tenant) == (100_000, 0, 60_000)


# ------------------------------------------------------------------------------------ concurrency


@dataclass(frozen=True)
class Race:
    """Fifty uploads of 1,000 bytes begun at once in a tenant limited to 10,000."""

    granted: list[upload_service_pb2.CreateUploadResponse]
    refused: list[grpc.RpcError]


@pytest.fixture
async def race(service_metadata: MetadataStub, client_for: ClientFactory, tenant: str) -> Race:
    await service_metadata.SetQuota(pb.SetQuotaRequest(tenant=tenant, limit_bytes=10 * 1000))
    alice = client_for("alice", tenant)
    request = upload_service_pb2.CreateUploadRequest(
        name="c.bin", size=1000, content_type="application/octet-stream"
    )
    outcomes = await asyncio.gather(
        *(alice.upload.CreateUpload(request) for _ in range(50)), return_exceptions=True
    )
    return Race(
        granted=[o for o in outcomes if isinstance(o, upload_service_pb2.CreateUploadResponse)],
        refused=[o for o in outcomes if isinstance(o, grpc.RpcError)],
    )


async def test_a_quota_for_ten_grants_ten_of_fifty_concurrent_uploads_and_refuses_the_rest(
    race: Race,
) -> None:
    refused = [error_from_rpc(o) for o in race.refused]
    assert len(race.granted) == 10
    assert len(refused) == 40
    assert {(e.code, e.reason) for e in refused} == {(Code.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")}


async def test_the_ten_granted_uploads_reserve_the_whole_quota(
    service_metadata: MetadataStub, race: Race, tenant: str
) -> None:
    assert await quota(service_metadata, tenant) == (10_000, 0, 10_000)


async def test_only_the_granted_uploads_have_files(
    service_metadata: MetadataStub, race: Race, tenant: str
) -> None:
    files = await list_all(service_metadata, pb.ListFilesRequest(tenant=tenant))
    assert sorted(f.id for f in files) == sorted(g.file.id for g in race.granted)
