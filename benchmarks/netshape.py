"""A shaped network link for the benchmarks: a client in a network namespace of its own, joined to
the root namespace by a veth pair whose two directions are each limited by ``tbf``.

::

    with shaped_link(rate_mbit=300) as link:
        # Servers in the root namespace listen on link.host_addr (or 0.0.0.0).
        subprocess.run(link.command("python", "-m", "client", f"http://{link.host_addr}:{port}"))

What it sets up (we run as root), all with names unique to the run (``fsb<pid><n>``):

* ``ip netns add NS``; a veth pair, one end left in the root namespace (``host_addr``), the other
  moved into NS (``client_addr``), both on a /30 of 198.18.0.0/15, the range RFC 2544 reserves for
  network benchmarks (so it collides with no real network of the machine); the namespace's loopback
  is brought up and its default route points at ``host_addr``. Nothing in the namespace reaches
  anything but this machine's root namespace.
* ``tbf`` on the egress of each veth end: the root end's shapes what the client downloads, the
  namespace end's (configured inside NS) what it uploads. ``rate_mbit`` each way; the bucket
  (``burst``) is a few milliseconds of the rate and the queue (``latency``) 20 ms, so a TCP sender
  sees a link of that rate with a modest buffer, like a real access link. veth hands tbf GSO
  packets of up to 64 KiB; tbf splits those larger than its bucket itself, so the rate holds.
* Optionally a :class:`DelayRelay` (``netem``, which would add delay in the kernel, is absent on
  this machine): a TCP relay in the root namespace, listening on ``host_addr``, that forwards to a
  target and holds every chunk for ``one_way_ms`` in each direction, so a connection through it
  sees ``2 * one_way_ms`` more round-trip time; the throughput of a long transfer is kept (chunks
  are queued, not serialised behind the delay).

Everything is removed on exit, on an exception, and by an ``atexit`` hook if the process is
stopped between the two (deleting the namespace deletes its veth end, and with it the pair).
A process started with :meth:`ShapedLink.command` is the caller's to end.

Traffic between the root namespace and ``host_addr`` itself (say a proxy to storage, both listening
on that address) is local and goes through the loopback device, unshaped: the data-centre side of
the link. Only traffic to and from the namespace crosses the veth pair and its shapers.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_RATE_MBIT", "DelayRelay", "ShapedLink", "shaped_link"]

DEFAULT_RATE_MBIT = 300
#: The rate the shaped-link benchmarks use: ``FILESTORE_BENCH_RATE_MBIT``, else the default.
RATE_MBIT = float(os.environ.get("FILESTORE_BENCH_RATE_MBIT", DEFAULT_RATE_MBIT))
#: The queue tbf keeps before it drops: a modest buffer, as on an access link.
QUEUE_LATENCY_MS = 20
_counter = itertools.count()


def _ip(*args: str, namespace: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*prefix, *args], check=True, capture_output=True, text=True)


def _burst_bytes(rate_mbit: float) -> int:
    # About 4 ms of the rate, and never less than what tbf needs to pass one full-sized frame
    # (it splits bigger GSO packets itself).
    return max(64 * 1024, int(rate_mbit * 1e6 / 8 * 0.004))


@dataclass(frozen=True, slots=True)
class ShapedLink:
    namespace: str
    host_dev: str
    client_dev: str
    host_addr: str
    client_addr: str
    rate_mbit: float

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the client's namespace (``ip netns exec``)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def shaper_stats(self) -> dict[str, str]:
        """``tc -s qdisc`` of both ends (bytes sent, drops, overlimits), for the curious."""
        return {
            "download (root end)": subprocess.run(
                ["tc", "-s", "qdisc", "show", "dev", self.host_dev],
                check=False,
                capture_output=True,
                text=True,
            ).stdout,
            "upload (namespace end)": subprocess.run(
                self.command("tc", "-s", "qdisc", "show", "dev", self.client_dev),
                check=False,
                capture_output=True,
                text=True,
            ).stdout,
        }


def _subnet(index: int) -> tuple[str, str]:
    """The two usable addresses of the ``index``-th /30 of 198.18.0.0/15 (2^15 of them)."""
    offset = index % 2**15 * 4
    prefix = f"198.{18 + offset // 65536}.{offset // 256 % 256}"
    return f"{prefix}.{offset % 256 + 1}", f"{prefix}.{offset % 256 + 2}"


def _addresses_in_use() -> str:
    return subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], check=False, capture_output=True, text=True
    ).stdout


def _teardown(namespace: str, host_dev: str) -> None:
    # Deleting the namespace destroys the veth end inside it, which destroys the pair; the explicit
    # link delete covers a failure before the end was moved into the namespace.
    subprocess.run(["ip", "link", "del", host_dev], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)


@contextlib.contextmanager
def shaped_link(rate_mbit: float = DEFAULT_RATE_MBIT) -> Iterator[ShapedLink]:
    """A client namespace and a veth pair shaped to ``rate_mbit`` each way; removed on exit."""
    n = next(_counter)
    name = f"fsb{os.getpid()}{n}"
    namespace, host_dev, client_dev = name, f"{name}h", f"{name}c"
    used = _addresses_in_use()
    for attempt in range(64):
        # Spread by pid, so concurrent runs (other benchmarks on the machine) are unlikely to meet;
        # a /30 already on an interface is skipped.
        host_addr, client_addr = _subnet(os.getpid() * 977 + n * 64 + attempt)
        if f" {host_addr}/" not in used and f" {client_addr}/" not in used:
            break
    else:
        raise RuntimeError("no free /30 in 198.18.0.0/15")
    hook = atexit.register(_teardown, namespace, host_dev)
    try:
        _ip("ip", "netns", "add", namespace)
        _ip("ip", "link", "add", host_dev, "type", "veth", "peer", "name", client_dev)
        _ip("ip", "link", "set", client_dev, "netns", namespace)
        _ip("ip", "addr", "add", f"{host_addr}/30", "dev", host_dev)
        _ip("ip", "link", "set", host_dev, "up")
        _ip("ip", "addr", "add", f"{client_addr}/30", "dev", client_dev, namespace=namespace)
        _ip("ip", "link", "set", client_dev, "up", namespace=namespace)
        _ip("ip", "link", "set", "lo", "up", namespace=namespace)
        _ip("ip", "route", "add", "default", "via", host_addr, namespace=namespace)
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
        _ip("tc", "qdisc", "add", "dev", host_dev, *shaper)
        _ip("tc", "qdisc", "add", "dev", client_dev, *shaper, namespace=namespace)
        _wait_up(namespace, host_dev, client_dev)
        yield ShapedLink(namespace, host_dev, client_dev, host_addr, client_addr, rate_mbit)
    finally:
        _teardown(namespace, host_dev)
        atexit.unregister(hook)


def _wait_up(namespace: str, host_dev: str, client_dev: str) -> None:
    """A new veth pair takes a moment to report its carrier; wait until both ends are up."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        host = Path(f"/sys/class/net/{host_dev}/operstate").read_text().strip()
        client = subprocess.run(
            ["ip", "netns", "exec", namespace, "cat", f"/sys/class/net/{client_dev}/operstate"],
            check=False,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if host == client == "up":
            return
        time.sleep(0.05)
    raise RuntimeError(f"the veth pair {host_dev}/{client_dev} did not come up")


# --------------------------------------------------------------------------------- the delay relay


class DelayRelay:
    """A TCP relay listening on ``listen_host`` (port chosen by the kernel, ``self.port``) that
    forwards every connection to ``target`` and holds each chunk ``one_way_ms`` in each direction.

    Run it on an event loop of its own (``async with DelayRelay(...)``), ideally in its own process
    or thread, so the benchmark's own work does not delay the bytes further. ``connect_ms`` adds
    a one-off delay before the upstream connection is opened (a handshake's extra round trips).
    """

    CHUNK = 256 * 1024
    #: Chunks queued per direction before the reader waits (bounds memory at high rate x delay).
    QUEUE_CHUNKS = 512

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
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(self.QUEUE_CHUNKS)
        loop = asyncio.get_running_loop()

        async def read() -> None:
            while chunk := await reader.read(self.CHUNK):
                await queue.put((loop.time() + self.one_way_s, chunk))
            await queue.put((loop.time() + self.one_way_s, b""))

        async def write() -> None:
            while True:
                due, chunk = await queue.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        await asyncio.gather(read(), write())


async def _relay_main(listen_host: str, target_host: str, target_port: int, one_way_ms: float) -> None:
    """Serve a DelayRelay until standard input closes (the parent's end of the pipe)."""
    async with DelayRelay(listen_host, (target_host, target_port), one_way_ms=one_way_ms) as relay:
        print(f"listening {relay.port}", flush=True)
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    # python -m benchmarks.netshape relay LISTEN_HOST TARGET_HOST TARGET_PORT [ONE_WAY_MS]: a relay
    # to run in a namespace (ShapedLink.command), printing "listening <port>", until stdin closes.
    if len(sys.argv) not in (5, 6) or sys.argv[1] != "relay":
        sys.exit(f"usage: {sys.argv[0]} relay LISTEN_HOST TARGET_HOST TARGET_PORT [ONE_WAY_MS]")
    asyncio.run(
        _relay_main(
            sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) == 6 else 0
        )
    )
