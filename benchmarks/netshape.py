"""Shaped network links for the benchmarks: network namespaces of their own, joined by veth pairs
whose two directions are each limited by ``tbf``, and a relay that adds round-trip time.

::

    with shaped_link(rate_mbit=300) as link:
        # Servers in the root namespace listen on link.host_addr (or 0.0.0.0).
        subprocess.run(link.command("python", "-m", "client", f"http://{link.host_addr}:{port}"))

    # Or any topology: namespaces, and links between any two of them (None: the root namespace).
    with network_namespace() as client, network_namespace() as store:
        with veth_link(client, store, rate_mbit=75) as link:
            ...  # a server in ``store`` on link.b_addr, reached from ``client``

What it sets up (we run as root), all with names unique to the run (``fsb<pid><n>``):

* ``ip netns add NS`` with its loopback up (:func:`network_namespace`). On exit every process still
  in it is ended (only this run's can be: the namespace is the run's) and it is deleted.
* A veth pair (:func:`veth_link`) between two namespaces, either of which may be the root one, both
  ends on a /30 of 198.18.0.0/15, the range RFC 2544 reserves for network benchmarks (so it
  collides with no real network of the machine). A namespace reaches only what its links reach.
  :func:`shaped_link` is the common case: a new namespace linked to the root one, its default route
  pointing at the root end (``host_addr``).
* ``tbf`` on the egress of each veth end: one end's shapes what the other receives. ``rate_mbit``
  each way; the bucket (``burst``) is a few milliseconds of the rate and the queue (``latency``)
  20 ms, so a TCP sender sees a link of that rate with a modest buffer, like a real access link.
  veth hands tbf GSO packets of up to 64 KiB; tbf splits those larger than its bucket itself, so
  the rate holds.
* Optionally a :class:`DelayRelay` (``netem``, which would add delay in the kernel, is absent on
  this machine, and neither Debian nor PyPI has a maintained userspace one: toxiproxy is not
  packaged, ``toxiproxy-python`` is only its client): a TCP relay that forwards to a target and
  holds every chunk for ``one_way_ms`` in each direction, so a request through it waits
  ``2 * one_way_ms`` more for its answer; the throughput of a long transfer is kept (chunks are
  queued, up to a bound in bytes well above rate x delay, not serialised behind the delay).

Everything is removed on exit, on an exception, and by an ``atexit`` hook if the process is
stopped between the two (deleting a namespace deletes its veth ends, and with them the pairs).
A process started with :meth:`ShapedLink.command` is the caller's to end; one left running in a
namespace is ended when the namespace is removed.

Traffic between the root namespace and ``host_addr`` itself (say a proxy to storage, both listening
on that address) is local and goes through the loopback device, unshaped: the data-centre side of
the link. Only traffic to and from the namespace crosses the veth pair and its shapers.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_RATE_MBIT",
    "DelayRelay",
    "Link",
    "ShapedLink",
    "in_namespace",
    "measure_added_rtt_ms",
    "network_namespace",
    "shaped_link",
    "veth_link",
]

DEFAULT_RATE_MBIT = 300
#: The rate the shaped-link benchmarks use: ``FILESTORE_BENCH_RATE_MBIT``, else the default.
RATE_MBIT = float(os.environ.get("FILESTORE_BENCH_RATE_MBIT", DEFAULT_RATE_MBIT))
#: The queue tbf keeps before it drops: a modest buffer, as on an access link.
QUEUE_LATENCY_MS = 20
_counter = itertools.count()


def in_namespace(namespace: str | None, *argv: str) -> list[str]:
    """``argv`` run inside ``namespace`` (``ip netns exec``); None: the root namespace, as it is."""
    return ["ip", "netns", "exec", namespace, *argv] if namespace else list(argv)


def _ip(*args: str, namespace: str | None = None) -> None:
    subprocess.run(in_namespace(namespace, *args), check=True, capture_output=True, text=True)


def _burst_bytes(rate_mbit: float) -> int:
    # About 4 ms of the rate, and never less than what tbf needs to pass one full-sized frame
    # (it splits bigger GSO packets itself).
    return max(64 * 1024, int(rate_mbit * 1e6 / 8 * 0.004))


def _unique_name() -> str:
    return f"fsb{os.getpid()}{next(_counter)}"


# --------------------------------------------------------------------------------- namespaces


def _namespace_pids(namespace: str) -> list[int]:
    listed = subprocess.run(["ip", "netns", "pids", namespace], check=False, capture_output=True, text=True)
    return [int(pid) for pid in listed.stdout.split()]


def _remove_namespace(namespace: str) -> None:
    # A namespace outlives its name while a process is in it (with its veth ends and their
    # addresses): end them first. Every process in it is this run's, since the namespace is.
    for sig, grace_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        pids = _namespace_pids(namespace)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = _namespace_pids(namespace)
        if not pids:
            break
    subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)


@contextlib.contextmanager
def network_namespace() -> Iterator[str]:
    """A new network namespace (its name), loopback up; its processes ended and it removed on exit."""
    namespace = _unique_name()
    hook = atexit.register(_remove_namespace, namespace)
    try:
        _ip("ip", "netns", "add", namespace)
        _ip("ip", "link", "set", "lo", "up", namespace=namespace)
        yield namespace
    finally:
        _remove_namespace(namespace)
        atexit.unregister(hook)


# --------------------------------------------------------------------------------- veth pairs


def _subnet(index: int) -> tuple[str, str]:
    """The two usable addresses of the ``index``-th /30 of 198.18.0.0/15 (2^15 of them)."""
    offset = index % 2**15 * 4
    prefix = f"198.{18 + offset // 65536}.{offset // 256 % 256}"
    return f"{prefix}.{offset % 256 + 1}", f"{prefix}.{offset % 256 + 2}"


def _addresses_in_use(*namespaces: str | None) -> str:
    return "".join(
        subprocess.run(
            in_namespace(namespace, "ip", "-4", "-o", "addr", "show"),
            check=False,
            capture_output=True,
            text=True,
        ).stdout
        for namespace in namespaces
    )


def _operstate(namespace: str | None, dev: str) -> str:
    if namespace is None:
        return Path(f"/sys/class/net/{dev}/operstate").read_text().strip()
    # ip netns exec mounts the namespace's own /sys.
    return subprocess.run(
        in_namespace(namespace, "cat", f"/sys/class/net/{dev}/operstate"),
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _wait_up(a: tuple[str | None, str], b: tuple[str | None, str]) -> None:
    """A new veth pair takes a moment to report its carrier; wait until both ends are up."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _operstate(*a) == _operstate(*b) == "up":
            return
        time.sleep(0.05)
    raise RuntimeError(f"the veth pair {a[1]}/{b[1]} did not come up")


@dataclass(frozen=True, slots=True)
class Link:
    """A veth pair between namespaces ``a`` and ``b`` (None: the root namespace), ``rate_mbit`` each way."""

    a_namespace: str | None
    b_namespace: str | None
    a_dev: str
    b_dev: str
    a_addr: str
    b_addr: str
    rate_mbit: float

    def shaper_stats(self) -> dict[str, str]:
        """``tc -s qdisc`` of both ends (bytes sent, drops, overlimits), for the curious."""
        return {
            f"{direction} ({dev})": subprocess.run(
                in_namespace(namespace, "tc", "-s", "qdisc", "show", "dev", dev),
                check=False,
                capture_output=True,
                text=True,
            ).stdout
            for direction, namespace, dev in (
                ("a to b", self.a_namespace, self.a_dev),
                ("b to a", self.b_namespace, self.b_dev),
            )
        }


@contextlib.contextmanager
def veth_link(a: str | None, b: str | None, rate_mbit: float = DEFAULT_RATE_MBIT) -> Iterator[Link]:
    """A veth pair between namespaces ``a`` and ``b`` (None: the root one), each end's egress
    shaped to ``rate_mbit``; removed on exit."""
    n = next(_counter)
    name = f"fsb{os.getpid()}{n}"
    a_dev, b_dev = f"{name}a", f"{name}b"
    used = _addresses_in_use(*{a, b})
    for attempt in range(64):
        # Spread by pid, so concurrent runs (other benchmarks on the machine) are unlikely to meet;
        # a /30 already on an interface of either side is skipped.
        a_addr, b_addr = _subnet(os.getpid() * 977 + n * 64 + attempt)
        if f" {a_addr}/" not in used and f" {b_addr}/" not in used:
            break
    else:
        raise RuntimeError("no free /30 in 198.18.0.0/15")
    try:
        _ip("ip", "link", "add", a_dev, "type", "veth", "peer", "name", b_dev)
        shaper = [
            "root",
            "tbf",
            "rate",
            f"{rate_mbit}mbit",
            "burst",
            str(_burst_bytes(rate_mbit)),
            "latency",
            f"{QUEUE_LATENCY_MS}ms",
        ]
        for namespace, dev, addr in ((a, a_dev, a_addr), (b, b_dev, b_addr)):
            if namespace is not None:
                _ip("ip", "link", "set", dev, "netns", namespace)
            _ip("ip", "addr", "add", f"{addr}/30", "dev", dev, namespace=namespace)
            _ip("ip", "link", "set", dev, "up", namespace=namespace)
            _ip("tc", "qdisc", "add", "dev", dev, *shaper, namespace=namespace)
        _wait_up((a, a_dev), (b, b_dev))
        yield Link(a, b, a_dev, b_dev, a_addr, b_addr, rate_mbit)
    finally:
        # Deleting either end deletes the pair (and a namespace's removal does it anyway); the
        # end may be in the root namespace still, if moving it failed.
        for namespace, dev in ((a, a_dev), (None, a_dev)):
            subprocess.run(
                in_namespace(namespace, "ip", "link", "del", dev), check=False, capture_output=True
            )


@dataclass(frozen=True, slots=True)
class ShapedLink:
    """A client namespace linked to the root one: ``host_*`` the root end, ``client_*`` the namespace's."""

    namespace: str
    host_dev: str
    client_dev: str
    host_addr: str
    client_addr: str
    rate_mbit: float
    link: Link

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the client's namespace (``ip netns exec``)."""
        return in_namespace(self.namespace, *argv)

    def shaper_stats(self) -> dict[str, str]:
        """``tc -s qdisc`` of both ends (bytes sent, drops, overlimits), for the curious."""
        download, upload = self.link.shaper_stats().values()
        return {"download (root end)": download, "upload (namespace end)": upload}


@contextlib.contextmanager
def shaped_link(rate_mbit: float = DEFAULT_RATE_MBIT) -> Iterator[ShapedLink]:
    """A client namespace and a veth pair to the root namespace shaped to ``rate_mbit`` each way;
    removed on exit."""
    with network_namespace() as namespace, veth_link(None, namespace, rate_mbit) as link:
        _ip("ip", "route", "add", "default", "via", link.a_addr, namespace=namespace)
        yield ShapedLink(namespace, link.a_dev, link.b_dev, link.a_addr, link.b_addr, rate_mbit, link)


# --------------------------------------------------------------------------------- the delay relay


class DelayRelay:
    """A TCP relay listening on ``listen_host`` (port chosen by the kernel, ``self.port``) that
    forwards every connection to ``target`` and holds each chunk ``one_way_ms`` in each direction.

    Run it on an event loop of its own (``async with DelayRelay(...)``), ideally in its own process
    or thread, so the benchmark's own work does not delay the bytes further. ``connect_ms`` adds
    a one-off delay before the upstream connection is opened (a handshake's extra round trips).

    What it does not model: each side's TCP sees its own short round trip, so slow start and the
    window a long path needs (rate x RTT) cost nothing here; the link's rate stands for what a
    long path sustains. A request waits its round trip for the answer, which is what multipart
    uploads and ranged reads pay per request.
    """

    CHUNK = 256 * 1024
    #: Bytes queued per direction before the reader waits: bounds memory, and must stay above
    #: rate x one-way delay (16 MiB: 1.3 Gbit/s at 100 ms) or the relay itself would cap the rate.
    MAX_QUEUED_BYTES = 16 * 1024 * 1024

    def __init__(
        self,
        listen_host: str,
        target: tuple[str, int],
        *,
        one_way_ms: float = 0.0,
        connect_ms: float = 0.0,
    ) -> None:
        self.listen_host = listen_host
        self.target = target
        self.one_way_s = one_way_ms / 1000
        self.connect_s = connect_ms / 1000
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DelayRelay:
        self._server = await asyncio.start_server(self._serve, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, down_reader: asyncio.StreamReader, down_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.connect_s:
                await asyncio.sleep(self.connect_s)
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            try:
                await asyncio.gather(self._pipe(down_reader, up_writer), self._pipe(up_reader, down_writer))
            finally:
                up_writer.close()
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Only __aexit__ cancels a connection's task, and it gathers them itself: ending quietly
            # spares the server's callback a traceback for every connection still open.
            pass
        finally:
            down_writer.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # (due time, chunk); an empty chunk is the end of the stream. Bounded in bytes, not in
        # chunks: reads off a slow link come in small chunks, and a count would cap the rate.
        queue: collections.deque[tuple[float, bytes]] = collections.deque()
        queued = 0
        changed = asyncio.Condition()
        loop = asyncio.get_running_loop()

        def has_room() -> bool:
            return queued < self.MAX_QUEUED_BYTES

        async def read() -> None:
            nonlocal queued
            while True:
                chunk = await reader.read(self.CHUNK)
                # Stamped on arrival: time spent waiting for room below is part of the delay.
                due = loop.time() + self.one_way_s
                async with changed:
                    await changed.wait_for(has_room)
                    queue.append((due, chunk))
                    queued += len(chunk)
                    changed.notify_all()
                if not chunk:
                    return

        async def write() -> None:
            nonlocal queued
            while True:
                async with changed:
                    await changed.wait_for(lambda: bool(queue))
                    due, chunk = queue.popleft()
                    queued -= len(chunk)
                    changed.notify_all()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        await asyncio.gather(read(), write())


async def measure_added_rtt_ms(one_way_ms: float, *, samples: int = 20, connect_ms: float = 0.0) -> float:
    """The self-check of :class:`DelayRelay`: the round trip a DelayRelay of ``one_way_ms`` adds,
    measured on loopback (median of ``samples`` one-byte ping-pongs through it, less the median
    straight to the same echo server). Should come out at ``2 * one_way_ms`` and a little more."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(64):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def ping_pong(port: int) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            rtts = []
            for _ in range(samples):
                started = time.perf_counter()
                writer.write(b"x")
                await writer.drain()
                await reader.readexactly(1)
                rtts.append((time.perf_counter() - started) * 1000)
            return statistics.median(rtts)
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        async with DelayRelay(
            "127.0.0.1", ("127.0.0.1", port), one_way_ms=one_way_ms, connect_ms=connect_ms
        ) as relay:
            return await ping_pong(relay.port) - await ping_pong(port)
    finally:
        server.close()
        await server.wait_closed()


async def _relay_main(listen_host: str, target_host: str, target_port: int, one_way_ms: float) -> None:
    """Serve a DelayRelay until standard input closes (the parent's end of the pipe)."""
    async with DelayRelay(listen_host, (target_host, target_port), one_way_ms=one_way_ms) as relay:
        print(f"listening {relay.port}", flush=True)
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    # python -m benchmarks.netshape relay LISTEN_HOST TARGET_HOST TARGET_PORT [ONE_WAY_MS]: a relay
    # to run in a namespace (ShapedLink.command), printing "listening <port>", until stdin closes.
    # python -m benchmarks.netshape selfcheck [ONE_WAY_MS]: the relay's added round trip, measured.
    if sys.argv[1:2] == ["selfcheck"]:
        wanted = float(sys.argv[2]) if len(sys.argv) > 2 else 50.0
        added = asyncio.run(measure_added_rtt_ms(wanted))
        print(f"one way {wanted:g} ms: round trip {added:.1f} ms longer (expected {2 * wanted:g} ms)")
        sys.exit(0 if 2 * wanted <= added <= 2 * wanted + 20 else 1)
    if len(sys.argv) not in (5, 6) or sys.argv[1] != "relay":
        sys.exit(
            f"usage: {sys.argv[0]} relay LISTEN_HOST TARGET_HOST TARGET_PORT [ONE_WAY_MS] | selfcheck [MS]"
        )
    asyncio.run(
        _relay_main(
            sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) == 6 else 0
        )
    )
