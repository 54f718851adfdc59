"""Notification source on Amazon SQS, where AWS S3 sends its event notifications (directly, through
SNS, or as EventBridge events a rule forwards to the queue).

A long poll receives up to ten messages; each is deleted only after its events are published, and one
whose publish failed is made visible again after the bridge's retry delay. A message received and
never deleted (the bridge died) comes back by itself after the queue's visibility timeout, to any
bridge: the queue is the shared durable consumer, so no lease is needed. A queue with a redrive policy
moves messages that keep coming back to its own dead-letter queue; the bridge dead-letters what does
not parse itself, on the first receipt.

boto3 is blocking: its calls run in worker threads (as every S3 call of Filestore does, see
:mod:`filestore.server.storage.clients`). :class:`SqsQueue` is the narrow face the source needs, so
tests drive the source with a fake queue, and :class:`Boto3SqsQueue` is the adapter for the real one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

from filestore.processor.bridge.notifications import Delivery

__all__ = ["Boto3SqsQueue", "SqsMessage", "SqsQueue", "SqsSource", "queue_subject"]

#: SQS's longest long poll, and its largest batch.
WAIT_TIME_S = 20
MAX_MESSAGES = 10
#: Above the long poll, so that an empty poll is not mistaken for a dead connection.
READ_TIMEOUT_S = WAIT_TIME_S + 10
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class SqsMessage:
    message_id: str
    receipt_handle: str
    body: str
    #: SQS's ApproximateReceiveCount: 1 on the first receipt.
    receive_count: int


class SqsQueue(Protocol):
    async def receive(self, *, max_messages: int, wait_time_s: int) -> list[SqsMessage]: ...

    async def delete(self, receipt_handle: str) -> None: ...

    async def change_visibility(self, receipt_handle: str, timeout_s: int) -> None: ...


def queue_subject(queue_url: str) -> str:
    """A NATS subject naming the queue (``sqs.<queue name>``), for the dead letters of its messages.
    Queue names hold letters, digits, ``-`` and ``_``, and FIFO queues end in ``.fifo``."""
    name = urlsplit(queue_url).path.rstrip("/").rsplit("/", 1)[-1] or "queue"
    return f"sqs.{name.replace('.', '_')}"


@dataclass
class _SqsDelivery:
    message: SqsMessage
    queue: SqsQueue
    origin: str

    @property
    def data(self) -> bytes:
        return self.message.body.encode()

    @property
    def id(self) -> str:
        return self.message.message_id

    @property
    def deliveries(self) -> int:
        return self.message.receive_count

    async def ack(self) -> None:
        await self.queue.delete(self.message.receipt_handle)

    async def retry(self, delay_s: float) -> None:
        # SQS counts whole seconds; rounding down could make it visible at once.
        await self.queue.change_visibility(self.message.receipt_handle, math.ceil(delay_s))


class SqsSource:
    """Long polls of one SQS queue."""

    def __init__(self, queue: SqsQueue, *, origin: str) -> None:
        self._queue = queue
        self._origin = origin

    async def open(self) -> None:
        """Nothing to bind: every poll names the queue."""

    async def receive(self) -> AsyncIterator[Delivery]:
        while True:
            for message in await self._queue.receive(max_messages=MAX_MESSAGES, wait_time_s=WAIT_TIME_S):
                yield _SqsDelivery(message, self._queue, self._origin)

    async def close(self) -> None:
        """Nothing to release: a message in hand comes back after its visibility timeout."""


class Boto3SqsQueue:
    """:class:`SqsQueue` on boto3. Credentials come from boto3's own chain (environment, the instance's
    or the pod's role), as AWS deployments give them; ``endpoint`` points it at an SQS-compatible
    service (ElasticMQ, LocalStack) instead."""

    def __init__(self, queue_url: str, *, region: str, endpoint: str | None = None) -> None:
        self._url = queue_url
        config = Config(
            region_name=region,
            retries={"mode": "standard", "total_max_attempts": 2},
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
        )
        # Untyped: Filestore's type stubs cover S3 only, and this class is the typed face of SQS.
        self._client: Any = boto3.session.Session().client("sqs", endpoint_url=endpoint, config=config)

    async def receive(self, *, max_messages: int, wait_time_s: int) -> list[SqsMessage]:
        answer = await asyncio.to_thread(
            self._client.receive_message,
            QueueUrl=self._url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_time_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            SqsMessage(
                message_id=str(message["MessageId"]),
                receipt_handle=str(message["ReceiptHandle"]),
                body=str(message.get("Body", "")),
                receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for message in answer.get("Messages", [])
        ]

    async def delete(self, receipt_handle: str) -> None:
        await asyncio.to_thread(self._client.delete_message, QueueUrl=self._url, ReceiptHandle=receipt_handle)

    async def change_visibility(self, receipt_handle: str, timeout_s: int) -> None:
        await asyncio.to_thread(
            self._client.change_message_visibility,
            QueueUrl=self._url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=timeout_s,
        )
