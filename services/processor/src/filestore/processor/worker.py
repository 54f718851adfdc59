"""The worker: a durable pull consumer shared by every processor process, with bounded concurrency.

Acknowledgement rules: ack when the pipeline finished (or the event is not ours, or its file is still
PENDING: the broker announces the completed upload again); a message that is not a well-formed event
(see :func:`parse_event`) goes to the dead-letter subject at once, as received, and is acked: the same
bytes will never parse, so retrying them only delays the trace an operator needs; nak with a growing
delay on a transient failure; on the last allowed delivery, publish the event to the dead-letter
subject, mark the file FAILED, and ack. When that last delivery failed only because a dependency could
not be reached (metadata, storage, clamd or NATS down), the event is published again as a new message
(a fresh set of deliveries) and acked instead: an outage says nothing about the file, so it must not
end FAILED for it.

Each event is handled in a CONSUMER span continuing the trace it was published in (see
:mod:`filestore.server.tracing`) and counted in ``filestore_events_consumed_total`` by what became of it.
The consumer's lag (``num_pending``) is sampled from JetStream every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError, StaleConnectionError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from filestore.core.errors import DeadlineExceeded, FilestoreError, Unavailable
from filestore.core.reasons import Reason
from filestore.processor.dead_letters import publish_dead_letter
from filestore.processor.pipeline import NotYetUploaded, Pipeline, Stage
from filestore.processor.settings import ProcessorSettings
from filestore.server import events, metrics, tracing
from filestore.server.dependencies import METADATA
from filestore.server.storage import TRANSPORT_ERRORS, StorageRefused
from filestore.v1 import events_pb2

log = structlog.get_logger("filestore.processor.worker")

DURABLE = "processor-pipeline"
ENRICH_DURABLE = "processor-enrich"
#: S3's longest object key, in bytes of UTF-8.
MAX_KEY_BYTES = 1024
#: Redelivery delays after a transient failure; the last one repeats.
NAK_DELAYS_S = (1.0, 5.0, 15.0, 30.0)
#: How often the consumer's lag is read from JetStream (one small request per process).
LAG_SAMPLE_INTERVAL_S = 5.0
#: Failures to reach NATS itself (the READY announcement, a dead letter) while it restarts.
_NATS_OUTAGES = (ConnectionClosedError, NatsTimeoutError, NoRespondersError, StaleConnectionError)
#: Reasons of a call to another service that failed in transport: the callee did not answer. The
#: metadata channel names itself (filestore.server.dependencies); a bare UNAVAILABLE is a channel without.
_UNANSWERED_CALLS = frozenset({Unavailable.default_reason, METADATA.unavailable})


class MalformedEvent(Exception):
    """A message is not a well-formed ``ObjectCreated``; the text says why, in a short sentence."""


def parse_event(data: bytes) -> events_pb2.ObjectCreated:
    """The ``ObjectCreated`` in ``data``, or :class:`MalformedEvent` when it is not a well-formed one.

    Protobuf is lenient: most bytes that are not an ``ObjectCreated`` (text, JSON, another message
    type, a truncated event) either fail to decode or decode into fields this version does not know,
    or into an event with nothing in it. So an event is well-formed when it decodes, has no unknown
    fields (at any depth), names a key (1 to 1,024 bytes, S3's limit), has a size that is not
    negative and a source that ``EventSource`` defines. The bucket may be empty: ReprocessFile's
    events name none, and mean the processor's own bucket. A well-formed event need not be ours
    (a derivative, a key outside ``originals/``): the pipeline acks those silently, as storage
    announces every object.

    Unknown fields are refused although protobuf would ignore them, because every publisher of these
    subjects is Filestore itself: such a message is far more likely something else than an event from
    a newer publisher. Should it be the latter (a new field published before every processor was
    upgraded), its dead letter is replayable once the processors know the field.
    """
    try:
        event = events_pb2.ObjectCreated.FromString(data)
    except DecodeError:
        raise MalformedEvent("the message does not decode as a protobuf ObjectCreated") from None
    known_only = events_pb2.ObjectCreated()
    known_only.CopyFrom(event)
    known_only.DiscardUnknownFields()
    if known_only.ByteSize() != event.ByteSize():
        raise MalformedEvent("the message has fields an ObjectCreated does not define")
    if not event.key:
        raise MalformedEvent("the event names no object key")
    if len(event.key.encode()) > MAX_KEY_BYTES:
        raise MalformedEvent(f"the object key is longer than {MAX_KEY_BYTES} bytes")
    if event.size < 0:
        raise MalformedEvent("the event has a negative size")
    if event.source not in events_pb2.EventSource.values():
        raise MalformedEvent(f"the event names an unknown source ({event.source})")
    return event


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` only says that a dependency could not be reached, nothing about the event.

    A metadata call that failed in transport (``METADATA_UNAVAILABLE`` from the channel, a bare
    UNAVAILABLE, or DEADLINE_EXCEEDED), storage or clamd unreachable or silent (the cause of the
    Unavailable the adapters raise), storage answering 5xx, or NATS disconnected. A missing object, a
    refused request or a scanner verdict it could not give are not outages: those keep the
    dead-letter budget.
    """
    if isinstance(error, DeadlineExceeded):
        return True
    if isinstance(error, StorageRefused):
        return error.http_status >= 500
    if isinstance(error, Unavailable):
        if error.reason in _UNANSWERED_CALLS:
            return True
        cause = error.__cause__
        return cause is not None and is_outage(cause)
    return isinstance(error, (*_NATS_OUTAGES, *TRANSPORT_ERRORS, ConnectionError))


@dataclass
class _Lane:
    """One durable consumer and the slots of the events it has in hand."""

    stage: Stage
    durable: str
    subject: str
    slots: asyncio.Semaphore
    subscription: JetStreamContext.PullSubscription | None = None


class Worker:
    def __init__(
        self, settings: ProcessorSettings, *, jetstream: JetStreamContext, pipeline: Pipeline
    ) -> None:
        self._settings = settings
        self._js = jetstream
        self._pipeline = pipeline
        self._subjects = events.Subjects(settings.nats.subject_prefix)
        # Two queues with slots of their own: files on their way to READY never wait behind the
        # renders and OCR passes of files that are READY already.
        self._lanes = (
            _Lane(
                Stage.GATE, DURABLE, self._subjects.object_created, asyncio.Semaphore(settings.concurrency)
            ),
            _Lane(
                Stage.ENRICH,
                ENRICH_DURABLE,
                self._subjects.file_enrich,
                asyncio.Semaphore(settings.enrich_concurrency),
            ),
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop_tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for lane in self._lanes:
            await events.ensure_consumer(
                self._js,
                stream=self._settings.nats.stream,
                durable=lane.durable,
                filter_subject=lane.subject,
                ack_wait_s=self._settings.ack_wait_s,
                # The worker counts deliveries itself (FILESTORE_WORKER_MAX_DELIVER) and ends an event
                # by dead-lettering or requeueing it. Were JetStream to stop at the same count, an
                # event whose last delivery could not publish its dead letter (NATS restarting) would
                # never come back, and its file would stay PROCESSING for ever.
                max_deliver=events.UNLIMITED_DELIVERIES,
            )
            lane.subscription = await self._js.pull_subscribe_bind(
                lane.durable, stream=self._settings.nats.stream
            )
            self._loop_tasks.append(asyncio.create_task(self._fetch_loop(lane)))
        self._loop_tasks.append(asyncio.create_task(self._sample_lag()))

    async def stop(self) -> None:
        """Stop fetching and let the events in hand finish (unfinished ones are redelivered)."""
        self._stopping.set()
        for task in self._loop_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._settings.ack_wait_s)
        for lane in self._lanes:
            if lane.subscription is not None:
                # A fetch cancelled mid-flight leaves its inbox subscribed; a connection drain would
                # then wait out its whole timeout for it.
                with contextlib.suppress(Exception):
                    await lane.subscription.unsubscribe()

    async def _fetch_loop(self, lane: _Lane) -> None:
        assert lane.subscription is not None
        while not self._stopping.is_set():
            await lane.slots.acquire()
            try:
                messages = await lane.subscription.fetch(1, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                lane.slots.release()
                continue
            except Exception as error:
                lane.slots.release()
                log.warning("fetch_failed", consumer=lane.durable, error=str(error))
                await asyncio.sleep(1.0)
                continue
            for message in messages:
                task = asyncio.create_task(self._handle(lane, message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _sample_lag(self) -> None:
        """Keep the consumer's lag gauges current; a failed read leaves the last values."""
        while True:
            for lane in self._lanes:
                try:
                    info = await self._js.consumer_info(self._settings.nats.stream, lane.durable)
                except Exception as error:
                    log.debug("consumer_info_failed", consumer=lane.durable, error=str(error))
                else:
                    metrics.CONSUMER_PENDING.labels(lane.durable).set(info.num_pending or 0)
                    metrics.CONSUMER_ACK_PENDING.labels(lane.durable).set(info.num_ack_pending or 0)
            await asyncio.sleep(LAG_SAMPLE_INTERVAL_S)

    async def _handle(self, lane: _Lane, message: Msg) -> None:
        result = "error"
        try:
            structlog.contextvars.clear_contextvars()
            result = await self._handle_one(lane, message)
        except Exception:
            log.exception("event_handling_failed")
        finally:
            lane.slots.release()
            metrics.EVENTS_CONSUMED.labels(message.subject, result).inc()

    async def _handle_one(self, lane: _Lane, message: Msg) -> str:
        """Handle one delivery; answers what became of it (the result label of the consumed count)."""
        deliveries = message.metadata.num_delivered
        try:
            event = parse_event(message.data)
        except MalformedEvent as malformed:
            await self._publish_dead_letter(message, Reason.MALFORMED_EVENT, detail=str(malformed))
            log.warning(
                "event_malformed",
                subject=message.subject,
                detail=str(malformed),
                size=len(message.data),
                stream_sequence=message.metadata.sequence.stream,
            )
            await message.ack()
            return "malformed"
        structlog.contextvars.bind_contextvars(key=event.key, delivery=deliveries)
        with tracing.span(
            f"{message.subject} process",
            kind=tracing.SpanKind.CONSUMER,
            parent=events.trace_context_of(message.headers, event),
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": message.subject,
                "messaging.message.delivery_count": deliveries,
                "filestore.file_id": event.file_id,
            },
        ) as span:
            if (trace_id := tracing.current_trace_id()) is not None:
                structlog.contextvars.bind_contextvars(trace_id=trace_id)
            result = await self._run_pipeline(lane, message, event, deliveries)
            if span is not None:
                span.set_attribute("filestore.result", result)
                if result in ("retried", "rejected", "dead_lettered"):
                    tracing.mark_error(span, result)
            return result

    async def _run_pipeline(
        self, lane: _Lane, message: Msg, event: events_pb2.ObjectCreated, deliveries: int
    ) -> str:
        try:
            await self._pipeline.process(
                event, heartbeat=message.in_progress, redelivered=deliveries > 1, stage=lane.stage
            )
        except NotYetUploaded:
            # Storage announced the object before its upload was completed. Set it aside: the broker's
            # CompleteUpload publishes the completed upload under an id of its own, and that event runs
            # the pipeline. Retrying here would dead-letter (and try to fail) a file still being uploaded.
            log.info("event_set_aside", reason="NOT_YET_UPLOADED")
            await message.ack()
            return "set_aside"
        except Exception as error:
            reason = getattr(error, "reason", type(error).__name__.upper())
            outage = is_outage(error)
            if not (outage or isinstance(error, FilestoreError | OSError)):
                # A bug or a library surprise: retried like a transient failure, so that it ends in the
                # dead-letter subject with the file FAILED instead of silently exhausting its deliveries.
                log.exception("pipeline_error")
                reason = "INTERNAL_ERROR"
            retryable = getattr(error, "retryable", True)
            if not retryable:
                log.warning("event_rejected", reason=reason)
                await message.ack()
                return "rejected"
            if deliveries >= self._settings.max_deliver:
                if outage:
                    await self._requeue(message, reason)
                    return "requeued"
                await self._dead_letter(message, event, reason)
                return "dead_lettered"
            delay = NAK_DELAYS_S[min(deliveries, len(NAK_DELAYS_S)) - 1]
            log.info("event_retry", reason=reason, delay_s=delay)
            await message.nak(delay=delay)
            return "retried"
        await message.ack()
        return "acked"

    async def _requeue(self, message: Msg, reason: str) -> None:
        """The same event as a new message at the end of the stream, then ack this one. The message id
        names this stream sequence, so a worker that dies between the publish and the ack, and whose
        event comes back, does not queue it twice."""
        log.warning("event_requeued", reason=reason)
        headers = dict(message.headers or {})
        headers["Nats-Msg-Id"] = f"requeue:{message.metadata.sequence.stream}"
        await self._js.publish(message.subject, message.data, headers=headers)
        await message.ack()

    async def _dead_letter(self, message: Msg, event: events_pb2.ObjectCreated, reason: str) -> None:
        log.warning("event_dead_lettered", reason=reason)
        await self._publish_dead_letter(message, reason)
        await self._pipeline.fail(event, reason=reason)
        await message.ack()

    async def _publish_dead_letter(self, message: Msg, reason: str, *, detail: str = "") -> None:
        """The message as received, on the dead-letter subject. The message id names this stream
        sequence, so a delivery that dies before its ack and comes back does not publish it twice."""
        await publish_dead_letter(
            self._js,
            self._subjects,
            subject=message.subject,
            data=message.data,
            reason=reason,
            deliveries=message.metadata.num_delivered,
            msg_id=f"dead:{message.metadata.sequence.stream}",
            detail=detail,
        )
