"""make bench-control: CreateUpload (single) and GetUpload at 64 calls in flight, against an echo
RPC on the same server bootstrap (filestore.server.bootstrap.create_server: the same interceptors,
token check included), all measured in the same run.

The broker runs in this process on a throwaway stack (SeaweedFS, NATS, metadata on SQLite); the
echo server too, so both share the same client, event loop and machine load and the ratio
compares like with like. CreateUpload includes its metadata round trip (quota, file and upload
rows in one transaction) and a presigned PUT.

Ends with: RESULT create_upload_vs_echo=<r> create_upload_p99_ms=<p>
"""

from __future__ import annotations

import asyncio
import uuid

from benchmarks._common import (
    BENCH_LOG_LEVEL,
    CALLS,
    IN_FLIGHT,
    echo_caller,
    echo_server,
    load_average,
    measure,
    relayed_echo,
    temporary_stack,
)
from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.core.env import Env
from filestore.server.logging import configure_logging
from filestore.upload.app import build
from filestore.upload.settings import UploadSettings
from filestore.v1 import (
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    upload_service_pb2,
    upload_service_pb2_grpc,
)


async def main() -> None:
    configure_logging(BENCH_LOG_LEVEL, service="bench")
    async with temporary_stack(("seaweedfs", "nats", "metadata")) as stack:
        endpoints = stack.endpoints
        settings = UploadSettings.from_env(
            Env(
                {
                    "FILESTORE_LISTEN": "127.0.0.1:0",
                    "FILESTORE_LOG_LEVEL": BENCH_LOG_LEVEL,
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
        echo = echo_server(endpoints.auth_secret)
        await broker.start()
        await echo.start()
        token = mint_token(endpoints.auth_secret, subject="bench", tenant="bench")
        broker_channel = insecure_channel(f"127.0.0.1:{broker.port}", token=lambda: token)
        echo_channel = insecure_channel(f"127.0.0.1:{echo.port}", token=lambda: token)
        try:
            upload = upload_service_pb2_grpc.UploadServiceStub(broker_channel)
            call_echo = echo_caller(echo_channel)
            created_ids: list[str] = []

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
            print(f"load average before: {load_average()}")
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
            async with relayed_echo(endpoints.auth_secret) as call_relay:
                relay_rate, _, _ = await measure("Echo, two hops", call_relay)
            echo_again, _, _ = await measure("Echo (again)", call_echo)
            # The echo runs before and after the broker calls; their mean is the baseline, so
            # drift in machine load during the run does not favour either side.
            baseline = (echo_rate + echo_again) / 2
            print(f"CreateUpload / echo throughput: {create_rate / baseline:.2f}")
            print(f"GetUpload / echo throughput:    {get_rate / baseline:.2f}")
            print(
                f"metadata GetUploadRecord / echo: {record_rate / baseline:.2f} (the floor under GetUpload)"
            )
            print(
                f"two-hop echo / echo:             {relay_rate / baseline:.2f}"
                " (the ceiling for a call that makes one more call, as CreateUpload does)"
            )
            print(f"echo p99: {echo_p99:.2f} ms")
            print(f"load average after: {load_average()}")
            ratio = create_rate / baseline
            print(f"RESULT create_upload_vs_echo={ratio:.2f} create_upload_p99_ms={create_p99:.2f}")
        finally:
            await broker_channel.close()
            await echo_channel.close()
            await echo.stop(0)
            await broker.stop(0)


if __name__ == "__main__":
    asyncio.run(main())
