"""The one place that connects to NATS, provisions JetStream, and names the event subjects.

One stream (``FILES``) holds every file event. It keeps messages by limits (age), not as a work queue,
so that several durable consumers may read the same subject (the processor pipeline, audit readers).
Provisioning is idempotent: every service may run it at start, concurrently.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import nats
import structlog
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NoStreamResponseError, NotFoundError, ServiceUnavailableError
from opentelemetry import context as otel_context

from filestore.core.keys import KeyKind, parse_key
from filestore.server import deadlines, metrics, tracing
from filestore.server.settings import NatsSettings
from filestore.v1 import events_pb2

__all__ = [
    "DRAIN_TIMEOUT_S",
    "PROTOBUF_CONTENT_TYPE",
    "Subjects",
    "connect",
    "ensure_consumer",
    "ensure_stream",
    "file_ref",
    "object_created_msg_id",
    "object_deleted_msg_id",
    "publish",
    "trace_context_of",
]

log = structlog.get_logger("filestore.events")

PROTOBUF_CONTENT_TYPE = "application/protobuf"
TRACEPARENT_HEADER = tracing.TRACEPARENT
#: JetStream drops a second message with the same Nats-Msg-Id within this window.
DUPLICATE_WINDOW_S = 600
STREAM_MAX_AGE_S = 7 * 24 * 3600
#: How long a publish may take in all (less when the RPC being served has less time left): a NATS
#: server that is down or stopped costs a publish this long, then it fails.
PUBLISH_TIMEOUT_S = 10.0
#: Waits between attempts while the stream has no leader. A NATS cluster that lost the stream's
#: leader (a node killed) elects another within its Raft election timeout, 4 to 9 s; the publishes
#: meanwhile answer "no responders" at once, and are tried again within PUBLISH_TIMEOUT_S instead of
#: failing the RPC (each caller would retry it, with all the RPC's other work, from the start).
LEADERLESS_RETRY_DELAYS_S = (0.1, 0.25, 0.5, 1.0)
#: What JetStream answers while the stream has no leader to store a message.
_LEADERLESS = (nats.errors.NoRespondersError, NoStreamResponseError, ServiceUnavailableError)


@dataclass(frozen=True, slots=True)
class Subjects:
    """Event subjects under one prefix (``files`` by default)."""

    prefix: str

    @property
    def all(self) -> str:
        return f"{self.prefix}.>"

    @property
    def object_created(self) -> str:
        return f"{self.prefix}.object.created"

    @property
    def object_deleted(self) -> str:
        return f"{self.prefix}.object.deleted"

    @property
    def file_ready(self) -> str:
        return f"{self.prefix}.file.ready"

    @property
    def file_enrich(self) -> str:
        """The processor's own work queue: READY files whose optional steps are still to run."""
        return f"{self.prefix}.file.enrich"

    @property
    def file_downloaded(self) -> str:
        return f"{self.prefix}.file.downloaded"

    @property
    def file_lifecycle(self) -> str:
        """FileLifecycleChanged: a lifecycle action (tier change, expiry, purge, restore) was done."""
        return f"{self.prefix}.file.lifecycle"

    def dead_letter(self, subject: str) -> str:
        return f"{self.prefix}.dead.{subject}"


#: The longest a connection's drain at shutdown may take. Bounded so that a stuck subscription cannot
#: hold up a shutdown past its grace period (deploy/kubernetes counts it in terminationGracePeriodSeconds).
DRAIN_TIMEOUT_S = 5


async def connect(settings: NatsSettings, *, name: str) -> NatsClient:
    """Connect, retrying for ever on disconnect: NATS restarts must not need a service restart."""

    async def on_error(error: Exception) -> None:
        log.warning("nats_error", error=str(error))

    async def on_disconnected() -> None:
        log.warning("nats_disconnected")

    async def on_reconnected() -> None:
        log.info("nats_reconnected")

    client: NatsClient = await nats.connect(
        servers=list(settings.urls),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        drain_timeout=DRAIN_TIMEOUT_S,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        # None: plaintext, unless the URL says tls:// or the server demands TLS (then the system's CAs).
        tls=settings.ssl_context(),
    )
    return client


#: How long a service starting waits for JetStream to answer its stream and consumer requests: a
#: cluster electing a leader, or busy with every replica of every service starting at once, answers
#: them late (nats-py's API timeout is 5 s) and the service should wait, not exit.
PROVISION_PATIENCE_S = 60.0
_PROVISION_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
T = TypeVar("T")


async def patiently(what: str, request: Callable[[], Awaitable[T]]) -> T:
    """``await request()``, again after JetStream did not answer in time or had no leader to answer,
    for up to PROVISION_PATIENCE_S: for what a service provisions at start (streams, consumers,
    key-value buckets), which it should wait for rather than exit."""
    deadline = time.monotonic() + PROVISION_PATIENCE_S
    attempt = 0
    while True:
        try:
            return await request()
        except (nats.errors.TimeoutError, *_LEADERLESS) as error:
            delay = _PROVISION_RETRY_DELAYS_S[min(attempt, len(_PROVISION_RETRY_DELAYS_S) - 1)]
            attempt += 1
            if time.monotonic() + delay >= deadline:
                raise
            log.warning("jetstream_slow", request=what, attempt=attempt, error=repr(error))
            await asyncio.sleep(delay)


async def ensure_stream(js: JetStreamContext, settings: NatsSettings) -> None:
    """The event stream, created or brought up to date (waiting out a JetStream slow to answer)."""
    await patiently(f"stream {settings.stream}", lambda: _ensure_stream(js, settings))


async def _ensure_stream(js: JetStreamContext, settings: NatsSettings) -> None:
    config = StreamConfig(
        name=settings.stream,
        subjects=[Subjects(settings.subject_prefix).all],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=STREAM_MAX_AGE_S,
        duplicate_window=DUPLICATE_WINDOW_S,
        # Copies on this many servers of a cluster; an update changes it (JetStream moves the data).
        num_replicas=settings.replicas,
    )
    try:
        existing = (await js.stream_info(settings.stream)).config
    except NotFoundError:
        try:
            await js.add_stream(config)
            log.info("stream_created", stream=settings.stream)
            return
        except nats.js.errors.BadRequestError:
            # Another service created it between our look and our add.
            existing = (await js.stream_info(settings.stream)).config
    # Only a change is sent: in a cluster an update is a round of consensus, and every replica of
    # every service starting at once would queue one each (and time out) for nothing.
    if not _stream_matches(existing, config):
        await js.update_stream(config)
        log.info("stream_updated", stream=settings.stream, replicas=settings.replicas)


def _stream_matches(existing: StreamConfig, wanted: StreamConfig) -> bool:
    return (
        sorted(existing.subjects or []) == sorted(wanted.subjects or [])
        and existing.retention == wanted.retention
        and existing.storage == wanted.storage
        and (existing.num_replicas or 1) == (wanted.num_replicas or 1)
        and abs((existing.max_age or 0) - (wanted.max_age or 0)) < 1
        and abs((existing.duplicate_window or 0) - (wanted.duplicate_window or 0)) < 1
    )


#: JetStream's ``max_deliver`` for "redeliver until acknowledged".
UNLIMITED_DELIVERIES = -1


async def ensure_consumer(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    filter_subject: str,
    ack_wait_s: float,
    max_deliver: int,
    backoff_s: list[float] | None = None,
) -> None:
    """A durable pull consumer with explicit acks, created or brought up to date (waiting out a
    JetStream slow to answer)."""
    config = ConsumerConfig(
        durable_name=durable,
        filter_subject=filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
        backoff=backoff_s,
        max_ack_pending=1000,
    )
    await patiently(f"consumer {durable}", lambda: js.add_consumer(stream, config))


def object_created_msg_id(event: events_pb2.ObjectCreated) -> str:
    """The deduplication id of an object version: the same for the bridge's and the broker's event."""
    version = event.etag or str(event.mtime_ns)
    return hashlib.sha256(f"{event.bucket}\0{event.key}\0{version}".encode()).hexdigest()


def object_deleted_msg_id(event: events_pb2.ObjectDeleted) -> str:
    """The deduplication id of a deletion: one per key and deletion time."""
    return hashlib.sha256(f"{event.bucket}\0{event.key}\0deleted\0{event.mtime_ns}".encode()).hexdigest()


async def publish(js: JetStreamContext, subject: str, message: Message, *, msg_id: str) -> bool:
    """Publish ``message`` once per ``msg_id``; True when JetStream had it already (a duplicate).

    The current trace context goes along in the ``traceparent``/``tracestate`` headers, and in the
    event's ``trace`` field when it has one (a copy is sent; ``message`` is left as it was).
    """
    with tracing.span(
        f"{subject} publish",
        kind=tracing.SpanKind.PRODUCER,
        attributes={"messaging.system": "nats", "messaging.destination.name": subject},
    ):
        headers = {"Nats-Msg-Id": msg_id, "Content-Type": PROTOBUF_CONTENT_TYPE}
        tracing.inject(headers)
        if TRACEPARENT_HEADER in headers and "trace" in message.DESCRIPTOR.fields_by_name:
            traced = type(message)()
            traced.CopyFrom(message)
            trace_field: events_pb2.TraceContext = getattr(traced, "trace")  # noqa: B009
            trace_field.traceparent = headers[TRACEPARENT_HEADER]
            trace_field.tracestate = headers.get(tracing.TRACESTATE, "")
            message = traced
        payload = message.SerializeToString()
        budget = deadlines.call_timeout(PUBLISH_TIMEOUT_S)
        deadline = time.monotonic() + (PUBLISH_TIMEOUT_S if budget is None else budget)
        attempt = 0
        while True:
            try:
                ack = await js.publish(
                    subject, payload, headers=headers, timeout=max(deadline - time.monotonic(), 0.001)
                )
                break
            except _LEADERLESS as error:
                # Trying again is safe whatever happened: the message id makes a second copy a duplicate.
                delay = LEADERLESS_RETRY_DELAYS_S[min(attempt, len(LEADERLESS_RETRY_DELAYS_S) - 1)]
                attempt += 1
                if time.monotonic() + delay >= deadline:
                    metrics.EVENTS_PUBLISHED.labels(subject, "error").inc()
                    raise
                log.info(
                    "publish_waits_for_stream_leader", subject=subject, attempt=attempt, error=repr(error)
                )
                await asyncio.sleep(delay)
            except Exception:
                metrics.EVENTS_PUBLISHED.labels(subject, "error").inc()
                raise
        metrics.EVENTS_PUBLISHED.labels(subject, "duplicate" if ack.duplicate else "published").inc()
        return bool(ack.duplicate)


def file_ref(event: events_pb2.ObjectCreated | events_pb2.ObjectDeleted) -> tuple[str, str] | None:
    """(tenant, file_id) of the file an event is about: from the event, else from its key when that
    is a file's original. Objects elsewhere (derivatives, foreign keys) are not a file's to process."""
    if event.file_id and event.tenant:
        return event.tenant, event.file_id
    key = parse_key(event.key)
    if key is None or key.kind is not KeyKind.ORIGINAL:
        return None
    return key.tenant, key.file_id


def trace_context_of(headers: Mapping[str, str] | None, event: Message) -> otel_context.Context | None:
    """The trace context an event was published in: from its headers, else from its ``trace`` field
    (events replayed from the dead-letter subject carry only their payload)."""
    extracted = tracing.extract(headers)
    if extracted is not None or "trace" not in event.DESCRIPTOR.fields_by_name:
        return extracted
    trace_field: events_pb2.TraceContext = getattr(event, "trace")  # noqa: B009
    if not trace_field.traceparent:
        return None
    carrier = {tracing.TRACEPARENT: trace_field.traceparent}
    if trace_field.tracestate:
        carrier[tracing.TRACESTATE] = trace_field.tracestate
    return tracing.extract(carrier)
