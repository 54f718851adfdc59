"""make bench-control: CreateUpload (single) and GetUpload at 64 calls in flight, against an echo
RPC on the same server bootstrap (filestore.core.server.create_server: the same interceptors,
token check included), all measured in the same run.

The broker runs in this process on a throwaway stack (SeaweedFS, NATS, metadata on SQLite); the
echo server too, so both share the same client, event loop and machine load and the ratio
compares like with like. CreateUpload includes its metadata round trip (quota, file and upload
rows in one transaction) and a presigned PUT.

Ends with: RESULT create_upload_vs_echo=<r> create_upload_p99_ms=<p>
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from benchmarks._common import median, percentile, temporary_stack
from filestore.core.auth import TokenVerifier, mint_token
from filestore.core.clients import insecure_channel
from filestore.core.logging import configure_logging
from filestore.core.server import create_server
from filestore.core.settings import Env
from filestore.upload.app import build
from filestore.upload.settings import UploadSettings
from filestore.v1 import (
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    upload_service_pb2,
    upload_service_pb2_grpc,
)

IN_FLIGHT = 64
CALLS = 3000
WARMUP = 300
ECHO_SERVICE = "bench.Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


def _register_echo(server: grpc.aio.Server) -> list[str]:
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Echo": handler})])
    return [ECHO_SERVICE]


async def measure(name: str, call: Callable[[int], Awaitable[object]]) -> tuple[float, float, float]:
    """(calls per second, p50 ms, p99 ms) of ``CALLS`` calls with ``IN_FLIGHT`` always in flight."""
    for start in range(0, WARMUP, IN_FLIGHT):
        await asyncio.gather(*(call(i) for i in range(start, min(WARMUP, start + IN_FLIGHT))))
    latencies: list[float] = []
    counter = iter(range(CALLS))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await call(WARMUP + i)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    rate = CALLS / (time.perf_counter() - started)
    p50, p99 = median(latencies), percentile(latencies, 0.99)
    print(f"{name:<14} {rate:8.0f} calls/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    return rate, p50, p99


async def main() -> None:
    configure_logging("warning", service="bench")
    async with temporary_stack(("seaweedfs", "nats", "metadata")) as stack:
        endpoints = stack.endpoints
        settings = UploadSettings.from_env(
            Env(
                {
                    "FILESTORE_LISTEN": "127.0.0.1:0",
                    "FILESTORE_LOG_LEVEL": "warning",
                    "FILESTORE_AUTH_SECRET": endpoints.auth_secret,
                    "FILESTORE_METADATA_ADDR": endpoints.metadata_addr,
                    "FILESTORE_S3_ENDPOINT": endpoints.s3_endpoint,
                    "FILESTORE_S3_ACCESS_KEY": endpoints.s3_access_key,
                    "FILESTORE_S3_SECRET_KEY": endpoints.s3_secret_key,
                    "FILESTORE_S3_BUCKET": endpoints.bucket,
                    "FILESTORE_NATS_URL": endpoints.nats_url,
                    "FILESTORE_REAPER_INTERVAL_S": "0",
                }
            )
        )
        broker = await build(settings)
        echo = create_server(
            listen="127.0.0.1:0",
            domain="bench.filestore.v1",
            verifier=TokenVerifier(endpoints.auth_secret),
            register=_register_echo,
        )
        await broker.start()
        await echo.start()
        token = mint_token(endpoints.auth_secret, subject="bench", tenant="bench")
        broker_channel = insecure_channel(f"127.0.0.1:{broker.port}", token=lambda: token)
        echo_channel = insecure_channel(f"127.0.0.1:{echo.port}", token=lambda: token)
        try:
            upload = upload_service_pb2_grpc.UploadServiceStub(broker_channel)
            echo_call = echo_channel.unary_unary(f"/{ECHO_SERVICE}/Echo")
            payload = b"x" * 64
            created_ids: list[str] = []

            async def call_echo(i: int) -> object:
                return await echo_call(payload)

            async def call_create(i: int) -> object:
                created = await upload.CreateUpload(
                    upload_service_pb2.CreateUploadRequest(
                        name=f"bench-{i}.pdf",
                        size=1024 + i,
                        content_type="application/pdf",
                        request_id=str(uuid.uuid4()),
                    )
                )
                created_ids.append(created.upload.id)
                return created

            async def call_get(i: int) -> object:
                return await upload.GetUpload(
                    upload_service_pb2.GetUploadRequest(upload_id=created_ids[i % len(created_ids)])
                )

            print(f"{CALLS} calls each, {IN_FLIGHT} in flight, one process, 2 gRPC servers, same run")
            echo_rate, _, echo_p99 = await measure("Echo", call_echo)
            create_rate, _, create_p99 = await measure("CreateUpload", call_create)
            get_rate, _, _ = await measure("GetUpload", call_get)
            # The metadata read GetUpload makes, called directly with the broker's service role:
            # separates the broker's own cost from the catalogue's.
            service_token = mint_token(
                endpoints.auth_secret, subject="service:bench", tenant="*", roles=["service"]
            )
            metadata_channel = insecure_channel(endpoints.metadata_addr, token=lambda: service_token)
            metadata = metadata_service_pb2_grpc.MetadataServiceStub(metadata_channel)

            async def call_record(i: int) -> object:
                return await metadata.GetUploadRecord(
                    metadata_service_pb2.GetUploadRecordRequest(
                        upload_id=created_ids[i % len(created_ids)], tenant="bench"
                    )
                )

            record_rate, _, _ = await measure("metadata read", call_record)
            await metadata_channel.close()
            echo_again, _, _ = await measure("Echo (again)", call_echo)
            # The echo runs before and after the broker calls; their mean is the baseline, so
            # drift in machine load during the run does not favour either side.
            baseline = (echo_rate + echo_again) / 2
            print(f"CreateUpload / echo throughput: {create_rate / baseline:.2f}")
            print(f"GetUpload / echo throughput:    {get_rate / baseline:.2f}")
            print(
                f"metadata GetUploadRecord / echo: {record_rate / baseline:.2f} (the floor under GetUpload)"
            )
            print(f"echo p99: {echo_p99:.2f} ms")
            ratio = create_rate / baseline
            print(f"RESULT create_upload_vs_echo={ratio:.2f} create_upload_p99_ms={create_p99:.2f}")
        finally:
            await broker_channel.close()
            await echo_channel.close()
            await echo.stop(0)
            await broker.stop(0)


if __name__ == "__main__":
    asyncio.run(main())
