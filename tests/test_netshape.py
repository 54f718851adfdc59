"""The benchmarks' network shaping (``benchmarks/netshape.py``), checked on its own: the delay relay
adds the round trip it is set to and keeps a long transfer's rate; namespaces and the veth pairs
between them carry traffic, and are gone, with every process left in them, once their block ends,
also when it ends in an exception. The benchmarks that use them (``make bench-proxy-shaped``,
``make bench-regions``) take minutes; these take seconds. Namespaces need root, which the tests
have here (and CI, which runs as root).
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

MIB = 1024 * 1024


def _load_netshape() -> ModuleType:
    # The benchmarks are not a package the tests can import (the repository root is not on the
    # path); netshape needs nothing but the standard library, so it is loaded from its file.
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "netshape.py"
    spec = importlib.util.spec_from_file_location("bench_netshape", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


netshape = _load_netshape()
DelayRelay = netshape.DelayRelay
in_namespace = netshape.in_namespace
measure_added_rtt_ms = netshape.measure_added_rtt_ms
network_namespace = netshape.network_namespace
veth_link = netshape.veth_link


@pytest.mark.parametrize("one_way_ms", [5.0, 50.0])
async def test_the_relay_adds_twice_its_one_way_delay_to_a_round_trip(one_way_ms: float) -> None:
    added = await measure_added_rtt_ms(one_way_ms)
    # Never less (the bytes are held that long); a little more (the event loop's scheduling).
    assert 2 * one_way_ms <= added <= 2 * one_way_ms + 15


async def test_the_relay_delays_a_new_connection_by_its_handshakes() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(1))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    target = ("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        async with DelayRelay("127.0.0.1", target, one_way_ms=10, connect_ms=100) as relay:
            started = time.perf_counter()
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            first_answer_ms = (time.perf_counter() - started) * 1000
            writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert 120 <= first_answer_ms <= 170


async def test_the_relay_keeps_the_rate_of_a_long_transfer() -> None:
    """32 MiB through a relay holding each chunk 50 ms: a relay that waited out the delay per chunk
    (or per queue of a few chunks) would take many seconds; a queued one takes the delay once."""
    received = 0
    done = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        while chunk := await reader.read(MIB):
            received += len(chunk)
        done.set()
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    target = ("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        async with DelayRelay("127.0.0.1", target, one_way_ms=50) as relay:
            started = time.perf_counter()
            _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            block = b"\0" * MIB
            for _ in range(32):
                writer.write(block)
                await writer.drain()
            writer.write_eof()
            await asyncio.wait_for(done.wait(), 30)
            elapsed = time.perf_counter() - started
            writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert received == 32 * MIB
    # The delay once, and the bytes at a rate any relay in Python reaches on a busy machine (>20 MB/s).
    assert elapsed < 0.05 + 32 * MIB / 20e6


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True).stdout


def test_a_link_between_two_namespaces_carries_traffic_and_is_removed_with_its_processes() -> None:
    server = "import socket; s = socket.create_server((ADDR, 0)); print(s.getsockname()[1], flush=True); "
    server += "c, _ = s.accept(); c.sendall(c.recv(16)); c.close()"
    client = "import socket, sys; c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); "
    client += "c.sendall(b'across'); print(c.recv(16).decode())"
    with (  # noqa: PT012 (the block's end, by an exception, is what is tested)
        pytest.raises(RuntimeError, match="on purpose"),
        network_namespace() as a,
        network_namespace() as b,
        veth_link(a, b, rate_mbit=100) as link,
    ):
        names = (a, b)
        assert a in _namespaces()
        assert b in _namespaces()
        listening = subprocess.Popen(
            in_namespace(b, sys.executable, "-c", server.replace("ADDR", repr(link.b_addr))),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert listening.stdout is not None
        port = listening.stdout.readline().strip()
        echoed = subprocess.run(
            in_namespace(a, sys.executable, "-c", client, link.b_addr, port),
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert echoed.stdout.strip() == "across"
        assert listening.wait(timeout=10) == 0
        # A process left behind in a namespace (a server the caller forgot) is ended with it.
        left_behind = subprocess.Popen(in_namespace(a, "sleep", "600"))
        raise RuntimeError("on purpose")
    assert left_behind.wait(timeout=15) != 0
    for name in names:
        assert name not in _namespaces()
    links = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True).stdout
    assert link.a_dev not in links
    assert link.b_dev not in links
