"""make bench-scale: CreateUpload through the broker as the catalogue grows, and as processes are added,
on PostgreSQL, measured in the same run.

1. Catalogue size: the rate of CreateUpload (single PUT) with 1,000,000 files already in the catalogue
   over the rate with an empty one, ``create_rate_1m_vs_empty``. The files are of the tenant the
   creates are made in, 10,000 of them the caller's own (the fill of ``bench_metadata``: COPY, the
   secondary indexes built after it, ANALYZE). A create must not get slower with the catalogue.
2. Horizontal scale: two metadata processes and two brokers against one of each, same client load,
   ``metadata_2x_vs_1x`` (information, no goal). Each broker addresses one metadata service (it takes
   one address, FILESTORE_METADATA_ADDR): broker A → metadata A, broker B → metadata B, both on the
   same database; the client sends call i to broker i mod 2. On two cores the ideal is not 2: the
   load generator, the brokers, the metadata services and PostgreSQL share them. Each phase prints
   every process's CPU seconds (user + system from ``/proc``: the client, each broker and metadata
   service, and the whole PostgreSQL server, its reaped backends included) and the rate the machine
   could reach at that CPU per call (cores / CPU per call), so the figure can be read against that
   bound.

A scratch database on TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test; created,
migrated, dropped afterwards) serves a throwaway stack: SeaweedFS, NATS, metadata A and broker A (the
stack's), and metadata B and broker B (the same programs with the same environment, on ports of their
own, started here). The brokers' reapers are off. Every phase is CreateUpload at 64 in flight from
this process (``_common.measure``: CALLS calls after a warm-up), one client for all phases:

    empty 1x, empty 2x, (fill 1,000,000 files), 1M 1x, (TRUNCATE the files), empty 1x, empty 2x

The empty phases bracket the full one, so drift in the machine's load favours neither side; each
figure is a ratio of means over its phases. Nobody is pinned: the processes measured are the whole
point of the second figure, and pinning them would decide it.

FILESTORE_BENCH_QUICK=1: 100,000 files and 600 calls a phase, for trying it out.

Ends with: RESULT create_rate_1m_vs_empty=<r> metadata_2x_vs_1x=<r> creates_per_s_empty=<r>
creates_per_s_1m=<r> creates_per_s_2x=<r> server_cpu_ms_per_create_empty=<ms> server_cpu_ms_per_create_1m=<ms>
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # no stubs published
import grpc
from sqlalchemy.engine import make_url

from benchmarks._common import BENCH_LOG_LEVEL, IN_FLIGHT, QUICK, load_average, measure
from benchmarks.bench_metadata import OWNERS, TENANT, fill_postgres, scratch_postgres
from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.metadata.db.migrate import upgrade_to_head
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.stack.probes import probe_grpc_health
from filestore.stack.process import ManagedProcess
from filestore.v1 import resources_pb2, upload_service_pb2, upload_service_pb2_grpc

ROWS = 100_000 if QUICK else 1_000_000
CALLS = 600 if QUICK else 3000
WARMUP = 128
SIZE = 1024 * 1024
READY_TIMEOUT_S = 60.0
#: The caller: one of the fill's owners, in the fill's tenant.
CALLER = OWNERS[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads; ``/proc/<pid>/stat`` 14, 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def postgres_cpu_seconds(postmaster: int) -> float:
    """CPU time of the whole PostgreSQL server so far: the postmaster, its live children (backends
    come and go with the metadata pools' overflow connections) and the children it has reaped. Exact
    for the server, and so including any other database's load on it (the machine may be shared)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        pid = int(stat.parent.name)
        if pid == postmaster:
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def second_instance(stack: Stack, component: str, name: str, **env: str) -> tuple[ManagedProcess, str]:
    """Another process of a stack's service: its program and environment, on ports of its own."""
    original = stack.process(component)
    address = f"127.0.0.1:{free_port()}"
    environment = {
        **original.env,
        "FILESTORE_LISTEN": address,
        "FILESTORE_METRICS_PORT": str(free_port()),
        **env,
    }
    process = ManagedProcess(
        name,
        original.argv,
        log_path=stack.log_path(component).with_name(f"{name}.log"),
        env=environment,
        cwd=original.cwd,
    )
    process.start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not (await probe_grpc_health(address))[0]:
        if process.returncode is not None or time.monotonic() > deadline:
            await process.stop()
            raise RuntimeError(f"{name} did not start; see {process.log_path}")
        await asyncio.sleep(0.2)
    return process, address


@dataclass(frozen=True, slots=True)
class Phase:
    rate: float
    cpu_ms_per_call: dict[str, float]  # by process: the client, the brokers, metadata, postgres (the server)

    @property
    def server_ms(self) -> float:
        return sum(ms for name, ms in self.cpu_ms_per_call.items() if name != "client")


class Bench:
    def __init__(
        self,
        pids: dict[str, int],
        database: asyncpg.Connection,
        stubs: Sequence[upload_service_pb2_grpc.UploadServiceAsyncStub],
    ) -> None:
        self.pids = pids
        self.database = database
        self.stubs = stubs
        self.cores = len(os.sched_getaffinity(0))

    async def postmaster(self) -> int:
        """The PostgreSQL server's main process (the parent of this connection's backend)."""
        backend = await self.database.fetchval("SELECT pg_backend_pid()")
        return parent_pid(backend)

    def caller(self, brokers: int) -> Callable[[int], Awaitable[object]]:
        async def create(i: int) -> object:
            return await self.stubs[i % brokers].CreateUpload(
                upload_service_pb2.CreateUploadRequest(
                    name=f"scale-{i}.bin",
                    size=SIZE,
                    content_type="application/octet-stream",
                    kind=resources_pb2.UPLOAD_KIND_SINGLE,
                    request_id=str(uuid.uuid4()),
                )
            )

        return create

    async def phase(self, name: str, brokers: int) -> Phase:
        postmaster = await self.postmaster()
        before = {process: cpu_seconds(pid) for process, pid in self.pids.items()}
        before_pg = postgres_cpu_seconds(postmaster)
        client_before = time.process_time()
        result = await measure(name, self.caller(brokers), calls=CALLS, in_flight=IN_FLIGHT, warmup=WARMUP)
        calls = CALLS + WARMUP
        used = {process: cpu_seconds(pid) - before[process] for process, pid in self.pids.items()}
        used["postgres"] = postgres_cpu_seconds(postmaster) - before_pg
        used["client"] = time.process_time() - client_before
        per_call = {process: seconds * 1000 / calls for process, seconds in used.items()}
        total_ms = sum(per_call.values())
        shown = "  ".join(f"{process} {seconds:.1f}" for process, seconds in used.items())
        print(f"{'':<22} CPU seconds: {shown}")
        print(
            f"{'':<22} CPU per create: {total_ms:.2f} ms in all ({total_ms - per_call['client']:.2f} ms "
            f"servers + postgres, {per_call['client']:.2f} ms client): {self.cores} cores bound the "
            f"rate at {self.cores * 1000 / total_ms:.0f}/s, the one-threaded client alone at "
            f"{1000 / per_call['client']:.0f}/s",
            flush=True,
        )
        return Phase(result.rate, per_call)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="filestore-bench-scale-") as home:
        async with scratch_postgres() as url:
            await upgrade_to_head(url)
            config = StackConfig(
                home=Path(home),
                ports=StackPorts.free(),
                components=("seaweedfs", "nats", "metadata", "upload"),
                database_url=url,
                log_level=BENCH_LOG_LEVEL,
                ready_timeout_s=90.0,
                extra_env={"upload": {"FILESTORE_REAPER_INTERVAL_S": "0"}},
            )
            async with Stack(config) as stack:
                await run(stack, url)


async def run(stack: Stack, url: str) -> None:
    extra: list[ManagedProcess] = []
    channels: list[grpc.aio.Channel] = []
    parsed = make_url(url)
    database = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
    )
    try:
        metadata_b, metadata_b_addr = await second_instance(stack, "metadata", "metadata-b")
        extra.append(metadata_b)
        upload_b, upload_b_addr = await second_instance(
            stack, "upload", "upload-b", FILESTORE_METADATA_ADDR=metadata_b_addr
        )
        extra.append(upload_b)
        token = mint_token(stack.endpoints.auth_secret, subject=CALLER, tenant=TENANT)
        channels = [
            insecure_channel(address, token=lambda: token)
            for address in (stack.endpoints.upload_addr, upload_b_addr)
        ]
        pids = {
            "broker A": stack.pids["upload"],
            "broker B": upload_b.pid,
            "metadata A": stack.pids["metadata"],
            "metadata B": metadata_b.pid,
        }
        assert all(pid is not None for pid in pids.values())
        bench = Bench(
            {name: pid for name, pid in pids.items() if pid is not None},
            database,
            [upload_service_pb2_grpc.UploadServiceStub(channel) for channel in channels],
        )
        await phases(bench, stack, url)
    finally:
        for channel in channels:
            await channel.close()
        for process in reversed(extra):
            await process.stop()
        await database.close()


async def phases(bench: Bench, stack: Stack, url: str) -> None:
    print(
        f"CreateUpload (single), {CALLS} calls a phase (+{WARMUP} warm-up), {IN_FLIGHT} in flight, "
        f"one client (this process), {bench.cores} cores; PostgreSQL {make_url(url).database}"
    )
    print(f"load average before: {load_average()}")
    empty, doubled = [await bench.phase("empty, 1x", 1)], [await bench.phase("empty, 2x", 2)]
    print(
        f"filling {ROWS:,} files of tenant {TENANT!r} ({ROWS // len(OWNERS):,} of them {CALLER!r}'s)",
        flush=True,
    )
    started = time.perf_counter()
    await fill_postgres(url, ROWS)
    count = await bench.database.fetchval("SELECT count(*) FROM files")
    print(f"  filled in {time.perf_counter() - started:.1f} s: {count:,} files in the catalogue", flush=True)
    full = await bench.phase(f"{ROWS // 1000}k files, 1x", 1)
    await bench.database.execute("TRUNCATE files, idempotency_keys CASCADE")
    await bench.database.execute("ANALYZE")
    count = await bench.database.fetchval("SELECT count(*) FROM files")
    print(f"  truncated: {count} files in the catalogue", flush=True)
    empty.append(await bench.phase("empty, 1x", 1))
    doubled.append(await bench.phase("empty, 2x", 2))
    empty_rate, doubled_rate = mean([p.rate for p in empty]), mean([p.rate for p in doubled])
    ratio_full, ratio_doubled = full.rate / empty_rate, doubled_rate / empty_rate
    empty_ms = mean([p.server_ms for p in empty])
    print(f"creates/s with {ROWS:,} files / with none: {ratio_full:.2f}")
    print(
        f"creates/s with two metadata+broker pairs / with one: {ratio_doubled:.2f}. Both use the same "
        f"{bench.cores} cores: a second pair adds processes, not CPU, so the figure says whether one "
        "pair left cores idle (a one-process bottleneck) that a second pair could use."
    )
    print(f"load average after: {load_average()}")
    print(
        f"RESULT create_rate_1m_vs_empty={ratio_full:.2f} metadata_2x_vs_1x={ratio_doubled:.2f} "
        f"creates_per_s_empty={empty_rate:.0f} creates_per_s_1m={full.rate:.0f} "
        f"creates_per_s_2x={doubled_rate:.0f} server_cpu_ms_per_create_empty={empty_ms:.2f} "
        f"server_cpu_ms_per_create_1m={full.server_ms:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
