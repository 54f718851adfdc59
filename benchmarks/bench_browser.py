"""make bench-browser: an upload from a web page against the same upload from the Python SDK. One
300 MiB file (``FILESTORE_BENCH_QUICK=1``: 48 MiB), two ways, alternating runs in the same stack:

* **browser**: headless Chromium (Debian's, driven by Playwright, as in the browser tests) loads the
  browser tests' page (``tests/web``, with the client bundled from ``clients/web`` by esbuild, as
  ``make web`` does, unminified), which uploads the file with the client's engine: CreateUpload,
  SignParts and CompleteUpload over Connect through the browser face (``filestore-edge``) to the
  broker, the parts PUT from the page straight to SeaweedFS with ``XMLHttpRequest``, CRC32 of each
  part in WASM.
* **sdk**: ``filestore.client.AsyncClient.upload`` from this process, the same calls over gRPC
  straight to the broker, the parts PUT with httpx, CRC32 of each part.

Both with 16 MiB parts, 4 in flight (the browser client's default; the SDK's is 8) and CRC32. The
page fetches the file from the test page server into a Blob before its run (not timed, as the
SDK's file is in the page cache); each side times its own client, from the upload call to the
file UPLOADED (the page with ``performance.now()``). The stack: SeaweedFS, NATS, metadata, the
broker and the face, on SQLite; no processor (its reads of the stored object are the processing
path, which would compete for the two cores during the timing), no download service (not called).
Each run uploads as a tenant of its own; its object's size is checked in storage, then the object is
deleted, so storage does the same work every run. Before the rounds, one small upload each way
opens the connections the runs then reuse (Chromium's to the face, the face's and the SDK's channels).

During each browser run, for the face, the broker and the metadata service (Filestore's processes
the upload involves): the TCP payload bytes through their sockets and their CPU seconds, with
``ProcessWatch`` of ``benchmarks/bench_proxy.py`` (the kernel's per-socket counters through
``ss``, sampled every 100 ms; see there). The bytes of the file must not cross any of them. For
every run, the CPU seconds of the client (every Chromium process: browser, renderer, network, GPU;
or this process, the SDK's) and of SeaweedFS: on two cores the run is CPU-bound, its wall at least
(storage + client + services CPU) / 2. Before the rounds, the page's time to CRC32 one part.

Medians over ``ROUNDS`` runs each. The machine is shared: the load average is printed alongside.

Ends with: RESULT browser_vs_sdk_wall=<browser wall / sdk wall> service_bytes_browser=<bytes>
(then the two wall times, and the CPU seconds of the face and the broker during the browser run).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

from benchmarks._common import BENCH_LOG_LEVEL, QUICK, load_average, temporary_stack
from benchmarks.bench_proxy import ProcessUsage, ProcessWatch, cpu_seconds, s3_admin
from filestore.client import AsyncClient, Endpoints, TransferOptions
from filestore.core.auth import mint_token
from filestore.core.keys import original_key
from filestore.server.logging import configure_logging
from filestore.stack import Stack
from tests.browser import CHROMIUM, install_pages, page_server

MIB = 1024**2
SIZE = (48 if QUICK else 300) * MIB
PART_SIZE = 16 * MIB
CONCURRENCY = 4
ROUNDS = 1 if QUICK else 3  # each round: one browser and one SDK upload, in alternating order
WARMUP_SIZE = MIB
COMPONENTS = ("seaweedfs", "nats", "metadata", "upload", "edge")


@dataclass(frozen=True, slots=True)
class Run:
    path: str
    wall_s: float
    #: CPU seconds of the uploading client: every Chromium process, or this (the SDK's) process.
    client_cpu_s: float
    #: CPU seconds of SeaweedFS (its bytes are the file's, so not counted with the services').
    storage_cpu_s: float
    usage: Mapping[str, ProcessUsage]

    @property
    def service_bytes(self) -> int:
        return sum(u.bytes_total for u in self.usage.values())


def chromium_pids() -> list[int]:
    """This process's Chromium processes (the browser, its zygotes, renderers, GPU and network
    processes), found among its descendants by their command name."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, _, rest = (entry / "stat").read_text().rpartition(")")
        except OSError:
            continue  # ended meanwhile
        names[int(entry.name)] = head.partition("(")[2]
        parents[int(entry.name)] = int(rest.split()[1])

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, name in names.items() if name.startswith("chrom") and descends(pid)]


def write_file(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("wb") as out:
        for _ in range(size // MIB):
            out.write(rng.randbytes(MIB))


def tenant_token(stack: Stack) -> tuple[str, str]:
    """A tenant of the run's own (its quota and listings untouched by the others) and its token."""
    tenant = f"bench-{uuid.uuid4().hex[:12]}"
    return tenant, mint_token(stack.endpoints.auth_secret, subject="bench", tenant=tenant, ttl_s=3600)


async def browser_upload(page: Page, stack: Stack, file_name: str) -> tuple[float, str, str]:
    """The page uploads ``file_name`` (served beside it); answers its wall time, tenant and file id."""
    tenant, token = tenant_token(stack)
    await page.evaluate("([base, token]) => harness.connect(base, token)", [stack.endpoints.edge_url, token])
    await page.evaluate(
        "([path, partSize, concurrency]) => harness.start(path, 'bench.bin', 1, { partSize, concurrency,"
        " multipartThreshold: partSize, resumeStore: 'memory' })",
        [f"/{file_name}", PART_SIZE, CONCURRENCY],
    )
    result: dict[str, Any] = await page.evaluate("harness.finish()")
    if "error" in result:
        raise RuntimeError(f"the page's upload failed: {result['error']}")
    return result["wallMs"] / 1000, tenant, str(result["fileId"])


async def page_hash_ms(page: Page) -> float:
    """How long the page's client takes to CRC32 one part of bench.bin (read from its Blob and hashed,
    as the engine does), best of three."""
    return float(
        await page.evaluate(
            """async (partSize) => {
              const { digestOfRange } = await import("./filestore-web.js");
              const blob = await (await fetch("/bench.bin")).blob();
              let best = Infinity;
              for (let i = 0; i < 3; i++) {
                const started = performance.now();
                await digestOfRange("crc32", blob, 0, partSize);
                best = Math.min(best, performance.now() - started);
              }
              return best;
            }""",
            PART_SIZE,
        )
    )


async def sdk_upload(stack: Stack, path: Path, state_dir: Path) -> tuple[float, str, str]:
    """``AsyncClient.upload`` of ``path``; answers its wall time, tenant and file id."""
    e = stack.endpoints
    tenant, token = tenant_token(stack)
    endpoints = Endpoints(
        upload=e.upload_addr, metadata=e.metadata_addr, download=e.download_addr, token=token
    )
    options = TransferOptions(multipart_threshold=PART_SIZE, part_size=PART_SIZE, concurrency=CONCURRENCY)
    async with AsyncClient(endpoints, options=options, state_dir=state_dir) as client:
        started = time.perf_counter()
        result = await client.upload(path, resume=False)
        elapsed = time.perf_counter() - started
    return elapsed, tenant, result.file.id


def describe(run: Run) -> str:
    processes = "  ".join(
        f"{name} {u.bytes_total / 1024:8.1f} KiB {u.cpu_s:5.2f} s-CPU" for name, u in run.usage.items()
    )
    return (
        f"{run.path:<7} {run.wall_s:6.2f} s  {SIZE / MIB / run.wall_s:6.1f} MiB/s"
        f"  client {run.client_cpu_s:5.2f} s-CPU  storage {run.storage_cpu_s:5.2f} s-CPU | {processes}"
    )


async def main() -> None:
    configure_logging(BENCH_LOG_LEVEL, service="bench")
    async with AsyncExitStack() as resources:
        scratch = Path(
            resources.enter_context(tempfile.TemporaryDirectory(prefix="filestore-bench-browser-"))
        )
        pages = scratch / "pages"
        origin = resources.enter_context(page_server(pages))
        install_pages(pages)
        write_file(pages / "bench.bin", SIZE, seed=1)
        write_file(pages / "warmup.bin", WARMUP_SIZE, seed=2)
        state_dir = scratch / "sdk-state"
        # The page's origin, allowed by the face and (the broker sets the bucket's CORS rules) storage.
        allowed = {"FILESTORE_CORS_ORIGINS": origin}
        stack = await resources.enter_async_context(
            temporary_stack(COMPONENTS, extra_env={"upload": allowed, "edge": allowed})
        )
        playwright = await resources.enter_async_context(async_playwright())
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        resources.push_async_callback(browser.close)
        page = await browser.new_page()
        await page.goto(f"{origin}/index.html")
        await page.wait_for_function("document.getElementById('state').textContent === 'ready'")
        s3 = s3_admin(stack)
        bucket = stack.endpoints.bucket
        pids = {
            "face": stack.pids["edge"],
            "broker": stack.pids["upload"],
            "metadata": stack.pids["metadata"],
        }

        async def one(which: str, file_name: str) -> tuple[float, str, str]:
            if which == "browser":
                wall, tenant, file_id = await browser_upload(page, stack, file_name)
            else:
                wall, tenant, file_id = await sdk_upload(stack, pages / file_name, state_dir)
            stored = await asyncio.to_thread(s3.head_object, Bucket=bucket, Key=original_key(tenant, file_id))
            if stored["ContentLength"] != (pages / file_name).stat().st_size:
                raise RuntimeError(f"{which}: storage holds {stored['ContentLength']} bytes of {file_name}")
            return wall, tenant, file_id

        print(
            f"{SIZE // MIB} MiB, {PART_SIZE // MIB} MiB parts, {CONCURRENCY} in flight, CRC32, "
            f"{ROUNDS} rounds alternating; bytes and CPU of the face, broker and metadata"
        )
        for which in ("browser", "sdk"):
            _, tenant, file_id = await one(which, "warmup.bin")
            await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key=original_key(tenant, file_id))
        # Chromium's processes are all up once the page has uploaded (its network process included).
        client_pids = {"browser": chromium_pids(), "sdk": [os.getpid()]}
        print(f"page CRC32 of {PART_SIZE // MIB} MiB: {await page_hash_ms(page):.0f} ms")
        print(f"load average before: {load_average()}", flush=True)
        runs: list[Run] = []
        for round_number in range(ROUNDS):
            # Alternate who goes first, so neither always meets a warmer (or fuller) storage.
            order = ("browser", "sdk") if round_number % 2 == 0 else ("sdk", "browser")
            for which in order:
                watched = {"client": client_pids[which], "storage": [stack.pids["seaweedfs"]]}
                before = {name: sum(map(cpu_seconds, group)) for name, group in watched.items()}
                with ProcessWatch(pids) as watch:
                    wall, tenant, file_id = await one(which, "bench.bin")
                    usage = watch.usage()
                used = {name: sum(map(cpu_seconds, group)) - before[name] for name, group in watched.items()}
                runs.append(Run(which, wall, used["client"], used["storage"], usage))
                print(f"round {round_number + 1} {describe(runs[-1])}", flush=True)
                await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key=original_key(tenant, file_id))
        report(runs)


def report(runs: list[Run]) -> None:
    browser = [r for r in runs if r.path == "browser"]
    sdk = [r for r in runs if r.path == "sdk"]
    browser_wall = statistics.median(r.wall_s for r in browser)
    sdk_wall = statistics.median(r.wall_s for r in sdk)
    service_bytes = statistics.median(r.service_bytes for r in browser)
    face_cpu = statistics.median(r.usage["face"].cpu_s for r in browser)
    broker_cpu = statistics.median(r.usage["broker"].cpu_s for r in browser)
    print("medians:")
    for name, chosen in (("browser", browser), ("sdk", sdk)):
        wall = statistics.median(r.wall_s for r in chosen)
        client_cpu = statistics.median(r.client_cpu_s for r in chosen)
        storage_cpu = statistics.median(r.storage_cpu_s for r in chosen)
        print(
            f"  {name}: wall {wall:.2f} s, {SIZE / MIB / wall:.1f} MiB/s, "
            f"CPU client {client_cpu:.2f} s, storage {storage_cpu:.2f} s"
        )
        for process in chosen[0].usage:
            sent = statistics.median(r.usage[process].bytes_total for r in chosen)
            cpu = statistics.median(r.usage[process].cpu_s for r in chosen)
            print(f"    {process:<9} {sent:>12,.0f} bytes  CPU {cpu:5.2f} s")
    print(f"load average after: {load_average()}")
    print(
        f"RESULT browser_vs_sdk_wall={browser_wall / sdk_wall:.2f} service_bytes_browser={service_bytes:.0f} "
        f"browser_s={browser_wall:.2f} sdk_s={sdk_wall:.2f} "
        f"face_cpu_s={face_cpu:.2f} broker_cpu_s={broker_cpu:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
