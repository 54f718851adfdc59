"""Builds and runs the browser face: the Connect application over the public RPCs (routes), behind
the browser rules (cors), served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvicorn
from connectrpc.server import ConnectASGIApplication

from filestore.core.channels import plain_channel
from filestore.edge.cors import BrowserRules
from filestore.edge.routes import PUBLIC_RPCS, endpoints
from filestore.edge.settings import EdgeSettings
from filestore.edge.wire import BinaryCodec, JsonCodec
from filestore.server.logging import get_logger

__all__ = ["EdgeHandle", "build_app", "run", "start"]

log = get_logger("filestore.edge")

#: The largest request a page may send. Every public request is small (ids, names, labels, at most
#: 10,000 part checksums of 64 hex digits: ~1 MiB); the bytes of files never come here.
READ_MAX_BYTES = 2 * 1024 * 1024


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: :func:`run` stops it on SIGTERM, and a test that
    starts one keeps its own handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _PublicRpcs(ConnectASGIApplication[None]):
    """All public RPCs of all upstream services in one application (one origin, one URL)."""

    @property
    def path(self) -> str:
        return "/"


def build_app(settings: EdgeSettings, channels: dict[str, grpc.aio.Channel]) -> Any:
    """The ASGI application: browser rules in front of the Connect/gRPC-Web endpoints."""
    served = endpoints(channels, max_timeout_s=settings.call_timeout_s)
    connect = _PublicRpcs(
        service=None,
        endpoints=lambda _: served,
        read_max_bytes=READ_MAX_BYTES,
        codecs=[BinaryCodec(), JsonCodec()],
    )
    return BrowserRules(connect, origins=settings.cors_origins)


@dataclass(slots=True)
class EdgeHandle:
    """A running face: its port and how to stop it."""

    server: _Server
    task: asyncio.Task[None]
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    @property
    def port(self) -> int:
        sockets = self.server.servers[0].sockets
        port: int = sockets[0].getsockname()[1]
        return port

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let calls in flight finish for up to ``grace_s``, close the channels."""
        self.server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.task), timeout=grace_s + 1)
        if not self.task.done():
            self.server.force_exit = True
            await self.task
        for channel in self.channels.values():
            await channel.close()


async def start(settings: EdgeSettings) -> EdgeHandle:
    """Start serving on ``settings.server.listen`` (port 0 picks a free one: see ``handle.port``)."""
    tls = settings.server.tls
    addresses = {
        "upload": settings.upload_address,
        "metadata": settings.metadata_address,
        "download": settings.download_address,
        "processor": settings.processor_address,
    }
    channels = {name: plain_channel(addresses[name], tls=tls) for name in PUBLIC_RPCS}
    host, _, port = settings.server.listen.rpartition(":")
    config = uvicorn.Config(
        build_app(settings, channels),
        host=host.strip("[]"),
        port=int(port),
        ssl_certfile=tls.cert_file,
        ssl_keyfile=tls.key_file,
        # Our own structured log says what matters; uvicorn's access log would repeat every call.
        access_log=False,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_s) or None,
        server_header=False,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # raises what stopped it (a port in use)
            raise RuntimeError("the browser face stopped during start-up")
        await asyncio.sleep(0.01)
    return EdgeHandle(server, task, channels)


async def run(settings: EdgeSettings) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    handle = await start(settings)
    log.info(
        "serving",
        port=handle.port,
        origins=list(settings.cors_origins),
        rpcs=sum(len(methods) for methods in PUBLIC_RPCS.values()),
    )
    await stop.wait()
    log.info("shutting_down", grace_s=settings.server.shutdown_grace_s)
    await handle.stop(settings.server.shutdown_grace_s)
    log.info("stopped")
