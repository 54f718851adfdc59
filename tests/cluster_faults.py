"""Faults on the cluster profile: uploads through the SDK while single nodes of every kind are killed.

Shared by `make test` (a slice: FILESTORE_CLUSTER_UPLOADS, default 120) and `make test-cluster`
(1,000). The uploads are a mix: single PUTs, multipart uploads, re-uploads of content the same user
uploaded before (dedup), and files carrying the EICAR test string (which clamd must quarantine). They
go through :class:`filestore.client.AsyncClient`, whose retries are the thing under test: every RPC it
retries is heard through ``on_rpc_retry`` and every storage retry through its progress callback, so
the run can say that the faults cost retries and nothing else.

The faults, one at a time, each landing among uploads in flight (:class:`tests.faults.Schedule`):
SIGKILL of the NATS node leading the FILES stream, of a volume server, of one replica of metadata,
upload and download, of the processor that does not hold the bridge's lease and then of the one that
does, and the termination of every PostgreSQL backend of the catalogue. Each killed process is
started again after an outage; its recovery time is from the kill until the cluster is whole again.

Besides the uploads, the run writes *probe* objects straight into the bucket (as any other writer of
the bucket would, no upload behind them): only the storage-event bridge can announce those, so one
ObjectCreated per probe in the stream shows that the bridge's cursor lost nothing while the lease moved.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import nats
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from filestore.client import AsyncClient, Endpoints, TransferOptions
from filestore.client.errors import FilestoreError
from filestore.client.progress import Progress, TransferEvent
from filestore.v1 import events_pb2, resources_pb2
from tests.faults import Body, Schedule, make_body

Status = resources_pb2.FileStatus

UPLOADS_ENV: Final = "FILESTORE_CLUSTER_UPLOADS"
#: Uploads in flight at once.
CONCURRENCY: Final = 16
#: How long a killed process stays down before it is started again.
OUTAGE_S: Final = 1.0
EICAR: Final = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
#: Which uploads are what (by index): multipart, a re-upload of an earlier body, infected.
MULTIPART_EVERY: Final = 4
DEDUP_EVERY: Final = 10
EICAR_EVERY: Final = 25
#: A probe object written straight to the bucket every this many uploads.
PROBE_EVERY: Final = 5
PROBE_PREFIX: Final = "cluster-probes"
PIPELINE_CONSUMER: Final = "processor-pipeline"


def uploads_wanted(default: int = 120) -> int:
    raw = os.environ.get(UPLOADS_ENV, "").strip()
    return int(raw) if raw else default


# ------------------------------------------------------------------------------ the cluster


class Cluster(Protocol):
    """What the scenario needs of a running cluster."""

    @property
    def stream(self) -> str: ...

    def client_endpoints(self, *, tenant: str, subject: str) -> Endpoints: ...

    async def nats(self) -> NatsClient:
        """A connection to the NATS cluster (the test's own, closed by the caller)."""
        ...

    async def put_object(self, key: str, data: bytes) -> None:
        """Write an object straight into the bucket (storage's admin identity)."""
        ...

    async def stream_leader(self) -> str:
        """The name of the NATS node that leads the FILES stream."""
        ...

    async def lease_holder(self) -> str:
        """The name of the processor whose bridge holds the lease."""
        ...

    def replicas(self, kind: str) -> Sequence[str]: ...

    async def kill(self, name: str) -> None: ...

    async def restart(self, name: str) -> None:
        """Start ``name`` again and return once it is ready (and, for a NATS node, caught up)."""
        ...

    async def terminate_database_backends(self) -> int:
        """``pg_terminate_backend`` every backend of the catalogue's database; answers how many."""
        ...

    async def wait_whole(self) -> None:
        """Return once every node and replica answers again."""
        ...


# ------------------------------------------------------------------------------ the uploads


@dataclass(frozen=True)
class Planned:
    index: int
    body: Body
    multipart: bool
    #: The index of the earlier upload whose content this one repeats (dedup), if any.
    repeats: int | None
    infected: bool

    @property
    def expected(self) -> resources_pb2.FileStatus.ValueType:
        return Status.FILE_STATUS_QUARANTINED if self.infected else Status.FILE_STATUS_READY


def plan(index: int, tenant: str) -> Planned:
    repeats = index - DEDUP_EVERY // 2 if index % DEDUP_EVERY == DEDUP_EVERY - 1 else None
    infected = index % EICAR_EVERY == EICAR_EVERY - 2
    if repeats is not None:
        earlier = plan(repeats, tenant)
        body = Body(f"again-{index}-{earlier.body.name}", earlier.body.content_type, earlier.body.data)
        return Planned(index, body, earlier.multipart, repeats, earlier.infected)
    body = make_body(index)
    if infected:
        body = Body(f"infected-{index}.txt", "text/plain", f"cluster {tenant} {index}\n".encode() + EICAR)
    return Planned(index, body, index % MULTIPART_EVERY == 1, None, infected)


@dataclass
class ClientCosts:
    """What the faults cost the clients: retries by what failed, and the failures they saw."""

    rpc_retries: Counter[str] = field(default_factory=Counter)
    storage_retries: Counter[str] = field(default_factory=Counter)
    #: Exceptions that reached the application: each one a client-visible failure.
    failures: list[str] = field(default_factory=list)

    def on_rpc_retry(self, method: str, error: FilestoreError, attempt: int, delay_s: float) -> None:
        self.rpc_retries[f"{method} {error.code.name} {error.reason}"] += 1

    def on_progress(self, progress: Progress) -> None:
        if progress.event is TransferEvent.RETRYING:
            self.storage_retries[progress.detail or "?"] += 1

    @property
    def retried(self) -> int:
        return sum(self.rpc_retries.values()) + sum(self.storage_retries.values())


# ------------------------------------------------------------------------------ the faults


@dataclass(frozen=True)
class Fault:
    name: str
    #: The process killed (empty for the database fault, which kills connections, not a process).
    target: str
    at_upload: int
    #: From the kill (or the termination) until the cluster was whole again.
    recovery_s: float


FAULTS: Final = (
    "nats-leader",
    "volume",
    "metadata",
    "upload",
    "download",
    "processor",
    "bridge",
    "postgresql",
)


async def _target(cluster: Cluster, fault: str) -> str:
    if fault == "nats-leader":
        return await cluster.stream_leader()
    if fault == "volume":
        return cluster.replicas("volume")[-1]
    if fault in ("processor", "bridge"):
        holder = await cluster.lease_holder()
        if fault == "bridge":
            return holder
        return next(name for name in cluster.replicas("processor") if name != holder)
    if fault == "postgresql":
        return ""
    return cluster.replicas(fault)[-1]


async def inject(cluster: Cluster, schedule: Schedule, faults: Sequence[str] = FAULTS) -> list[Fault]:
    done: list[Fault] = []
    for index, fault in enumerate(faults):
        await schedule.turn_of(index)
        at = schedule.started
        target = await _target(cluster, fault)
        began = time.monotonic()
        if fault == "postgresql":
            terminated = await cluster.terminate_database_backends()
            assert terminated > 0, "no backend of the catalogue to terminate: the fault missed"
        else:
            await cluster.kill(target)
            await asyncio.sleep(OUTAGE_S)
            await cluster.restart(target)
        await cluster.wait_whole()
        done.append(Fault(fault, target, at, time.monotonic() - began))
        await schedule.kill_done()
    return done


# ------------------------------------------------------------------------------ the run


@dataclass
class ClusterRun:
    planned: dict[str, Planned]
    costs: ClientCosts
    faults: list[Fault]
    probes: list[str]
    lease_holders: list[str]
    max_consumer_lag: int
    elapsed_s: float


async def _sample_lag(cluster: Cluster, stop: asyncio.Event, seen: list[int]) -> None:
    """The pipeline consumer's backlog (pending + unacknowledged), sampled twice a second; a sample
    that fails (the leader moving) is skipped."""
    connection = await cluster.nats()
    try:
        js = connection.jetstream()
        while not stop.is_set():
            try:
                info = await js.consumer_info(cluster.stream, PIPELINE_CONSUMER, timeout=2)
                seen.append(info.num_pending + info.num_ack_pending)
            except Exception:  # a sample lost to a fault is just not taken
                pass
            await asyncio.sleep(0.5)
    finally:
        await connection.close()


async def _watch_lease(cluster: Cluster, stop: asyncio.Event, holders: list[str]) -> None:
    while not stop.is_set():
        try:
            holder = await cluster.lease_holder()
        except Exception:  # no holder for a moment while the lease moves
            holder = ""
        if holder and (not holders or holders[-1] != holder):
            holders.append(holder)
        await asyncio.sleep(0.5)


async def uploads_under_faults(
    cluster: Cluster, *, tenant: str, uploads: int, faults: Sequence[str] = FAULTS
) -> ClusterRun:
    started = time.monotonic()
    costs = ClientCosts()
    endpoints = cluster.client_endpoints(tenant=tenant, subject="cluster-client")
    single = AsyncClient(endpoints, on_rpc_retry=costs.on_rpc_retry)
    # A threshold below every body: these go as multipart uploads (one part each).
    multipart = AsyncClient(
        endpoints, options=TransferOptions(multipart_threshold=1), on_rpc_retry=costs.on_rpc_retry
    )
    schedule = Schedule(uploads=uploads, kills=len(faults))
    slots = asyncio.Semaphore(CONCURRENCY)
    planned: dict[str, Planned] = {}
    done: dict[int, asyncio.Event] = {index: asyncio.Event() for index in range(uploads)}
    probes: list[str] = []

    async def one(index: int) -> None:
        item = plan(index, tenant)
        if item.repeats is not None:
            await done[item.repeats].wait()  # the content is known before it is repeated
        await schedule.may_start(index)
        async with slots:
            await schedule.mark_started()
            try:
                client = multipart if item.multipart else single
                result = await client.upload(
                    item.body.data,
                    name=item.body.name,
                    content_type=item.body.content_type,
                    sha256=hashlib.sha256(item.body.data).hexdigest(),
                    progress=costs.on_progress,
                )
                planned[result.file.id] = item
            except FilestoreError as error:
                costs.failures.append(f"upload {index}: {error.code.name} {error.reason}: {error}")
            finally:
                done[index].set()
            if index % PROBE_EVERY == 0:
                key = f"{PROBE_PREFIX}/{tenant}/{index}"
                await _with_retries(lambda: cluster.put_object(key, key.encode()))
                probes.append(key)

    stop = asyncio.Event()
    lag: list[int] = []
    holders: list[str] = []
    watchers = [
        asyncio.create_task(_sample_lag(cluster, stop, lag)),
        asyncio.create_task(_watch_lease(cluster, stop, holders)),
    ]
    chaos = asyncio.create_task(inject(cluster, schedule, faults))
    try:
        await asyncio.gather(*(one(index) for index in range(uploads)))
        injected = await chaos
    finally:
        chaos.cancel()
        await asyncio.gather(chaos, return_exceptions=True)
        await single.close()
        await multipart.close()
    try:
        await _settle(cluster, planned, tenant, endpoints)
    finally:
        stop.set()
        await asyncio.gather(*watchers, return_exceptions=True)
    return ClusterRun(
        planned, costs, injected, probes, holders, max(lag, default=0), time.monotonic() - started
    )


async def _with_retries(write: Callable[[], Awaitable[None]], *, within_s: float = 60.0) -> None:
    """A probe's PUT retried while a fault keeps storage from answering (not a client's cost)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            await write()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _settle(cluster: Cluster, planned: dict[str, Planned], tenant: str, endpoints: Endpoints) -> None:
    """Wait until every acknowledged upload has its verdict (a fresh client: its retries are not
    the uploads' cost)."""
    async with AsyncClient(endpoints) as reader:
        await asyncio.gather(*(reader.wait_until_processed(file_id, timeout_s=300.0) for file_id in planned))


# ------------------------------------------------------------------------------ the checks


async def status_events(cluster: Cluster, tenant: str) -> dict[str, Counter[int]]:
    """Every verdict announced for the tenant's files (FileStatusChanged on ``files.file.ready``, which
    carries READY, QUARANTINED and FAILED): file id -> statuses announced, counted."""
    connection = await cluster.nats()
    found: dict[str, Counter[int]] = {}
    try:
        js = connection.jetstream()
        subscription = await js.pull_subscribe(
            "files.file.ready",
            stream=cluster.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        while True:
            try:
                messages = await subscription.fetch(500, timeout=2.0)
            except (TimeoutError, nats.errors.TimeoutError):
                return found
            for message in messages:
                event = events_pb2.FileStatusChanged.FromString(message.data)
                if event.tenant == tenant and event.file_id:
                    found.setdefault(event.file_id, Counter())[event.status] += 1
    finally:
        await connection.close()


async def announced_probes(cluster: Cluster, prefix: str) -> Counter[str]:
    """ObjectCreated events in the stream for keys under ``prefix``: key -> how many."""
    connection = await cluster.nats()
    seen: Counter[str] = Counter()
    try:
        js = connection.jetstream()
        subscription = await js.pull_subscribe(
            "files.object.created",
            stream=cluster.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        while True:
            try:
                messages = await subscription.fetch(500, timeout=2.0)
            except (TimeoutError, nats.errors.TimeoutError):
                return seen
            for message in messages:
                event = events_pb2.ObjectCreated.FromString(message.data)
                if event.key.startswith(prefix):
                    seen[event.key] += 1
    finally:
        await connection.close()


async def pipeline_backlog(cluster: Cluster) -> tuple[int, int]:
    """(pending, unacknowledged) of the processors' durable consumer."""
    connection = await cluster.nats()
    try:
        info = await connection.jetstream().consumer_info(cluster.stream, PIPELINE_CONSUMER)
        return info.num_pending, info.num_ack_pending
    finally:
        await connection.close()
