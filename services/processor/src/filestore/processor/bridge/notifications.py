"""The storage-event bridge for stores that send their own JSON notifications (MinIO, AWS S3): take
each notification from where the store puts it, normalize it, publish its ``ObjectCreated`` events on
the FILES stream, and only then acknowledge it at its source.

* A notification that names object creations is acknowledged once every one of its events is
  acknowledged by JetStream (:func:`~filestore.processor.bridge.announce.announce_created`, the same
  publish and ``Nats-Msg-Id`` as the SeaweedFS bridge's). A publish that fails hands the notification
  back to its source, to come again after a growing delay; nothing is acknowledged that was not
  published.
* A notification that names none of this bucket's object creations (deletions, tags, a test event,
  another bucket) is acknowledged and dropped. Keys of this bucket that are not a file's originals are
  announced like the SeaweedFS bridge announces them, and the pipeline acks those silently.
* A notification that does not parse (not JSON, no records, a record without a key) goes to the
  dead-letter subject as received, with reason ``BAD_NOTIFICATION`` and what was wrong, and is
  acknowledged: the same bytes would never parse, and holding them would hold up the notifications
  behind them. ``ListDeadLetters`` shows it; replaying it is refused, as it is no event.

No lease, unlike the SeaweedFS bridge. A filer subscription shows every notification to every
follower, so several followers would each publish everything, and the cursor needs one writer. These
sources give each notification to one receiver: a JetStream durable consumer (shared by every bridge
bound to it), a core NATS queue group, an SQS queue (a received message is invisible to the others
until its visibility timeout). Any number of processors may run this bridge, and a crashed one's
notifications go to the others once unacknowledged (JetStream's ack wait, SQS's visibility timeout).
Order across notifications is not kept, and need not be: each object version has its own message id,
and the pipeline reads the object itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import structlog
from nats.js import JetStreamContext

from filestore.core.errors import InvalidArgument
from filestore.core.reasons import Reason
from filestore.processor.bridge.announce import announce_created
from filestore.processor.dead_letters import publish_dead_letter
from filestore.server import events
from filestore.v1 import events_pb2

__all__ = ["Delivery", "Normalizer", "NotificationBridge", "NotificationSource"]

log = structlog.get_logger("filestore.processor.bridge")

#: Delays before a notification whose publish failed comes again, by its delivery count; the last
#: one repeats. Also the delays before a source that failed is opened again.
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0)


class Normalizer(Protocol):
    """A store's notification → its object creations in ``bucket`` (``from_minio``, ``from_aws``);
    ``InvalidArgument(BAD_NOTIFICATION)`` when it does not parse."""

    def __call__(self, payload: bytes, *, bucket: str | None = None) -> list[events_pb2.ObjectCreated]: ...


class Delivery(Protocol):
    """One notification as its source handed it over, until it is acknowledged or handed back."""

    @property
    def data(self) -> bytes:
        """The notification as the store (or the relay) sent it."""
        ...

    @property
    def origin(self) -> str:
        """Where it came from, as a NATS subject (its dead letter goes to ``{prefix}.dead.{origin}``)."""
        ...

    @property
    def id(self) -> str:
        """Names this notification at its source, the same on every delivery of it."""
        ...

    @property
    def deliveries(self) -> int:
        """How often the source handed it over, this time included."""
        ...

    async def ack(self) -> None:
        """Done with it: the source forgets it."""
        ...

    async def retry(self, delay_s: float) -> None:
        """Not done: the source hands it over again after ``delay_s``."""
        ...


class NotificationSource(Protocol):
    """Where a store's notifications are taken from."""

    async def open(self) -> None:
        """Subscribe (bind the consumer, check the queue); called again after a failure."""
        ...

    def receive(self) -> AsyncIterator[Delivery]:
        """The notifications, one at a time, for as long as the source works (a failure raises)."""
        ...

    async def close(self) -> None: ...


class NotificationBridge:
    def __init__(
        self,
        *,
        source: NotificationSource,
        normalize: Normalizer,
        bucket: str,
        jetstream: JetStreamContext,
        subject_prefix: str,
        name: str,
    ) -> None:
        self._source = source
        self._normalize = normalize
        self._bucket = bucket
        self._js = jetstream
        self._subjects = events.Subjects(subject_prefix)
        self._name = name
        self._task: asyncio.Task[None] | None = None
        #: ObjectCreated events published by this bridge (logged at stop).
        self.published = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-bridge")

    async def stop(self) -> None:
        """Stop taking notifications; one in hand is neither acknowledged nor lost (its source hands it
        over again)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._source.close()
        log.info("bridge_stopped", source=self._name, published=self.published)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._source.open()
                log.info("bridge_listening", source=self._name)
                async for delivery in self._source.receive():
                    failures = 0
                    await self.handle(delivery)
            except Exception as error:
                delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
                failures += 1
                log.warning("bridge_source_failed", source=self._name, error=str(error), retry_in_s=delay)
                with contextlib.suppress(Exception):
                    await self._source.close()
                await asyncio.sleep(delay)

    async def handle(self, delivery: Delivery) -> str:
        """Publish what one notification stands for, then settle it; answers what became of it
        (``published``, ``ignored``, ``dead_lettered`` or ``retried``)."""
        try:
            try:
                created = self._normalize(delivery.data, bucket=self._bucket)
            except InvalidArgument as bad:
                await self._dead_letter(delivery, bad.message)
                await delivery.ack()
                return "dead_lettered"
            for event in created:
                await announce_created(self._js, self._subjects, event, notification=delivery.id)
                self.published += 1
        except Exception as error:
            delay = RETRY_DELAYS_S[min(delivery.deliveries, len(RETRY_DELAYS_S)) - 1]
            log.warning(
                "bridge_publish_failed",
                source=self._name,
                notification=delivery.id,
                error=str(error),
                retry_in_s=delay,
            )
            await delivery.retry(delay)
            return "retried"
        await delivery.ack()
        if not created:
            log.info("bridge_ignored", source=self._name, notification=delivery.id)
            return "ignored"
        return "published"

    async def _dead_letter(self, delivery: Delivery, detail: str) -> None:
        log.warning("bridge_bad_notification", source=self._name, notification=delivery.id, detail=detail)
        await publish_dead_letter(
            self._js,
            self._subjects,
            subject=delivery.origin,
            data=delivery.data,
            reason=Reason.BAD_NOTIFICATION,
            deliveries=delivery.deliveries,
            msg_id=f"dead:{delivery.id}",
            detail=detail,
        )
