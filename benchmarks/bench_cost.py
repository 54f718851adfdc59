"""make bench-cost: what the control plane costs per call and per upload, in server CPU, against the
floor of an echo RPC on the same bootstrap, and CreateUpload's latency at a fixed offered load.

The stack is the embedded one (``benchmarks._common``'s throwaway stack; metadata on SQLite, the
default), started with SeaweedFS, NATS, metadata, the broker (``upload``, its reaper off: a periodic
sweep is no upload's cost) and the download signer, each service in a process of its own exactly
as ``filestore-stack run`` starts it. The processor is not started. The echo floor is
``benchmarks.echo_process``, also a process of its own, on the services' bootstrap
(``create_server``: the same interceptors and token check).

Cores (when two are available): the Filestore services and the echo process are pinned to CPU 0,
everything else (this process, which is the load generator and the SDK, SeaweedFS and NATS) to
CPU 1, every thread of each (``sched_setaffinity`` on each task, as ``taskset -a`` does). So
the services are measured on one core of their own, as a user would run them on one core, and the
load generator does not take CPU from them.

CPU is each process's user + system time (``/proc/<pid>/stat``, its threads and any children of
it included), read before and after a fixed number of calls (after a warm-up) and divided by the
number of calls. Each process's idle CPU rate, measured first over ``IDLE_S`` seconds with no
calls, times the phase's wall time, is subtracted (it is printed; it is small).

1. CPU per call, at 64 calls in flight (closed loop), ``CALLS`` calls each:

   * Echo: the echo process's CPU per call: the floor of one call through the bootstrap.
   * CreateUpload (single PUT, the kind of every file under the 64 MiB multipart threshold): broker
     + metadata CPU. One BeginUpload on metadata, one presigned PUT. ``create_upload_cpu_ms``.
   * CreateUpload (multipart, as the SDK creates a 1 GiB upload: CRC32 part checksums declared, so
     no part URL is signed at creation), ``MULTIPART_CALLS`` calls: broker + metadata CPU
     (``create_multipart_cpu_ms``; storage's CreateMultipartUpload, then one BeginUpload recording it).
     SeaweedFS's CPU per create is printed beside it and NOT counted in it
     (``storage_cpu_ms_per_multipart_create``): it is storage's work, not Filestore's.
   * GetDownloadUrl on READY files: download + metadata CPU. AuthorizeRead on metadata, a presigned
     GET, and the audit event published to JetStream (NATS's CPU printed apart, not counted).
     No authorization decision is cached anywhere. ``get_download_url_cpu_ms``.

   The echo runs first and last; its CPU per call is the mean of the two. A call that makes one
   more call (as both do) costs at least two echoes' worth: one server hop and one client hop.

2. Latency at a fixed offered load. The echo's sustainable rate is the closed-loop rate of step 1
   (64 in flight, mean of its two runs); half of it is offered, open loop (Poisson arrivals from a
   fixed seed, for ``OPEN_LOOP_S`` seconds, latency measured from each call's scheduled arrival, so
   a late generator counts against the server, not for it), first to the echo (its p99 at that load
   is the floor) and then as single CreateUploads: ``create_upload_p99_ms_at_half_load``. If
   CreateUpload cannot sustain it (it completes less than 95 % of the offered rate, or more than
   ``MAX_OUTSTANDING`` calls would be outstanding: those arrivals are shed and counted), that is
   said, and it is measured again at half of its own closed-loop rate
   (``create_upload_p99_ms_at_half_own_max``). The services' CPU per call at that load is printed.

3. A whole upload's service cost: one ``UPLOAD_MIB`` MiB file uploaded by the SDK
   (``filestore.client.AsyncClient.upload``, its defaults: the broker's 16 MiB parts, a CRC32 per
   part, the parts hashed and signed in groups of 128 MiB, one SignParts per group: 8 per GiB,
   8 parts in flight), CreateUpload to CompleteUpload answered (READY needs the processor, which is not
   running: its work is excluded, as the issue says). CPU of every Filestore RPC process involved
   (broker + metadata; the download signer is idle and printed), scaled to one GiB:
   ``service_cpu_ms_per_gib_upload``; the same with 8 MiB parts (also 8 SignParts per GiB),
   ``service_cpu_ms_per_gib_upload_8mib``. In quick mode the file is smaller and the figure is
   scaled up, which also scales the constant cost of create and complete (an overestimate).

``FILESTORE_BENCH_QUICK=1``: fewer calls, shorter open-loop phases, a 128 MiB file.
``FILESTORE_BENCH_PROFILE=<dir>``: run metadata, broker and download under cProfile (the
figures are then inflated by the profiler; for finding where the CPU goes, not for the result) and
print each one's top functions by own time and by cumulative time at the end; the .prof files stay
in <dir>.

Ends with: RESULT create_upload_cpu_ms=<x> get_download_url_cpu_ms=<y> echo_cpu_ms=<z>
create_multipart_cpu_ms=<m> storage_cpu_ms_per_multipart_create=<s>
create_upload_p99_ms_at_half_load=<p> create_upload_sustained_half_load=<0|1>
service_cpu_ms_per_gib_upload=<u> service_cpu_ms_per_gib_upload_8mib=<v>
"""

from __future__ import annotations

import asyncio
import os
import pstats
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import grpc

from benchmarks._common import (
    BENCH_LOG_LEVEL,
    IN_FLIGHT,
    QUICK,
    echo_process,
    load_average,
    median,
    percentile,
)
from benchmarks.bench_download import ready_files
from filestore.client import AsyncClient, Endpoints, TransferOptions
from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.server.logging import configure_logging
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import (
    download_service_pb2,
    download_service_pb2_grpc,
    metadata_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)

PROFILE_DIR = os.environ.get("FILESTORE_BENCH_PROFILE", "")
CALLS = 400 if QUICK else 2000
MULTIPART_CALLS = 100 if QUICK else 400
WARMUP = 100 if QUICK else 300
IDLE_S = 3.0 if QUICK else 5.0
OPEN_LOOP_S = 3.0 if QUICK else 10.0
#: Arrivals beyond this many calls outstanding are shed (counted, never sent): an open loop
#: offered more than the server sustains would otherwise queue without bound.
MAX_OUTSTANDING = 2048
MIB = 1024**2
#: How long the services may take to write their profiles when a profiled phase ends.
PROFILE_WRITE_TIMEOUT_S = 30.0
UPLOAD_MIB = 128 if QUICK else 1024
SEED = 15
TENANT = "bench"
SERVER_CPU = 0
CLIENT_CPU = 1
SERVICES = ("metadata", "upload", "download")
ROOT = Path(__file__).resolve().parent.parent
Kind = resources_pb2.UploadKind


# ------------------------------------------------------------------------------ processes and CPU


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        try:
            todo.extend(_children(current))
        except OSError:
            continue
    return tree


class Cpu(NamedTuple):
    """CPU seconds of a process tree, two ways: ``ticks`` from ``/proc/<pid>/stat`` (utime + stime,
    every thread that ever ran, exited ones included, in 10 ms clock ticks) and ``precise`` from
    ``/proc/<pid>/task/*/schedstat`` (nanoseconds, live threads only)."""

    ticks: float
    precise: float


def cpu(pid: int) -> Cpu:
    """CPU of ``pid`` and its live descendants."""
    ticks = precise = 0
    for member in process_tree(pid):
        try:
            fields = _stat_fields(member)
            tasks = list(Path(f"/proc/{member}/task").iterdir())
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
        for task in tasks:
            try:
                precise += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    return Cpu(ticks / os.sysconf("SC_CLK_TCK"), precise / 1e9)


def cpu_used(before: Cpu, after: Cpu) -> float:
    """Seconds between two readings: the precise figure, unless the ticks say more than two ticks
    more (threads that exited in between took their precise time with them)."""
    ticks, precise = after.ticks - before.ticks, after.precise - before.precise
    return ticks if ticks - precise > 2 / os.sysconf("SC_CLK_TCK") else precise


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` and of its descendants on ``cpus`` (threads started later inherit it)."""
    for member in process_tree(pid):
        try:
            tasks = [int(t.name) for t in Path(f"/proc/{member}/task").iterdir()]
        except OSError:
            continue
        for task in tasks:
            try:
                os.sched_setaffinity(task, cpus)
            except OSError:
                continue


@dataclass
class Meter:
    """CPU of named processes over a phase, net of each one's idle rate."""

    pids: Mapping[str, int]
    idle_per_s: Mapping[str, float]
    profiler: Profiler | None = None

    def profile_start(self) -> None:
        if self.profiler is not None:
            self.profiler.start()

    def profile_stop(self, label: str) -> None:
        if self.profiler is not None:
            self.profiler.stop(label)

    def snapshot(self) -> tuple[float, dict[str, Cpu]]:
        return time.monotonic(), {name: cpu(pid) for name, pid in self.pids.items()}

    def since(self, before: tuple[float, dict[str, Cpu]]) -> dict[str, float]:
        """CPU milliseconds per process since ``before``, idle rate times the wall time subtracted."""
        started, readings = before
        now, later = self.snapshot()
        wall = now - started
        return {
            name: max(
                0.0, (cpu_used(readings[name], later[name]) - self.idle_per_s.get(name, 0.0) * wall) * 1000
            )
            for name in self.pids
        }


async def idle_rates(pids: Mapping[str, int], seconds: float) -> dict[str, float]:
    """CPU seconds per second each process spends with no calls coming in."""
    before = {name: cpu(pid) for name, pid in pids.items()}
    await asyncio.sleep(seconds)
    return {name: cpu_used(before[name], cpu(pid)) / seconds for name, pid in pids.items()}


# ------------------------------------------------------------------------------ the stack


@asynccontextmanager
async def cost_stack(profile_dir: Path | None) -> AsyncIterator[Stack]:
    """``benchmarks._common.temporary_stack`` with the broker's reaper off and, when profiling, the
    services run by ``benchmarks.profiled`` (a profiler the ``Profiler`` below switches on and off)."""
    commands: dict[str, list[str]] = {}
    extra_env: dict[str, dict[str, str]] = {service: {} for service in SERVICES}
    extra_env["upload"]["FILESTORE_REAPER_INTERVAL_S"] = "0"
    if profile_dir is not None:
        for service in SERVICES:
            commands[service] = [sys.executable, "-m", "benchmarks.profiled", str(profile_dir), service]
            extra_env[service]["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
            )
    with tempfile.TemporaryDirectory(prefix="filestore-bench-") as home:
        config = StackConfig(
            home=Path(home),
            ports=StackPorts.free(),
            components=("seaweedfs", "nats", *SERVICES),
            ready_timeout_s=90.0,
            log_level=BENCH_LOG_LEVEL,
            extra_env=extra_env,
            commands=commands,
        )
        async with Stack(config) as stack:
            yield stack


# ------------------------------------------------------------------------------ load


@dataclass(frozen=True)
class Closed:
    rate: float
    cpu_ms: dict[str, float]  # per call, per process


async def closed_loop(
    name: str,
    call: Callable[[int], Awaitable[object]],
    meter: Meter,
    *,
    calls: int,
    warmup: int = WARMUP,
    in_flight: int = IN_FLIGHT,
    offset: int = 0,
    profile: str = "",
) -> Closed:
    """``calls`` calls with ``in_flight`` always in flight, after ``warmup`` calls; the rate and
    every metered process's CPU milliseconds per call over the measured calls."""
    for start in range(0, warmup, in_flight):
        await asyncio.gather(*(call(offset + i) for i in range(start, min(warmup, start + in_flight))))
    counter = iter(range(offset + warmup, offset + warmup + calls))

    async def worker() -> None:
        for i in counter:
            await call(i)

    if profile:
        meter.profile_start()
    before = meter.snapshot()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    rate = calls / (time.perf_counter() - started)
    used = meter.since(before)
    if profile:
        await asyncio.to_thread(meter.profile_stop, profile)
    per_call = {process: ms / calls for process, ms in used.items()}
    shown = "  ".join(f"{p} {ms:.3f}" for p, ms in per_call.items())
    print(f"{name:<24} {rate:7.0f} calls/s   CPU ms per call: {shown}", flush=True)
    return Closed(rate, per_call)


@dataclass(frozen=True)
class Open:
    offered: float
    achieved: float
    p50_ms: float
    p99_ms: float
    completed: int
    shed: int
    errors: int
    cpu_ms: dict[str, float]

    @property
    def sustained(self) -> bool:
        return self.shed == 0 and self.errors == 0 and self.achieved >= 0.95 * self.offered


async def open_loop(
    name: str,
    call: Callable[[int], Awaitable[object]],
    meter: Meter,
    *,
    rate: float,
    seconds: float,
    offset: int,
) -> Open:
    """Poisson arrivals at ``rate`` per second for ``seconds``, each call started at its arrival
    whatever is still outstanding (up to MAX_OUTSTANDING); latency from the scheduled arrival."""
    loop = asyncio.get_running_loop()
    rng = random.Random(SEED)
    latencies: list[float] = []
    errors = shed = 0
    outstanding: set[asyncio.Task[None]] = set()

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        try:
            await call(i)
        except grpc.RpcError:
            errors += 1
            return
        latencies.append((loop.time() - scheduled) * 1000)

    before = meter.snapshot()
    start = loop.time()
    arrival = start
    index = offset
    while True:
        arrival += rng.expovariate(rate)
        if arrival - start >= seconds:
            break
        delay = arrival - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(outstanding) >= MAX_OUTSTANDING:
            shed += 1
            continue
        task = asyncio.create_task(one(index, arrival))
        index += 1
        outstanding.add(task)
        task.add_done_callback(outstanding.discard)
    await asyncio.gather(*outstanding)
    elapsed = loop.time() - start
    used = meter.since(before)
    completed = len(latencies)
    per_call = {process: ms / max(1, completed) for process, ms in used.items()}
    result = Open(
        offered=rate,
        achieved=completed / elapsed,
        p50_ms=median(latencies) if latencies else float("nan"),
        p99_ms=percentile(latencies, 0.99) if latencies else float("nan"),
        completed=completed,
        shed=shed,
        errors=errors,
        cpu_ms=per_call,
    )
    shown = "  ".join(f"{p} {ms:.3f}" for p, ms in per_call.items())
    print(
        f"{name:<24} offered {rate:6.0f}/s achieved {result.achieved:6.0f}/s   p50 {result.p50_ms:7.2f} ms"
        f"   p99 {result.p99_ms:7.2f} ms   shed {shed} errors {errors}   CPU ms per call: {shown}",
        flush=True,
    )
    return result


def total(cpu_ms: Mapping[str, float], processes: Iterable[str]) -> float:
    return sum(cpu_ms[p] for p in processes)


# ------------------------------------------------------------------------------ the whole upload


def generate(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for _ in range(size // (64 * MIB)):
            out.write(os.urandom(64 * MIB))
        out.write(os.urandom(size % (64 * MIB)))


async def upload_cost(
    stack: Stack, path: Path, state_dir: Path, meter: Meter, *, part_size: int
) -> dict[str, float]:
    """CPU milliseconds per process for one SDK upload of ``path`` (create to complete)."""
    e = stack.endpoints
    token = mint_token(e.auth_secret, subject="bench", tenant=TENANT, ttl_s=24 * 3600)
    endpoints = Endpoints(
        upload=e.upload_addr, metadata=e.metadata_addr, download=e.download_addr, token=token
    )
    options = TransferOptions(part_size=part_size)
    async with AsyncClient(endpoints, options=options, state_dir=state_dir) as client:
        phase = f"upload-{part_size // MIB}mib-parts" if part_size else "upload-default-parts"
        meter.profile_start()
        before = meter.snapshot()
        started = time.perf_counter()
        result = await client.upload(path, resume=False)
        elapsed = time.perf_counter() - started
        used = meter.since(before)
        await asyncio.to_thread(meter.profile_stop, phase)
    size = await asyncio.to_thread(lambda: path.stat().st_size)
    shown = "  ".join(f"{p} {ms:.1f}" for p, ms in used.items())
    label = f"{part_size // MIB} MiB parts" if part_size else "default parts"
    print(
        f"upload {size // MIB} MiB, {label}: {result.parts_sent} parts in {elapsed:.1f} s "
        f"({size / MIB / elapsed:.0f} MiB/s)   CPU ms: {shown}",
        flush=True,
    )
    return used


# ------------------------------------------------------------------------------ profiles


@dataclass(frozen=True)
class Profiler:
    """Switches the services' profilers (``benchmarks.profiled``) on and off around a phase;
    does nothing unless FILESTORE_BENCH_PROFILE is set."""

    directory: Path | None
    pids: Mapping[str, int]

    def start(self) -> None:
        if self.directory is not None:
            for service in SERVICES:
                os.kill(self.pids[service], signal.SIGUSR1)

    def stop(self, label: str) -> None:
        if self.directory is not None:
            (self.directory / "label").write_text(label)
            written = {service: self.directory / f"{service}-{label}.prof" for service in SERVICES}
            for path in written.values():
                path.unlink(missing_ok=True)
            for service in SERVICES:
                os.kill(self.pids[service], signal.SIGUSR2)
            # Each service writes its profile from its signal handler; the next phase's label must
            # not be read before it has.
            deadline = time.monotonic() + PROFILE_WRITE_TIMEOUT_S
            while not all(path.exists() for path in written.values()) and time.monotonic() < deadline:
                time.sleep(0.05)


#: Where self time goes, by the file of the function it is spent in (first match wins).
#: ``Context.run``'s own time is the C and Cython code of gRPC's event-loop callbacks, which
#: cProfile cannot see into (grpc._cython), so it is counted as gRPC's.
BUCKETS = (
    ("gRPC", ("grpc", "Context' objects", "_interceptor", "_call.py", "_server")),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("sqlite3", ("sqlite3", "inline_sqlite")),
    ("greenlet", ("greenlet",)),
    ("token check", ("auth.py", "jwt", "hmac", "_hashlib")),
    ("S3 client and signing", ("sigv4", "aiohttp", "httpx", "botocore", "storage.py", "yarl", "multidict")),
    ("NATS", ("nats",)),
    ("logging and tracing", ("structlog", "logging", "opentelemetry", "prometheus", "metrics.py")),
    ("protobuf", ("protobuf", "message", "_pb2", "well_known_types", "convert.py")),
    ("asyncio", ("asyncio", "selectors", "epoll", "events.py", "base_events")),
    ("Filestore code", ("filestore",)),
)


def bucket_of(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    for bucket, needles in BUCKETS:
        if any(needle in where for needle in needles):
            return bucket
    return "other"


def self_time_by_bucket(stats: pstats.Stats) -> dict[str, float]:
    """Self CPU time per bucket; a built-in that matches no bucket (``isinstance``, ``getattr``...)
    is charged to the buckets of its callers, in proportion to the time each caller spent in it."""
    entries = stats.stats  # type: ignore[attr-defined]
    by_bucket: dict[str, float] = {}
    for (filename, _, name), (_, _, tottime, _, callers) in entries.items():
        bucket = bucket_of(filename, name)
        if bucket == "other" and filename in ("~", "<frozen abc>") and callers:
            spent = sum(timing[2] for timing in callers.values()) or 1.0
            for (caller_file, _, caller_name), timing in callers.items():
                owner = bucket_of(caller_file, caller_name)
                by_bucket[owner] = by_bucket.get(owner, 0.0) + tottime * timing[2] / spent
            continue
        by_bucket[bucket] = by_bucket.get(bucket, 0.0) + tottime
    return by_bucket


def print_profiles(directory: Path, top: int = 12) -> None:
    """Each profile's self CPU time by bucket, then the Filestore functions by cumulative time (the
    stages of a call: interceptors, unit of work, servicer methods)."""
    for path in sorted(directory.glob("*.prof")):
        stats = pstats.Stats(str(path))
        by_bucket = self_time_by_bucket(stats)
        whole = sum(by_bucket.values())
        if whole < 0.05:
            continue  # a service the phase did not call
        print(f"\n==== {path.stem}: {whole:.2f} s of main-thread CPU (profiler on), self time by bucket:")
        for bucket, seconds in sorted(by_bucket.items(), key=lambda item: -item[1]):
            print(f"  {bucket:<24} {seconds:7.3f} s  {100 * seconds / whole:5.1f} %")
        entries = stats.stats  # type: ignore[attr-defined]
        stages = sorted(
            (
                (cumtime, f"{Path(f).name}:{line}({name})")
                for (f, line, name), (_, _, _, cumtime, _) in entries.items()
                if "filestore" in f
            ),
            reverse=True,
        )[:top]
        print("  Filestore functions by cumulative time:")
        for cumtime, where in stages:
            print(f"    {cumtime:7.3f} s  {100 * cumtime / whole:5.1f} %  {where}")


# ------------------------------------------------------------------------------ main


@dataclass(frozen=True)
class Rig:
    """What every phase uses: the meter and one caller per RPC measured."""

    meter: Meter
    echo: Callable[[int], Awaitable[object]]
    create: Callable[[int], Awaitable[object]]
    create_multipart: Callable[[int], Awaitable[object]]
    download: Callable[[int], Awaitable[object]]


BROKER_SIDE = ("upload", "metadata")
DOWNLOAD_SIDE = ("download", "metadata")


async def cost_per_call(rig: Rig) -> tuple[dict[str, str], float, float]:
    """Step 1: the figures, the echo's closed-loop rate and single CreateUpload's."""
    print(f"\n1. CPU per call: {CALLS} calls ({MULTIPART_CALLS} multipart), {IN_FLIGHT} in flight")
    meter = rig.meter
    echo_first = await closed_loop("Echo", rig.echo, meter, calls=CALLS)
    single = await closed_loop(
        "CreateUpload (single)", rig.create, meter, calls=CALLS, profile="create-single"
    )
    multipart = await closed_loop(
        "CreateUpload (multipart)",
        rig.create_multipart,
        meter,
        calls=MULTIPART_CALLS,
        warmup=WARMUP // 3,
        profile="create-multipart",
    )
    signed = await closed_loop("GetDownloadUrl", rig.download, meter, calls=CALLS, profile="get-download-url")
    echo_last = await closed_loop("Echo (again)", rig.echo, meter, calls=CALLS)
    echo_ms = (echo_first.cpu_ms["echo"] + echo_last.cpu_ms["echo"]) / 2
    create_ms = total(single.cpu_ms, BROKER_SIDE)
    multipart_ms = total(multipart.cpu_ms, BROKER_SIDE)
    storage_ms = multipart.cpu_ms["seaweedfs"]
    download_ms = total(signed.cpu_ms, DOWNLOAD_SIDE)
    print(
        f"server CPU per call: echo {echo_ms:.3f} ms (the floor; a call that makes one more call "
        f"costs at least ~{2 * echo_ms:.3f})"
    )
    for name, ms, closed, first, note in (
        ("CreateUpload single", create_ms, single, "upload", ""),
        ("CreateUpload multipart", multipart_ms, multipart, "upload", f"; SeaweedFS {storage_ms:.3f} more"),
        ("GetDownloadUrl", download_ms, signed, "download", f"; NATS {signed.cpu_ms['nats']:.3f} more"),
    ):
        print(
            f"  {name:<23} {ms:.3f} ms ({'broker' if first == 'upload' else first} "
            f"{closed.cpu_ms[first]:.3f} + metadata {closed.cpu_ms['metadata']:.3f}) = "
            f"{ms / echo_ms:.1f} echoes{note}"
        )
    figures = {
        "create_upload_cpu_ms": f"{create_ms:.3f}",
        "get_download_url_cpu_ms": f"{download_ms:.3f}",
        "echo_cpu_ms": f"{echo_ms:.3f}",
        "create_multipart_cpu_ms": f"{multipart_ms:.3f}",
        "storage_cpu_ms_per_multipart_create": f"{storage_ms:.3f}",
    }
    return figures, (echo_first.rate + echo_last.rate) / 2, single.rate


async def latency_at_half_load(rig: Rig, echo_rate: float, create_rate: float) -> dict[str, str]:
    """Step 2: single CreateUpload open loop at half the echo's rate (and at half its own if it
    cannot sustain that)."""
    half = echo_rate / 2
    print(
        f"\n2. open loop, Poisson arrivals, {OPEN_LOOP_S:.0f} s each, at half the echo's rate: {half:.0f}/s"
    )
    echo_open = await open_loop("Echo", rig.echo, rig.meter, rate=half, seconds=OPEN_LOOP_S, offset=0)
    at_half = await open_loop(
        "CreateUpload (single)", rig.create, rig.meter, rate=half, seconds=OPEN_LOOP_S, offset=10_000_000
    )
    figures = {
        "echo_rate": f"{echo_rate:.0f}",
        "create_upload_rate": f"{create_rate:.0f}",
        "create_upload_p99_ms_at_half_load": f"{at_half.p99_ms:.2f}",
        "create_upload_sustained_half_load": "1" if at_half.sustained else "0",
        "echo_p99_ms_at_half_load": f"{echo_open.p99_ms:.2f}",
    }
    if at_half.sustained:
        print(
            f"CreateUpload sustains {half:.0f}/s: p99 {at_half.p99_ms:.2f} ms "
            f"(the echo's: {echo_open.p99_ms:.2f} ms)"
        )
        return figures
    print(
        f"CreateUpload CANNOT sustain {half:.0f}/s (half the echo's rate): it completed "
        f"{at_half.achieved:.0f}/s\n(its p99 there is a queue's); its closed-loop max is "
        f"{create_rate:.0f}/s. At half of that:"
    )
    own = await open_loop(
        "CreateUpload (single)",
        rig.create,
        rig.meter,
        rate=create_rate / 2,
        seconds=OPEN_LOOP_S,
        offset=20_000_000,
    )
    figures["create_upload_p99_ms_at_half_own_max"] = f"{own.p99_ms:.2f}"
    return figures


async def whole_upload(stack: Stack, meter: Meter, path: Path, state_dir: Path) -> dict[str, str]:
    """Step 3: one upload with the default parts and one with 8 MiB parts, per GiB."""
    print(f"\n3. one {UPLOAD_MIB} MiB upload through the SDK, CreateUpload to CompleteUpload answered")
    scale = 1024 / UPLOAD_MIB
    by_default = await upload_cost(stack, path, state_dir, meter, part_size=0)
    by_8mib = await upload_cost(stack, path, state_dir, meter, part_size=8 * MIB)
    per_gib = total(by_default, BROKER_SIDE) * scale
    per_gib_8 = total(by_8mib, BROKER_SIDE) * scale
    scaled = (
        f" (scaled from {UPLOAD_MIB} MiB: create and complete counted {scale:.0f} times)"
        if scale != 1
        else ""
    )
    print(
        f"service CPU (broker + metadata) per GiB uploaded: {per_gib:.1f} ms with the default parts, "
        f"{per_gib_8:.1f} ms with 8 MiB parts{scaled}; SeaweedFS: "
        f"{by_default['seaweedfs'] * scale / 1000:.1f} s per GiB"
    )
    return {
        "service_cpu_ms_per_gib_upload": f"{per_gib:.1f}",
        "service_cpu_ms_per_gib_upload_8mib": f"{per_gib_8:.1f}",
    }


def pin_all(pids: Mapping[str, int]) -> None:
    available = os.sched_getaffinity(0)
    if not {SERVER_CPU, CLIENT_CPU} <= available:
        print("fewer than two CPUs available: nothing pinned")
        return
    for name in ("upload", "metadata", "download", "echo"):
        pin(pids[name], {SERVER_CPU})
    for name in ("seaweedfs", "nats"):
        pin(pids[name], {CLIENT_CPU})
    pin(os.getpid(), {CLIENT_CPU})
    print(
        f"CPU {SERVER_CPU}: metadata, broker, download, echo; CPU {CLIENT_CPU}: this process, SeaweedFS, NATS"
    )


async def main() -> None:
    configure_logging(BENCH_LOG_LEVEL, service="bench")
    profile_dir = Path(PROFILE_DIR).absolute() if PROFILE_DIR else None  # noqa: ASYNC240
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="filestore-bench-cost-") as scratch:
        path = Path(scratch) / "upload.bin"
        await asyncio.to_thread(generate, path, UPLOAD_MIB * MIB)
        async with cost_stack(profile_dir) as stack, echo_process(stack.endpoints.auth_secret) as echo:
            await run(stack, echo, path, Path(scratch) / "state", profile_dir)
    if profile_dir is not None:
        print_profiles(profile_dir)


async def run(
    stack: Stack, echo: tuple[int, int], path: Path, state_dir: Path, profile_dir: Path | None
) -> None:
    e = stack.endpoints
    echo_pid, echo_port = echo
    pids = {name: stack.pids[name] for name in ("upload", "metadata", "download", "seaweedfs", "nats")}
    pids["echo"] = echo_pid
    pin_all(pids)
    if profile_dir is not None:
        print(f"PROFILING: the services run under cProfile, figures inflated; profiles in {profile_dir}")
    print(f"load average before: {load_average()}", flush=True)
    idle = await idle_rates(pids, IDLE_S)
    print(
        f"idle CPU over {IDLE_S:.0f} s, ms per s (subtracted from every phase): "
        + "  ".join(f"{p} {v * 1000:.2f}" for p, v in idle.items()),
        flush=True,
    )
    token = mint_token(e.auth_secret, subject="bench", tenant=TENANT)
    service_token = mint_token(e.auth_secret, subject="service:bench", tenant="*", roles=["service"])
    channels = [
        insecure_channel(f"127.0.0.1:{echo_port}", token=lambda: token),
        insecure_channel(e.upload_addr, token=lambda: token),
        insecure_channel(e.download_addr, token=lambda: token),
        insecure_channel(e.metadata_addr, token=lambda: service_token),
    ]
    try:
        profiler = Profiler(profile_dir, pids) if profile_dir else None
        rig = await make_rig(channels, Meter(pids, idle, profiler))
        figures, echo_rate, create_rate = await cost_per_call(rig)
        figures |= await latency_at_half_load(rig, echo_rate, create_rate)
        figures |= await whole_upload(stack, rig.meter, path, state_dir)
        print(f"load average after: {load_average()}")
        print("RESULT " + " ".join(f"{k}={v}" for k, v in figures.items()))
    finally:
        for channel in channels:
            await channel.close()


async def make_rig(channels: list[grpc.aio.Channel], meter: Meter) -> Rig:
    echo_channel, upload_channel, download_channel, metadata_channel = channels
    echo_rpc: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = echo_channel.unary_unary("/bench.Echo/Echo")
    upload = upload_service_pb2_grpc.UploadServiceStub(upload_channel)
    download = download_service_pb2_grpc.DownloadServiceStub(download_channel)
    file_ids = await ready_files(metadata_service_pb2_grpc.MetadataServiceStub(metadata_channel))
    payload = b"x" * 64

    async def call_echo(i: int) -> object:
        return await echo_rpc(payload)

    async def call_create(i: int) -> object:
        return await upload.CreateUpload(
            upload_service_pb2.CreateUploadRequest(
                name=f"bench-{i}.pdf",
                size=1024 + i,
                content_type="application/pdf",
                request_id=str(uuid.uuid4()),
            )
        )

    async def call_create_multipart(i: int) -> object:
        created = await upload.CreateUpload(
            upload_service_pb2.CreateUploadRequest(
                name=f"bench-{i}.bin",
                size=1024 * MIB,
                content_type="application/octet-stream",
                kind=Kind.UPLOAD_KIND_MULTIPART,
                part_checksum_algorithm=resources_pb2.CHECKSUM_ALGORITHM_CRC32,
                request_id=str(uuid.uuid4()),
            )
        )
        assert created.upload.kind == Kind.UPLOAD_KIND_MULTIPART
        return created

    async def call_download(i: int) -> object:
        return await download.GetDownloadUrl(
            download_service_pb2.GetDownloadUrlRequest(file_id=file_ids[i % len(file_ids)])
        )

    return Rig(meter, call_echo, call_create, call_create_multipart, call_download)


if __name__ == "__main__":
    asyncio.run(main())
