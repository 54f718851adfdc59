"""Bad input that reached the database or JetStream as it was and came back as INTERNAL, found by
trying the extremes of each field of each RPC on both databases; each now gets its reason and
changes nothing. (What every request may not hold is in test_request_edge.py; these are the values
that only an RPC's own rules can judge.)"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest

from filestore.stack import Stack
from filestore.v1 import (
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    processor_service_pb2,
    processor_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
)
from tests.catalogue import catalogue_snapshot
from tests.support import Client, ClientFactory, rpc_error, service_token, stack_channel

C = grpc.StatusCode


@dataclass(frozen=True)
class World:
    tenant: str
    alice: Client
    file: resources_pb2.File
    metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub  # as a service
    processor: processor_service_pb2_grpc.ProcessorServiceAsyncStub  # as a service


@pytest.fixture
async def world(stack: Stack, client_for: ClientFactory) -> AsyncIterator[World]:
    tenant = f"answers-{os.urandom(4).hex()}"
    alice = client_for("alice", tenant)
    file = await alice.metadata.CreateFile(
        metadata_service_pb2.CreateFileRequest(
            file=resources_pb2.File(name="a.txt", size=5, declared_content_type="text/plain")
        )
    )
    token = service_token(stack)
    async with (
        stack_channel(stack.endpoints, stack.endpoints.metadata_addr, token=lambda: token) as metadata,
        stack_channel(stack.endpoints, stack.endpoints.processor_addr, token=lambda: token) as processor,
    ):
        yield World(
            tenant,
            alice,
            file,
            metadata_service_pb2_grpc.MetadataServiceStub(metadata),
            processor_service_pb2_grpc.ProcessorServiceStub(processor),
        )


def _result(w: World, step: str) -> metadata_service_pb2.RecordProcessingResultRequest:
    return metadata_service_pb2.RecordProcessingResultRequest(
        tenant=w.tenant,
        result=resources_pb2.ProcessingResult(
            file_id=w.file.id, step=step, outcome=resources_pb2.STEP_OUTCOME_PASSED
        ),
    )


def _derivative(w: World, **fields: object) -> metadata_service_pb2.CreateDerivativeRequest:
    values: dict[str, object] = {
        "file_id": w.file.id,
        "kind": "thumbnail_256",
        "size": 4,
        "content_type": "image/webp",
    }
    return metadata_service_pb2.CreateDerivativeRequest(
        tenant=w.tenant,
        derivative=resources_pb2.Derivative(**{**values, **fields}),  # type: ignore[arg-type]
    )


def _upload(w: World, **fields: object) -> upload_service_pb2.CreateUploadRequest:
    values: dict[str, object] = {"name": "b.txt", "size": 5, "content_type": "text/plain"}
    return upload_service_pb2.CreateUploadRequest(**{**values, **fields})  # type: ignore[arg-type]


CASES: list[tuple[str, Callable[[World], Awaitable[object]], C, str]] = [
    # The step column holds 64 characters; the contract always said INVALID_STEP.
    (
        "step of 65 characters",
        lambda w: w.metadata.RecordProcessingResult(_result(w, "s" * 65)),
        C.INVALID_ARGUMENT,
        "INVALID_STEP",
    ),
    (
        "step of 100 KB",
        lambda w: w.metadata.RecordProcessingResult(_result(w, "s" * 100_000)),
        C.INVALID_ARGUMENT,
        "INVALID_STEP",
    ),
    # A derivative's content type is stored with its parameters, in 255 characters.
    (
        "derivative type with long parameters",
        lambda w: w.metadata.CreateDerivative(_derivative(w, content_type="text/plain; x=" + "a" * 300)),
        C.INVALID_ARGUMENT,
        "INVALID_CONTENT_TYPE",
    ),
    # `$` let a trailing newline through every pattern: into keys, columns and signed headers.
    (
        "derivative kind ending in a newline",
        lambda w: w.metadata.CreateDerivative(_derivative(w, kind="thumbnail\n")),
        C.INVALID_ARGUMENT,
        "INVALID_KIND",
    ),
    (
        "sha256 ending in a newline",
        lambda w: w.alice.upload.CreateUpload(_upload(w, sha256="a" * 64 + "\n")),
        C.INVALID_ARGUMENT,
        "INVALID_SHA256",
    ),
    (
        "label key ending in a newline",
        lambda w: w.alice.upload.CreateUpload(_upload(w, labels={"team\n": "a"})),
        C.INVALID_ARGUMENT,
        "INVALID_LABELS",
    ),
    # Dead letters are stream sequences: JetStream answered a number past 2^64 as a bad request.
    (
        "dead letter id past 2^64",
        lambda w: w.processor.ReplayDeadLetter(
            processor_service_pb2.ReplayDeadLetterRequest(dead_letter_id="9" * 40)
        ),
        C.NOT_FOUND,
        "DEAD_LETTER_NOT_FOUND",
    ),
    (
        "dead letter id in Arabic-Indic digits",
        lambda w: w.processor.ReplayDeadLetter(
            processor_service_pb2.ReplayDeadLetterRequest(dead_letter_id="\u0663")
        ),
        C.NOT_FOUND,
        "DEAD_LETTER_NOT_FOUND",
    ),
    (
        "etag in Arabic-Indic digits",
        lambda w: w.alice.metadata.DeleteFile(
            metadata_service_pb2.DeleteFileRequest(file_id=w.file.id, etag="\u0661")
        ),
        C.INVALID_ARGUMENT,
        "INVALID_ETAG",
    ),
]


async def test_values_only_an_rpc_can_judge_get_its_reason_and_change_nothing(
    stack: Stack, world: World
) -> None:
    before = await catalogue_snapshot(stack, world.tenant)
    failures = []
    for name, call, code, reason in CASES:
        error = await rpc_error(call(world))
        if (error.code, error.reason) != (code, reason):
            failures.append(f"{name}: got {error.code.name} {error.reason}, want {code.name} {reason}")
    assert failures == [], "\n".join(failures)
    assert await catalogue_snapshot(stack, world.tenant) == before
    # The values next to those limits still work.
    recorded = await world.metadata.RecordProcessingResult(_result(world, "s" * 64))
    assert recorded.step == "s" * 64
    derived = await world.metadata.CreateDerivative(
        _derivative(world, content_type="text/plain; charset=utf-8")
    )
    assert derived.content_type == "text/plain; charset=utf-8"
    assert (await world.alice.metadata.GetFile(metadata_service_pb2.GetFileRequest(file_id=world.file.id))).id


async def test_a_request_id_is_a_short_key(client_for: ClientFactory) -> None:
    """request_id is stored in 64 characters: a longer one was INTERNAL on PostgreSQL."""
    client = client_for("alice", f"rid-{uuid.uuid4().hex[:8]}")
    for request_id in ("r" * 65, "r" * 100_000, "with space"):
        error = await rpc_error(
            client.upload.CreateUpload(
                upload_service_pb2.CreateUploadRequest(
                    name="a.txt", size=5, content_type="text/plain", request_id=request_id
                )
            )
        )
        assert (error.code, error.reason, error.metadata) == (
            C.INVALID_ARGUMENT,
            "INVALID_REQUEST_ID",
            {"field": "request_id"},
        )
    created = await client.upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name="a.txt", size=5, content_type="text/plain", request_id="r" * 64
        )
    )
    assert created.upload.id
