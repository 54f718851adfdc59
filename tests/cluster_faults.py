"""Faults on the cluster profile: uploads through the SDK while single nodes of every kind are killed.

Shared by `make test` (a slice: FILESTORE_CLUSTER_UPLOADS, default 160) and `make test-cluster`
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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

import nats
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from filestore.client import AsyncClient, Endpoints, TransferOptions
from filestore.client.errors import FilestoreError
from filestore.client.progress import Progress, TransferEvent
from filestore.core.auth import mint_token
from filestore.core.channels import service_channel
from filestore.metadata.fsck import FsckOptions, FsckReport
from filestore.metadata.fsck import run as run_fsck
from filestore.server.storage import ObjectStore, StoreConfig
from filestore.stack.cluster import ClusterStack
from filestore.upload.reaper import Reaper
from filestore.v1 import events_pb2, metadata_service_pb2_grpc, resources_pb2

# CONCURRENCY: uploads in flight at once, the window the schedule holds back after each fault.
from tests.faults import CONCURRENCY, Body, Schedule, make_body

Status = resources_pb2.FileStatus

UPLOADS_ENV: Final = "FILESTORE_CLUSTER_UPLOADS"
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
#: The processors' durable consumers: the gate to a verdict, and the optional steps after it.
PIPELINE_CONSUMERS: Final = ("processor-pipeline", "processor-enrich")
#: How long a completed upload may take to get its verdict once the faults are over.
SETTLE_S: Final = 300.0


def uploads_wanted(default: int = 160) -> int:
    """FILESTORE_CLUSTER_UPLOADS, at least :func:`fewest_uploads` (else the run could not be honest)."""
    raw = os.environ.get(UPLOADS_ENV, "").strip()
    wanted = int(raw) if raw else default
    if wanted < fewest_uploads(len(FAULTS)):
        raise ValueError(
            f"{UPLOADS_ENV}={wanted}: at least {fewest_uploads(len(FAULTS))} for {len(FAULTS)} faults"
        )
    return wanted


def fewest_uploads(faults: int) -> int:
    """Uploads enough for every fault to strike while uploads are in flight: the schedule holds back
    the uploads a window of CONCURRENCY past each fault's mark until it is over, so each fault needs a
    window of its own, and one more for the uploads after the last."""
    return (faults + 1) * CONCURRENCY


# ------------------------------------------------------------------------------ the cluster


class Cluster:
    """The scenario's handle on a running :class:`ClusterStack`: clients, faults and what to observe."""

    stream: Final = "FILES"

    def __init__(self, stack: ClusterStack, *, database_url: str) -> None:
        self.stack = stack
        self.database_url = database_url

    def client_endpoints(self, *, tenant: str, subject: str) -> Endpoints:
        endpoints = self.stack.endpoints
        token = mint_token(endpoints.auth_secret, subject=subject, tenant=tenant)
        return Endpoints(
            upload=endpoints.upload_addr,
            metadata=endpoints.metadata_addr,
            download=endpoints.download_addr,
            token=token,
            tls=endpoints.tls,
        )

    async def nats(self) -> NatsClient:
        """A connection of the test's own to the NATS cluster, which follows it across node kills."""
        endpoints = self.stack.endpoints

        async def quiet(error: Exception) -> None:
            pass  # refused reconnects while a node is down are the fault under test

        return await nats.connect(
            servers=list(endpoints.nats_urls),
            tls=endpoints.tls.client_context() if endpoints.tls is not None else None,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=quiet,
        )

    async def put_object(self, key: str, data: bytes) -> None:
        settings = self.stack.endpoints.admin_s3_settings()
        store = ObjectStore(StoreConfig.from_settings(settings))
        await store.put(key, data, content_type="text/plain")

    async def stream_leader(self) -> str:
        leader = await self.stack.stream_leader()
        assert leader is not None, "the FILES stream has no leader"
        return leader

    async def lease_holder(self) -> str:
        holder = await self.stack.bridge_lease_holder()
        assert holder is not None, "no bridge holds the lease"
        return holder

    def replicas(self, kind: str) -> list[str]:
        return self.stack.replicas(kind)

    async def kill(self, name: str) -> None:
        await self.stack.kill(name)

    async def restart(self, name: str) -> None:
        await self.stack.restart(name)

    async def terminate_database_backends(self) -> int:
        """``pg_terminate_backend`` of every connection to the catalogue's database but our own."""
        url = make_url(self.database_url)
        engine = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                terminated = await connection.scalar(
                    text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :database AND pid <> pg_backend_pid()"
                    ),
                    {"database": url.database},
                )
        finally:
            await engine.dispose()
        return int(terminated or 0)

    async def sweep_unattached_storage_uploads(self) -> list[str]:
        """The brokers' reaper sweep, run once now (grace 0): aborts the multipart uploads storage holds
        that no upload record holds, which a create killed between storage's create and BeginUpload
        leaves. Answers the storage upload ids it aborted."""
        endpoints = self.stack.endpoints
        token = mint_token(
            endpoints.auth_secret, subject="service:cluster-faults", tenant="*", roles=["service"]
        )
        channel = service_channel(endpoints.metadata_addr, token=lambda: token, tls=endpoints.tls)
        try:
            reaper = Reaper(
                metadata=metadata_service_pb2_grpc.MetadataServiceStub(channel),
                store=ObjectStore(StoreConfig.from_settings(endpoints.admin_s3_settings())),
                unattached_grace=timedelta(0),
            )
            return await reaper.sweep_unattached()
        finally:
            await channel.close()

    async def fsck(self, tenant: str) -> FsckReport:
        endpoints = self.stack.endpoints
        return await run_fsck(
            FsckOptions(
                database_url=self.database_url,
                s3=endpoints.admin_s3_settings(),
                grace=timedelta(0),
                tenants=(tenant,),
            )
        )

    async def wait_whole(self, *, within_s: float = 120.0) -> None:
        """Until every process answers its probe and the stream has a leader with every replica current."""
        deadline = time.monotonic() + within_s
        while True:
            health = await self.stack.health()
            sick = {name: detail for name, (ok, detail) in health.items() if not ok}
            if not sick:
                current, detail = await self.stack.stream_current()
                if current:
                    return
                sick = {"stream": detail}
            assert time.monotonic() < deadline, f"the cluster is not whole after {within_s:g}s: {sick}"
            await asyncio.sleep(0.5)


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
    #: Uploads in flight when it struck (started, not finished).
    in_flight: int
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


async def inject(
    cluster: Cluster,
    schedule: Schedule,
    faults: Sequence[str],
    *,
    outages: Mapping[str, float],
    finished: Callable[[], int],
) -> list[Fault]:
    """Each fault in turn, when the schedule says; a killed process stays down ``outages[fault]``
    (OUTAGE_S when not given) before it is started again."""
    done: list[Fault] = []
    for index, fault in enumerate(faults):
        # The target is found first (it needs NATS round trips), so the fault strikes at its mark,
        # while the uploads that started around it are in flight.
        target = await _target(cluster, fault)
        await schedule.turn_of(index)
        # The uploads held back until the previous fault was over may not have started yet.
        while schedule.started - finished() == 0 and finished() < schedule.uploads:  # noqa: ASYNC110 - counts, not an event
            await asyncio.sleep(0.01)
        at, in_flight = schedule.started, schedule.started - finished()
        began = time.monotonic()
        if fault == "postgresql":
            terminated = await cluster.terminate_database_backends()
            assert terminated > 0, "no backend of the catalogue to terminate: the fault missed"
        else:
            await cluster.kill(target)
            await asyncio.sleep(outages.get(fault, OUTAGE_S))
            await cluster.restart(target)
        await cluster.wait_whole()
        done.append(Fault(fault, target, at, in_flight, time.monotonic() - began))
        await schedule.kill_done()
    return done


# ------------------------------------------------------------------------------ the run


@dataclass
class ClusterRun:
    #: file id -> what was uploaded, for every upload the SDK completed.
    planned: dict[str, Planned]
    #: file id -> its status once processed (UNSPECIFIED: none within SETTLE_S).
    verdicts: dict[str, resources_pb2.FileStatus.ValueType]
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
                info = await js.consumer_info(cluster.stream, PIPELINE_CONSUMERS[0], timeout=2)
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


@asynccontextmanager
async def _observed(cluster: Cluster) -> AsyncIterator[tuple[list[int], list[str]]]:
    """While inside: the pipeline's backlog sampled, and each new holder of the bridge's lease noted."""
    stop = asyncio.Event()
    lag: list[int] = []
    holders: list[str] = []
    watchers = [
        asyncio.create_task(_sample_lag(cluster, stop, lag)),
        asyncio.create_task(_watch_lease(cluster, stop, holders)),
    ]
    try:
        yield lag, holders
    finally:
        stop.set()
        await asyncio.gather(*watchers, return_exceptions=True)


async def uploads_under_faults(
    cluster: Cluster,
    *,
    tenant: str,
    uploads: int,
    faults: Sequence[str] = FAULTS,
    outages: Mapping[str, float] | None = None,
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

    def finished() -> int:
        return sum(event.is_set() for event in done.values())

    async with _observed(cluster) as (lag, holders):
        chaos = asyncio.create_task(
            inject(cluster, schedule, faults, outages=outages or {}, finished=finished)
        )
        try:
            await asyncio.gather(*(one(index) for index in range(uploads)))
            injected = await chaos
        finally:
            chaos.cancel()
            await asyncio.gather(chaos, return_exceptions=True)
            await single.close()
            await multipart.close()
        verdicts = await _settle(planned, endpoints)
    return ClusterRun(
        planned,
        verdicts,
        costs,
        injected,
        probes,
        holders,
        max(lag, default=0),
        time.monotonic() - started,
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


async def _settle(
    planned: dict[str, Planned], endpoints: Endpoints
) -> dict[str, resources_pb2.FileStatus.ValueType]:
    """Each acknowledged upload's verdict, once it has one (read by a client of its own: its retries
    are not the uploads' cost); a file without one after SETTLE_S counts as UNSPECIFIED."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def verdict(reader: AsyncClient, file_id: str) -> resources_pb2.FileStatus.ValueType:
        async with slots:
            try:
                return (await reader.wait_until_processed(file_id, timeout_s=SETTLE_S)).status
            except TimeoutError:
                return Status.FILE_STATUS_UNSPECIFIED

    async with AsyncClient(endpoints) as reader:
        ids = list(planned)
        found = await asyncio.gather(*(verdict(reader, file_id) for file_id in ids))
    return dict(zip(ids, found, strict=True))


# ------------------------------------------------------------------------------ the checks


async def stream_payloads(cluster: Cluster, subject: str) -> list[bytes]:
    """Every message on ``subject`` in the stream, oldest first, read by an ephemeral consumer of the
    test's own (the contract's way to read events: a core subscription misses what it was not
    connected for)."""
    connection = await cluster.nats()
    payloads: list[bytes] = []
    try:
        subscription = await connection.jetstream().pull_subscribe(
            subject,
            stream=cluster.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        while True:
            try:
                messages = await subscription.fetch(500, timeout=2.0)
            except (TimeoutError, nats.errors.TimeoutError):
                return payloads
            payloads.extend(message.data for message in messages)
    finally:
        await connection.close()


async def status_events(cluster: Cluster, tenant: str) -> dict[str, Counter[int]]:
    """Every verdict announced for the tenant's files (FileStatusChanged on ``files.file.ready``, which
    carries READY, QUARANTINED and FAILED): file id -> statuses announced, counted."""
    found: dict[str, Counter[int]] = {}
    for payload in await stream_payloads(cluster, "files.file.ready"):
        event = events_pb2.FileStatusChanged.FromString(payload)
        if event.tenant == tenant and event.file_id:
            found.setdefault(event.file_id, Counter())[event.status] += 1
    return found


async def announced_probes(cluster: Cluster, prefix: str) -> Counter[str]:
    """ObjectCreated events in the stream for keys under ``prefix``: key -> how many."""
    keys = (
        events_pb2.ObjectCreated.FromString(p).key
        for p in await stream_payloads(cluster, "files.object.created")
    )
    return Counter(key for key in keys if key.startswith(prefix))


async def pipeline_backlog(cluster: Cluster) -> dict[str, tuple[int, int]]:
    """(pending, unacknowledged) of each of the processors' durable consumers."""
    connection = await cluster.nats()
    try:
        js = connection.jetstream()
        backlog = {}
        for consumer in PIPELINE_CONSUMERS:
            info = await js.consumer_info(cluster.stream, consumer)
            backlog[consumer] = (info.num_pending or 0, info.num_ack_pending or 0)
        return backlog
    finally:
        await connection.close()


async def drained(cluster: Cluster, *, within_s: float) -> dict[str, tuple[int, int]]:
    """The consumers' backlog once it is empty, or as it is after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        backlog = await pipeline_backlog(cluster)
        if all(counts == (0, 0) for counts in backlog.values()) or time.monotonic() > deadline:
            return backlog
        await asyncio.sleep(1.0)
