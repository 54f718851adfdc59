"""The entry point every service's ``main`` uses: settings, logging, build, serve, shut down."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from filestore.core.logging import configure_logging
from filestore.core.server import ServerHandle, run_server
from filestore.core.settings import GrpcServerSettings, exit_on_settings_error

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

        async def serve() -> None:
            handle = await build(settings)
            await run_server(handle, grace_s=settings.server.shutdown_grace_s)

        asyncio.run(serve())

    return main
