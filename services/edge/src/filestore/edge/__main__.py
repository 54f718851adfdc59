"""``filestore-edge``: run the browser face (Connect and gRPC-Web over HTTP)."""

from __future__ import annotations

import asyncio

from filestore.core.env import exit_on_settings_error
from filestore.edge.app import run
from filestore.edge.settings import EdgeSettings
from filestore.server.logging import configure_logging


def main() -> None:
    with exit_on_settings_error("filestore-edge"):
        settings = EdgeSettings.from_env()
    configure_logging(settings.server.log_level, service="edge")
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
