"""make bench-regions: what placing the bytes near the client buys, on a real (shaped) network.

The seeds' table: a 2 GB upload from Sydney takes ~4 minutes through a us-east API and S3, ~90 s
straight to a Sydney bucket (ratio ~0.38). Here, on one machine, in network namespaces of their own
(``benchmarks/netshape.py``):

* **two regions' stores**: two SeaweedFS instances (``weed mini``, started by the embedded stack's
  own code, ``temporary_stack``, with credentials and its sockets and logs in the run's temp dir),
  each in a namespace of its own, listening on that namespace's loopback only;
* **the client**, in a third namespace, joined to the near region by a **near** link and to the far
  one by a **far** link: veth pairs shaped by ``tbf`` (the rate, each way) and a
  :class:`~benchmarks.netshape.DelayRelay` in each region's namespace in front of each server (the
  round-trip time: this machine has no ``netem``), which also holds a new connection for two round
  trips, the TCP and TLS 1.3 handshakes a real HTTPS connection makes first;
* in the far region, a **re-uploading proxy** (``benchmarks/naive_proxy.py``: it receives the whole
  body, then stores it with boto3 over its region's loopback; downloads it streams from storage),
  reached by the client over the far link: the seeds' "through a us-east API".

The links mirror the seeds' rates at a tenth of their file: the near link ``NEAR`` (200 Mbit/s,
10 ms), the far link ``FAR`` (75 Mbit/s, 200 ms: Sydney to us-east). The seeds' 2 GB in 90 s is
~180 Mbit/s and in 240 s ~67 Mbit/s; 75/200 = 0.375 is their ratio. 200 MiB takes ~8.4 s over the
near link and ~22 s over the far one (``FILESTORE_BENCH_QUICK=1``: 32 MiB, one round).

Each round (``ROUNDS``, the order of the three paths rotating per round), with the same file:

* **near** / **far** upload: a multipart upload created on that region's store, its part URLs
  signed by Filestore's own signer (``ObjectStore.presign_parts``: ``SigV4Presigner``), the parts
  PUT by the SDK's own transfer code (``StorageTransfer.put_range``, ``run_bounded``) with the
  SDK's concurrency (8 parts in flight, 16 MiB parts, no part checksum), then completed. The
  create and complete are made by the region's agent on its loopback, not over the links: which
  API the client asks, and how far it is, is the same for every path, and is left out;
* **proxy** upload: one PUT of the whole file to the proxy over the far link; its answer comes
  once the proxy has stored it;
* **near** / **far** download: a GET URL signed by ``ObjectStore.presign_get``, read by the SDK's
  ``StorageTransfer.get_to_file`` (one stream, SHA-256 checked, as ``FilestoreClient.download``);
* **proxy** download: the same SDK code reading the proxy's URL for the far region's object.

Every run opens new connections (a new HTTP client), as a one-off transfer from a new process does,
so each pays its handshakes; the client process (in its namespace) reports each run's wall time.
Before the runs, the client measures the round trip of each link (the fastest of 20 small GETs on
one connection) and the benchmark stops if one is off by more than ``RTT_SLACK_MS``: the relays'
self-check on the real path (``tests/test_netshape.py`` checks the relay alone).

The arithmetic (S the size, R a link's rate, RTT its round trip, c = 8 parts in flight, P = 16 MiB
parts): the link must hold rate x RTT in flight, which the relay buffers (the far link's product
is 75 Mbit/s x 0.2 s = 1.9 MB, its handshakes another 2 RTT), and a direct upload costs
≈ S/R + 2 RTT (handshakes) + ⌈S/(cP)⌉ RTT (each wave of parts waits for its answers); the proxy
adds its store phase (S/W, W storage's own speed on this machine). Far: 200 MiB at 75 Mbit/s is
22.4 s, plus 4 RTT = 0.8 s; near: 8.4 s plus 40 ms; so near/far ≈ 0.36 and near/proxy a little
lower, against the seeds' 0.38.

Ends with one line: RESULT near_vs_far_wall near_vs_proxy_wall near_vs_far_download_wall
near_vs_proxy_download_wall (each near's wall over the other's: below 1 is near's gain), the six
walls in seconds, the links' parameters and the size.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import BENCH_LOG_LEVEL, QUICK, load_average, temporary_stack
from benchmarks.bench_proxy import CONCURRENCY, MIB, PART_SIZE, proxied_upload, s3_admin, start_proxy
from benchmarks.bench_proxy_shaped import generate, proxy_port
from benchmarks.netshape import DelayRelay, Link, in_namespace, network_namespace, veth_link
from filestore.client.progress import ProgressTracker
from filestore.client.sources import open_source
from filestore.client.transfer import StorageTransfer, TransferOptions, run_bounded
from filestore.server.logging import configure_logging
from filestore.server.sigv4 import PartToSign
from filestore.server.storage import ObjectStore
from filestore.server.storage.config import StoreConfig, StoreCredentials
from filestore.server.storage.results import StoredPart
from filestore.stack import StackPorts
from filestore.v1 import resources_pb2

SIZE = (32 if QUICK else 200) * MIB
ROUNDS = 1 if QUICK else 3
PATHS = ("near", "far", "proxy")
#: New connections wait this many round trips before their first byte: TCP's and TLS 1.3's handshakes.
HANDSHAKE_RTTS = 2
#: How far a link's measured round trip may be above the one set (the relay's scheduling, the queue).
RTT_SLACK_MS = 30.0
#: The seeds' ratio: ~90 s straight to a Sydney bucket against ~4 minutes through us-east.
SEEDS_RATIO = 90 / 240
URL_TTL_S = 3600
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    rate_mbit: float
    rtt_ms: float


NEAR = Region("near", rate_mbit=200, rtt_ms=10)
FAR = Region("far", rate_mbit=75, rtt_ms=200)


# ----------------------------------------------------------------------------- shared plumbing


async def lines_of(stream: Any) -> AsyncIterator[dict[str, Any]]:
    """JSON commands, one per line of standard input, until it closes."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, stream.readline):
        yield json.loads(line)


def answer(document: Mapping[str, Any]) -> None:
    print(json.dumps(document), flush=True)


class Peer:
    """A child process spoken to in JSON lines: one command, one answer."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process

    @classmethod
    async def start(cls, name: str, argv: list[str]) -> Peer:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT
        )
        return cls(name, process)

    async def read(self, timeout_s: float = 600) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"the {self.name} process ended (exit {await self.process.wait()})")
        document: dict[str, Any] = json.loads(line)
        if "error" in document:
            raise RuntimeError(f"{self.name}: {document['error']}")
        return document

    async def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        return await self.read()

    async def stop(self) -> None:
        """Close its standard input (it cleans up and exits), kill it if it does not."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 60)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def serve(handlers: Mapping[str, Callable[..., Awaitable[dict[str, Any]]]]) -> None:
    """Answer commands from standard input until it closes; a failed command answers its error."""
    async for command in lines_of(sys.stdin):
        op = command.pop("op")
        try:
            answer(await handlers[op](**command))
        except Exception as error:
            answer({"error": f"{op}: {type(error).__name__}: {error}"})


# --------------------------------------------------------------- a region's agent, in its namespace


async def region_main(listen_host: str, rtt_ms: float, with_proxy: bool) -> None:
    """One region: SeaweedFS on this namespace's loopback, a DelayRelay on ``listen_host`` (the
    region's end of its link) in front of it, and with ``with_proxy`` the naive proxy behind a
    second relay. Creates and completes uploads and signs URLs for the benchmark (JSON lines)."""
    configure_logging(BENCH_LOG_LEVEL, service="bench-region")
    delay = {"one_way_ms": rtt_ms / 2, "connect_ms": HANDSHAKE_RTTS * rtt_ms}
    async with contextlib.AsyncExitStack() as stack_of:
        stack = await stack_of.enter_async_context(
            temporary_stack(("seaweedfs",), ports=ports_clear_of_other_weeds())
        )
        e = stack.endpoints
        s3_port = int(e.s3_endpoint.rsplit(":", 1)[1])
        relay = await stack_of.enter_async_context(DelayRelay(listen_host, ("127.0.0.1", s3_port), **delay))
        store = ObjectStore(
            StoreConfig(
                name=listen_host,
                endpoint=e.s3_endpoint,
                public_endpoint=f"http://{listen_host}:{relay.port}",
                region=e.s3_region,
                bucket=e.bucket,
                credentials=StoreCredentials(e.s3_access_key, e.s3_secret_key),
            )
        )
        s3 = s3_admin(stack)
        ready: dict[str, Any] = {"bucket_url": f"http://{listen_host}:{relay.port}/{e.bucket}"}
        if with_proxy:
            spool = Path(stack_of.enter_context(tempfile.TemporaryDirectory(prefix="filestore-bench-spool-")))
            proxy = await start_proxy(stack, spool)
            stack_of.push_async_callback(stop_process, proxy)
            proxy_relay = await stack_of.enter_async_context(
                DelayRelay(listen_host, ("127.0.0.1", await proxy_port(proxy)), **delay)
            )
            ready["proxy_url"] = f"http://{listen_host}:{proxy_relay.port}"

        async def create(key: str, size: int) -> dict[str, Any]:
            upload_id = await store.create_multipart(key, content_type="application/octet-stream")
            numbers = range(1, -(-size // PART_SIZE) + 1)
            lengths = [min(PART_SIZE, size - (n - 1) * PART_SIZE) for n in numbers]
            signed = store.presign_parts(
                key,
                upload_id=upload_id,
                parts=[PartToSign(n, length) for n, length in zip(numbers, lengths, strict=True)],
                expires_s=URL_TTL_S,
            )
            parts = [
                {
                    "number": n,
                    "offset": (n - 1) * PART_SIZE,
                    "size": length,
                    "url": url.url,
                    "headers": url.headers,
                }
                for n, length, url in zip(numbers, lengths, signed, strict=True)
            ]
            return {"upload_id": upload_id, "parts": parts}

        async def complete(
            key: str, upload_id: str, etags: dict[str, str], sizes: dict[str, int]
        ) -> dict[str, Any]:
            parts = [
                StoredPart(int(n), sizes[n], etag)
                for n, etag in sorted(etags.items(), key=lambda p: int(p[0]))
            ]
            if not await store.complete_multipart(key, upload_id, parts, {}):
                raise RuntimeError(f"storage no longer knows the upload of {key}")
            head = await store.head(key)
            return {"size": head.size if head else -1}

        async def get_url(key: str) -> dict[str, Any]:
            return {"url": store.presign_get(key, expires_s=URL_TTL_S).url}

        async def put_file(key: str, path: str) -> dict[str, Any]:
            await asyncio.to_thread(s3.upload_file, path, e.bucket, key)
            return {}

        async def delete(key: str) -> dict[str, Any]:
            await store.delete(key)
            return {}

        answer(ready)
        await serve(
            {
                "create": create,
                "complete": complete,
                "get_url": get_url,
                "put_file": put_file,
                "delete": delete,
            }
        )


def ports_clear_of_other_weeds() -> StackPorts:
    """Free ports of this namespace, none of whose weed gRPC sockets exists: weed names them
    ``/tmp/seaweedfs-<server>-grpc-<port>.sock`` by port alone, and the other region's weed, in
    a namespace with ports of its own, may have the same numbers (the stack would remove its
    sockets as stale). So the regions start one after the other, and the second avoids the first's."""
    for _ in range(50):
        ports = StackPorts.free("127.0.0.1")
        grpc = (ports.master_grpc, ports.volume_grpc, ports.filer_grpc, ports.s3_grpc, ports.admin_grpc)
        if not any(any(Path(tempfile.gettempdir()).glob(f"seaweedfs-*-grpc-{port}.sock")) for port in grpc):
            return ports
    raise RuntimeError("no free ports clear of other weeds' sockets in 50 tries")


async def stop_process(process: asyncio.subprocess.Process) -> None:
    process.terminate()
    await process.wait()


# --------------------------------------------------------------------------- the client, in its namespace


def new_http() -> httpx.AsyncClient:
    """A new client per run: a one-off transfer opens (and pays for) its own connections."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    return httpx.AsyncClient(timeout=None, limits=limits)


def fixed(
    url: str, headers: Mapping[str, str] | None = None
) -> Callable[..., Awaitable[resources_pb2.PresignedRequest]]:
    """The SDK's ``Signer`` for a URL signed beforehand (it never needs renewing in a run)."""
    request = resources_pb2.PresignedRequest(method="", url=url, headers=dict(headers or {}))

    async def sign(*, renew: bool) -> resources_pb2.PresignedRequest:
        return request

    return sign


async def client_main() -> None:
    configure_logging(BENCH_LOG_LEVEL, service="bench-client")
    # The SDK's defaults but the part checksum: storage's CPU for it is the same on every path.
    options = TransferOptions(concurrency=CONCURRENCY, part_size=PART_SIZE, part_checksum="none")
    scratch = Path(tempfile.mkdtemp(prefix="filestore-bench-client-"))

    async def put_parts(path: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
        source = open_source(Path(path))
        etags: dict[str, str] = {}
        tracker = ProgressTracker(None, source.size)
        started = time.perf_counter()
        try:
            async with new_http() as http:
                transfer = StorageTransfer(http, options)

                async def send(part: dict[str, Any]) -> None:
                    etags[str(part["number"])] = await transfer.put_range(
                        source,
                        part["offset"],
                        part["size"],
                        sign=fixed(part["url"], part["headers"]),
                        tracker=tracker,
                        part_number=part["number"],
                    )

                await run_bounded(parts, send, options.concurrency)
        finally:
            source.close()
        return {"etags": etags, "wall_s": time.perf_counter() - started}

    async def proxy_put(url: str, path: str, size: int) -> dict[str, Any]:
        started = time.perf_counter()
        async with new_http() as http:
            key, detail = await proxied_upload(http, url, Path(path), size)
        return {"key": key, "detail": detail, "wall_s": time.perf_counter() - started}

    async def get(url: str, size: int, sha256: str) -> dict[str, Any]:
        partial = scratch / f"{uuid.uuid4()}.partial"
        started = time.perf_counter()
        try:
            async with new_http() as http:
                await StorageTransfer(http, options).get_to_file(
                    partial, size=size, sha256=sha256, sign=fixed(url), tracker=ProgressTracker(None, size)
                )
        finally:
            partial.unlink(missing_ok=True)
        return {"wall_s": time.perf_counter() - started}

    async def ping(url: str, count: int) -> dict[str, Any]:
        """Round trips of small requests on one connection, after the first (its handshakes)."""
        async with new_http() as http:
            rtts = []
            for _ in range(count + 1):
                started = time.perf_counter()
                await http.get(url)  # any answer will do (storage refuses an unsigned GET)
                rtts.append((time.perf_counter() - started) * 1000)
        return {"first_ms": rtts[0], "min_ms": min(rtts[1:]), "median_ms": statistics.median(rtts[1:])}

    try:
        await serve({"put_parts": put_parts, "proxy_put": proxy_put, "get": get, "ping": ping})
    finally:
        await asyncio.to_thread(scratch.rmdir)


# ------------------------------------------------------------------------------------- the runner


@dataclass(frozen=True, slots=True)
class Run:
    direction: str  # upload or download
    path: str  # near, far or proxy
    wall_s: float
    detail: str = ""


async def upload_direct(agent: Peer, client: Peer, path: Path) -> Run:
    key = f"bench/{uuid.uuid4()}"
    started = time.perf_counter()
    created = await agent.ask(op="create", key=key, size=SIZE)
    sent = await client.ask(op="put_parts", path=str(path), parts=created["parts"])
    sizes = {str(part["number"]): part["size"] for part in created["parts"]}
    completed = await agent.ask(
        op="complete", key=key, upload_id=created["upload_id"], etags=sent["etags"], sizes=sizes
    )
    wall = time.perf_counter() - started
    if completed["size"] != SIZE:
        raise RuntimeError(f"{agent.name} stored {completed['size']} bytes, sent {SIZE}")
    await agent.ask(op="delete", key=key)
    return Run("upload", agent.name, wall, f"parts {sent['wall_s']:.2f} s")


async def upload_proxied(agent: Peer, client: Peer, path: Path, proxy_url: str) -> Run:
    started = time.perf_counter()
    sent = await client.ask(op="proxy_put", url=proxy_url, path=str(path), size=SIZE)
    wall = time.perf_counter() - started
    await agent.ask(op="delete", key=sent["key"])
    return Run("upload", "proxy", wall, sent["detail"])


async def download(agent: Peer, client: Peer, key: str, sha256: str, *, proxy_url: str = "") -> Run:
    started = time.perf_counter()
    url = f"{proxy_url}/{key}" if proxy_url else (await agent.ask(op="get_url", key=key))["url"]
    await client.ask(op="get", url=url, size=SIZE, sha256=sha256)
    return Run("download", "proxy" if proxy_url else agent.name, time.perf_counter() - started)


async def start_region(region: Region, link: Link, *, with_proxy: bool) -> tuple[Peer, dict[str, Any]]:
    assert link.b_namespace is not None
    argv = [sys.executable, "-m", "benchmarks.bench_regions", "region", link.b_addr, str(region.rtt_ms)]
    agent = await Peer.start(
        region.name, in_namespace(link.b_namespace, *argv, *(["proxy"] if with_proxy else []))
    )
    return agent, await agent.read(timeout_s=120)


async def check_links(client: Peer, targets: Mapping[str, tuple[str, Region]]) -> dict[str, float]:
    """Each link's round trip as the client sees it, against the one set; the run stops when off.
    The fastest of 20 is compared: the machine's other work only ever adds to a round trip."""
    measured = {}
    for name, (url, region) in targets.items():
        rtt = await client.ask(op="ping", url=url, count=20)
        print(
            f"round trip to {name}: {rtt['min_ms']:.1f} ms fastest, {rtt['median_ms']:.1f} ms median, "
            f"{rtt['first_ms']:.1f} ms with the handshakes (set: {region.rtt_ms:g} ms, "
            f"{(1 + HANDSHAKE_RTTS) * region.rtt_ms:g} ms)",
            flush=True,
        )
        if not region.rtt_ms <= rtt["min_ms"] <= region.rtt_ms + RTT_SLACK_MS:
            raise RuntimeError(
                f"the {name} link's round trip is {rtt['min_ms']:.1f} ms, set {region.rtt_ms:g} ms"
            )
        measured[name] = rtt["min_ms"]
    return measured


async def main() -> None:
    configure_logging(BENCH_LOG_LEVEL, service="bench")
    # Stopped by a signal, the run still ends its processes and removes its namespaces: the
    # cancellation unwinds through every ``with`` below (SIGINT does so by itself).
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    peers: list[Peer] = []
    with (
        tempfile.TemporaryDirectory(prefix="filestore-bench-regions-") as scratch,
        network_namespace() as client_ns,
        network_namespace() as near_ns,
        network_namespace() as far_ns,
        veth_link(client_ns, near_ns, NEAR.rate_mbit) as near_link,
        veth_link(client_ns, far_ns, FAR.rate_mbit) as far_link,
    ):
        path = Path(scratch) / "upload.bin"
        generate(path, SIZE)
        with path.open("rb") as body:
            sha256 = hashlib.file_digest(body, "sha256").hexdigest()
        try:
            # One after the other: see ports_clear_of_other_weeds.
            near, near_ready = await start_region(NEAR, near_link, with_proxy=False)
            peers.append(near)
            far, far_ready = await start_region(FAR, far_link, with_proxy=True)
            peers.append(far)
            client = await Peer.start(
                "client", in_namespace(client_ns, sys.executable, "-m", "benchmarks.bench_regions", "client")
            )
            peers.append(client)
            proxy_url = far_ready["proxy_url"]
            print(
                f"{SIZE // MIB} MiB, {PART_SIZE // MIB} MiB parts, {CONCURRENCY} in flight, "
                f"{ROUNDS} round(s), order rotating; near link {NEAR.rate_mbit:g} Mbit/s {NEAR.rtt_ms:g} ms "
                f"({near_link.a_addr} -> {near_link.b_addr}), far link {FAR.rate_mbit:g} Mbit/s "
                f"{FAR.rtt_ms:g} ms ({far_link.a_addr} -> {far_link.b_addr}), proxy in the far region"
            )
            download_key = "bench/download"
            for agent in (near, far):
                await agent.ask(op="put_file", key=download_key, path=str(path))
            rtts = await check_links(
                client,
                {
                    "near": (near_ready["bucket_url"], NEAR),
                    "far": (far_ready["bucket_url"], FAR),
                    "proxy": (f"{proxy_url}/absent", FAR),
                },
            )
            print(f"load average before: {load_average()}", flush=True)
            runs: list[Run] = []
            agents = {"near": near, "far": far}
            for round_number in range(ROUNDS):
                shift = round_number % len(PATHS)
                order = PATHS[shift:] + PATHS[:shift]
                for which in order:
                    if which == "proxy":
                        run = await upload_proxied(far, client, path, proxy_url)
                    else:
                        run = await upload_direct(agents[which], client, path)
                    runs.append(run)
                    print(f"round {round_number + 1} {describe(run)}", flush=True)
                for which in order:
                    if which == "proxy":
                        run = await download(far, client, download_key, sha256, proxy_url=proxy_url)
                    else:
                        run = await download(agents[which], client, download_key, sha256)
                    runs.append(run)
                    print(f"round {round_number + 1} {describe(run)}", flush=True)
            report(runs, rtts, (near_link, far_link))
        finally:
            for peer in reversed(peers):
                await peer.stop()


def describe(run: Run) -> str:
    detail = f" ({run.detail})" if run.detail else ""
    rate = SIZE * 8 / 1e6 / run.wall_s
    return f"{run.direction:<8} {run.path:<5} {run.wall_s:6.2f} s {rate:6.1f} Mbit/s{detail}"


def report(runs: list[Run], rtts: Mapping[str, float], links: tuple[Link, ...]) -> None:
    walls = {
        (direction, which): statistics.median(
            r.wall_s for r in runs if (r.direction, r.path) == (direction, which)
        )
        for direction in ("upload", "download")
        for which in PATHS
    }
    print("medians:")
    for (direction, which), wall in walls.items():
        print(f"  {direction:<8} {which:<5} {wall:6.2f} s  {SIZE * 8 / 1e6 / wall:6.1f} Mbit/s")
    for region in (NEAR, FAR):
        floor = SIZE * 8 / (region.rate_mbit * 1e6)
        product = region.rate_mbit * 1e6 / 8 * region.rtt_ms / 1000
        print(
            f"  {region.name} link: the body alone {floor:.2f} s at {region.rate_mbit:g} Mbit/s; "
            f"rate x RTT {product / 1e6:.2f} MB in flight"
        )
    for link in links:
        for name, stats in link.shaper_stats().items():
            print(f"  shaper {name}: {' '.join(stats.split())}")
    print(f"load average after: {load_average()}")
    near, far, proxy = (walls[("upload", which)] for which in PATHS)
    near_down, far_down, proxy_down = (walls[("download", which)] for which in PATHS)
    print(
        f"RESULT near_vs_far_wall={near / far:.2f} near_vs_proxy_wall={near / proxy:.2f} "
        f"near_vs_far_download_wall={near_down / far_down:.2f} "
        f"near_vs_proxy_download_wall={near_down / proxy_down:.2f} seeds_ratio={SEEDS_RATIO:.2f} "
        f"near_s={near:.2f} far_s={far:.2f} proxy_s={proxy:.2f} near_download_s={near_down:.2f} "
        f"far_download_s={far_down:.2f} proxy_download_s={proxy_down:.2f} size_mib={SIZE // MIB} "
        f"near_mbit={NEAR.rate_mbit:g} near_rtt_ms={NEAR.rtt_ms:g} far_mbit={FAR.rate_mbit:g} "
        f"far_rtt_ms={FAR.rtt_ms:g} near_rtt_measured_ms={rtts['near']:.1f} "
        f"far_rtt_measured_ms={rtts['far']:.1f}"
    )


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["client"]:
            asyncio.run(client_main())
        case ["region", listen_host, rtt_ms, *rest]:
            asyncio.run(region_main(listen_host, float(rtt_ms), rest == ["proxy"]))
        case _:
            asyncio.run(main())
