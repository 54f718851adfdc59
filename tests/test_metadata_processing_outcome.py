"""The processor's road through MetadataService, on SQLite and on PostgreSQL: StartProcessing claims a
file once and answers what a run needs; RecordProcessingOutcome records steps with their facts,
derivatives and the state they imply in one call, and a repeat of it changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

import grpc
import pytest

from filestore.stack import Stack
from filestore.v1 import metadata_service_pb2 as pb
from filestore.v1 import resources_pb2
from tests.catalogue import create_file, move, refused_without_change
from tests.support import Client, rpc_error

if TYPE_CHECKING:
    from filestore.v1.metadata_service_pb2_grpc import MetadataServiceAsyncStub as MetadataStub

Code = grpc.StatusCode
PASSED = resources_pb2.STEP_OUTCOME_PASSED
FAILED = resources_pb2.STEP_OUTCOME_FAILED
SKIPPED = resources_pb2.STEP_OUTCOME_SKIPPED
BODY = b"0123456789"
DIGEST = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
async def uploaded(service_metadata: MetadataStub, alice: Client) -> resources_pb2.File:
    """A file whose bytes are in storage (as far as the catalogue knows), ready to be claimed."""
    file = await create_file(alice.metadata, name="notes.txt", size=len(BODY))
    return await move(service_metadata, file, resources_pb2.FILE_STATUS_UPLOADED)


@pytest.fixture
async def claimed(service_metadata: MetadataStub, uploaded: resources_pb2.File) -> resources_pb2.File:
    started = await service_metadata.StartProcessing(
        pb.StartProcessingRequest(file_id=uploaded.id, tenant=uploaded.tenant, claim=True)
    )
    assert started.claimed
    file: resources_pb2.File = started.file
    return file


def result(
    step: str, outcome: resources_pb2.StepOutcome.ValueType, **details: str
) -> resources_pb2.ProcessingResult:
    return resources_pb2.ProcessingResult(step=step, outcome=outcome, details=details)


def gate_outcome(
    file: resources_pb2.File, *, scan: resources_pb2.StepOutcome.ValueType = PASSED
) -> pb.RecordProcessingOutcomeRequest:
    """Sniff and scan of a verified file, and the READY they imply."""
    return pb.RecordProcessingOutcomeRequest(
        file_id=file.id,
        tenant=file.tenant,
        results=[result("sniff", PASSED, sniffed="text/plain"), result("scan", scan, scanner="clamav")],
        sniffed_content_type="text/plain",
        status=resources_pb2.FILE_STATUS_READY,
    )


def integrity_outcome(
    file: resources_pb2.File, *, size: int = len(BODY)
) -> pb.RecordProcessingOutcomeRequest:
    return pb.RecordProcessingOutcomeRequest(
        file_id=file.id,
        tenant=file.tenant,
        results=[result("integrity", PASSED, sha256=DIGEST, size=str(size))],
        verified_content=pb.VerifiedContent(sha256=DIGEST, size=size),
    )


# ---------------------------------------------------------------------------------- StartProcessing


async def test_of_workers_starting_one_upload_at_once_exactly_one_claims_it(
    service_metadata: MetadataStub, uploaded: resources_pb2.File, tenant: str
) -> None:
    request = pb.StartProcessingRequest(file_id=uploaded.id, tenant=tenant, claim=True)
    answers = await asyncio.gather(*(service_metadata.StartProcessing(request) for _ in range(4)))
    assert sorted(answer.claimed for answer in answers) == [False, False, False, True]
    assert {answer.file.status for answer in answers} == {resources_pb2.FILE_STATUS_PROCESSING}
    assert {answer.content_key for answer in answers} == {f"originals/{tenant}/{uploaded.id}"}


async def test_starting_without_a_claim_only_reads(
    service_metadata: MetadataStub, uploaded: resources_pb2.File, tenant: str
) -> None:
    started = await service_metadata.StartProcessing(
        pb.StartProcessingRequest(file_id=uploaded.id, tenant=tenant)
    )
    assert (started.claimed, started.file.status, list(started.results)) == (
        False,
        resources_pb2.FILE_STATUS_UPLOADED,
        [],
    )


async def test_a_start_answers_the_steps_recorded_so_far(
    service_metadata: MetadataStub, claimed: resources_pb2.File
) -> None:
    await service_metadata.RecordProcessingOutcome(integrity_outcome(claimed))
    again = await service_metadata.StartProcessing(
        pb.StartProcessingRequest(file_id=claimed.id, tenant=claimed.tenant, claim=True)
    )
    assert not again.claimed
    assert [(r.step, r.outcome) for r in again.results] == [("integrity", PASSED)]


async def test_only_a_service_starts_processing(
    stack: Stack, alice: Client, uploaded: resources_pb2.File, tenant: str
) -> None:
    await refused_without_change(
        stack,
        (tenant,),
        alice.metadata.StartProcessing(pb.StartProcessingRequest(file_id=uploaded.id, claim=True)),
        Code.PERMISSION_DENIED,
        "SERVICE_ROLE_REQUIRED",
    )


# -------------------------------------------------------------------------- RecordProcessingOutcome


async def test_the_required_steps_take_a_file_to_ready_in_two_outcomes(
    service_metadata: MetadataStub, alice: Client, claimed: resources_pb2.File
) -> None:
    verified = await service_metadata.RecordProcessingOutcome(integrity_outcome(claimed))
    assert (verified.file.status, verified.content_key) == (
        resources_pb2.FILE_STATUS_PROCESSING,
        f"originals/{claimed.tenant}/{claimed.id}",
    )
    ready = await service_metadata.RecordProcessingOutcome(gate_outcome(claimed))
    assert (ready.file.status, ready.file.sniffed_content_type) == (
        resources_pb2.FILE_STATUS_READY,
        "text/plain",
    )
    assert [(r.step, r.outcome, r.attempts) for r in ready.results] == [
        ("sniff", PASSED, 1),
        ("scan", PASSED, 1),
    ]
    listed = await alice.metadata.ListProcessingResults(pb.ListProcessingResultsRequest(file_id=claimed.id))
    assert [r.step for r in listed.results] == ["integrity", "scan", "sniff"]


async def test_a_repeated_outcome_changes_nothing(
    stack: Stack, service_metadata: MetadataStub, claimed: resources_pb2.File, tenant: str
) -> None:
    await service_metadata.RecordProcessingOutcome(integrity_outcome(claimed))
    first = await service_metadata.RecordProcessingOutcome(gate_outcome(claimed))
    # The answer was lost, say: the same call again answers the file as the first left it.
    again = await service_metadata.RecordProcessingOutcome(gate_outcome(claimed))
    assert again.file.status == resources_pb2.FILE_STATUS_READY
    assert list(again.results) == list(first.results)


async def test_another_outcome_for_a_settled_step_is_refused_whole(
    stack: Stack, service_metadata: MetadataStub, claimed: resources_pb2.File, tenant: str
) -> None:
    await service_metadata.RecordProcessingOutcome(integrity_outcome(claimed))
    await service_metadata.RecordProcessingOutcome(gate_outcome(claimed))
    conflicting = gate_outcome(claimed, scan=FAILED)
    conflicting.status = resources_pb2.FILE_STATUS_QUARANTINED
    conflicting.status_reason = "MALWARE_FOUND"
    error = await refused_without_change(
        stack,
        (tenant,),
        service_metadata.RecordProcessingOutcome(conflicting),
        Code.FAILED_PRECONDITION,
        "STEP_ALREADY_SETTLED",
    )
    assert (error.metadata["step"], error.metadata["outcome"]) == ("scan", "PASSED")


async def test_content_that_does_not_match_quarantines_the_file_whatever_the_outcome_asks(
    service_metadata: MetadataStub, claimed: resources_pb2.File
) -> None:
    request = integrity_outcome(claimed, size=len(BODY) + 1)
    request.status = resources_pb2.FILE_STATUS_READY
    answer = await service_metadata.RecordProcessingOutcome(request)
    assert (answer.file.status, answer.file.status_reason) == (
        resources_pb2.FILE_STATUS_QUARANTINED,
        # As RecordVerifiedContent always said: no digest was declared, so the read one differs.
        "CHECKSUM_MISMATCH",
    )


async def test_enrichment_records_its_derivatives_and_text_with_its_result(
    service_metadata: MetadataStub, alice: Client, claimed: resources_pb2.File, tenant: str
) -> None:
    await service_metadata.RecordProcessingOutcome(integrity_outcome(claimed))
    await service_metadata.RecordProcessingOutcome(gate_outcome(claimed))
    thumbnail = await service_metadata.RecordProcessingOutcome(
        pb.RecordProcessingOutcomeRequest(
            file_id=claimed.id,
            tenant=tenant,
            results=[result("thumbnail", PASSED, derivatives="thumbnail_256")],
            derivatives=[resources_pb2.Derivative(kind="thumbnail_256", size=900, content_type="image/webp")],
            extracted_text="hello",
        )
    )
    assert [d.storage_key for d in thumbnail.derivatives] == [
        f"derivatives/{tenant}/{claimed.id}/thumbnail_256"
    ]
    assert thumbnail.file.status == resources_pb2.FILE_STATUS_READY
    found = await alice.metadata.ListFiles(pb.ListFilesRequest(text_contains="hello"))
    assert [f.id for f in found.files] == [claimed.id]


@pytest.mark.parametrize(
    "case",
    [
        (resources_pb2.FILE_STATUS_PROCESSING, "", "INVALID_STATUS"),
        (resources_pb2.FILE_STATUS_FAILED, "not upper snake", "INVALID_REASON"),
    ],
)
async def test_an_outcome_takes_a_file_only_to_an_end_of_the_pipeline(
    stack: Stack,
    service_metadata: MetadataStub,
    claimed: resources_pb2.File,
    tenant: str,
    case: tuple[resources_pb2.FileStatus.ValueType, str, str],
) -> None:
    status, reason, expected = case
    request = pb.RecordProcessingOutcomeRequest(
        file_id=claimed.id, tenant=tenant, status=status, status_reason=reason
    )
    await refused_without_change(
        stack, (tenant,), service_metadata.RecordProcessingOutcome(request), Code.INVALID_ARGUMENT, expected
    )


async def test_only_a_service_records_an_outcome(alice: Client, claimed: resources_pb2.File) -> None:
    error = await rpc_error(
        alice.metadata.RecordProcessingOutcome(
            pb.RecordProcessingOutcomeRequest(file_id=claimed.id, results=[result("scan", PASSED)])
        )
    )
    assert (error.code, error.reason) == (Code.PERMISSION_DENIED, "SERVICE_ROLE_REQUIRED")
