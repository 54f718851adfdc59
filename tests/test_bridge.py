"""The SeaweedFS storage-event bridge against real SeaweedFS, NATS JetStream and the processor.

These tests stop and restart the processor (which runs the bridge), so they use a stack of their own
(SeaweedFS, NATS, metadata, processor) instead of the shared session stack. Objects are PUT straight
to storage with boto3, not through the broker, so only the bridge announces them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from filestore.server import events
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import events_pb2
from tests.storage import admin_storage
from tests.support import connect_nats

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import CompletedPartTypeDef

EVENT_TIMEOUT_S = 30.0


class CreatedEvents:
    """ObjectCreated events as the FILES stream stored them (an ordered consumer, not a plain
    subscription: a duplicate JetStream dropped by Nats-Msg-Id would still reach a plain subscriber)."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[events_pb2.ObjectCreated]] = {}
        self.msg_ids: Counter[str] = Counter()
        self._changed = asyncio.Condition()

    async def on_message(self, message: Msg) -> None:
        event = events_pb2.ObjectCreated.FromString(message.data)
        async with self._changed:
            self.by_key.setdefault(event.key, []).append(event)
            self.msg_ids[(message.headers or {}).get("Nats-Msg-Id", "")] += 1
            self._changed.notify_all()

    async def wait_for(self, keys: Iterable[str]) -> None:
        wanted = set(keys)

        async def seen() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: wanted <= self.by_key.keys())

        await asyncio.wait_for(seen(), EVENT_TIMEOUT_S)


@pytest.fixture(scope="module")
async def bridge_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    home: Path = tmp_path_factory.mktemp("bridge-stack")
    config = StackConfig(
        home=home,
        ports=StackPorts.free(),
        components=("seaweedfs", "nats", "metadata", "processor"),
        ready_timeout_s=60.0,
    )
    async with Stack(config) as running:
        yield running


@pytest.fixture
async def created(bridge_stack: Stack) -> AsyncIterator[CreatedEvents]:
    collector = CreatedEvents()
    connection = await connect_nats(bridge_stack.endpoints)
    subscription = await connection.jetstream().subscribe(
        events.Subjects("files").object_created,
        cb=collector.on_message,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )
    yield collector
    await subscription.unsubscribe()
    await connection.close()


@pytest.fixture
def storage(bridge_stack: Stack) -> S3Client:
    return admin_storage(bridge_stack)


async def _put(storage: S3Client, bucket: str, key: str, body: bytes) -> str:
    """PUT one object; its ETag without quotes."""
    response = await asyncio.to_thread(storage.put_object, Bucket=bucket, Key=key, Body=body)
    return response["ETag"].strip('"')


async def test_bridge_restart_loses_nothing_and_duplicates_nothing(
    bridge_stack: Stack, created: CreatedEvents, storage: S3Client
) -> None:
    bucket = bridge_stack.endpoints.bucket
    tenant = f"t{uuid.uuid4().hex[:8]}"
    # The bridge is live (and has a cursor) before it is stopped.
    warmup = f"originals/{tenant}/warmup"
    await _put(storage, bucket, warmup, b"warm")
    await created.wait_for([warmup])

    await bridge_stack.terminate("processor")
    etags = {}
    for n in range(20):
        key = f"originals/{tenant}/{uuid.uuid4().hex}"
        etags[key] = await _put(storage, bucket, key, f"object {n}".encode())
    await bridge_stack.restart("processor")

    await created.wait_for(etags)
    # The bridge publishes in filer order: once an object stored after the restart is announced,
    # every redelivery of the earlier ones would have been announced too.
    sentinel = f"originals/{tenant}/sentinel"
    await _put(storage, bucket, sentinel, b"last")
    await created.wait_for([sentinel])

    assert {key: len(created.by_key[key]) for key in etags} == dict.fromkeys(etags, 1)
    for key, etag in etags.items():
        (event,) = created.by_key[key]
        assert event.etag == etag
        assert event.bucket == bucket
        assert event.source == events_pb2.EVENT_SOURCE_SEAWEEDFS
        assert (event.tenant, event.file_id) == (tenant, key.rsplit("/", 1)[1])
    # The warm-up event is replayed after the restart (the cursor is inclusive) but deduplicated.
    assert len(created.by_key[warmup]) == 1
    assert all(count == 1 for count in created.msg_ids.values())


async def test_multipart_parts_and_directories_are_not_announced(
    bridge_stack: Stack, created: CreatedEvents, storage: S3Client
) -> None:
    bucket = bridge_stack.endpoints.bucket
    key = f"originals/t{uuid.uuid4().hex[:8]}/{uuid.uuid4().hex}"

    def multipart_upload() -> tuple[str, int]:
        upload = storage.create_multipart_upload(Bucket=bucket, Key=key)
        bodies = [b"a" * (5 * 1024 * 1024), b"tail"]
        parts: list[CompletedPartTypeDef] = []
        for number, body in enumerate(bodies, start=1):
            part = storage.upload_part(
                Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=body
            )
            parts.append({"PartNumber": number, "ETag": part["ETag"]})
        storage.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
        )
        head = storage.head_object(Bucket=bucket, Key=key)
        return head["ETag"].strip('"'), head["ContentLength"]

    head_etag, size = await asyncio.to_thread(multipart_upload)
    sentinel = f"originals/t{uuid.uuid4().hex[:8]}/sentinel"
    await _put(storage, bucket, sentinel, b"last")
    await created.wait_for([key, sentinel])

    (event,) = created.by_key[key]
    # The same ETag as S3 HEAD (and so the broker's CompleteUpload): one Nats-Msg-Id for both.
    assert event.etag == head_etag
    assert head_etag.endswith("-2")
    assert event.size == size
    assert not [k for k in created.by_key if ".uploads" in k or k.endswith("/")]
    assert set(created.by_key) == {key, sentinel}


async def test_a_deleted_object_is_announced_once_with_its_file(
    bridge_stack: Stack, created: CreatedEvents, storage: S3Client
) -> None:
    bucket = bridge_stack.endpoints.bucket
    tenant, file_id = f"t{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    key = f"originals/{tenant}/{file_id}"
    connection = await connect_nats(bridge_stack.endpoints)
    deletions: asyncio.Queue[tuple[events_pb2.ObjectDeleted, str]] = asyncio.Queue()

    async def on_deletion(message: Msg) -> None:
        msg_id = (message.headers or {}).get("Nats-Msg-Id", "")
        await deletions.put((events_pb2.ObjectDeleted.FromString(message.data), msg_id))

    subscription = await connection.jetstream().subscribe(
        events.Subjects("files").object_deleted,
        cb=on_deletion,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )
    try:
        await _put(storage, bucket, key, b"soon gone")
        await created.wait_for([key])
        await asyncio.to_thread(storage.delete_object, Bucket=bucket, Key=key)
        event, msg_id = await asyncio.wait_for(deletions.get(), EVENT_TIMEOUT_S)
        assert (event.bucket, event.key, event.tenant, event.file_id) == (bucket, key, tenant, file_id)
        assert event.source == events_pb2.EVENT_SOURCE_SEAWEEDFS
        assert msg_id == events.object_deleted_msg_id(event)
        # Overwriting is not deleting: once the bridge has announced an object PUT after the
        # overwrite (it follows the filer's log in order), no other deletion has arrived.
        overwritten, last = f"originals/{tenant}/overwritten", f"originals/{tenant}/last"
        await _put(storage, bucket, overwritten, b"one")
        await _put(storage, bucket, overwritten, b"two")
        await _put(storage, bucket, last, b"last")
        await created.wait_for([last])
        assert len(created.by_key[overwritten]) == 2
        assert deletions.empty()
    finally:
        await subscription.unsubscribe()
        await connection.close()
