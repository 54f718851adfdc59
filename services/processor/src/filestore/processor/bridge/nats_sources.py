"""Notification sources on NATS: MinIO's NATS target publishes there itself, and relays of AWS's SQS
or EventBridge deliveries may too.

* :class:`JetStreamSource`, when the subject is captured by a stream (MinIO's target with ``jetstream
  on``, which publishes into a stream the operator created): a durable pull consumer on that stream,
  shared by every bridge. Notifications published while no bridge runs wait in the stream; one not
  acknowledged within the ack wait (its bridge died) goes to another bridge.
* :class:`CoreNatsSource`, when it is not: a plain subscription in a queue group, so each notification
  reaches one bridge. Core NATS keeps nothing: a notification published while no bridge listens is
  lost (the broker's CompleteUpload still announces every upload it completes). A notification whose
  publish failed is kept in this process and handed over again, and is lost if the process stops
  first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from filestore.processor.bridge.notifications import Delivery
from filestore.server import events

__all__ = ["CoreNatsSource", "JetStreamSource"]

log = structlog.get_logger("filestore.processor.bridge")

#: The queue group (and the prefix of the durable consumer) of the bridges.
GROUP = "filestore-bridge"
#: How long a notification may be in one bridge's hands before JetStream gives it to another.
ACK_WAIT_S = 30.0
#: Notifications fetched at once from the stream (then handled one by one).
FETCH_BATCH = 16
#: How often a core NATS source that receives nothing looks for notifications handed back.
RETRY_POLL_S = 0.5


@dataclass
class _JetStreamDelivery:
    message: Msg

    @property
    def data(self) -> bytes:
        return self.message.data

    @property
    def origin(self) -> str:
        return self.message.subject

    @property
    def id(self) -> str:
        meta = self.message.metadata
        return f"{meta.stream}:{meta.sequence.stream}"

    @property
    def deliveries(self) -> int:
        return self.message.metadata.num_delivered

    async def ack(self) -> None:
        await self.message.ack()

    async def retry(self, delay_s: float) -> None:
        await self.message.nak(delay=delay_s)


class JetStreamSource:
    """A durable pull consumer on the stream that holds the store's notifications."""

    def __init__(self, js: JetStreamContext, *, stream: str, subject: str, durable: str) -> None:
        self._js = js
        self._stream = stream
        self._subject = subject
        self._durable = durable
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def open(self) -> None:
        await events.ensure_consumer(
            self._js,
            stream=self._stream,
            durable=self._durable,
            filter_subject=self._subject,
            ack_wait_s=ACK_WAIT_S,
            # Until acknowledged: a notification is dead-lettered by the bridge, never dropped by NATS.
            max_deliver=events.UNLIMITED_DELIVERIES,
        )
        self._subscription = await self._js.pull_subscribe_bind(self._durable, stream=self._stream)

    async def receive(self) -> AsyncIterator[Delivery]:
        assert self._subscription is not None, "open() first"
        while True:
            try:
                messages = await self._subscription.fetch(FETCH_BATCH, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            for message in messages:
                yield _JetStreamDelivery(message)

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


@dataclass
class _CoreDelivery:
    message: Msg
    #: Where a notification handed back waits for its next turn (in this process: core NATS keeps
    #: nothing).
    again: deque[_CoreDelivery]
    #: Core NATS messages carry no id: the bytes name the notification (its dead letter's id).
    id: str
    deliveries: int = 1

    @property
    def data(self) -> bytes:
        return self.message.data

    @property
    def origin(self) -> str:
        return self.message.subject

    async def ack(self) -> None:
        """Nothing to tell core NATS."""

    async def retry(self, delay_s: float) -> None:
        self.deliveries += 1
        asyncio.get_running_loop().call_later(delay_s, self.again.append, self)


class CoreNatsSource:
    """A queue-group subscription to the subject the store publishes its notifications on. Messages
    wait in the subscription while the bridge is busy, within its pending limits (beyond them NATS
    drops what a slow consumer cannot take)."""

    def __init__(self, nc: NatsClient, *, subject: str) -> None:
        self._nc = nc
        self._subject = subject
        self._again: deque[_CoreDelivery] = deque()
        self._subscription: Subscription | None = None

    async def open(self) -> None:
        await self._warn_if_a_stream_keeps_them()
        self._subscription = await self._nc.subscribe(self._subject, queue=GROUP)
        await self._nc.flush()

    async def _warn_if_a_stream_keeps_them(self) -> None:
        try:
            stream = await self._nc.jetstream().find_stream_name_by_subject(self._subject)
        except NotFoundError:
            return
        except Exception as error:
            log.debug("bridge_stream_lookup_failed", error=str(error))
            return
        log.warning(
            "bridge_stream_unused",
            subject=self._subject,
            stream=stream,
            hint="set FILESTORE_BRIDGE_STREAM to consume it durably",
        )

    async def receive(self) -> AsyncIterator[Delivery]:
        subscription = self._subscription
        assert subscription is not None, "open() first"
        while True:
            while self._again:
                yield self._again.popleft()
            try:
                message = await subscription.next_msg(timeout=RETRY_POLL_S)
            except (TimeoutError, NatsTimeoutError):
                continue
            digest = hashlib.sha256(message.data).hexdigest()[:32]
            yield _CoreDelivery(message, self._again, id=f"{message.subject}:{digest}")

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
