"""The cluster profile of the local stack (filestore.stack.cluster), started once for this module: a
three-server NATS cluster, SeaweedFS in its roles with replicated volumes, PostgreSQL, two replicas of
every service, on TLS (the profile's default: mutual TLS between the services and for NATS, HTTPS for
S3). Uploads through the SDK reach READY, calls land on both replicas, the stream has three replicas,
the bridge's lease moves when its holder is killed, and a volume server may die."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from filestore.client import AsyncClient, TransferOptions
from filestore.stack import StackConfig, load_stack_json
from filestore.stack.cluster import ClusterPorts, ClusterShape, ClusterStack
from filestore.stack.endpoints import check_health
from filestore.v1 import resources_pb2
from tests.metrics import scrape
from tests.stacks import scratch_postgres_database
from tests.support import endpoints_for, fresh_tenant

pytestmark = pytest.mark.local_stack

READY = resources_pb2.FILE_STATUS_READY
MIB = 1024**2
#: Short, so a killed bridge's lease passes to the other in seconds.
LEASE_TTL_S = 3.0
T = TypeVar("T")


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ClusterStack]:
    shape = ClusterShape()
    async with scratch_postgres_database() as database_url:
        config = StackConfig(
            home=tmp_path_factory.mktemp("cluster"),
            database_url=database_url,
            # The infrastructure and the services; clamd, the face and the demo page are one process
            # each, as in the single-node stack, and cost start-up time here.
            components=("seaweedfs", "nats", "metadata", "upload", "processor", "download"),
            extra_env={"processor": {"FILESTORE_BRIDGE_LEASE_TTL_S": str(LEASE_TTL_S)}},
            ready_timeout_s=90.0,
            tls=True,
        )
        async with ClusterStack(config, shape=shape, ports=ClusterPorts.free(shape)) as running:
            yield running


@pytest.fixture(scope="module")
def tenant() -> str:
    """The tenant that owns this module's files."""
    return fresh_tenant()


@pytest.fixture(scope="module")
async def uploaded(cluster: ClusterStack, tenant: str) -> dict[str, bytes]:
    """Files uploaded before any fault (file id -> bytes), READY: single PUTs and one multipart."""
    files: dict[str, bytes] = {}
    options = TransferOptions(multipart_threshold=6 * MIB, part_size=5 * MIB)
    async with AsyncClient(endpoints_for(cluster, tenant=tenant), options=options) as client:
        bodies = [os.urandom(1000 + i) for i in range(6)] + [os.urandom(11 * MIB)]
        for i, body in enumerate(bodies):
            result = await client.upload(body, name=f"f{i}.bin", content_type="application/octet-stream")
            assert result.kind == ("multipart" if len(body) > 6 * MIB else "single")
            done = await client.wait_until_processed(result.file.id, timeout_s=90)
            assert done.status == READY, resources_pb2.FileStatus.Name(done.status)
            assert done.sha256 == hashlib.sha256(body).hexdigest()
            files[result.file.id] = body
    return files


async def eventually(check: Callable[[], Awaitable[T | None]], *, within_s: float, what: str) -> T:
    deadline = time.monotonic() + within_s
    while True:
        if (result := await check()) is not None:
            return result
        assert time.monotonic() < deadline, f"not within {within_s:g}s: {what}"
        await asyncio.sleep(0.2)


async def test_every_replica_serves_and_stack_json_lists_them(cluster: ClusterStack) -> None:
    path = cluster.write_stack_json()
    info = load_stack_json(path)
    assert info.profile == "cluster"
    for service in ("metadata", "upload", "processor", "download"):
        replicas = info.endpoints.replicas(service)
        assert sorted(replicas) == [f"{service}-0", f"{service}-1"]
        # The one-address field lists every replica: what the SDK and the services balance over.
        assert info.endpoints.service_addr(service).split(",") == [r.address for r in replicas.values()]
    assert len(info.endpoints.nats_urls) == 3
    assert all(url.startswith("tls://") for url in info.endpoints.nats_urls)
    assert info.endpoints.s3_endpoint.startswith("https://")
    assert info.endpoints.tls is not None
    assert sorted(info.endpoints.replicas("volume")) == ["volume-0", "volume-1"]
    health = await check_health(info.endpoints, info.components)
    assert all(ok for ok, _ in health.values()), health
    assert set(info.pids) == set(info.components)


async def test_the_stream_and_the_bridge_buckets_have_three_replicas(cluster: ClusterStack) -> None:
    info = await cluster.stream_info()
    assert info.config.num_replicas == 3
    assert info.cluster.leader in {"nats-0", "nats-1", "nats-2"}
    assert await cluster.stream_leader() == info.cluster.leader
    assert sorted(r.name for r in info.cluster.replicas) == sorted(
        {"nats-0", "nats-1", "nats-2"} - {info.cluster.leader}
    )
    lease_stream = await cluster.stream_info("KV_filestore-bridge-lease")
    assert lease_stream.config.num_replicas == 3


async def test_uploads_reach_ready_and_calls_land_on_both_replicas(
    cluster: ClusterStack, uploaded: dict[str, bytes]
) -> None:
    assert len(uploaded) == 7
    for service in ("upload", "metadata"):
        for name, replica in cluster.endpoints.replicas(service).items():
            samples = await scrape(replica.metrics_url)
            served = sum(
                value
                for (metric, labels), value in samples.items()
                if metric == "filestore_rpc_server_handled_total" and ("code", "OK") in labels
            )
            assert served > 0, f"{name} served no RPC"


async def test_the_lease_moves_when_its_bridge_is_killed(
    cluster: ClusterStack, uploaded: dict[str, bytes]
) -> None:
    holder = await eventually(cluster.bridge_lease_holder, within_s=30, what="a bridge holds the lease")
    other = next(name for name in cluster.replicas("processor") if name != holder)
    await cluster.kill(holder)
    try:
        taken = await eventually(
            lambda: _holder_is(cluster, other), within_s=LEASE_TTL_S * 4 + 10, what=f"{other} takes the lease"
        )
        assert taken == other
        before = await _bridge_publications(cluster, other)
        async with AsyncClient(endpoints_for(cluster)) as client:
            body = os.urandom(4096)
            result = await client.upload(body, name="after-takeover.bin")
            done = await client.wait_until_processed(result.file.id, timeout_s=90)
        assert done.status == READY
        # The new holder's bridge saw the object in the filer and announced it (JetStream may have
        # had the broker's announcement first: a duplicate counts too).
        await eventually(
            lambda: _more_than(_bridge_publications(cluster, other), before),
            within_s=30,
            what=f"{other}'s bridge publishes the new object",
        )
    finally:
        await cluster.restart(holder)


async def test_a_volume_server_may_die_without_losing_a_file(
    cluster: ClusterStack, uploaded: dict[str, bytes], tenant: str, tmp_path: Path
) -> None:
    # Each in turn: without replication, the files on the killed one would be unreadable.
    for volume in cluster.replicas("volume"):
        await cluster.kill(volume)
        try:
            async with AsyncClient(endpoints_for(cluster, tenant=tenant)) as client:
                for i, (file_id, body) in enumerate(uploaded.items()):
                    result = await client.download(file_id, tmp_path / f"{volume}-{i}")
                    assert result.path.read_bytes() == body, f"{file_id} without {volume}"
        finally:
            await cluster.restart(volume)


async def _holder_is(cluster: ClusterStack, name: str) -> str | None:
    holder = await cluster.bridge_lease_holder()
    return holder if holder == name else None


async def _bridge_publications(cluster: ClusterStack, processor: str) -> float:
    """ObjectCreated events a processor replica has published (its bridge: the processor publishes
    no other ObjectCreated)."""
    samples = await scrape(cluster.endpoints.processes[processor].metrics_url)
    return sum(
        value
        for (metric, labels), value in samples.items()
        if metric == "filestore_events_published_total" and ("subject", "files.object.created") in labels
    )


async def _more_than(count: Awaitable[float], floor: float) -> float | None:
    value = await count
    return value if value > floor else None
