"""A stand-in for a Filestore service: serves grpc.health.v1 on $FILESTORE_LISTEN, nothing else.

Test switches (environment): FAKE_ENV_DUMP=<path> writes the FILESTORE_* variables it got as JSON;
FAKE_EXIT_AT_START=<status> logs a line and exits at once; FAKE_NOT_SERVING=1 never turns SERVING;
FAKE_CRASH_WHEN_EXISTS=<path> exits with status 3, as a crash would (no clean stop), as soon as that
file exists, checking from the moment it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

CRASH_STATUS = 3


def log(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def dump_env(path: str) -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith("FILESTORE_")}
    Path(path).write_text(json.dumps(env))


async def serve() -> int:
    listen = os.environ["FILESTORE_LISTEN"]
    if dump := os.environ.get("FAKE_ENV_DUMP"):
        dump_env(dump)
    if exit_status := os.environ.get("FAKE_EXIT_AT_START"):
        log("fake_service_refuses_to_start", reason="FAKE_EXIT_AT_START")
        return int(exit_status)

    server = grpc.aio.server()
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(listen)
    await server.start()
    # grpc's HealthServicer reports "" as SERVING from birth, so NOT_SERVING must be set explicitly.
    serving = not os.environ.get("FAKE_NOT_SERVING")
    await health_servicer.set(
        "", health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    log("fake_service_started", listen=listen, pid=os.getpid())

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    if crash_file := os.environ.get("FAKE_CRASH_WHEN_EXISTS"):
        while not stopping.is_set() and not await asyncio.to_thread(Path(crash_file).exists):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.05)
        if not stopping.is_set():
            log("fake_service_crashing", reason="FAKE_CRASH_WHEN_EXISTS")
            os._exit(CRASH_STATUS)
    await stopping.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(1.0)
    log("fake_service_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(serve()))
