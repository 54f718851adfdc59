"""The storage-event bridge for SeaweedFS: follows the filer's metadata subscription
(``SubscribeMetadata``, server streaming gRPC) and publishes ``ObjectCreated`` on JetStream.

Nothing is missed across a restart: the cursor (the filer's ``ts_ns`` of the last handled
notification) is saved in a JetStream KV bucket after each event is published, and the next
subscription starts from it. The filer treats ``since_ns`` as inclusive, so the last event before a
restart is published again; its ``Nats-Msg-Id`` is the same, and JetStream drops the copy.

At most one bridge follows the filer at a time (a KV lease); any number of processors may run one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import grpc
import structlog
from nats.js import JetStreamContext

from filestore.core.errors import Unavailable
from filestore.core.reasons import Reason
from filestore.processor.bridge._filer import filer_pb2, filer_pb2_grpc
from filestore.processor.bridge.announce import announce_created
from filestore.processor.bridge.filer import FilerLayout, object_created_from_filer, object_deleted_from_filer
from filestore.processor.bridge.state import CURSOR_BUCKET, LEASE_BUCKET, Cursor, Lease, key_value
from filestore.server import events

__all__ = ["SeaweedBridge"]

log = structlog.get_logger("filestore.processor.bridge")

CLIENT_NAME = "filestore-bridge"
#: How long a crashed bridge holds the lease before another may take over.
LEASE_TTL_S = 15.0
#: Ignored notifications (directories, parts) move the cursor too, but are saved at most this often.
IDLE_SAVE_INTERVAL_S = 1.0
#: Delays before re-subscribing after a failure (filer or NATS down); the last one repeats.
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0)


class SeaweedBridge:
    def __init__(
        self,
        *,
        filer_address: str,
        bucket: str,
        jetstream: JetStreamContext,
        subject_prefix: str,
        lease_ttl_s: float = LEASE_TTL_S,
        replicas: int = 1,
    ) -> None:
        self._filer_address = filer_address
        self._bucket = bucket
        self._js = jetstream
        self._subjects = events.Subjects(subject_prefix)
        self._lease_ttl_s = lease_ttl_s
        self._replicas = replicas
        # Identifies our stream to the filer; a re-subscription with a higher epoch replaces the old.
        self._client_id = random.randint(1, 2**31 - 1)
        self._epoch = 0
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self._cursor: Cursor | None = None
        self._lease: Lease | None = None
        #: ts_ns handled but not yet saved, and when the cursor was last saved.
        self._pending_ts: int | None = None
        self._saved_at = 0.0
        #: ObjectCreated and ObjectDeleted events published by this bridge (logged at stop).
        self.published = 0

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._filer_address)
        cursor_kv = await key_value(self._js, CURSOR_BUCKET, replicas=self._replicas)
        lease_kv = await key_value(self._js, LEASE_BUCKET, ttl_s=self._lease_ttl_s, replicas=self._replicas)
        key = f"seaweedfs.{self._bucket}"
        self._cursor = Cursor(cursor_kv, key)
        self._lease = Lease(lease_kv, key, ttl_s=self._lease_ttl_s)
        self._task = asyncio.create_task(self._run(), name="seaweedfs-bridge")

    async def stop(self) -> None:
        """Stop following, save how far we got, and hand the lease over."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lease is not None and self._lease.held:
            with contextlib.suppress(Exception):
                await self._flush_cursor()
            await self._lease.release()
        if self._channel is not None:
            await self._channel.close()
        log.info("bridge_stopped", published=self.published)

    async def _run(self) -> None:
        assert self._lease is not None, "start() first"
        while True:
            try:
                await self._lease.acquire()
            except Exception as error:
                log.warning("bridge_lease_failed", error=str(error))
                await asyncio.sleep(RETRY_DELAYS_S[-1])
                continue
            follow = asyncio.create_task(self._follow())
            keep = asyncio.create_task(self._lease.keep())
            try:
                await asyncio.wait({follow, keep}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (follow, keep):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            # The lease was lost (we stalled longer than its TTL): another bridge may be following.

    async def _follow(self) -> None:
        """Subscribe from the cursor; on any failure, wait and subscribe again from the cursor."""
        failures = 0
        while True:
            try:
                await self._subscribe_once()
                failures = 0
            except (grpc.aio.AioRpcError, Unavailable, OSError) as error:
                delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
                failures += 1
                log.warning("bridge_subscription_failed", error=_describe(error), retry_in_s=delay)
                await asyncio.sleep(delay)
            except Exception as error:
                # NATS publish or KV errors: the cursor did not move past the failed event.
                delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
                failures += 1
                log.warning("bridge_publish_failed", error=str(error), retry_in_s=delay)
                await asyncio.sleep(delay)

    async def _subscribe_once(self) -> None:
        assert self._channel is not None, "start() first"
        assert self._cursor is not None, "start() first"
        filer = filer_pb2_grpc.SeaweedFilerStub(self._channel)
        config = await filer.GetFilerConfiguration(filer_pb2.GetFilerConfigurationRequest(), timeout=10)
        layout = FilerLayout(buckets_dir=config.dir_buckets or "/buckets", bucket=self._bucket)
        since_ns = await self._cursor.load()
        if since_ns is None:
            # First run: start now, and remember it, so events after this moment survive a restart
            # even if none of them has arrived yet. Objects stored earlier were announced by the broker.
            since_ns = time.time_ns()
            await self._cursor.save(since_ns)
        self._epoch += 1
        request = filer_pb2.SubscribeMetadataRequest(
            client_name=CLIENT_NAME,
            path_prefix=layout.prefix,
            since_ns=since_ns,
            client_id=self._client_id,
            client_epoch=self._epoch,
        )
        log.info("bridge_subscribed", filer=self._filer_address, prefix=layout.prefix, since_ns=since_ns)
        call = filer.SubscribeMetadata(request)
        try:
            async for response in call:
                await self._handle(response, layout)
        finally:
            call.cancel()
        raise Unavailable("the filer ended the metadata subscription", reason=Reason.FILER_STREAM_ENDED)

    async def _handle(self, response: filer_pb2.SubscribeMetadataResponse, layout: FilerLayout) -> None:
        announced = await self._announce(response, layout)
        # Only past a notification handled: a publish that failed leaves the cursor before it.
        self._pending_ts = response.ts_ns
        # The cursor is saved right after an announcement (a restart then does not repeat it, though
        # JetStream would drop the duplicate); notifications of nothing move it now and then.
        if announced or time.monotonic() - self._saved_at >= IDLE_SAVE_INTERVAL_S:
            await self._flush_cursor()

    async def _announce(self, response: filer_pb2.SubscribeMetadataResponse, layout: FilerLayout) -> bool:
        """Publish the event the notification stands for, if any; True when one was published."""
        created = object_created_from_filer(response, layout)
        if created is not None:
            await announce_created(self._js, self._subjects, created, ts_ns=response.ts_ns)
        else:
            deleted = object_deleted_from_filer(response, layout)
            if deleted is None:
                return False
            msg_id = events.object_deleted_msg_id(deleted)
            await events.publish(self._js, self._subjects.object_deleted, deleted, msg_id=msg_id)
            log.info("bridge_published_deletion", key=deleted.key, ts_ns=response.ts_ns)
        self.published += 1
        return True

    async def _flush_cursor(self) -> None:
        if self._pending_ts is None or self._cursor is None:
            return
        await self._cursor.save(self._pending_ts)
        self._pending_ts = None
        self._saved_at = time.monotonic()


def _describe(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error)
