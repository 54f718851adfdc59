"""The bridge's durable state in JetStream key-value buckets: the subscription cursor and a lease.

The cursor lives in NATS (not a local file) so that any processor host can take over the bridge;
the lease makes sure only one of them follows the filer at a time (several followers would not lose
events, but would publish each one several times). The lease is its own bucket because a bucket's
TTL applies to all its keys, and the cursor must never expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid

import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from filestore.server import events

__all__ = [
    "CURSOR_BUCKET",
    "LEASE_BUCKET",
    "Cursor",
    "Lease",
    "key_value",
    "lease_holder_id",
    "lease_holder_pid",
]

log = structlog.get_logger("filestore.processor.bridge")

CURSOR_BUCKET = "filestore-bridge-cursor"
LEASE_BUCKET = "filestore-bridge-lease"


async def key_value(
    js: JetStreamContext, bucket: str, *, ttl_s: float | None = None, replicas: int = 1
) -> KeyValue:
    """Bind to a KV bucket, creating it when missing (idempotent, safe when processes race) with
    ``replicas`` copies in a NATS cluster. An existing bucket is used as it is. A JetStream slow to
    answer (a cluster starting, or electing a leader) is waited for (``events.patiently``)."""
    return await events.patiently(f"bucket {bucket}", lambda: _bind_or_create(js, bucket, ttl_s, replicas))


async def _bind_or_create(js: JetStreamContext, bucket: str, ttl_s: float | None, replicas: int) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl_s, storage=StorageType.FILE, replicas=replicas)
    try:
        return await js.create_key_value(config)
    except BadRequestError:
        return await js.key_value(bucket)  # another process created it first


class Cursor:
    """The ``ts_ns`` of the last filer notification fully handled (published, or ignored)."""

    def __init__(self, kv: KeyValue, key: str) -> None:
        self._kv = kv
        self._key = key

    async def load(self) -> int | None:
        try:
            entry = await self._kv.get(self._key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        try:
            return int((entry.value or b"").decode())
        except ValueError:
            log.warning("bridge_cursor_unreadable", key=self._key)
            return None

    async def save(self, ts_ns: int) -> None:
        await self._kv.put(self._key, str(ts_ns).encode())


def lease_holder_id() -> str:
    """What a lease holder writes into the lease: unique per holder, and saying which process it is
    (``host/pid/random``), so an operator, or a test that kills the holder, can tell who follows."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex}"


def lease_holder_pid(value: bytes) -> int | None:
    """The pid in a lease's value (see :func:`lease_holder_id`), or None when it names none."""
    parts = value.decode(errors="replace").split("/")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


class Lease:
    """A lease on a KV key: held by whoever created it, kept by updating it against its revision
    before the bucket's TTL removes it. A holder that stalls longer than the TTL loses it."""

    def __init__(self, kv: KeyValue, key: str, *, ttl_s: float) -> None:
        self._kv = kv
        self._key = key
        self._ttl_s = ttl_s
        self._holder = lease_holder_id().encode()
        self._revision: int | None = None

    @property
    def held(self) -> bool:
        return self._revision is not None

    async def acquire(self) -> None:
        """Wait until this process holds the lease."""
        waiting_logged = False
        while True:
            try:
                self._revision = await self._kv.create(self._key, self._holder)
                log.info("bridge_lease_acquired", key=self._key)
                return
            except KeyWrongLastSequenceError:
                if not waiting_logged:
                    log.info("bridge_lease_busy", key=self._key, ttl_s=self._ttl_s)
                    waiting_logged = True
            await asyncio.sleep(self._ttl_s / 3)

    async def keep(self) -> None:
        """Renew the lease until it is lost (returns) or the task is cancelled."""
        while self._revision is not None:
            await asyncio.sleep(self._ttl_s / 3)
            try:
                self._revision = await self._kv.update(self._key, self._holder, last=self._revision)
            except KeyWrongLastSequenceError:
                log.warning("bridge_lease_lost", key=self._key)
                self._revision = None
            except Exception as error:
                # NATS briefly unavailable: keep trying until the TTL decides.
                log.warning("bridge_lease_renew_failed", error=str(error))

    async def release(self) -> None:
        """Give the lease up at once, so a successor does not wait for the TTL."""
        revision, self._revision = self._revision, None
        if revision is None:
            return
        with contextlib.suppress(Exception):
            await self._kv.delete(self._key, last=revision)
