"""An echo server alone in a process of its own, for the two-hop floor (see
``benchmarks._common.relayed_echo``): ``python -m benchmarks.echo_process <auth secret>``.

Prints the port it listens on as its first line, then serves until stdin closes (so it never
outlives the benchmark that started it).
"""

from __future__ import annotations

import asyncio
import sys

from benchmarks._common import BENCH_LOG_LEVEL, echo_server
from filestore.server.logging import configure_logging


async def main(auth_secret: str) -> None:
    configure_logging(BENCH_LOG_LEVEL, service="bench-echo")
    server = echo_server(auth_secret)
    await server.start()
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
