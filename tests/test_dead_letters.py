"""An event whose object cannot be read is retried, then dead-lettered with the file FAILED; dead letters
are listed and replayed through ProcessorService. Messages that are not valid events are dead-lettered at
once, counted and listed, and never replayed. Its own stack: two deliveries instead of five."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from filestore.core.auth import mint_token
from filestore.server import events
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import (
    events_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    processor_service_pb2,
    processor_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)
from tests.catalogue import in_an_hour
from tests.metrics import scrape, value
from tests.support import connect_nats, put_presigned, rpc_error, service_token, stack_channel

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
    token = service_token(impatient_stack)
    metadata_channel = stack_channel(endpoints, endpoints.metadata_addr, token=lambda: token)
    processor_channel = stack_channel(endpoints, endpoints.processor_addr, token=lambda: token)
    metadata = metadata_service_pb2_grpc.MetadataServiceStub(metadata_channel)
    processor = processor_service_pb2_grpc.ProcessorServiceStub(processor_channel)
    connection = await connect_nats(endpoints)
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
                expire_time=in_an_hour(),
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


def _malformed_messages(bucket: str) -> list[tuple[str, bytes, str]]:
    """(subject, bytes, what the dead letter's detail says) for each kind of message that is not an event."""
    valid = events_pb2.ObjectCreated(
        bucket=bucket, key="originals/acme/0f1e2d3c", size=5, source=events_pb2.EVENT_SOURCE_SEAWEEDFS
    ).SerializeToString()
    status = events_pb2.FileStatusChanged(
        file_id="0f1e2d3c", tenant="acme", status=resources_pb2.FILE_STATUS_READY
    )
    status.event_time.GetCurrentTime()
    created, enrich = "files.object.created", "files.file.enrich"
    return [
        (created, b"\xff\xfe\x00\x01 garbage \x9c\x8d", "does not decode"),
        (created, b"this is plain text, not an event", "does not decode"),
        # Protobuf decodes these two bytes of text into one field no ObjectCreated has.
        (created, b"Hi", "fields an ObjectCreated does not define"),
        (
            created,
            b'{"EventName": "s3:ObjectCreated:Put", "Key": "filestore/originals/acme/x"}',
            "does not decode",
        ),
        # Cut inside the key, and cut right after the bucket: both once a valid event.
        (created, valid[:20], "does not decode"),
        (created, valid[: 2 + len(bucket)], "names no object key"),
        (created, b"", "names no object key"),
        # Another event type on the wrong subject: its timestamp lands where ObjectCreated has an int.
        (created, status.SerializeToString(), "fields an ObjectCreated does not define"),
        (created, valid + b"\xa8\x06\x01", "fields an ObjectCreated does not define"),  # field 101
        (
            created,
            events_pb2.ObjectCreated(
                bucket=bucket, key="originals/acme/x", source=events_pb2.EventSource.ValueType(99)
            ).SerializeToString(),
            "unknown source",
        ),
        (
            created,
            events_pb2.ObjectCreated(key="originals/acme/x", size=-1).SerializeToString(),
            "negative size",
        ),
        (created, events_pb2.ObjectCreated(key="k" * 1025).SerializeToString(), "longer than 1024 bytes"),
        (enrich, b"\x00\x00 garbage on the enrichment queue", "does not decode"),
    ]


async def test_malformed_messages_are_dead_lettered_at_once_counted_listed_and_not_replayed(
    impatient_stack: Stack,
) -> None:
    endpoints = impatient_stack.endpoints
    token = service_token(impatient_stack)
    processor_channel = stack_channel(endpoints, endpoints.processor_addr, token=lambda: token)
    processor = processor_service_pb2_grpc.ProcessorServiceStub(processor_channel)
    metrics_url = endpoints.metrics_urls["processor"]
    connection = await connect_nats(endpoints)
    js = connection.jetstream()
    dead: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_dead(message: Msg) -> None:
        if message.headers and message.headers.get("Filestore-Reason") == "MALFORMED_EVENT":
            await dead.put(message)

    try:
        await connection.subscribe("files.dead.>", cb=on_dead)
        await connection.flush()
        before = await scrape(metrics_url)
        malformed = _malformed_messages(endpoints.bucket)
        for subject, data, _ in malformed:
            await js.publish(subject, data)
        # Well-formed but not ours (storage announces derivatives too): acked silently, as ever.
        not_ours = events_pb2.ObjectCreated(
            bucket=endpoints.bucket,
            key="derivatives/acme/0f1e2d3c/thumbnail_256",
            size=10,
            source=events_pb2.EVENT_SOURCE_SEAWEEDFS,
        )
        await js.publish("files.object.created", not_ours.SerializeToString())

        # Each one dead-lettered at its first delivery, as it was received.
        letters = [await asyncio.wait_for(dead.get(), WAIT_S) for _ in malformed]
        expected = {(f"files.dead.{subject}", data) for subject, data, _ in malformed}
        assert {(letter.subject, letter.data) for letter in letters} == expected

        # The worker goes on with valid events: a real upload after them becomes READY.
        assert await _upload_until_settled(impatient_stack, connection) == resources_pb2.FILE_STATUS_READY

        # Listed with the reason, what was wrong and the bytes; no event made up from them.
        listed = await processor.ListDeadLetters(processor_service_pb2.ListDeadLettersRequest(page_size=500))
        by_bytes = {
            letter.payload: letter for letter in listed.dead_letters if letter.reason == "MALFORMED_EVENT"
        }
        for subject, data, detail in malformed:
            letter = by_bytes[data[:1024]]
            assert (letter.subject, letter.deliveries, letter.payload_size) == (subject, 1, len(data))
            assert detail in letter.detail
            assert not letter.HasField("event")
        assert not [d for d in listed.dead_letters if d.event.key == not_ours.key]

        # Counted once each, by subject; and nothing is left unacknowledged on either queue.
        want: dict[str, float] = {"files.object.created": len(malformed) - 1, "files.file.enrich": 1}

        async def counted() -> dict[str, float]:
            after = await scrape(metrics_url)
            return {
                subject: value(after, "filestore_events_consumed_total", subject=subject, result="malformed")
                - value(before, "filestore_events_consumed_total", subject=subject, result="malformed")
                for subject in want
            }

        assert await _settles(counted, want) == want

        async def unacknowledged() -> dict[str, tuple[int | None, int | None]]:
            infos = [await js.consumer_info("FILES", d) for d in ("processor-pipeline", "processor-enrich")]
            return {info.name: (info.num_pending, info.num_ack_pending) for info in infos}

        nothing: dict[str, tuple[int | None, int | None]] = {
            "processor-pipeline": (0, 0),
            "processor-enrich": (0, 0),
        }
        assert await _settles(unacknowledged, nothing) == nothing

        # Replaying garbage would only dead-letter it again: refused, and it stays listed.
        refused = await rpc_error(
            processor.ReplayDeadLetter(
                processor_service_pb2.ReplayDeadLetterRequest(dead_letter_id=by_bytes[b"Hi"].id)
            )
        )
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "DEAD_LETTER_MALFORMED",
        )
        again = await processor.ListDeadLetters(processor_service_pb2.ListDeadLettersRequest(page_size=500))
        assert by_bytes[b"Hi"].id in {letter.id for letter in again.dead_letters}
    finally:
        await connection.close()
        await processor_channel.close()


T = TypeVar("T")


async def _settles(read: Callable[[], Awaitable[T]], wanted: T) -> T:
    """What ``read`` answers once it answers ``wanted``, or after WAIT_S: metrics and consumer
    counters move a moment after the events that move them, and announce nothing."""
    deadline = time.monotonic() + WAIT_S
    while True:
        seen = await read()
        if seen == wanted or time.monotonic() >= deadline:
            return seen
        await asyncio.sleep(0.2)


async def _upload_until_settled(stack: Stack, connection: NatsClient) -> resources_pb2.FileStatus.ValueType:
    """One small upload through the broker; its status once the processor has announced it."""
    endpoints = stack.endpoints
    token = mint_token(endpoints.auth_secret, subject="alice", tenant="acme")
    channel = stack_channel(endpoints, endpoints.upload_addr, token=lambda: token)
    uploads = upload_service_pb2_grpc.UploadServiceStub(channel)
    changed: asyncio.Queue[events_pb2.FileStatusChanged] = asyncio.Queue()

    async def on_status(message: Msg) -> None:
        await changed.put(events_pb2.FileStatusChanged.FromString(message.data))

    subscription = await connection.subscribe("files.file.ready", cb=on_status)
    try:
        body = b"still working after the garbage"
        created = await uploads.CreateUpload(
            upload_service_pb2.CreateUploadRequest(
                name="after.txt",
                size=len(body),
                content_type="text/plain",
                sha256=hashlib.sha256(body).hexdigest(),
            )
        )
        assert (await put_presigned(created.upload.request, body)).status_code == 200
        await uploads.CompleteUpload(upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id))
        while (status := await asyncio.wait_for(changed.get(), WAIT_S)).file_id != created.file.id:
            pass
        return status.status
    finally:
        await subscription.unsubscribe()
        await channel.close()
