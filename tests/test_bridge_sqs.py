"""The AWS S3 bridge's SQS source, driven by a fake queue at its Protocol boundary (no SQS runs here),
publishing into a real NATS JetStream: a message is deleted only once its events are in FILES, a
message of no creation in our bucket is deleted unpublished, one that does not parse is dead-lettered
and deleted, and one whose publish fails is made visible again later, never deleted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from filestore.processor.bridge.normalize import from_aws
from filestore.processor.bridge.notifications import NotificationBridge
from filestore.processor.bridge.sqs import SqsMessage, SqsSource, queue_subject
from filestore.processor.dead_letters import DEAD_LETTER_DETAIL, DEAD_LETTER_REASON
from filestore.server import events
from filestore.server.settings import NatsSettings
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import events_pb2
from tests.support import connect_nats

FIXTURES = Path(__file__).parent / "fixtures" / "store_events"
QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/111122223333/filestore-events"
BUCKET = "filestore"
SETTLED_TIMEOUT_S = 20.0


class FakeQueue:
    """An SQS queue that hands out the given messages once, then long-polls empty. Each delete notes
    how many messages FILES held at that moment (a delete before the publish would see too few)."""

    def __init__(self, js: JetStreamContext, messages: list[SqsMessage]) -> None:
        self._js = js
        self._waiting = list(messages)
        self.deleted: dict[str, int] = {}
        self.made_visible: dict[str, int] = {}
        self._settled = asyncio.Condition()

    async def receive(self, *, max_messages: int, wait_time_s: int) -> list[SqsMessage]:
        assert (max_messages, wait_time_s) == (10, 20)
        batch, self._waiting = self._waiting[:max_messages], self._waiting[max_messages:]
        if not batch:
            await asyncio.sleep(0.05)  # a long poll that found nothing
        return batch

    async def delete(self, receipt_handle: str) -> None:
        published = await _object_created_count(self._js)
        async with self._settled:
            self.deleted[receipt_handle] = published
            self._settled.notify_all()

    async def change_visibility(self, receipt_handle: str, timeout_s: int) -> None:
        async with self._settled:
            self.made_visible[receipt_handle] = timeout_s
            self._settled.notify_all()

    async def until_settled(self, count: int) -> None:
        async def settled() -> None:
            async with self._settled:
                await self._settled.wait_for(lambda: len(self.deleted) + len(self.made_visible) >= count)

        await asyncio.wait_for(settled(), SETTLED_TIMEOUT_S)


async def _object_created_count(js: JetStreamContext) -> int:
    info = await js.stream_info("FILES", subjects_filter="files.object.created")
    return (info.state.subjects or {}).get("files.object.created", 0)


def _message(number: int, body: str) -> SqsMessage:
    return SqsMessage(message_id=f"m-{number}", receipt_handle=f"r-{number}", body=body, receive_count=1)


def _s3_event_in_sns(key: str, bucket: str = BUCKET) -> str:
    event = json.loads((FIXTURES / "aws_s3_put.json").read_text())
    event["Records"][0]["s3"]["bucket"]["name"] = bucket
    event["Records"][0]["s3"]["object"]["key"] = key
    envelope = json.loads((FIXTURES / "aws_sns_notification.json").read_text())
    envelope["Message"] = json.dumps(event)
    return json.dumps(envelope)


def _eventbridge(key: str, bucket: str) -> str:
    event = json.loads((FIXTURES / "aws_eventbridge_object_created.json").read_text())
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"]["key"] = key
    return json.dumps(event)


@pytest.fixture(scope="module")
async def jetstream(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[JetStreamContext]:
    config = StackConfig(
        home=tmp_path_factory.mktemp("bridge-sqs"), ports=StackPorts.free(), components=("nats",)
    )
    async with Stack(config) as stack:
        nc = await connect_nats(stack.endpoints)
        js = nc.jetstream()
        await events.ensure_stream(
            js, NatsSettings(urls=(stack.endpoints.nats_url,), stream="FILES", subject_prefix="files")
        )
        try:
            yield js
        finally:
            await nc.close()


def _bridge(js: JetStreamContext, queue: FakeQueue, *, subject_prefix: str = "files") -> NotificationBridge:
    return NotificationBridge(
        source=SqsSource(queue, origin=queue_subject(QUEUE_URL)),
        normalize=from_aws,
        bucket=BUCKET,
        jetstream=js,
        subject_prefix=subject_prefix,
        name="aws-s3",
    )


async def test_messages_are_deleted_only_after_their_events_are_published(
    jetstream: JetStreamContext,
) -> None:
    before = await _object_created_count(jetstream)
    queue = FakeQueue(
        jetstream,
        [
            _message(1, _s3_event_in_sns("originals/acme/01HXZ5R8Q3KJ7V2M4N6P8T0W1A")),
            _message(2, _eventbridge("originals/acme/01HXZ5R8Q3KJ7V2M4N6P8T0W1B", bucket="someone-elses")),
            _message(3, "{ this is not json"),
            _message(4, _eventbridge("originals/acme/01HXZ5R8Q3KJ7V2M4N6P8T0W1C", bucket=BUCKET)),
        ],
    )
    bridge = _bridge(jetstream, queue)
    await bridge.start()
    try:
        await queue.until_settled(4)
    finally:
        await bridge.stop()
    assert queue.made_visible == {}
    # Each delete saw its own event already in FILES; the other bucket's and the bad one added none.
    assert queue.deleted == {"r-1": before + 1, "r-2": before + 1, "r-3": before + 1, "r-4": before + 2}
    assert bridge.published == 2

    letter = await jetstream.get_last_msg("FILES", "files.dead.sqs.filestore-events")
    assert letter.data == b"{ this is not json"
    headers = letter.headers or {}
    assert headers[DEAD_LETTER_REASON] == "BAD_NOTIFICATION"
    assert "not JSON" in headers[DEAD_LETTER_DETAIL]

    last = await jetstream.get_last_msg("FILES", "files.object.created")
    event = events_pb2.ObjectCreated.FromString(last.data or b"")
    assert (event.key, event.source, event.file_id) == (
        "originals/acme/01HXZ5R8Q3KJ7V2M4N6P8T0W1C",
        events_pb2.EVENT_SOURCE_AWS_S3,
        "01HXZ5R8Q3KJ7V2M4N6P8T0W1C",
    )


async def test_a_message_whose_publish_fails_comes_back_and_is_not_deleted(
    jetstream: JetStreamContext,
) -> None:
    queue = FakeQueue(jetstream, [_message(5, _s3_event_in_sns("originals/acme/01HXZ5R8Q3KJ7V2M4N6P8T0W1D"))])
    # No stream keeps this prefix's subjects: JetStream refuses every publish.
    bridge = _bridge(jetstream, queue, subject_prefix="nostream")
    await bridge.start()
    try:
        await queue.until_settled(1)
    finally:
        await bridge.stop()
    assert queue.deleted == {}
    assert queue.made_visible == {"r-5": 1}
    assert bridge.published == 0


def test_the_queue_names_its_dead_letters_subject() -> None:
    assert queue_subject(QUEUE_URL) == "sqs.filestore-events"
    assert queue_subject("https://sqs.us-east-1.amazonaws.com/1/orders.fifo") == "sqs.orders_fifo"
