"""A file's lifecycle through TransitionFile against the real stack, on SQLite and on PostgreSQL:
PENDING, UPLOADED, PROCESSING, then READY or QUARANTINED, and DELETED; the services move a file along
it, a client may only delete its own, and an illegal step is refused and changes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2
from tests.catalogue import create_file, refused_without_change
from tests.support import Client, ClientFactory, rpc_error

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub as MetadataStub

Status = resources_pb2.FileStatus
Code = grpc.StatusCode

#: How a service brings a new (PENDING) file to each state; a quarantine says why.
PATHS: dict[Status.ValueType, list[tuple[Status.ValueType, str]]] = {
    Status.FILE_STATUS_PENDING: [],
    Status.FILE_STATUS_UPLOADED: [(Status.FILE_STATUS_UPLOADED, "")],
    Status.FILE_STATUS_PROCESSING: [(Status.FILE_STATUS_UPLOADED, ""), (Status.FILE_STATUS_PROCESSING, "")],
    Status.FILE_STATUS_QUARANTINED: [
        (Status.FILE_STATUS_UPLOADED, ""),
        (Status.FILE_STATUS_PROCESSING, ""),
        (Status.FILE_STATUS_QUARANTINED, "MALWARE_FOUND"),
    ],
    Status.FILE_STATUS_DELETED: [
        (Status.FILE_STATUS_UPLOADED, ""),
        (Status.FILE_STATUS_PROCESSING, ""),
        (Status.FILE_STATUS_QUARANTINED, "MALWARE_FOUND"),
        (Status.FILE_STATUS_DELETED, ""),
    ],
}


async def transition(
    service: MetadataStub, file: resources_pb2.File, target: Status.ValueType, **fields: str
) -> resources_pb2.File:
    moved: resources_pb2.File = await service.TransitionFile(
        pb.TransitionFileRequest(file_id=file.id, tenant=file.tenant, status=target, **fields)
    )
    return moved


async def file_in(service: MetadataStub, alice: Client, state: Status.ValueType) -> resources_pb2.File:
    """A new file of alice's, moved by a service to ``state``."""
    file = await create_file(alice.metadata)
    for status, reason in PATHS[state]:
        file = await transition(service, file, status, reason=reason)
    return file


ILLEGAL = [
    (Status.FILE_STATUS_PENDING, Status.FILE_STATUS_READY),  # skipping the checks
    (Status.FILE_STATUS_PENDING, Status.FILE_STATUS_PROCESSING),
    (Status.FILE_STATUS_UPLOADED, Status.FILE_STATUS_PENDING),
    (Status.FILE_STATUS_QUARANTINED, Status.FILE_STATUS_READY),  # a quarantined file never becomes READY
    (Status.FILE_STATUS_QUARANTINED, Status.FILE_STATUS_PROCESSING),
    (Status.FILE_STATUS_DELETED, Status.FILE_STATUS_PENDING),
    (Status.FILE_STATUS_DELETED, Status.FILE_STATUS_UPLOADED),
    (Status.FILE_STATUS_DELETED, Status.FILE_STATUS_READY),
]


def _step_id(step: tuple[Status.ValueType, Status.ValueType]) -> str:
    return "-to-".join(Status.Name(state).removeprefix("FILE_STATUS_").lower() for state in step)


@pytest.mark.parametrize("step", ILLEGAL, ids=[_step_id(step) for step in ILLEGAL])
async def test_an_illegal_transition_is_refused_and_changes_nothing(
    stack: Stack,
    service_metadata: MetadataStub,
    alice: Client,
    tenant: str,
    step: tuple[Status.ValueType, Status.ValueType],
) -> None:
    state, target = step
    file = await file_in(service_metadata, alice, state)
    await refused_without_change(
        stack,
        (tenant,),
        service_metadata.TransitionFile(
            pb.TransitionFileRequest(file_id=file.id, tenant=tenant, status=target)
        ),
        Code.FAILED_PRECONDITION,
        "ILLEGAL_TRANSITION",
    )


async def test_a_service_marks_a_pending_file_uploaded(service_metadata: MetadataStub, alice: Client) -> None:
    file = await file_in(service_metadata, alice, Status.FILE_STATUS_PENDING)
    uploaded = await transition(service_metadata, file, Status.FILE_STATUS_UPLOADED)
    assert uploaded.status == Status.FILE_STATUS_UPLOADED


async def test_reapplying_the_current_state_changes_nothing(
    service_metadata: MetadataStub, alice: Client
) -> None:
    # Events are redelivered: the same step twice is an idempotent no-op.
    uploaded = await file_in(service_metadata, alice, Status.FILE_STATUS_UPLOADED)
    assert (await transition(service_metadata, uploaded, Status.FILE_STATUS_UPLOADED)).etag == uploaded.etag


async def test_a_transition_with_a_stale_etag_is_aborted(
    service_metadata: MetadataStub, alice: Client
) -> None:
    # With an etag, a transition applies only to the version that was read.
    uploaded = await file_in(service_metadata, alice, Status.FILE_STATUS_UPLOADED)
    await transition(service_metadata, uploaded, Status.FILE_STATUS_PROCESSING)
    stale = await rpc_error(
        transition(service_metadata, uploaded, Status.FILE_STATUS_READY, etag=uploaded.etag)
    )
    assert (stale.code, stale.reason) == (Code.ABORTED, "ETAG_MISMATCH")


async def test_a_quarantine_records_its_reason(service_metadata: MetadataStub, alice: Client) -> None:
    processing = await file_in(service_metadata, alice, Status.FILE_STATUS_PROCESSING)
    quarantined = await transition(
        service_metadata,
        processing,
        Status.FILE_STATUS_QUARANTINED,
        reason="MALWARE_FOUND",
        etag=processing.etag,
    )
    assert (quarantined.status, quarantined.status_reason) == (
        Status.FILE_STATUS_QUARANTINED,
        "MALWARE_FOUND",
    )


async def test_a_quarantined_file_can_be_deleted(service_metadata: MetadataStub, alice: Client) -> None:
    quarantined = await file_in(service_metadata, alice, Status.FILE_STATUS_QUARANTINED)
    deleted = await transition(service_metadata, quarantined, Status.FILE_STATUS_DELETED)
    assert deleted.status == Status.FILE_STATUS_DELETED


@pytest.mark.parametrize(
    "target", [Status.FILE_STATUS_UPLOADED, Status.FILE_STATUS_READY], ids=["uploaded", "ready"]
)
async def test_a_client_cannot_set_a_pipeline_state_of_its_own_file(
    stack: Stack, alice: Client, tenant: str, target: Status.ValueType
) -> None:
    # The pipeline states are the services' to set: a client marking its own PENDING file READY would
    # skip the verification.
    mine = await create_file(alice.metadata)
    await refused_without_change(
        stack,
        (tenant,),
        alice.metadata.TransitionFile(pb.TransitionFileRequest(file_id=mine.id, status=target)),
        Code.PERMISSION_DENIED,
        "SERVICE_ROLE_REQUIRED",
    )


async def test_another_user_cannot_transition_a_file(
    client_for: ClientFactory, alice: Client, tenant: str
) -> None:
    mine = await create_file(alice.metadata)
    bob = client_for("bob", tenant)
    hidden = await rpc_error(
        bob.metadata.TransitionFile(
            pb.TransitionFileRequest(file_id=mine.id, status=Status.FILE_STATUS_DELETED)
        )
    )
    assert (hidden.code, hidden.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")


async def test_a_client_may_delete_its_own_file_by_a_transition(alice: Client) -> None:
    mine = await create_file(alice.metadata)
    gone = await alice.metadata.TransitionFile(
        pb.TransitionFileRequest(file_id=mine.id, status=Status.FILE_STATUS_DELETED)
    )
    assert gone.status == Status.FILE_STATUS_DELETED
