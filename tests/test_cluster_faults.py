"""Faults on the cluster profile: SDK uploads keep their promises while one node of each kind is killed.

A cluster of its own (the faults kill its processes), on TLS and PostgreSQL, with clamd. `make test`
runs a slice (FILESTORE_CLUSTER_UPLOADS, default 160); `make test-cluster` runs 1,000. The scenario
and what each fault is: tests/cluster_faults.py. It prints one RESULT line with the figures.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from filestore.stack import StackConfig
from filestore.stack.cluster import ClusterPorts, ClusterShape, ClusterStack
from filestore.v1 import resources_pb2
from tests.cluster_faults import (
    FAULTS,
    PROBE_PREFIX,
    Cluster,
    announced_probes,
    drained,
    status_events,
    uploads_under_faults,
    uploads_wanted,
)
from tests.faults import PIPELINE_ENV
from tests.stacks import scratch_postgres_database
from tests.support import fresh_tenant

pytestmark = pytest.mark.local_stack

Status = resources_pb2.FileStatus

UPLOADS = uploads_wanted()
#: Short, so the lease passes from a killed bridge to the other within seconds (the default is 15 s).
LEASE_TTL_S = 3.0
#: A killed worker's events come back after this (PIPELINE_ENV's FILESTORE_WORKER_ACK_WAIT_S).
ACK_WAIT_S = float(PIPELINE_ENV["FILESTORE_WORKER_ACK_WAIT_S"])


@pytest.fixture(scope="module")
def _quiet_tls_eofs() -> None:
    # asyncio warns "returning true from eof_received() has no effect when using ssl" for every TLS
    # connection nats-py closes (its protocol's choice, harmless): hundreds of lines per run otherwise.
    logging.getLogger("asyncio").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
async def cluster(_quiet_tls_eofs: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    shape = ClusterShape()
    async with scratch_postgres_database() as database_url:
        config = StackConfig(
            home=tmp_path_factory.mktemp("cluster-faults"),
            database_url=database_url,
            components=("seaweedfs", "nats", "clamd", "metadata", "upload", "processor", "download"),
            extra_env={"processor": {**PIPELINE_ENV, "FILESTORE_BRIDGE_LEASE_TTL_S": str(LEASE_TTL_S)}},
            ready_timeout_s=120.0,
            tls=True,
        )
        async with ClusterStack(config, shape=shape, ports=ClusterPorts.free(shape)) as running:
            yield Cluster(running, database_url=database_url)


@pytest.mark.timeout(600 + UPLOADS * 1.5)
async def test_uploads_keep_their_promises_while_nodes_of_every_kind_are_killed(cluster: Cluster) -> None:
    tenant = fresh_tenant()
    # The bridge that holds the lease stays down past the lease's TTL, so the other takes it over
    # (a holder back sooner may simply take its lease again).
    run = await uploads_under_faults(
        cluster, tenant=tenant, uploads=UPLOADS, outages={"bridge": LEASE_TTL_S + 3.0}
    )
    backlog = await drained(cluster, within_s=3 * ACK_WAIT_S + 60)
    verdicts = await status_events(cluster, tenant)
    probes = await announced_probes(cluster, f"{PROBE_PREFIX}/{tenant}/")
    swept = await cluster.sweep_unattached_storage_uploads()
    report = await cluster.fsck(tenant)

    # Lost: a completed upload without the verdict its content deserves, in the catalogue or in the
    # events. Duplicated: a file announced with more than one verdict.
    lost = sorted(
        file_id
        for file_id, item in run.planned.items()
        if run.verdicts[file_id] != item.expected or item.expected not in verdicts.get(file_id, {})
    )
    duplicated = sorted(file_id for file_id, seen in verdicts.items() if len(seen) > 1)
    costs = run.costs
    recovery = " ".join(
        f"recovery_s_{fault.name.replace('-', '_')}={fault.recovery_s:.1f}" for fault in run.faults
    )
    struck = [(f.name, f.target, f.at_upload, f.in_flight) for f in run.faults]
    print(
        f"\ncluster faults: {len(run.planned)} uploads completed of {UPLOADS} in {run.elapsed_s:.0f}s; "
        f"faults (name, target, at upload, in flight) {struck}; lease holders {run.lease_holders}"
    )
    print(f"cluster faults: RPC retries {dict(costs.rpc_retries)}")
    print(f"cluster faults: storage retries {dict(costs.storage_retries)}")
    print(f"cluster faults: {len(swept)} storage uploads left by killed creates swept; backlog {backlog}")
    print(
        f"RESULT cluster_uploads={UPLOADS} lost={len(lost)} duplicated={len(duplicated)} "
        f"client_visible_failures={len(costs.failures)} retried={costs.retried} "
        f"max_consumer_lag={run.max_consumer_lag} {recovery}"
    )

    assert [fault.name for fault in run.faults] == list(FAULTS)
    # Every client saw only retryable errors, which the SDK retried: no upload failed.
    assert costs.failures == []
    assert len(run.planned) == UPLOADS
    # Every fault struck while uploads were in flight (that they cost the clients no retry at all is
    # the balancing and the services' own retries at work: the RESULT line counts what they did cost).
    assert all(fault.in_flight > 0 for fault in run.faults), run.faults
    # Each completed upload became what its content deserves, announced once.
    assert lost == []
    assert duplicated == []
    expected = Counter(Status.Name(item.expected) for item in run.planned.values())
    assert expected["FILE_STATUS_QUARANTINED"] > 0
    assert expected["FILE_STATUS_READY"] > 0
    # Nothing left unacknowledged once the redeliveries are over.
    assert all(counts == (0, 0) for counts in backlog.values()), backlog
    # The lease moved when its holder was killed, and the bridges' cursor lost no object: every probe
    # written straight to the bucket (only the bridge announces those) was announced exactly once.
    bridge = next(fault for fault in run.faults if fault.name == "bridge")
    assert bridge.target in run.lease_holders, run.lease_holders
    assert run.lease_holders[-1] != bridge.target, run.lease_holders
    assert probes == Counter(dict.fromkeys(run.probes, 1)), sorted(set(run.probes) ^ set(probes))
    # The reconciler finds nothing to repair.
    assert report.findings == [], report.render_text()
