"""An event whose object cannot be read is retried, then dead-lettered with the file FAILED; dead letters
are listed and replayed through ProcessorService. Its own stack: two deliveries instead of five."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import nats
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.msg import Msg

from filestore.core import events
from filestore.core.auth import mint_token
from filestore.core.clients import insecure_channel
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import (
    events_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    processor_service_pb2,
    processor_service_pb2_grpc,
    resources_pb2,
)
from tests.conftest import rpc_error

WAIT_S = 60.0


@pytest.fixture(scope="module")
async def impatient_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    home: Path = tmp_path_factory.mktemp("dead-letters")
    config = StackConfig(
        home=home,
        ports=StackPorts.free(),
        ready_timeout_s=60.0,
        extra_env={"processor": {"FILESTORE_WORKER_MAX_DELIVER": "2", "FILESTORE_WORKER_ACK_WAIT_S": "5"}},
    )
    async with Stack(config) as stack:
        yield stack


async def test_unreadable_object_is_dead_lettered_listed_and_replayed(impatient_stack: Stack) -> None:
    endpoints = impatient_stack.endpoints
    service_token = mint_token(endpoints.auth_secret, subject="service:test", tenant="*", roles=["service"])
    metadata_channel = insecure_channel(endpoints.metadata_addr, token=lambda: service_token)
    processor_channel = insecure_channel(endpoints.processor_addr, token=lambda: service_token)
    metadata = metadata_service_pb2_grpc.MetadataServiceStub(metadata_channel)
    processor = processor_service_pb2_grpc.ProcessorServiceStub(processor_channel)
    connection = await nats.connect(endpoints.nats_url)
    changed: asyncio.Queue[events_pb2.FileStatusChanged] = asyncio.Queue()

    async def on_status(message: Msg) -> None:
        await changed.put(events_pb2.FileStatusChanged.FromString(message.data))

    try:
        await connection.subscribe("files.file.ready", cb=on_status)
        # A file the catalogue believes UPLOADED, whose bytes never reached storage.
        began = await metadata.BeginUpload(
            metadata_service_pb2.BeginUploadRequest(
                file=resources_pb2.File(
                    tenant="acme",
                    owner="alice",
                    name="ghost.bin",
                    declared_content_type="application/octet-stream",
                    size=10,
                ),
                kind=resources_pb2.UPLOAD_KIND_SINGLE,
                expire_time=_in_an_hour(),
            )
        )
        await metadata.CompleteUploadRecord(
            metadata_service_pb2.CompleteUploadRecordRequest(
                upload_id=began.upload.id, tenant="acme", size=10
            )
        )
        event = events_pb2.ObjectCreated(
            bucket=endpoints.bucket,
            key=began.upload.storage_key,
            size=10,
            etag="none",
            file_id=began.file.id,
            tenant="acme",
            source=events_pb2.EVENT_SOURCE_BROKER,
        )
        subjects = events.Subjects("files")
        await events.publish(
            connection.jetstream(), subjects.object_created, event, msg_id=events.object_created_msg_id(event)
        )

        status = await asyncio.wait_for(changed.get(), WAIT_S)
        assert (status.file_id, status.status) == (began.file.id, resources_pb2.FILE_STATUS_FAILED)
        assert status.reason == "STORAGE_UNAVAILABLE"

        listed = await processor.ListDeadLetters(processor_service_pb2.ListDeadLettersRequest())
        ours = [letter for letter in listed.dead_letters if letter.event.file_id == began.file.id]
        assert len(ours) == 1
        letter = ours[0]
        assert (letter.subject, letter.reason, letter.deliveries) == (
            "files.object.created",
            "STORAGE_UNAVAILABLE",
            2,
        )

        await processor.ReplayDeadLetter(
            processor_service_pb2.ReplayDeadLetterRequest(dead_letter_id=letter.id)
        )
        after = await processor.ListDeadLetters(processor_service_pb2.ListDeadLettersRequest())
        assert letter.id not in {d.id for d in after.dead_letters}
        missing = await rpc_error(
            processor.ReplayDeadLetter(
                processor_service_pb2.ReplayDeadLetterRequest(dead_letter_id=letter.id)
            )
        )
        assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "DEAD_LETTER_NOT_FOUND")

        bad_page = await rpc_error(
            processor.ListDeadLetters(processor_service_pb2.ListDeadLettersRequest(page_size=-1))
        )
        assert bad_page.reason == "INVALID_PAGE_SIZE"
    finally:
        await connection.close()
        await metadata_channel.close()
        await processor_channel.close()


def _in_an_hour() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    return stamp
