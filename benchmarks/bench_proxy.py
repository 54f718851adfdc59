"""make bench-proxy: the proxy problem, measured. One 1 GiB upload two ways, alternating runs:

* **direct**: the client calls CreateUpload (multipart, 16 MiB parts) on the upload broker, PUTs the
  parts to SeaweedFS itself with the presigned URLs (8 in flight), then CompleteUpload.
* **proxy**: the client streams the file to a naive proxy server (``benchmarks/naive_proxy.py``: it
  receives the body into a temporary file, then re-uploads it with boto3's ``upload_file``, same part
  size and concurrency), the way an app server that handles uploads itself works.

The services are separate processes: the broker and metadata are the embedded stack's own
(``filestore-upload``, ``filestore-metadata``, on SQLite), the proxy is a process of its own; the
client is this process. The processor is not started (its streaming reads of the stored object are
the processing path, not the upload path, and would compete for the CPU during the timing).

For each run and each service process (broker, metadata, proxy):

* **wall time**: from the first request the client makes to the answer of its last one.
* **bytes through the process**: TCP payload bytes in and out of the sockets the process owns,
  read from the kernel's per-socket counters (``tcp_info``: ``bytes_received`` and
  ``bytes_acked``) with ``ss -tinpe``, attributed by the pids ss reports as the sockets' owners.
  ``/proc/<pid>/io`` is not used because its ``rchar``/``wchar`` also count file I/O, and the proxy
  spools to disk. Sockets are sampled every 100 ms and once more right after the client has its
  answer (before anything is closed); a socket's bytes are its last sample minus its sample before
  the run (zero for sockets opened during the run). All the connections involved are long-lived
  (gRPC channels, urllib3's pool, the client's keep-alive connection), so sampling misses nothing
  of consequence; a socket opened and closed within 100 ms would be missed, and none carries the
  body: the proxy's count must reach 2 GiB (in and out), and the script checks that it does.
* **peak RSS**: ``VmHWM`` of ``/proc/<pid>/status``, reset before each run by writing 5 to
  ``/proc/<pid>/clear_refs`` (the kernel resets it to the current RSS, so it is the larger of what
  the process held when the run began and its peak during the run, not start-up's peak).
* **CPU seconds**: utime + stime from ``/proc/<pid>/stat``, the difference across the run.

Medians over ``ROUNDS`` runs each. The machine is shared: the load average is printed alongside.

Reading the wall ratio: the proxy's time is receiving the body plus storing it (the proxy reports
both), and here the client-to-proxy hop is loopback, nearly free, while in a deployment it is the
same client link the direct path uses, so the body crosses it and then the proxy's link to storage.
On one machine the ratio is therefore about store / (receive + store), which is the most favourable
case for the proxy; the bytes, memory and CPU figures do not depend on that.

Ends with: RESULT direct_vs_proxy_wall=<r> service_bytes_direct=<b> proxy_peak_rss_mib=<m>
(then the two wall times and the proxy path's service bytes).
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import httpx
from botocore.config import Config

from benchmarks._common import BENCH_LOG_LEVEL, load_average, temporary_stack
from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.core.keys import original_key
from filestore.server.logging import configure_logging
from filestore.stack import Stack
from filestore.v1 import resources_pb2, upload_service_pb2, upload_service_pb2_grpc

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

MIB = 1024**2
SIZE = 1024 * MIB
PART_SIZE = 16 * MIB
CONCURRENCY = 8
ROUNDS = 3  # each round: one direct and one proxied upload, in alternating order
SAMPLE_INTERVAL_S = 0.1
READ_CHUNK = MIB
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_INODE = re.compile(r"\bino:(\d+)")
_OWNER_PID = re.compile(r"pid=(\d+)")
_COUNTER = re.compile(r"\b(bytes_acked|bytes_received):(\d+)")


# ------------------------------------------------------------------------------------ measurement


def socket_counters(pids: set[int]) -> dict[tuple[int, int], tuple[int, int]]:
    """{(pid, socket inode): (bytes acked out, bytes received in)} of every TCP socket of ``pids``."""
    listing = subprocess.run(["ss", "-tinpeH"], capture_output=True, text=True, check=True).stdout
    counters: dict[tuple[int, int], tuple[int, int]] = {}
    owners: list[int] = []
    inode = 0
    for line in listing.splitlines():
        if not line.startswith((" ", "\t")):
            # A socket's first line: addresses, owners (a socket shared after fork has several), inode.
            owners = [int(pid) for pid in _OWNER_PID.findall(line) if int(pid) in pids]
            found = _INODE.search(line)
            inode = int(found.group(1)) if found else 0
            continue
        if not owners or not inode:
            continue
        # ss leaves a counter out while it is zero.
        values = dict(_COUNTER.findall(line))
        out, into = int(values.get("bytes_acked", 0)), int(values.get("bytes_received", 0))
        for pid in owners:
            counters[(pid, inode)] = (out, into)
    return counters


class SocketTraffic:
    """Bytes through the sockets of some processes during a run, sampled in a background thread."""

    def __init__(self, pids: set[int]) -> None:
        self._pids = pids
        self._before = socket_counters(pids)
        self._last = dict(self._before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="ss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._last.update(socket_counters(self._pids))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def finish(self) -> dict[int, tuple[int, int]]:
        """Stop sampling and answer {pid: (bytes out, bytes in)} during the run."""
        self.stop()
        self._last.update(socket_counters(self._pids))
        totals = {pid: (0, 0) for pid in self._pids}
        for (pid, inode), (out, into) in self._last.items():
            before_out, before_in = self._before.get((pid, inode), (0, 0))
            total_out, total_in = totals[pid]
            totals[pid] = (total_out + out - before_out, total_in + into - before_in)
        return totals


def cpu_seconds(pid: int) -> float:
    # Fields after the command name (which may contain spaces): utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    bytes_out: int
    bytes_in: int
    peak_rss_mib: float
    cpu_s: float

    @property
    def bytes_total(self) -> int:
        return self.bytes_out + self.bytes_in


@dataclass(frozen=True, slots=True)
class Run:
    path: str
    wall_s: float
    usage: dict[str, ProcessUsage]
    detail: str = ""

    @property
    def service_bytes(self) -> int:
        return sum(u.bytes_total for u in self.usage.values())


class ProcessWatch:
    """CPU, peak RSS and socket bytes of the named processes across one run."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)

    def __enter__(self) -> ProcessWatch:
        for pid in self._pids.values():
            reset_peak_rss(pid)
        self._cpu = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        self._traffic = SocketTraffic(set(self._pids.values()))
        return self

    def __exit__(self, *exc: object) -> None:
        self._traffic.stop()

    def usage(self) -> dict[str, ProcessUsage]:
        """Call as soon as the run ends, before the client closes its connections."""
        traffic = self._traffic.finish()
        return {
            name: ProcessUsage(
                bytes_out=traffic[pid][0],
                bytes_in=traffic[pid][1],
                peak_rss_mib=peak_rss_mib(pid),
                cpu_s=cpu_seconds(pid) - self._cpu[name],
            )
            for name, pid in self._pids.items()
        }


# ---------------------------------------------------------------------------------- the two paths


def generate(path: Path) -> None:
    with path.open("wb") as out:
        for _ in range(SIZE // (64 * MIB)):
            out.write(os.urandom(64 * MIB))


async def direct_upload(
    upload: upload_service_pb2_grpc.UploadServiceAsyncStub,
    http: httpx.AsyncClient,
    path: Path,
    size: int = SIZE,
) -> str:
    """CreateUpload, the parts straight to storage, CompleteUpload; answers the object key."""
    created = await upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name=path.name,
            size=size,
            content_type="application/octet-stream",
            kind=resources_pb2.UPLOAD_KIND_MULTIPART,
            part_size=PART_SIZE,
            request_id=str(uuid.uuid4()),
        )
    )
    plan = created.upload
    parts = {part.part_number: part for part in plan.part_urls}
    # CreateUpload signs the first parts; one SignParts call signs the rest.
    unsigned = [number for number in range(1, plan.part_count + 1) if number not in parts]
    if unsigned:
        signed = await upload.SignParts(
            upload_service_pb2.SignPartsRequest(upload_id=plan.id, part_numbers=unsigned)
        )
        parts.update({part.part_number: part for part in signed.part_urls})
    slots = asyncio.Semaphore(CONCURRENCY)
    fd = os.open(path, os.O_RDONLY)

    async def put(part: resources_pb2.PartUrl) -> None:
        async with slots:
            offset = (part.part_number - 1) * plan.part_size
            body = await asyncio.to_thread(os.pread, fd, part.size, offset)
            headers = {**part.request.headers, "Content-Length": str(len(body))}
            response = await http.put(part.request.url, content=body, headers=headers)
            response.raise_for_status()

    try:
        await asyncio.gather(*(put(part) for part in parts.values()))
    finally:
        os.close(fd)
    completed = await upload.CompleteUpload(
        upload_service_pb2.CompleteUploadRequest(upload_id=plan.id, request_id=str(uuid.uuid4()))
    )
    if completed.file.size != size:
        raise RuntimeError(f"stored {completed.file.size} bytes, sent {size}")
    return original_key(completed.file.tenant, completed.file.id)


async def file_body(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, READ_CHUNK):
            yield chunk


async def proxied_upload(
    http: httpx.AsyncClient, proxy_url: str, path: Path, size: int = SIZE
) -> tuple[str, str]:
    """The whole file in one PUT to the proxy; answers the object key the proxy wrote, and how
    long it spent receiving and storing."""
    response = await http.put(
        f"{proxy_url}/upload/{path.name}",
        content=file_body(path),
        # With a length, httpx sends the body as it is, not chunked (as a browser's upload does).
        headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
    )
    response.raise_for_status()
    answer = response.json()
    if answer["size"] != size:
        raise RuntimeError(f"the proxy stored {answer['size']} bytes, sent {size}")
    return str(answer["key"]), f"receive {answer['receive_s']:.2f} s + store {answer['store_s']:.2f} s"


# ------------------------------------------------------------------------------------- the runner


def s3_admin(stack: Stack) -> S3Client:
    e = stack.endpoints
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=e.s3_endpoint,
        region_name=e.s3_region,
        aws_access_key_id=e.s3_access_key,
        aws_secret_access_key=e.s3_secret_key,
        config=Config(s3={"addressing_style": "path"}),
    )
    return client


async def start_proxy(
    stack: Stack, spool_dir: Path, *, listen_host: str = "127.0.0.1", s3_endpoint: str | None = None
) -> asyncio.subprocess.Process:
    """The naive proxy on a free port of ``listen_host``, storing to the stack's S3 endpoint (or
    ``s3_endpoint``: the same storage by another road, e.g. a relay across a shaped link)."""
    e = stack.endpoints
    env = {
        **os.environ,
        "PROXY_LISTEN_HOST": listen_host,
        "PROXY_S3_ENDPOINT": s3_endpoint or e.s3_endpoint,
        "PROXY_S3_REGION": e.s3_region,
        "PROXY_S3_BUCKET": e.bucket,
        "PROXY_PART_SIZE": str(PART_SIZE),
        "PROXY_CONCURRENCY": str(CONCURRENCY),
        "PROXY_SPOOL_DIR": str(spool_dir),
        "AWS_ACCESS_KEY_ID": e.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": e.s3_secret_key,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.naive_proxy", env=env, stdout=asyncio.subprocess.PIPE
    )


def describe(run: Run) -> str:
    processes = "  ".join(
        f"{name} {u.bytes_total / MIB:9.3f} MiB {u.peak_rss_mib:6.1f} MiB-RSS {u.cpu_s:5.2f} s-CPU"
        for name, u in run.usage.items()
    )
    detail = f" ({run.detail})" if run.detail else ""
    return f"{run.path:<6} {run.wall_s:6.2f} s  {SIZE / MIB / run.wall_s:6.1f} MiB/s | {processes}{detail}"


async def main() -> None:
    configure_logging(BENCH_LOG_LEVEL, service="bench")
    with tempfile.TemporaryDirectory(prefix="filestore-bench-proxy-") as scratch:
        path = Path(scratch) / "one-gib.bin"
        generate(path)
        spool = Path(scratch) / "spool"
        spool.mkdir()
        async with temporary_stack(("seaweedfs", "nats", "metadata", "upload")) as stack:
            e = stack.endpoints
            proxy = await start_proxy(stack, spool)
            assert proxy.stdout is not None
            port = (await asyncio.wait_for(proxy.stdout.readline(), 30)).decode().split()[1]
            token = mint_token(e.auth_secret, subject="bench", tenant="bench", ttl_s=24 * 3600)
            channel = insecure_channel(e.upload_addr, token=lambda: token)
            upload = upload_service_pb2_grpc.UploadServiceStub(channel)
            s3 = s3_admin(stack)
            pids = {"broker": stack.pids["upload"], "metadata": stack.pids["metadata"], "proxy": proxy.pid}
            runs: list[Run] = []
            limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
            try:
                async with httpx.AsyncClient(timeout=None, limits=limits) as http:
                    print(
                        f"1 GiB, {PART_SIZE // MIB} MiB parts, {CONCURRENCY} in flight, "
                        f"{ROUNDS} rounds alternating; bytes/RSS/CPU per service process"
                    )
                    print(f"load average before: {load_average()}", flush=True)
                    for round_number in range(ROUNDS):
                        # Alternate who goes first, so neither always meets a warmer (or fuller) storage.
                        order = ("direct", "proxy") if round_number % 2 == 0 else ("proxy", "direct")
                        for which in order:
                            with ProcessWatch(pids) as watch:
                                started = time.perf_counter()
                                if which == "direct":
                                    key, detail = await direct_upload(upload, http, path), ""
                                else:
                                    key, detail = await proxied_upload(http, f"http://127.0.0.1:{port}", path)
                                wall = time.perf_counter() - started
                                usage = watch.usage()
                            runs.append(Run(which, wall, usage, detail))
                            print(f"round {round_number + 1} {describe(runs[-1])}", flush=True)
                            # Storage does the same work every run.
                            await asyncio.to_thread(s3.delete_object, Bucket=e.bucket, Key=key)
            finally:
                await channel.close()
                proxy.terminate()
                await proxy.wait()
            report(runs)


def report(runs: list[Run]) -> None:
    direct = [r for r in runs if r.path == "direct"]
    proxied = [r for r in runs if r.path == "proxy"]
    proxy_bytes = statistics.median(r.usage["proxy"].bytes_total for r in proxied)
    if proxy_bytes < 2 * SIZE:
        # The proxy must have received and sent the whole body; less means sockets went uncounted.
        raise RuntimeError(f"counted {proxy_bytes} bytes through the proxy, below 2 x {SIZE}")
    direct_wall = statistics.median(r.wall_s for r in direct)
    proxy_wall = statistics.median(r.wall_s for r in proxied)
    direct_bytes = statistics.median(r.service_bytes for r in direct)
    proxy_service_bytes = statistics.median(r.service_bytes for r in proxied)
    proxy_rss = statistics.median(r.usage["proxy"].peak_rss_mib for r in proxied)
    print("medians:")
    for name, chosen in (("direct", direct), ("proxy", proxied)):
        wall = statistics.median(r.wall_s for r in chosen)
        print(
            f"  {name}: wall {wall:.2f} s, service bytes {statistics.median(r.service_bytes for r in chosen)}"
        )
        for process in chosen[0].usage:
            rss = statistics.median(r.usage[process].peak_rss_mib for r in chosen)
            cpu = statistics.median(r.usage[process].cpu_s for r in chosen)
            sent = statistics.median(r.usage[process].bytes_total for r in chosen)
            print(f"    {process:<9} {sent:>14,.0f} bytes  peak RSS {rss:6.1f} MiB  CPU {cpu:5.2f} s")
    print(f"load average after: {load_average()}")
    print(
        f"RESULT direct_vs_proxy_wall={direct_wall / proxy_wall:.2f} service_bytes_direct={direct_bytes:.0f} "
        f"proxy_peak_rss_mib={proxy_rss:.1f} direct_s={direct_wall:.2f} proxy_s={proxy_wall:.2f} "
        f"service_bytes_proxy={proxy_service_bytes:.0f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
