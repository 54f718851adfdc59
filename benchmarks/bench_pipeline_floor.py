"""make bench-pipeline-floor: the processor's required path (integrity, sniff, scan) on a 1 GiB file
against its floor, the same work done by a minimal script, in the same run, on the same storage and
the same clamd.

The stack is the default one (SeaweedFS, NATS, clamd, the four services, metadata on SQLite). Each
round uploads a fresh 1 GiB object (random bytes, different in every round, so nothing deduplicates),
then measures, one after the other, with storage and clamd let settle in between:

* pipeline: from the CompleteUpload call to the file's READY event on NATS. The processor claims
  the file, HEADs the object, streams it for SHA-256 (``FILESTORE_READ_CHUNK_BYTES``, 1 MiB), records
  the digest, reads 8 KiB for libmagic, streams the object again into clamd's INSTREAM (64 KiB
  frames), records the outcomes and READY, HEADs again. The steps' own durations are read from the
  processor's ``filestore_pipeline_step_duration_seconds`` and printed beside the wall time;
* floor, one fetch: a script (this module, ``--floor``, in a process of its own) GETs the same object
  with boto3 in 1 MiB chunks, hashes each chunk and sends it to the same clamd in 64 KiB INSTREAM
  frames, then reads the verdict. This is the work the required path must do, done once per byte:
  the headline floor, ``pipeline_vs_floor``;
* floor, two fetches: the same script hashing one GET and scanning a second one, as the pipeline
  reads the object (its integrity digest is recorded before the scan, because a digest the tenant
  already holds points the scan at the shared copy). The ratio against it,
  ``pipeline_vs_floor_two_fetches``, shows what the pipeline's machinery costs beyond its design
  (the second read); the gap between the two floors is what reading once would save.

Ratios are floor wall / pipeline wall of the best (shortest) run of each (the timeit rule: the best
is the least disturbed; the machine may be shared); 1.0 means the pipeline costs nothing over the
bytes' own work. CPU: the reader, the processor or the floor script, is pinned to the last CPU
(``sched_setaffinity`` on each of its threads); SeaweedFS, clamd and this process are unpinned, the
same for both sides. MiB/s per core is bytes over the reader's CPU seconds (user + system, from
``/proc``): the processor's over the pipeline run, the script's over its run. clamd's and storage's
CPU over each run are printed too.

FILESTORE_BENCH_QUICK=1: 64 MiB objects, for trying it out.

Ends with: RESULT pipeline_vs_floor=<r> pipeline_vs_floor_two_fetches=<r> pipeline_mib_s=<m>
floor_mib_s=<m> pipeline_mib_s_per_core=<m> floor_mib_s_per_core=<m>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import grpc
import httpx
import nats
from botocore.config import Config

from benchmarks._common import BENCH_LOG_LEVEL, QUICK, load_average
from benchmarks.bench_processor import ReadyEvents, generated
from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.core.keys import original_key
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import resources_pb2, upload_service_pb2, upload_service_pb2_grpc

MIB = 1024 * 1024
SIZE = (64 if QUICK else 1024) * MIB
ROUNDS = 2
#: The processor's defaults (FILESTORE_READ_CHUNK_BYTES, PipelineSettings.scan_chunk_bytes): the floor
#: reads and frames the same way.
READ_CHUNK = 1024 * 1024
FRAME = 64 * 1024
STEPS = ("integrity", "sniff", "scan")
#: A process is settled when it used less than this share of a CPU over SETTLE_WINDOW_S.
SETTLE_CPU_SHARE = 0.05
SETTLE_WINDOW_S = 1.0
SETTLE_LIMIT_S = 60.0
_STEP_SUM = re.compile(
    r'^filestore_pipeline_step_duration_seconds_sum\{(?=[^}]*step="(\w+)")[^}]*\}\s+([0-9.e+-]+)$',
    re.MULTILINE,
)


# ------------------------------------------------------------------------------------ the floor


def _s3(endpoint: str, access_key: str, secret_key: str, region: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(region_name=region, s3={"addressing_style": "path"}),
    )


def _chunks(client: Any, bucket: str, key: str) -> Any:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        yield from body.iter_chunks(READ_CHUNK)
    finally:
        body.close()


def floor(spec: dict[str, Any]) -> dict[str, Any]:
    """The minimal required path: GET, SHA-256, clamd INSTREAM; one GET for both, or one each."""
    started = time.perf_counter()
    cpu = time.process_time()
    client = _s3(spec["endpoint"], spec["access_key"], spec["secret_key"], spec["region"])
    host, _, port = spec["clamd"].rpartition(":")
    hasher = hashlib.sha256()
    size = 0
    if spec["two_fetches"]:
        for chunk in _chunks(client, spec["bucket"], spec["key"]):
            hasher.update(chunk)
            size += len(chunk)
    with socket.create_connection((host, int(port))) as clamd:
        clamd.sendall(b"zINSTREAM\0")
        for chunk in _chunks(client, spec["bucket"], spec["key"]):
            if not spec["two_fetches"]:
                hasher.update(chunk)
                size += len(chunk)
            view = memoryview(chunk)
            for start in range(0, len(view), FRAME):
                frame = view[start : start + FRAME]
                clamd.sendall(struct.pack("!L", len(frame)))
                clamd.sendall(frame)
        clamd.sendall(struct.pack("!L", 0))
        reply = b""
        while not reply.endswith(b"\0"):
            piece = clamd.recv(4096)
            if not piece:
                break
            reply += piece
    return {
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
        "sha256": hasher.hexdigest(),
        "size": size,
        "verdict": reply.rstrip(b"\0").decode(),
    }


# ------------------------------------------------------------------------------------ measuring


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads; ``/proc/<pid>/stat`` 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` (threads made later inherit it from the thread making them)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


async def settle(pids: list[int]) -> None:
    """Wait until none of ``pids`` is busy (storage flushing, a late event), at most SETTLE_LIMIT_S."""
    deadline = time.monotonic() + SETTLE_LIMIT_S
    while time.monotonic() < deadline:
        used = [cpu_seconds(pid) for pid in pids]
        await asyncio.sleep(SETTLE_WINDOW_S)
        if all(
            cpu_seconds(pid) - u < SETTLE_CPU_SHARE * SETTLE_WINDOW_S
            for pid, u in zip(pids, used, strict=True)
        ):
            return


async def step_seconds(http: httpx.AsyncClient, url: str) -> dict[str, float]:
    """Total seconds each pipeline step has taken in the processor so far (all outcomes)."""
    text = (await http.get(url)).text
    totals: dict[str, float] = {}
    for step, value in _STEP_SUM.findall(text):
        totals[step] = totals.get(step, 0.0) + float(value)
    return totals


@dataclass(frozen=True, slots=True)
class Side:
    wall_s: float
    cpu_s: float  # the reader's: the processor, or the floor script
    clamd_cpu_s: float
    storage_cpu_s: float

    def line(self, name: str, extra: str = "") -> str:
        mib = SIZE / MIB
        return (
            f"{name:<20} {self.wall_s:6.2f} s {mib / self.wall_s:6.0f} MiB/s  reader CPU {self.cpu_s:6.2f} s "
            f"({mib / self.cpu_s:5.0f} MiB/s per core)   clamd {self.clamd_cpu_s:5.2f} s   storage "
            f"{self.storage_cpu_s:5.2f} s{extra}"
        )


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="filestore-bench-") as home:
        config = StackConfig(
            home=Path(home),
            ports=StackPorts.free(),
            ready_timeout_s=90.0,
            log_level=BENCH_LOG_LEVEL,
            extra_env={"upload": {"FILESTORE_MAX_UPLOAD_BYTES": str(5 * 1024 * MIB)}},
        )
        async with Stack(config) as stack:
            await run(stack)


@dataclass
class Bench:
    """What the measurements of one run share: the stack's pids, clients and the READY events."""

    stack: Stack
    upload: upload_service_pb2_grpc.UploadServiceAsyncStub
    http: httpx.AsyncClient
    ready: ReadyEvents
    reader_cpus: set[int]

    @property
    def pids(self) -> list[int]:
        """The processor, clamd and storage."""
        return [self.stack.pids[c] for c in ("processor", "clamd", "seaweedfs")]

    async def pipeline(self, created: Any) -> Side:
        """CompleteUpload of an uploaded file, to its READY event; prints the steps' durations."""
        endpoints = self.stack.endpoints
        metrics_url = f"http://{endpoints.host}:{self.stack.config.ports.metrics_port('processor')}/metrics"
        await settle(self.pids)
        steps_before = await step_seconds(self.http, metrics_url)
        cpu_before = [cpu_seconds(p) for p in self.pids]
        started = time.perf_counter()
        await self.upload.CompleteUpload(
            upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id)
        )
        done, status = await self.ready.wait(created.file.id)
        cpu_after = [cpu_seconds(p) for p in self.pids]
        if status != resources_pb2.FILE_STATUS_READY:
            raise RuntimeError(f"the file ended in status {status}, not READY")
        steps_after = await step_seconds(self.http, metrics_url)
        side = Side(done - started, *(a - b for a, b in zip(cpu_after, cpu_before, strict=True)))
        steps = "  ".join(f"{s} {steps_after.get(s, 0.0) - steps_before.get(s, 0.0):.2f} s" for s in STEPS)
        print(side.line("pipeline", f"   steps: {steps}"), flush=True)
        return side

    async def floor(self, file_id: str, *, two_fetches: bool) -> Side:
        """The floor script on an uploaded file's object."""
        endpoints = self.stack.endpoints
        admin = endpoints.admin_s3_settings()
        spec = {
            "endpoint": admin.endpoint,
            "access_key": admin.access_key,
            "secret_key": admin.secret_key,
            "region": admin.region,
            "bucket": admin.bucket,
            "key": original_key("bench", file_id),
            "clamd": endpoints.clamd_addr,
            "two_fetches": two_fetches,
        }
        await settle(self.pids)
        others = self.pids[1:]
        before = [cpu_seconds(p) for p in others]
        found = await run_floor(spec, self.reader_cpus)
        after = [cpu_seconds(p) for p in others]
        if found["size"] != SIZE or not found["verdict"].endswith("OK"):
            raise RuntimeError(f"the floor read {found['size']} bytes, clamd said {found['verdict']}")
        side = Side(found["wall_s"], found["cpu_s"], *(a - b for a, b in zip(after, before, strict=True)))
        print(side.line("floor, two fetches" if two_fetches else "floor, one fetch"), flush=True)
        return side


async def run(stack: Stack) -> None:
    if "clamd" not in stack.components:
        raise SystemExit("clamd is not running: the required path would skip the scan (make system-deps)")
    endpoints = stack.endpoints
    cpus = sorted(os.sched_getaffinity(0))
    pin(stack.pids["processor"], {cpus[-1]})
    token = mint_token(endpoints.auth_secret, subject="bench", tenant="bench")
    channel: grpc.aio.Channel = insecure_channel(endpoints.upload_addr, token=lambda: token)
    ready = ReadyEvents()
    connection = await nats.connect(endpoints.nats_url)
    await connection.subscribe("files.file.ready", cb=ready.on_message)
    await connection.flush()
    print(
        f"{SIZE / MIB:.0f} MiB objects, {ROUNDS} rounds; reader (processor / floor script) on CPU "
        f"{cpus[-1]} of {cpus}; read chunk {READ_CHUNK // 1024} KiB, INSTREAM frames {FRAME // 1024} KiB"
    )
    print(f"load average before: {load_average()}")
    pipeline: list[Side] = []
    one: list[Side] = []
    two: list[Side] = []
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as http:
            bench = Bench(stack, upload_service_pb2_grpc.UploadServiceStub(channel), http, ready, {cpus[-1]})
            for round_ in range(ROUNDS):
                print(f"round {round_ + 1} of {ROUNDS}")
                # Three objects of fresh random bytes: clamd remembers content it found clean (its
                # cache, by hash) and would scan a second copy of the same bytes in no time.
                created, *floors = [
                    await put_object(bench.upload, http, f"floor-{round_}-{n}.bin") for n in range(3)
                ]
                pipeline.append(await bench.pipeline(created))
                one.append(await bench.floor(floors[0].file.id, two_fetches=False))
                two.append(await bench.floor(floors[1].file.id, two_fetches=True))
    finally:
        await connection.close()
        await channel.close()
    best = min(pipeline, key=lambda s: s.wall_s)
    best_one = min(one, key=lambda s: s.wall_s)
    best_two = min(two, key=lambda s: s.wall_s)
    ratio, ratio_two = best_one.wall_s / best.wall_s, best_two.wall_s / best.wall_s
    mib = SIZE / MIB
    print(
        f"best walls: pipeline {best.wall_s:.2f} s, floor (one fetch) {best_one.wall_s:.2f} s, "
        f"floor (two fetches) {best_two.wall_s:.2f} s"
    )
    print(f"floor / pipeline: {ratio:.2f} (one fetch), {ratio_two:.2f} (two fetches, as the pipeline reads)")
    print(f"load average after: {load_average()}")
    print(
        f"RESULT pipeline_vs_floor={ratio:.2f} pipeline_vs_floor_two_fetches={ratio_two:.2f} "
        f"pipeline_mib_s={mib / best.wall_s:.0f} floor_mib_s={mib / best_one.wall_s:.0f} "
        f"pipeline_mib_s_per_core={mib / best.cpu_s:.0f} floor_mib_s_per_core={mib / best_one.cpu_s:.0f}"
    )


async def put_object(
    upload: upload_service_pb2_grpc.UploadServiceAsyncStub, http: httpx.AsyncClient, name: str
) -> Any:
    """A new file's object in storage (its upload not completed yet): the CreateUpload answer."""
    created = await upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name=name,
            size=SIZE,
            content_type="application/octet-stream",
            kind=resources_pb2.UPLOAD_KIND_SINGLE,
        )
    )
    request = created.upload.request
    # A streamed body needs its length set: the URL signs Content-Length, and no chunking.
    headers = {**request.headers, "Content-Length": str(SIZE)}
    put = await http.put(request.url, content=generated(SIZE), headers=headers)
    if put.status_code != 200:
        raise RuntimeError(f"PUT {put.status_code}: {put.text[:500]}")
    return created


async def run_floor(spec: dict[str, Any], cpus: set[int]) -> dict[str, Any]:
    """The floor in a process of its own (its CPU is its own), pinned like the processor."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.bench_pipeline_floor",
        "--floor",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        os.sched_setaffinity(child.pid, cpus)
        out, _ = await child.communicate(json.dumps(spec).encode())
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"the floor script exited with {child.returncode}")
    found: dict[str, Any] = json.loads(out)
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--floor", action="store_true", help="run the floor script on a JSON spec from stdin")
    if parser.parse_args().floor:
        print(json.dumps(floor(json.load(sys.stdin))))
    else:
        asyncio.run(main())
