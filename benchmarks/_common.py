"""Shared by the benchmarks: timing with warm-up and best-of repeats, percentiles, throughput at a
fixed number of calls in flight, the echo RPC every service benchmark is measured against, and a
throwaway embedded stack (only the components a benchmark needs) in a temp directory."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from filestore.core.auth import TokenVerifier, mint_token
from filestore.core.channels import insecure_channel
from filestore.server.bootstrap import ServerHandle, create_server
from filestore.stack import Stack, StackConfig, StackPorts

__all__ = [
    "BENCH_LOG_LEVEL",
    "CALLS",
    "ECHO_SERVICE",
    "IN_FLIGHT",
    "Throughput",
    "best_per_call_us",
    "echo_caller",
    "echo_server",
    "load_average",
    "measure",
    "median",
    "percentile",
    "relayed_echo",
    "temporary_stack",
]

#: A generic (no proto) unary RPC that answers its request: the floor of one call through the
#: server bootstrap (interceptors and token check included) with no service work behind it.
ECHO_SERVICE = "bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
#: The defaults of ``measure``: the control-plane benchmarks all run at this load.
#: The level every benchmark logs at, in its own process and in the stack it starts: per-RPC info lines
#: would otherwise be paid by the services measured and not by the echo floor beside them.
BENCH_LOG_LEVEL = "warning"
#: ``FILESTORE_BENCH_QUICK=1`` (any value but empty or 0): the benchmarks that have a smaller size run
#: it, for trying them out; their figures then mean little.
QUICK = os.environ.get("FILESTORE_BENCH_QUICK", "") not in ("", "0")
CALLS = 3000
IN_FLIGHT = 64
WARMUP = 300


class Throughput(NamedTuple):
    rate: float  # calls per second
    p50_ms: float
    p99_ms: float


def best_per_call_us(call: Callable[[], object], *, number: int, repeats: int = 7) -> float:
    """Microseconds per call: the best of ``repeats`` runs of ``number`` calls, after a warm-up.
    The best run is the one least disturbed by the rest of the machine (the usual timeit rule)."""
    for _ in range(min(number, 1000)):
        call()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(number):
            call()
        runs.append((time.perf_counter_ns() - started) / number / 1000)
    return min(runs)


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: printed with every result, because the benchmark
    machine is shared and a ratio measured under load deserves to be read with that in mind."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def measure(
    name: str,
    call: Callable[[int], Awaitable[object]],
    *,
    calls: int = CALLS,
    in_flight: int = IN_FLIGHT,
    warmup: int = WARMUP,
) -> Throughput:
    """Throughput and latency of ``calls`` calls with ``in_flight`` always in flight, after ``warmup``
    calls (channels connected, caches and prepared statements warm). ``call`` gets a distinct
    index per call, so callers can spread requests over their fixtures."""
    for start in range(0, warmup, in_flight):
        await asyncio.gather(*(call(i) for i in range(start, min(warmup, start + in_flight))))
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        # Workers share one iterator: a slow call holds back only its own worker, so the number in
        # flight stays constant (a gather of fixed batches would wait for each batch's slowest).
        for i in counter:
            started = time.perf_counter()
            await call(warmup + i)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    rate = calls / (time.perf_counter() - started)
    result = Throughput(rate, median(latencies), percentile(latencies, 0.99))
    print(
        f"{name:<22} {rate:8.0f} calls/s   p50 {result.p50_ms:6.2f} ms   p99 {result.p99_ms:6.2f} ms",
        flush=True,
    )
    return result


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


def _register_echo(server: grpc.aio.Server) -> list[str]:
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Echo": handler})])
    return [ECHO_SERVICE]


def echo_server(auth_secret: str) -> ServerHandle:
    """An echo server on the services' own bootstrap (``create_server``), on a free local port;
    the caller starts and stops it. Run it in the process that runs the service measured, so both
    share the event loop, the client and the machine's load."""
    return create_server(
        listen="127.0.0.1:0",
        domain="bench.filestore.v1",
        verifier=TokenVerifier(auth_secret),
        register=_register_echo,
    )


def echo_caller(
    channel: grpc.aio.Channel, payload: bytes = b"x" * 64, *, method: str = ECHO_METHOD
) -> Callable[[int], Awaitable[object]]:
    """A ``measure``-shaped call of the echo RPC (or another ``method`` answering bytes with
    bytes) over ``channel``."""
    echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)

    async def call_echo(i: int) -> object:
        return await echo(payload)

    return call_echo


RELAY_SERVICE = "bench.Relay"


@asynccontextmanager
async def echo_process(auth_secret: str) -> AsyncIterator[tuple[int, int]]:
    """``benchmarks.echo_process`` started: yields (pid, port); stopped on exit."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.echo_process",
        auth_secret,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        port = int(await asyncio.wait_for(child.stdout.readline(), timeout=30))
        yield child.pid, port
    finally:
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), timeout=10)
        except TimeoutError:
            child.kill()
            await child.wait()


@asynccontextmanager
async def relayed_echo(auth_secret: str) -> AsyncIterator[Callable[[int], Awaitable[object]]]:
    """The floor of a call that makes one more call, as CreateUpload and GetDownloadUrl do: a relay
    RPC served in this process (the services' bootstrap, like the broker or the download service
    measured beside it) that calls an echo server in a process of its own (like the metadata
    service) before it answers. Yields a ``measure``-shaped caller of the relay."""
    token = mint_token(auth_secret, subject="bench", tenant="bench")
    inner_channel: grpc.aio.Channel | None = None
    relay: ServerHandle | None = None
    outer_channel: grpc.aio.Channel | None = None
    async with echo_process(auth_secret) as (_, port):
        try:
            inner_channel = insecure_channel(f"127.0.0.1:{port}", token=lambda: token)
            call_inner = echo_caller(inner_channel)

            async def forward(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
                await call_inner(0)
                return request

            def register(server: grpc.aio.Server) -> list[str]:
                handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(forward)
                server.add_generic_rpc_handlers(
                    [grpc.method_handlers_generic_handler(RELAY_SERVICE, {"Echo": handler})]
                )
                return [RELAY_SERVICE]

            relay = create_server(
                listen="127.0.0.1:0",
                domain="bench.filestore.v1",
                verifier=TokenVerifier(auth_secret),
                register=register,
            )
            await relay.start()
            outer_channel = insecure_channel(f"127.0.0.1:{relay.port}", token=lambda: token)
            yield echo_caller(outer_channel, method=f"/{RELAY_SERVICE}/Echo")
        finally:
            for channel in (outer_channel, inner_channel):
                if channel is not None:
                    await channel.close()
            if relay is not None:
                await relay.stop(0)


@asynccontextmanager
async def temporary_stack(
    components: tuple[str, ...],
    *,
    host: str = "127.0.0.1",
    extra_env: Mapping[str, Mapping[str, str]] | None = None,
    ports: StackPorts | None = None,
) -> AsyncIterator[Stack]:
    """The stack's ``components`` on free ports of ``host`` (every component listens there, and the
    presigned URLs name it: a shaped link's root-side address lets a client in its namespace in),
    or on ``ports``, with ``extra_env`` added to the environment of the components it names."""
    with tempfile.TemporaryDirectory(prefix="filestore-bench-") as home:
        config = StackConfig(
            home=Path(home),
            host=host,
            ports=ports or StackPorts.free(host),
            components=components,
            ready_timeout_s=90.0,
            # The level the benchmark process and its echo server log at: the services measured
            # and the echo floor they are compared with pay for the same logging.
            log_level=BENCH_LOG_LEVEL,
            extra_env=extra_env or {},
        )
        async with Stack(config) as stack:
            yield stack
