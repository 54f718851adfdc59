"""Grants through MetadataService against the real stack, on SQLite and on PostgreSQL: an owner shares
a file with a principal to read (or also to rename), until the grant expires or is revoked; deleting
and sharing stay the owner's, and whoever may not see a file gets the NOT_FOUND of a missing one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from filestore.core.errors import FilestoreError, error_from_rpc
from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2
from tests.catalogue import create_file, refused_without_change, timestamp
from tests.support import Client, ClientFactory, rpc_error

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub as MetadataStub

Code = grpc.StatusCode


@dataclass(frozen=True)
class Shared:
    """alice's file, and the users of her tenant she may share it with."""

    file: resources_pb2.File
    alice: Client
    bob: Client
    carol: Client


@pytest.fixture
async def shared(client_for: ClientFactory, tenant: str) -> Shared:
    alice, bob, carol = (client_for(name, tenant) for name in ("alice", "bob", "carol"))
    return Shared(await create_file(alice.metadata, name="shared.txt"), alice, bob, carol)


async def grant(
    shared: Shared,
    principal: str,
    permission: resources_pb2.Permission.ValueType,
    expires: datetime | None = None,
) -> resources_pb2.Grant:
    """alice's grant of ``permission`` on her file to ``principal``, for good or until ``expires``."""
    created: resources_pb2.Grant = await shared.alice.metadata.CreateGrant(
        pb.CreateGrantRequest(
            grant=resources_pb2.Grant(
                file_id=shared.file.id,
                principal=principal,
                permission=permission,
                expire_time=timestamp(expires) if expires else None,
            )
        )
    )
    return created


def authorize(reader: Client, file: resources_pb2.File) -> Awaitable[pb.AuthorizeReadResponse]:
    answer: Awaitable[pb.AuthorizeReadResponse] = reader.metadata.AuthorizeRead(
        pb.AuthorizeReadRequest(file_id=file.id)
    )
    return answer


async def list_grants(shared: Shared) -> list[resources_pb2.Grant]:
    return list((await shared.alice.metadata.ListGrants(pb.ListGrantsRequest(file_id=shared.file.id))).grants)


@pytest.fixture
async def granted(shared: Shared) -> tuple[resources_pb2.Grant, resources_pb2.Grant]:
    """bob may read alice's file for an hour, carol may read and rename it for good."""
    temporary = await grant(
        shared, "bob", resources_pb2.PERMISSION_READ, datetime.now(UTC) + timedelta(hours=1)
    )
    lasting = await grant(shared, "carol", resources_pb2.PERMISSION_WRITE)
    return temporary, lasting


# ------------------------------------------------------------------------------------ granting


@pytest.mark.parametrize("reader", ["bob", "carol"])
async def test_without_a_grant_nobody_else_reads_a_file(shared: Shared, reader: str) -> None:
    refused = await rpc_error(authorize(getattr(shared, reader), shared.file))
    assert (refused.code, refused.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")


async def test_each_grant_has_an_id_of_its_own(
    granted: tuple[resources_pb2.Grant, resources_pb2.Grant],
) -> None:
    temporary, lasting = granted
    assert temporary.id != lasting.id


async def test_a_grant_keeps_its_expiry(shared: Shared) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=2)
    temporary = await grant(shared, "bob", resources_pb2.PERMISSION_READ, expires)
    assert temporary.expire_time.ToDatetime(tzinfo=UTC) == expires


async def test_the_owner_lists_a_files_grants(
    shared: Shared, granted: tuple[resources_pb2.Grant, resources_pb2.Grant]
) -> None:
    grants = await list_grants(shared)
    assert {(g.principal, g.permission) for g in grants} == {
        ("bob", resources_pb2.PERMISSION_READ),
        ("carol", resources_pb2.PERMISSION_WRITE),
    }


async def test_a_read_or_write_grant_lets_its_principal_read(
    shared: Shared, granted: tuple[resources_pb2.Grant, resources_pb2.Grant], tenant: str
) -> None:
    assert (await authorize(shared.bob, shared.file)).file.id == shared.file.id
    assert (await authorize(shared.carol, shared.file)).storage_key == f"originals/{tenant}/{shared.file.id}"


async def test_a_service_asking_on_behalf_of_a_principal_gets_the_same_answer(
    service_metadata: MetadataStub,
    shared: Shared,
    granted: tuple[resources_pb2.Grant, resources_pb2.Grant],
    tenant: str,
) -> None:
    on_behalf = await service_metadata.AuthorizeRead(
        pb.AuthorizeReadRequest(file_id=shared.file.id, tenant=tenant, principal="bob")
    )
    assert on_behalf.file.id == shared.file.id


async def test_a_write_grant_lets_its_principal_rename_the_file(
    shared: Shared, granted: tuple[resources_pb2.Grant, resources_pb2.Grant]
) -> None:
    renamed = await shared.carol.metadata.UpdateFile(
        pb.UpdateFileRequest(
            file=resources_pb2.File(id=shared.file.id, name="renamed.txt"),
            update_mask=FieldMask(paths=["name"]),
        )
    )
    assert renamed.name == "renamed.txt"


#: What only the owner may do, tried by carol (who may rename the file) and bob (who may read it).
FORBIDDEN: list[tuple[str, Callable[[Shared, resources_pb2.Grant], Awaitable[object]], str]] = [
    (
        "carol-deletes",
        lambda s, _: s.carol.metadata.DeleteFile(pb.DeleteFileRequest(file_id=s.file.id)),
        "FILE_NOT_FOUND",
    ),
    (
        "carol-shares",
        lambda s, _: s.carol.metadata.CreateGrant(
            pb.CreateGrantRequest(
                grant=resources_pb2.Grant(
                    file_id=s.file.id, principal="dave", permission=resources_pb2.PERMISSION_READ
                )
            )
        ),
        "FILE_NOT_FOUND",
    ),
    (
        "bob-lists-grants",
        lambda s, _: s.bob.metadata.ListGrants(pb.ListGrantsRequest(file_id=s.file.id)),
        "FILE_NOT_FOUND",
    ),
    (
        "bob-revokes",
        lambda s, carols: s.bob.metadata.DeleteGrant(pb.DeleteGrantRequest(grant_id=carols.id)),
        "GRANT_NOT_FOUND",
    ),
]


@pytest.mark.parametrize(
    ("call", "reason"), [case[1:] for case in FORBIDDEN], ids=[case[0] for case in FORBIDDEN]
)
async def test_deleting_and_sharing_a_file_stay_its_owners(
    stack: Stack,
    shared: Shared,
    granted: tuple[resources_pb2.Grant, resources_pb2.Grant],
    call: Callable[[Shared, resources_pb2.Grant], Awaitable[object]],
    reason: str,
) -> None:
    _, lasting = granted
    await refused_without_change(stack, (shared.file.tenant,), call(shared, lasting), Code.NOT_FOUND, reason)


# ------------------------------------------------------------------------------------ expiry


async def until_refused(reader: Client, file: resources_pb2.File) -> FilestoreError:
    """The error of ``reader``'s first refused read: a grant expires when its moment passes, which no
    event announces."""
    while True:
        try:
            await authorize(reader, file)
        except grpc.aio.AioRpcError as error:
            return error_from_rpc(error)
        await asyncio.sleep(0.1)


@pytest.fixture
async def expiring(shared: Shared) -> datetime:
    """bob's grant to read alice's file ends two seconds from now; carol's lasts."""
    expires = datetime.now(UTC) + timedelta(seconds=2)
    await grant(shared, "bob", resources_pb2.PERMISSION_READ, expires)
    await grant(shared, "carol", resources_pb2.PERMISSION_WRITE)
    return expires


async def test_an_expired_grant_no_longer_lets_its_principal_read(shared: Shared, expiring: datetime) -> None:
    expired = await asyncio.wait_for(until_refused(shared.bob, shared.file), timeout=15)
    assert (expired.code, expired.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")
    assert datetime.now(UTC) >= expiring


async def test_an_expired_grant_no_longer_lists(shared: Shared, expiring: datetime) -> None:
    await asyncio.wait_for(until_refused(shared.bob, shared.file), timeout=15)
    assert [g.principal for g in await list_grants(shared)] == ["carol"]


# ------------------------------------------------------------------------------------ revoking


async def test_revoking_a_grant_takes_effect_at_once(
    shared: Shared, granted: tuple[resources_pb2.Grant, resources_pb2.Grant]
) -> None:
    _, lasting = granted
    await shared.alice.metadata.DeleteGrant(pb.DeleteGrantRequest(grant_id=lasting.id))
    refused = await rpc_error(authorize(shared.carol, shared.file))
    assert (refused.code, refused.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")


async def test_revoking_a_grant_again_changes_nothing(shared: Shared) -> None:
    lasting = await grant(shared, "carol", resources_pb2.PERMISSION_WRITE)
    await shared.alice.metadata.DeleteGrant(pb.DeleteGrantRequest(grant_id=lasting.id))
    await shared.alice.metadata.DeleteGrant(pb.DeleteGrantRequest(grant_id=lasting.id))
    assert await list_grants(shared) == []


async def test_revoking_an_unknown_grant_is_not_found(shared: Shared) -> None:
    unknown = await rpc_error(
        shared.alice.metadata.DeleteGrant(pb.DeleteGrantRequest(grant_id=str(uuid.uuid4())))
    )
    assert (unknown.code, unknown.reason) == (Code.NOT_FOUND, "GRANT_NOT_FOUND")
