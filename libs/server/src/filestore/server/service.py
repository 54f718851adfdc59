"""The entry point every service's ``main`` uses: settings, logging, metrics and tracing, build, serve,
shut down."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from filestore.core.env import exit_on_settings_error
from filestore.server import metrics, tracing
from filestore.server.bootstrap import ServerHandle, run_server
from filestore.server.logging import configure_logging, get_logger
from filestore.server.settings import GrpcServerSettings

__all__ = ["HasServerSettings", "main_for"]


class HasServerSettings(Protocol):
    @property
    def server(self) -> GrpcServerSettings: ...


S = TypeVar("S", bound=HasServerSettings)


def main_for(
    service: str, load: Callable[[], S], build: Callable[[S], Awaitable[ServerHandle]]
) -> Callable[[], None]:
    """A console-script ``main`` for ``service``: a configuration error is one line and exit 2."""

    def main() -> None:
        with exit_on_settings_error(f"filestore-{service}"):
            settings = load()
        configure_logging(settings.server.log_level, service=service)
        observability = settings.server.observability
        metrics_server = None
        if observability.metrics_port:
            # On the gRPC listen host: where the service is reachable, its metrics are.
            host = settings.server.listen.rpartition(":")[0]
            try:
                metrics_server = metrics.start_metrics_server(host, observability.metrics_port)
            except OSError as error:
                print(
                    f"filestore-{service}: cannot serve metrics on {host}:{observability.metrics_port}: "
                    f"{error.strerror or error}",
                    file=sys.stderr,
                )
                raise SystemExit(1) from None
            get_logger("filestore.metrics").info("metrics_serving", port=metrics_server.port)
        stop_tracing = tracing.configure_tracing(observability, service=service)

        async def serve() -> None:
            handle = await build(settings)
            if settings.server.health_port:
                host = settings.server.listen.rpartition(":")[0]
                await handle.serve_health(f"{host}:{settings.server.health_port}")
            await run_server(handle, grace_s=settings.server.shutdown_grace_s)

        try:
            asyncio.run(serve())
        finally:
            # Spans still queued are written before the process ends.
            if stop_tracing is not None:
                stop_tracing()
            if metrics_server is not None:
                metrics_server.stop()

    return main
