"""make bench-peers-companion (half of make bench-peers): Filestore against ``@uppy/companion``
(the signing server most browser apps use for S3 multipart), same store, same CPU budget, same load
generator, same run.

Three calls, each side's own way of doing the same thing for a browser uploading to S3 multipart:

* create: Companion's ``POST /s3/multipart`` (JSON body: filename, type) against Filestore's
  ``CreateUpload`` (MULTIPART, 1 GiB declared, 5 MiB parts). Both create a multipart upload in
  storage; Filestore also records the upload and its PENDING file in the catalogue, and signs the
  first part URLs (``FIRST_PART_URLS``, 16 by default: a user's settings, left as they come);
  Companion signs none.
* sign one part: ``GET /s3/multipart/{uploadId}/{partNumber}?key=...`` against ``SignParts`` with
  one part number and the upload's session token, as the SDK sends it (so no catalogue read, as
  Companion reads none either). The calls go round ``SESSIONS`` uploads each side created beforehand.
* sign a batch: ``GET /s3/multipart/{uploadId}/batch?key=...&partNumbers=1,...,100`` against
  ``SignParts`` with part numbers 1..100; the rate is counted in URLs per second.

(Routes as in 6.2.2's ``lib/server/controllers/s3.js``.)

Companion 6.2.2 is installed by name, exactly pinned, with ``npm install --prefix <temp dir>`` at
every run, and run as its standalone server (its ``companion`` entry: express with its request log,
sessions and metrics, as its Docker image runs it; the request log goes to a file in the temp dir)
with the stack's SeaweedFS as its S3 (the administrator's key, path-style,
``AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED``: otherwise its part URLs carry an empty-body CRC32
that the store refuses). Filestore is the embedded stack's own processes (SeaweedFS, NATS, metadata
on SQLite, the upload broker), as ``make run`` starts them, logging at ``warning``.

Cores (2 needed): the first core this process may use runs the server side measured, and nothing
else of ours: Companion's node process (``taskset``), or Filestore's broker and metadata processes
(every thread, pinned with ``sched_setaffinity``). The second core runs SeaweedFS, NATS and this
process, the one load generator for both sides: 64 calls always in flight from one event loop, over
64 HTTP/1.1 keep-alive connections to Companion (a minimal client, see ``KeepAlivePool``: httpx
would spend more CPU per request than Companion) and one gRPC channel to Filestore's broker. The
load generator's CPU per request is printed too: a side whose generator nears a whole core is
measured short.

Companion's standalone server opens an express session for every request that comes without its
cookie; the load generator keeps no cookies (64 in flight stand for 64 browsers, not one), so its
memory growth includes those sessions, as a busy Companion's does.

Each call is measured in two halves, in the order Companion, Filestore, Filestore, Companion, so
drift in machine load (it is shared) favours neither side; each side's rate is the mean of its halves.
Around every half, the user+system CPU of each server process is read from ``/proc/<pid>/stat``:
per request, the RPC/signing processes (Companion's node; Filestore's broker + metadata, each shown)
and SeaweedFS are counted separately (SeaweedFS's share is the store's work a create causes, the same
store for both). Memory: each side's server RSS when it started and after the run, and its peak
(VmHWM).

Size: ``FILESTORE_BENCH_QUICK=1`` runs a fifth of the calls.

Ends with: RESULT create_vs_companion=<r> sign_vs_companion=<r> batch_vs_companion=<r> (Filestore's
rate over Companion's) and each side's rates and server CPU ms per request.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from benchmarks._common import BENCH_LOG_LEVEL, QUICK, load_average, measure, temporary_stack
from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.server.logging import configure_logging
from filestore.stack import Stack
from filestore.v1 import resources_pb2, upload_service_pb2, upload_service_pb2_grpc

COMPANION = "@uppy/companion@6.2.2"
SCALE = 5 if QUICK else 1
IN_FLIGHT = 64
#: Calls per side (in two halves), after WARMUP calls of the same kind.
CREATES = 1000 // SCALE
SIGNS = 4000 // SCALE
BATCHES = 200 // SCALE
WARMUP = 64
BATCH = 100
LABELS = ("create", "sign", f"batch of {BATCH}")
#: Filestore's RPC processes measured (SeaweedFS is counted apart, for both sides).
SERVERS = ("broker", "metadata")
#: Uploads each side creates beforehand for the signing calls to go round.
SESSIONS = 64
SIZE = 1024**3
PART_SIZE = 5 * 1024**2
TENANT = "bench"
CONTENT_TYPE = "application/octet-stream"
READY_TIMEOUT_S = 60.0
NPM_TIMEOUT_S = 300.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: A call as ``measure`` makes it: the index of the call -> its answer.
Call = Callable[[int], Awaitable[object]]


# --------------------------------------------------------------------------- /proc accounting


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far (``/proc/<pid>/stat`` 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) in MiB, from ``/proc/<pid>/status``."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads started later inherit it from their creator)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


@dataclass
class Side:
    """The server processes of one side: those doing the RPC/signing work, and storage."""

    name: str
    servers: dict[str, int]  # process name -> pid
    storage_pid: int
    started_rss: dict[str, float] = field(default_factory=dict)

    def cpu(self) -> dict[str, float]:
        cpu = {name: cpu_seconds(pid) for name, pid in self.servers.items()}
        cpu["seaweedfs"] = cpu_seconds(self.storage_pid)
        cpu["generator"] = cpu_seconds(os.getpid())  # the load generator: is it the bottleneck?
        return cpu

    def note_start(self) -> None:
        self.started_rss = {name: memory_mib(pid)[0] for name, pid in self.servers.items()}

    def memory_report(self) -> str:
        parts = []
        for name, pid in self.servers.items():
            rss, peak = memory_mib(pid)
            parts.append(f"{name} {self.started_rss[name]:.0f} -> {rss:.0f} MiB (peak {peak:.0f})")
        return "; ".join(parts)

    def growth_mib(self) -> float:
        return sum(memory_mib(pid)[0] - self.started_rss[name] for name, pid in self.servers.items())


@dataclass
class Figures:
    """One call of one side, over its halves."""

    rates: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    calls: int = 0

    @property
    def rate(self) -> float:
        return sum(self.rates) / len(self.rates)

    def ms(self, names: Iterable[str]) -> float:
        """CPU milliseconds per call of the processes ``names``."""
        return sum(self.cpu_s.get(n, 0.0) for n in names) * 1000 / self.calls


async def half(
    side: Side, figures: Figures, name: str, call: Callable[[int], Awaitable[object]], calls: int
) -> None:
    """``calls`` calls at IN_FLIGHT in flight, with each server process's CPU over them."""
    before = side.cpu()
    result = await measure(name, call, calls=calls, in_flight=IN_FLIGHT, warmup=0)
    after = side.cpu()
    figures.rates.append(result.rate)
    figures.calls += calls
    for process, seconds in after.items():
        figures.cpu_s[process] = figures.cpu_s.get(process, 0.0) + seconds - before[process]


# --------------------------------------------------------------------------- Companion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def install_companion(prefix: Path) -> Path:
    """``npm install`` the pinned Companion into ``prefix``; the path of its ``companion`` entry."""
    started = time.monotonic()
    subprocess.run(
        ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error", COMPANION],
        check=True,
        timeout=NPM_TIMEOUT_S,
        stdout=subprocess.DEVNULL,
    )
    package = prefix / "node_modules" / "@uppy" / "companion"
    version = json.loads((package / "package.json").read_text())["version"]
    print(f"installed @uppy/companion {version} in {time.monotonic() - started:.0f} s ({prefix})", flush=True)
    return package / "bin" / "companion"


@asynccontextmanager
async def companion_server(stack: Stack, core: int) -> AsyncIterator[tuple[int, int]]:
    """Companion's standalone server on a free port, pinned to ``core``: yields (pid, port)."""
    e = stack.endpoints
    with tempfile.TemporaryDirectory(prefix="filestore-bench-companion-") as tmp:
        root = Path(tmp)
        entry = await asyncio.to_thread(install_companion, root)
        data = root / "data"
        data.mkdir()
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(root),
            "NODE_ENV": "production",
            "COMPANION_PORT": str(port),
            "COMPANION_DOMAIN": f"127.0.0.1:{port}",
            "COMPANION_PROTOCOL": "http",
            "COMPANION_DATADIR": str(data),
            "COMPANION_SECRET": uuid.uuid4().hex,
            "COMPANION_PREAUTH_SECRET": uuid.uuid4().hex,
            "COMPANION_AWS_KEY": e.s3_access_key,
            "COMPANION_AWS_SECRET": e.s3_secret_key,
            "COMPANION_AWS_BUCKET": e.bucket,
            "COMPANION_AWS_REGION": e.s3_region,
            "COMPANION_AWS_ENDPOINT": e.s3_endpoint,
            "COMPANION_AWS_FORCE_PATH_STYLE": "true",
            "COMPANION_AWS_PREFIX": "companion/",
            # Required in production: where remote files may be uploaded to, and the browser origins
            # allowed (the load generator sends no Origin).
            "COMPANION_UPLOAD_URLS": f"^{e.s3_endpoint}/",
            "COMPANION_CLIENT_ORIGINS": "http://localhost:3000",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
        }
        argv = ["taskset", "-c", str(core), "node", str(entry)]
        if setpriv := shutil.which("setpriv"):
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]  # gone with us, even on SIGKILL
        log = root / "companion.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=root, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        _started.add(process.pid)
        try:
            await wait_ready(port, process, log)
            yield process.pid, port
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
            _started.discard(process.pid)


#: Companion's pid while it runs, for the atexit hook (an exit that skips the finally blocks).
_started: set[int] = set()


@atexit.register
def _stop_leftovers() -> None:
    for pid in _started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def wait_ready(port: int, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    probe = KeepAlivePool("127.0.0.1", port, 1)
    try:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(
                    f"Companion exited ({process.returncode}):\n{await asyncio.to_thread(_tail, log)}"
                )
            # Signing a part needs no storage: it answers as soon as the server is up.
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                if (await probe.request("GET", "/s3/multipart/probe/1?key=probe"))[0] == 200:
                    return
            await asyncio.sleep(0.2)
    finally:
        await probe.close()
    raise RuntimeError(
        f"Companion not ready in {READY_TIMEOUT_S:.0f} s:\n{await asyncio.to_thread(_tail, log)}"
    )


class KeepAlivePool:
    """A minimal HTTP/1.1 client: ``size`` keep-alive connections to one server, each carrying one
    request at a time (a call takes an idle connection, or opens one, and gives it back).

    Not httpx: on this machine httpx 0.28 costs 1.5 to 7 ms of client CPU per request at 64 in flight
    (httpcore's pool matches every queued request against every connection, and tries a failed
    ``import sniffio`` for every request), so the load generator, not Companion, would set the pace.
    This one costs about what the gRPC client does per call."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(None)
        self._open: set[asyncio.StreamWriter] = set()

    async def request(self, method: str, target: str, body: object = None) -> tuple[int, Any]:
        """(status, decoded JSON body)."""
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        message = head.encode() + b"\r\n" + payload
        connection = await self._idle.get()
        try:
            if connection is not None and connection[0].at_eof():
                self._drop(connection)  # closed by the server while idle (Node: after 5 s)
                connection = None
            try:
                connection = connection or await self._connect()
                status, headers, content = await _exchange(connection, message)
            except (asyncio.IncompleteReadError, ConnectionError):
                # A kept-alive connection the server closed as the request went out: once more, on a
                # new one (what any HTTP client does; the request never reached a handler).
                self._drop(connection)
                connection = None
                connection = await self._connect()
                status, headers, content = await _exchange(connection, message)
            if headers.get("connection", "").lower() == "close":
                self._drop(connection)
                connection = None
        except BaseException:
            self._drop(connection)
            self._idle.put_nowait(None)
            raise
        self._idle.put_nowait(connection)
        return status, json.loads(content) if content else None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        connection = await asyncio.open_connection(self.host, self.port)
        self._open.add(connection[1])
        return connection

    def _drop(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        if connection is not None:
            self._open.discard(connection[1])
            connection[1].close()

    async def close(self) -> None:
        for writer in self._open:
            writer.close()
        self._open.clear()


async def _exchange(
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], message: bytes
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = connection
    writer.write(message)
    status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    return status, headers, await _read_chunked(reader)


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    content = bytearray()
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        content += await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")  # no trailers are sent
    return bytes(content)


async def _ok(pool: KeepAlivePool, method: str, target: str, body: object = None) -> Any:
    status, answer = await pool.request(method, target, body)
    if status != 200:
        raise RuntimeError(f"Companion answered {status} to {method} {target}: {answer}")
    return answer


def companion_calls(pool: KeepAlivePool, sessions: list[tuple[str, str]]) -> tuple[Call, Call, Call]:
    batch = ",".join(str(n) for n in range(1, BATCH + 1))

    async def create(i: int) -> object:
        body = {"filename": f"bench-{i}.bin", "type": CONTENT_TYPE, "metadata": {}}
        return (await _ok(pool, "POST", "/s3/multipart", body))["uploadId"]

    async def sign(i: int) -> object:
        key, upload_id = sessions[i % len(sessions)]
        target = f"/s3/multipart/{quote(upload_id, safe='')}/{i % 200 + 1}?key={quote(key, safe='')}"
        return (await _ok(pool, "GET", target))["url"]

    async def sign_batch(i: int) -> object:
        key, upload_id = sessions[i % len(sessions)]
        target = (
            f"/s3/multipart/{quote(upload_id, safe='')}/batch?key={quote(key, safe='')}&partNumbers={batch}"
        )
        urls = (await _ok(pool, "GET", target))["presignedUrls"]
        assert len(urls) == BATCH
        return urls

    return create, sign, sign_batch


async def companion_sessions(pool: KeepAlivePool) -> list[tuple[str, str]]:
    async def one(i: int) -> tuple[str, str]:
        body = {"filename": f"session-{i}.bin", "type": CONTENT_TYPE, "metadata": {}}
        answer = await _ok(pool, "POST", "/s3/multipart", body)
        return answer["key"], answer["uploadId"]

    return list(await asyncio.gather(*(one(i) for i in range(SESSIONS))))


# --------------------------------------------------------------------------- Filestore


def filestore_calls(
    upload: upload_service_pb2_grpc.UploadServiceAsyncStub, sessions: list[tuple[str, str]]
) -> tuple[Call, Call, Call]:
    """Filestore's three calls; ``sessions`` are (upload id, session token) pairs, and each sign
    passes the token as the SDK does (no catalogue read)."""

    async def create(i: int) -> object:
        created = await upload.CreateUpload(
            upload_service_pb2.CreateUploadRequest(
                name=f"bench-{i}.bin",
                size=SIZE,
                content_type=CONTENT_TYPE,
                kind=resources_pb2.UPLOAD_KIND_MULTIPART,
                part_size=PART_SIZE,
                request_id=str(uuid.uuid4()),
            )
        )
        return created.upload.id, created.upload.session_token

    async def sign(i: int) -> object:
        upload_id, session_token = sessions[i % len(sessions)]
        signed = await upload.SignParts(
            upload_service_pb2.SignPartsRequest(
                upload_id=upload_id, part_numbers=[i % 200 + 1], session_token=session_token
            )
        )
        return signed.part_urls

    batch = list(range(1, BATCH + 1))

    async def sign_batch(i: int) -> object:
        upload_id, session_token = sessions[i % len(sessions)]
        signed = await upload.SignParts(
            upload_service_pb2.SignPartsRequest(
                upload_id=upload_id, part_numbers=batch, session_token=session_token
            )
        )
        assert len(signed.part_urls) == BATCH
        return signed.part_urls

    return create, sign, sign_batch


# --------------------------------------------------------------------------- the run


async def main() -> None:
    configure_logging(BENCH_LOG_LEVEL, service="bench")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit(f"bench-peers-companion needs 2 CPUs (this process may use {cores})")
    server_core, client_core = cores[0], cores[1]
    # Everything started from here on (the stack's processes) inherits the load generator's core;
    # the servers measured are moved to the other one.
    os.sched_setaffinity(0, {client_core})
    async with temporary_stack(("seaweedfs", "nats", "metadata", "upload")) as stack:
        pids = stack.pids
        for name in ("metadata", "upload"):
            pin(pids[name], {server_core})
        filestore = Side(
            "Filestore", {"broker": pids["upload"], "metadata": pids["metadata"]}, pids["seaweedfs"]
        )
        async with companion_server(stack, server_core) as (companion_pid, port):
            companion = Side("Companion", {"companion": companion_pid}, pids["seaweedfs"])
            await run(stack, filestore, companion, port, server_core=server_core, client_core=client_core)


async def run(
    stack: Stack, filestore: Side, companion: Side, port: int, *, server_core: int, client_core: int
) -> None:
    e = stack.endpoints
    token = mint_token(e.auth_secret, subject="bench", tenant=TENANT)
    channel = insecure_channel(e.upload_addr, token=lambda: token)
    client = KeepAlivePool("127.0.0.1", port, IN_FLIGHT)
    try:
        upload = upload_service_pb2_grpc.UploadServiceStub(channel)
        filestore.note_start()
        companion.note_start()
        f_create = filestore_calls(upload, [])[0]
        file_sessions: list[tuple[str, str]] = [
            cast(tuple[str, str], created)
            for created in await asyncio.gather(*(f_create(-i) for i in range(1, SESSIONS + 1)))
        ]
        comp_sessions = await companion_sessions(client)
        f_create, f_sign, f_batch = filestore_calls(upload, file_sessions)
        c_create, c_sign, c_batch = companion_calls(client, comp_sessions)

        print(
            f"Companion {COMPANION} (standalone) vs Filestore (broker + metadata on SQLite), same SeaweedFS;"
            f" servers on CPU {server_core}, load generator + SeaweedFS + NATS on CPU {client_core};"
            f" {IN_FLIGHT} in flight{' (quick)' if QUICK else ''}"
        )
        print(f"load average before: {load_average()}", flush=True)
        results: dict[str, dict[str, Figures]] = {}
        for label, calls, c_call, f_call in zip(
            LABELS,
            (CREATES, SIGNS, BATCHES),
            (c_create, c_sign, c_batch),
            (f_create, f_sign, f_batch),
            strict=True,
        ):
            for call in (c_call, f_call):  # warm-up: connections open, code paths hot
                await asyncio.gather(*(call(10**6 + i) for i in range(WARMUP)))
            c, f = Figures(), Figures()
            await half(companion, c, f"Companion {label}", c_call, calls // 2)
            await half(filestore, f, f"Filestore {label}", f_call, calls // 2)
            await half(filestore, f, f"Filestore {label}", f_call, calls // 2)
            await half(companion, c, f"Companion {label}", c_call, calls // 2)
            results[label] = {"Companion": c, "Filestore": f}
        report(results, filestore, companion)
    finally:
        await client.close()
        await channel.close()


def report(results: dict[str, dict[str, Figures]], filestore: Side, companion: Side) -> None:
    ratios = {label: sides["Filestore"].rate / sides["Companion"].rate for label, sides in results.items()}
    create, sign, batch = (results[label] for label in LABELS)
    print()
    for label, sides in results.items():
        unit, scale = ("URLs/s", BATCH) if label == LABELS[2] else ("calls/s", 1)
        c, f = sides["Companion"], sides["Filestore"]
        print(
            f"{label:<14} Companion {c.rate * scale:8.0f} {unit}   Filestore {f.rate * scale:8.0f} {unit}"
            f"   Filestore / Companion {ratios[label]:.2f}"
        )
    print(
        "\nserver CPU ms per request (user+system from /proc over the measured calls; load generator apart):"
    )
    for label, sides in results.items():
        c, f = sides["Companion"], sides["Filestore"]
        print(
            f"{label:<14} Companion: node {c.ms(['companion']):.2f}, SeaweedFS {c.ms(['seaweedfs']):.2f}"
            f" (generator {c.ms(['generator']):.2f})"
            f" | Filestore: broker {f.ms(['broker']):.2f} + metadata {f.ms(['metadata']):.2f}"
            f" = {f.ms(SERVERS):.2f}, SeaweedFS {f.ms(['seaweedfs']):.2f}"
            f" (generator {f.ms(['generator']):.2f})"
        )
    print("\nserver memory (RSS when started -> after the run, peak VmHWM):")
    print(f"Companion: {companion.memory_report()}")
    print(f"Filestore: {filestore.memory_report()}")
    print(f"load average after: {load_average()}")
    figures = {
        "create_vs_companion": f"{ratios[LABELS[0]]:.2f}",
        "sign_vs_companion": f"{ratios[LABELS[1]]:.2f}",
        "batch_vs_companion": f"{ratios[LABELS[2]]:.2f}",
        "creates_per_s_filestore": f"{create['Filestore'].rate:.0f}",
        "creates_per_s_companion": f"{create['Companion'].rate:.0f}",
        "signs_per_s_filestore": f"{sign['Filestore'].rate:.0f}",
        "signs_per_s_companion": f"{sign['Companion'].rate:.0f}",
        "batch_urls_per_s_filestore": f"{batch['Filestore'].rate * BATCH:.0f}",
        "batch_urls_per_s_companion": f"{batch['Companion'].rate * BATCH:.0f}",
        "create_cpu_ms_filestore": f"{create['Filestore'].ms(SERVERS):.2f}",
        "create_cpu_ms_companion": f"{create['Companion'].ms(['companion']):.2f}",
        "create_storage_cpu_ms_filestore": f"{create['Filestore'].ms(['seaweedfs']):.2f}",
        "create_storage_cpu_ms_companion": f"{create['Companion'].ms(['seaweedfs']):.2f}",
        "sign_cpu_ms_filestore": f"{sign['Filestore'].ms(SERVERS):.2f}",
        "sign_cpu_ms_companion": f"{sign['Companion'].ms(['companion']):.2f}",
        "batch_cpu_ms_filestore": f"{batch['Filestore'].ms(SERVERS):.2f}",
        "batch_cpu_ms_companion": f"{batch['Companion'].ms(['companion']):.2f}",
        "memory_growth_mib_filestore": f"{filestore.growth_mib():.0f}",
        "memory_growth_mib_companion": f"{companion.growth_mib():.0f}",
    }
    print("RESULT " + " ".join(f"{name}={value}" for name, value in figures.items()))


if __name__ == "__main__":
    asyncio.run(main())
