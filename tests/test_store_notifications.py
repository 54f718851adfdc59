"""The bridges of stores that send their own notifications, on a real stack whose processor runs
the MinIO bridge (MinIO's NATS target with ``jetstream on``: a durable consumer on the stream that
holds its subject) or the AWS S3 bridge fed by a relay of SQS messages into core NATS. The store is
the stack's SeaweedFS, whose own bridge is off; the notifications are MinIO's and AWS's recorded
payloads (``tests/fixtures/store_events/``) describing objects really stored there, published into
the stack's nats-server as those stores (or the relay) publish them.

Each file's upload is recorded complete without the broker's announcement, so only the store's
notification can take it to READY.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig

from filestore.stack import Stack
from filestore.v1 import events_pb2, processor_service_pb2, processor_service_pb2_grpc, resources_pb2
from tests.store_events import (
    StoredObject,
    aws_s3_event,
    eventbridge_event,
    minio_notification,
    object_created_in_files,
    sns_notification,
    stack_config,
    stored_but_unannounced,
)
from tests.support import collected_status_events, connect_nats, service_token, stack_channel

READY = resources_pb2.FILE_STATUS_READY
MINIO_SUBJECT = "minio.events"
MINIO_STREAM = "MINIO_EVENTS"
AWS_SUBJECT = "relay.aws.s3"
SENTINEL_TIMEOUT_S = 30.0


@dataclass
class NotifyingStore:
    """A stack whose processor's bridge takes one store's notifications, and how that store sends them."""

    mode: str
    stack: Stack
    nc: NatsClient
    subject: str
    source: events_pb2.EventSource.ValueType
    #: The store's notification of an object, in each shape it comes in; the first is the usual one.
    shapes: dict[str, Callable[[StoredObject], bytes]]

    def notification(self, obj: StoredObject) -> bytes:
        return next(iter(self.shapes.values()))(obj)

    async def send(self, payload: bytes) -> None:
        if self.mode == "minio":
            # MinIO's NATS target with `jetstream on` publishes into the stream, and waits for its ack.
            await self.nc.jetstream().publish(self.subject, payload)
        else:
            await self.nc.publish(self.subject, payload)
            await self.nc.flush()


def _minio_env() -> dict[str, str]:
    return {
        "FILESTORE_BRIDGE_SOURCE": "minio",
        "FILESTORE_BRIDGE_SUBJECT": MINIO_SUBJECT,
        "FILESTORE_BRIDGE_STREAM": MINIO_STREAM,
    }


def _aws_env() -> dict[str, str]:
    return {"FILESTORE_BRIDGE_SOURCE": "aws-s3", "FILESTORE_BRIDGE_SUBJECT": AWS_SUBJECT}


@pytest.fixture(scope="module", params=["minio", "aws-s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[NotifyingStore]:
    mode: str = request.param
    home: Path = tmp_path_factory.mktemp(f"notifications-{mode}")
    env = _minio_env() if mode == "minio" else _aws_env()
    async with Stack(stack_config(home, env)) as stack:
        nc = await connect_nats(stack.endpoints)
        try:
            if mode == "minio":
                # What a MinIO operator creates for `jetstream on`; the bridge binds once it exists.
                await nc.jetstream().add_stream(StreamConfig(name=MINIO_STREAM, subjects=[MINIO_SUBJECT]))
                yield NotifyingStore(
                    mode,
                    stack,
                    nc,
                    MINIO_SUBJECT,
                    events_pb2.EVENT_SOURCE_MINIO,
                    {"nats target": minio_notification},
                )
            else:
                yield NotifyingStore(
                    mode,
                    stack,
                    nc,
                    AWS_SUBJECT,
                    events_pb2.EVENT_SOURCE_AWS_S3,
                    {
                        "sns envelope": lambda obj: sns_notification(aws_s3_event(obj)),
                        "s3 to sqs": lambda obj: json.dumps(aws_s3_event(obj)).encode(),
                        "eventbridge": eventbridge_event,
                    },
                )
        finally:
            await nc.close()


def _body() -> bytes:
    return f"notes {uuid.uuid4()}\n".encode()


async def _until_ready(store: NotifyingStore, obj: StoredObject, send: Callable[[], Awaitable[None]]) -> None:
    async with collected_status_events(store.stack) as statuses:
        await send()
        changed = await statuses.wait_for_status(obj.file_id, READY)
    assert changed.file_id == obj.file_id


async def _handled_through(store: NotifyingStore) -> None:
    """Until the bridge has handled every notification sent so far: it handles them in order, so
    once a last one (an object that is no file's, announced and then ignored by the pipeline) is in
    FILES, those before it are done."""
    bucket = store.stack.endpoints.bucket
    sentinel = StoredObject(file_id="", bucket=bucket, key=f"sentinel/{uuid.uuid4()}", size=1, etag="00")
    await store.send(store.notification(sentinel))
    deadline = asyncio.get_running_loop().time() + SENTINEL_TIMEOUT_S
    while not await object_created_in_files(store.nc.jetstream(), sentinel.key):
        assert asyncio.get_running_loop().time() < deadline, "the bridge never announced the sentinel"
        await asyncio.sleep(0.2)


async def _assert_source_settled(store: NotifyingStore) -> None:
    """Every notification in MinIO's stream was acknowledged by the bridge (core NATS keeps none)."""
    if store.mode != "minio":
        return
    info = await store.nc.jetstream().consumer_info(MINIO_STREAM, "filestore-bridge-minio")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_stores_notification_takes_the_stored_file_to_ready(store: NotifyingStore) -> None:
    for shape, notification in store.shapes.items():
        obj = await stored_but_unannounced(store.stack, _body())
        await _until_ready(store, obj, lambda: store.send(notification(obj)))  # noqa: B023
        created = await object_created_in_files(store.nc.jetstream(), obj.key)
        assert [(e.source, e.bucket, e.tenant, e.file_id, e.size, e.etag) for e in created] == [
            (store.source, obj.bucket, obj.key.split("/")[1], obj.file_id, obj.size, obj.etag)
        ], shape
    await _assert_source_settled(store)


async def test_other_buckets_are_acked_and_bad_notifications_dead_lettered_without_blocking(
    store: NotifyingStore,
) -> None:
    obj = await stored_but_unannounced(store.stack, _body())
    elsewhere = StoredObject(
        file_id=obj.file_id, bucket="someone-elses", key=obj.key, size=obj.size, etag=obj.etag
    )
    not_json = b"\x00 this is no notification"
    no_key = json.loads(store.notification(obj))
    if store.mode == "aws-s3":
        # The SNS envelope stays well-formed; the S3 event inside it has lost its object key.
        inner = json.loads(no_key["Message"])
        del inner["Records"][0]["s3"]["object"]["key"]
        no_key["Message"] = json.dumps(inner)
    else:
        del no_key["Records"][0]["s3"]["object"]["key"]

    async def send_all() -> None:
        await store.send(store.notification(elsewhere))
        await store.send(not_json)
        await store.send(json.dumps(no_key).encode())
        await store.send(store.notification(obj))

    # The last notification is handled after the three before it, so READY means they were handled.
    await _until_ready(store, obj, send_all)
    # The other bucket's object (the same key) was not announced: the one event is our bucket's.
    assert [e.bucket for e in await object_created_in_files(store.nc.jetstream(), obj.key)] == [obj.bucket]
    await _assert_source_settled(store)

    token = service_token(store.stack)
    async with stack_channel(
        store.stack.endpoints, store.stack.endpoints.processor_addr, token=lambda: token
    ) as channel:
        processor = processor_service_pb2_grpc.ProcessorServiceStub(channel)
        listed = await processor.ListDeadLetters(processor_service_pb2.ListDeadLettersRequest(page_size=500))
    ours = [letter for letter in listed.dead_letters if letter.subject == store.subject]
    # As received (ListDeadLetters shows the first KiB of a payload that is no event, and its size).
    bad_key = json.dumps(no_key).encode()
    shown = {(letter.payload_size, bytes(letter.payload)) for letter in ours}
    assert (len(not_json), not_json) in shown
    assert (len(bad_key), bad_key[:1024]) in shown
    assert {letter.reason for letter in ours} == {"BAD_NOTIFICATION"}
    details = " ".join(letter.detail for letter in ours)
    assert "not JSON" in details
    assert "KeyError" in details


async def test_a_notification_delivered_twice_is_processed_once(store: NotifyingStore) -> None:
    obj = await stored_but_unannounced(store.stack, _body())
    payload = store.notification(obj)
    ready_announcements = 0
    status_nc = await connect_nats(store.stack.endpoints)

    async def count(message: nats.aio.msg.Msg) -> None:
        nonlocal ready_announcements
        changed = events_pb2.FileStatusChanged.FromString(message.data)
        if changed.file_id == obj.file_id and changed.status == READY:
            ready_announcements += 1

    try:
        await status_nc.subscribe("files.file.ready", cb=count)
        await status_nc.flush()

        async def twice() -> None:
            await store.send(payload)
            await store.send(payload)

        await _until_ready(store, obj, twice)
        # A third copy after READY: still the same object version, dropped by its message id.
        await store.send(payload)
        await _handled_through(store)
        created = await object_created_in_files(store.nc.jetstream(), obj.key)
        await status_nc.flush()
    finally:
        await status_nc.close()
    assert len(created) == 1
    assert ready_announcements == 1
    await _assert_source_settled(store)
