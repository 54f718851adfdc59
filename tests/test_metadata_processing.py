"""Derivatives and processing results through MetadataService against the real stack, on SQLite and
on PostgreSQL: the services register them (one derivative per file and kind, one result per step with
its attempts counted), the file's owner lists them, and nobody else writes or sees them."""

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

Code = grpc.StatusCode


@pytest.fixture
async def picture(alice: Client) -> resources_pb2.File:
    return await create_file(alice.metadata, name="pic.png", content_type="image/png")


async def register(
    service: MetadataStub, file: resources_pb2.File, kind: str, size: int, content_type: str
) -> resources_pb2.Derivative:
    derivative: resources_pb2.Derivative = await service.CreateDerivative(
        pb.CreateDerivativeRequest(
            tenant=file.tenant,
            derivative=resources_pb2.Derivative(
                file_id=file.id, kind=kind, size=size, content_type=content_type
            ),
        )
    )
    return derivative


async def record(
    service: MetadataStub,
    file: resources_pb2.File,
    step: str,
    outcome: resources_pb2.StepOutcome.ValueType,
    **details: str,
) -> resources_pb2.ProcessingResult:
    result: resources_pb2.ProcessingResult = await service.RecordProcessingResult(
        pb.RecordProcessingResultRequest(
            tenant=file.tenant,
            result=resources_pb2.ProcessingResult(
                file_id=file.id, step=step, outcome=outcome, details=details
            ),
        )
    )
    return result


# ------------------------------------------------------------------------------------ derivatives


async def test_a_derivative_is_stored_under_its_files_derivatives(
    service_metadata: MetadataStub, picture: resources_pb2.File, tenant: str
) -> None:
    thumb = await register(service_metadata, picture, "thumbnail_256", 900, "image/webp")
    assert thumb.storage_key == f"derivatives/{tenant}/{picture.id}/thumbnail_256"


async def test_registering_a_kind_again_replaces_it(
    service_metadata: MetadataStub, alice: Client, picture: resources_pb2.File
) -> None:
    # One derivative per file and kind.
    await register(service_metadata, picture, "thumbnail_256", 900, "image/webp")
    await register(service_metadata, picture, "text", 12, "text/plain")
    again = await register(service_metadata, picture, "thumbnail_256", 950, "image/webp")
    assert again.size == 950
    listed = (await alice.metadata.ListDerivatives(pb.ListDerivativesRequest(file_id=picture.id))).derivatives
    assert [(d.kind, d.size) for d in listed] == [("text", 12), ("thumbnail_256", 950)]


async def test_a_service_lists_the_derivatives_the_owner_lists(
    service_metadata: MetadataStub, alice: Client, picture: resources_pb2.File, tenant: str
) -> None:
    await register(service_metadata, picture, "thumbnail_256", 900, "image/webp")
    await register(service_metadata, picture, "text", 12, "text/plain")
    listed = (await alice.metadata.ListDerivatives(pb.ListDerivativesRequest(file_id=picture.id))).derivatives
    as_service = await service_metadata.ListDerivatives(
        pb.ListDerivativesRequest(file_id=picture.id, tenant=tenant)
    )
    assert list(as_service.derivatives) == list(listed)


async def test_only_a_service_registers_a_derivative(
    stack: Stack, alice: Client, picture: resources_pb2.File, tenant: str
) -> None:
    denied = await refused_without_change(
        stack,
        (tenant,),
        alice.metadata.CreateDerivative(
            pb.CreateDerivativeRequest(
                derivative=resources_pb2.Derivative(file_id=picture.id, kind="x", content_type="image/png")
            )
        ),
        Code.PERMISSION_DENIED,
        "SERVICE_ROLE_REQUIRED",
    )
    assert "service" in str(denied)


async def test_a_derivative_kind_is_a_plain_name(
    stack: Stack, service_metadata: MetadataStub, picture: resources_pb2.File, tenant: str
) -> None:
    await refused_without_change(
        stack,
        (tenant,),
        service_metadata.CreateDerivative(
            pb.CreateDerivativeRequest(
                tenant=tenant,
                derivative=resources_pb2.Derivative(
                    file_id=picture.id, kind="../x", content_type="image/png"
                ),
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_KIND",
    )


@pytest.mark.parametrize(
    ("subject", "tenant_suffix"), [("mallory", "-evil"), ("bob", "")], ids=["other-tenant", "same-tenant"]
)
async def test_nobody_but_the_owner_lists_a_files_derivatives(
    client_for: ClientFactory, picture: resources_pb2.File, tenant: str, subject: str, tenant_suffix: str
) -> None:
    stranger = client_for(subject, f"{tenant}{tenant_suffix}")
    hidden = await rpc_error(stranger.metadata.ListDerivatives(pb.ListDerivativesRequest(file_id=picture.id)))
    assert (hidden.code, hidden.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")


# ------------------------------------------------------------------------------------ processing results


async def test_recording_a_step_again_counts_its_attempts_and_keeps_the_latest_details(
    service_metadata: MetadataStub, picture: resources_pb2.File
) -> None:
    assert (await record(service_metadata, picture, "scan", resources_pb2.STEP_OUTCOME_PENDING)).attempts == 0
    assert (
        await record(service_metadata, picture, "scan", resources_pb2.STEP_OUTCOME_ERROR, error="timeout")
    ).attempts == 1
    passed = await record(
        service_metadata, picture, "scan", resources_pb2.STEP_OUTCOME_PASSED, engine="clamav"
    )
    assert (passed.attempts, dict(passed.details)) == (2, {"engine": "clamav"})


async def test_the_owner_lists_the_latest_result_of_each_step(
    service_metadata: MetadataStub, alice: Client, picture: resources_pb2.File
) -> None:
    for outcome in (resources_pb2.STEP_OUTCOME_PENDING, resources_pb2.STEP_OUTCOME_ERROR):
        await record(service_metadata, picture, "scan", outcome)
    await record(service_metadata, picture, "scan", resources_pb2.STEP_OUTCOME_PASSED, engine="clamav")
    await record(service_metadata, picture, "integrity", resources_pb2.STEP_OUTCOME_PASSED, sha256="0" * 64)
    results = (
        await alice.metadata.ListProcessingResults(pb.ListProcessingResultsRequest(file_id=picture.id))
    ).results
    assert [(r.step, r.outcome, r.attempts) for r in results] == [
        ("integrity", resources_pb2.STEP_OUTCOME_PASSED, 1),
        ("scan", resources_pb2.STEP_OUTCOME_PASSED, 2),
    ]


async def test_a_user_cannot_record_a_processing_result(
    stack: Stack, alice: Client, picture: resources_pb2.File, tenant: str
) -> None:
    await refused_without_change(
        stack,
        (tenant,),
        alice.metadata.RecordProcessingResult(
            pb.RecordProcessingResultRequest(
                result=resources_pb2.ProcessingResult(
                    file_id=picture.id, step="scan", outcome=resources_pb2.STEP_OUTCOME_FAILED
                )
            )
        ),
        Code.NOT_FOUND,
        "FILE_NOT_FOUND",
    )


async def test_a_service_naming_another_tenant_finds_no_results(
    service_metadata: MetadataStub, picture: resources_pb2.File, tenant: str
) -> None:
    wrong_tenant = await rpc_error(
        service_metadata.ListProcessingResults(
            pb.ListProcessingResultsRequest(file_id=picture.id, tenant=f"{tenant}-evil")
        )
    )
    assert (wrong_tenant.code, wrong_tenant.reason) == (Code.NOT_FOUND, "FILE_NOT_FOUND")
