"""make bench-download: GetDownloadUrl at 64 calls in flight against an echo RPC on the same server
bootstrap (filestore.server.bootstrap.create_server: same interceptors, token check included), measured in
the same run, with the pieces of one call measured alone beside it.

The download signer runs in this process, built exactly as ``filestore-download`` builds it (audit
events on, so every URL is a JetStream publish awaiting its ack, as in production); the echo server
too, so both share the client, the event loop and the machine's load. Metadata (SQLite), NATS and
SeaweedFS are the embedded stack's own processes. The files are READY records made through the
metadata API with a service token (the signer never reads the objects, so none are stored).

One GetDownloadUrl is: token check -> AuthorizeRead on metadata (a gRPC hop and a SQLite read) ->
a SigV4 presigned GET -> the audit event (JetStream publish, waiting for its ack). Each of the three
is measured alone at the same load, so the output says where the time goes:

* ``metadata AuthorizeRead``: the same request the signer sends, straight to metadata.
* ``audit publish``: the same event published from this process, at 64 in flight.
* ``presign``: the signer's own presigning call, per call on one core (no concurrency to speak of).

The echo runs first and last; their mean is the baseline, so drift in machine load during the run
favours neither side.

Ends with: RESULT get_download_url_vs_echo=<r> get_download_url_p99_ms=<p> authorize_read_vs_echo=<a>
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import nats
from nats.aio.client import Client as NATS

from benchmarks._common import (
    BENCH_LOG_LEVEL,
    CALLS,
    IN_FLIGHT,
    Throughput,
    best_per_call_us,
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
from filestore.core.keys import original_key
from filestore.download.app import build
from filestore.download.settings import DownloadSettings
from filestore.server import events
from filestore.server.logging import configure_logging
from filestore.server.storage import ObjectStore, StoreConfig
from filestore.v1 import (
    download_service_pb2,
    download_service_pb2_grpc,
    events_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    resources_pb2,
)

#: READY files the calls go round: enough that SQLite does not answer one hot row every time.
FILES = 256
TENANT = "bench"
READER = "bench"
Status = resources_pb2.FileStatus
READY_PATH = (Status.FILE_STATUS_UPLOADED, Status.FILE_STATUS_PROCESSING, Status.FILE_STATUS_READY)


async def ready_files(metadata: metadata_service_pb2_grpc.MetadataServiceAsyncStub) -> list[str]:
    """``FILES`` READY files owned by the reader, moved along the lifecycle as the pipeline would."""

    async def one(i: int) -> str:
        file = await metadata.CreateFile(
            metadata_service_pb2.CreateFileRequest(
                file=resources_pb2.File(
                    tenant=TENANT,
                    owner=READER,
                    name=f"report-{i}.pdf",
                    declared_content_type="application/pdf",
                    size=1024 + i,
                )
            )
        )
        for status in READY_PATH:
            await metadata.TransitionFile(
                metadata_service_pb2.TransitionFileRequest(file_id=file.id, tenant=TENANT, status=status)
            )
        return file.id

    ids: list[str] = []
    for start in range(0, FILES, 32):
        ids.extend(await asyncio.gather(*(one(i) for i in range(start, min(FILES, start + 32)))))
    return ids


def audit_publisher(
    connection: NATS, settings: DownloadSettings, file_ids: list[str]
) -> Callable[[int], Awaitable[object]]:
    """A ``measure``-shaped call publishing the audit event the signer publishes, the same way."""
    js = connection.jetstream()
    subjects = events.Subjects(settings.nats.subject_prefix if settings.nats else "files")
    expires = datetime.now(UTC) + timedelta(seconds=settings.default_ttl_s)

    async def call_publish(i: int) -> object:
        event = events_pb2.FileDownloaded(file_id=file_ids[i % FILES], tenant=TENANT, principal=READER)
        event.expire_time.FromDatetime(expires)
        event.event_time.FromDatetime(datetime.now(UTC))
        return await events.publish(js, subjects.file_downloaded, event, msg_id=str(uuid.uuid4()))

    return call_publish


def presign_cost_us(settings: DownloadSettings, file_id: str) -> float:
    """Microseconds of the signer's presigning call (same store, same parameters), on one core."""
    store = ObjectStore(StoreConfig.from_settings(settings.s3))

    def presign() -> object:
        return store.presign_get(
            original_key(TENANT, file_id),
            expires_s=settings.default_ttl_s,
            response_content_type="application/pdf",
            response_content_disposition='attachment; filename="report-0.pdf"',
        )

    return best_per_call_us(presign, number=2000)


def report(
    *,
    baseline: float,
    signed: Throughput,
    authorized: Throughput,
    published: Throughput,
    relayed: Throughput,
    presign_us: float,
) -> None:
    """The ratios to the echo floor, the per-call costs, and the RESULT line."""
    ratio = signed.rate / baseline
    print(f"GetDownloadUrl / echo throughput:        {ratio:.2f}")
    print(f"metadata AuthorizeRead / echo:           {authorized.rate / baseline:.2f}")
    print(f"audit publish / echo:                    {published.rate / baseline:.2f}")
    print(
        f"two-hop echo / echo:                     {relayed.rate / baseline:.2f}"
        " (the ceiling for a call that makes one more call, as GetDownloadUrl does)"
    )
    # Per-call costs, the way they add up in one GetDownloadUrl on a saturated process.
    print(
        "cost per call (1/throughput): "
        f"GetDownloadUrl {1e6 / signed.rate:.0f} us, echo {1e6 / baseline:.0f} us, "
        f"AuthorizeRead {1e6 / authorized.rate:.0f} us, audit publish {1e6 / published.rate:.0f} us, "
        f"presign {presign_us:.0f} us"
    )
    print(f"load average after: {load_average()}")
    print(
        f"RESULT get_download_url_vs_echo={ratio:.2f} get_download_url_p99_ms={signed.p99_ms:.2f} "
        f"authorize_read_vs_echo={authorized.rate / baseline:.2f}"
    )


async def main() -> None:
    configure_logging(BENCH_LOG_LEVEL, service="bench")
    async with temporary_stack(("seaweedfs", "nats", "metadata")) as stack:
        e = stack.endpoints
        env = {
            "FILESTORE_LISTEN": "127.0.0.1:0",
            "FILESTORE_LOG_LEVEL": BENCH_LOG_LEVEL,
            "FILESTORE_AUTH_SECRET": e.auth_secret,
            "FILESTORE_METADATA_ADDR": e.metadata_addr,
            "FILESTORE_S3_ENDPOINT": e.s3_endpoint,
            "FILESTORE_S3_REGION": e.s3_region,
            "FILESTORE_S3_ACCESS_KEY": e.s3_access_key,
            "FILESTORE_S3_SECRET_KEY": e.s3_secret_key,
            "FILESTORE_S3_BUCKET": e.bucket,
            "FILESTORE_NATS_URL": e.nats_url,
        }
        settings = DownloadSettings.from_env(Env(env))
        signer = await build(settings)
        echo = echo_server(e.auth_secret)
        await signer.start()
        await echo.start()
        token = mint_token(e.auth_secret, subject=READER, tenant=TENANT)
        service_token = mint_token(e.auth_secret, subject="service:bench", tenant="*", roles=["service"])
        signer_channel = insecure_channel(f"127.0.0.1:{signer.port}", token=lambda: token)
        echo_channel = insecure_channel(f"127.0.0.1:{echo.port}", token=lambda: token)
        metadata_channel = insecure_channel(e.metadata_addr, token=lambda: service_token)
        audit = await nats.connect(e.nats_url, name="bench-download")
        try:
            metadata = metadata_service_pb2_grpc.MetadataServiceStub(metadata_channel)
            download = download_service_pb2_grpc.DownloadServiceStub(signer_channel)
            file_ids = await ready_files(metadata)
            call_echo = echo_caller(echo_channel)

            async def call_download(i: int) -> object:
                return await download.GetDownloadUrl(
                    download_service_pb2.GetDownloadUrlRequest(file_id=file_ids[i % FILES])
                )

            async def call_authorize(i: int) -> object:
                return await metadata.AuthorizeRead(
                    metadata_service_pb2.AuthorizeReadRequest(
                        file_id=file_ids[i % FILES], tenant=TENANT, principal=READER
                    )
                )

            call_publish = audit_publisher(audit, settings, file_ids)

            print(f"{CALLS} calls each, {IN_FLIGHT} in flight, signer and echo in one process, same run")
            print(f"load average before: {load_average()}", flush=True)
            echo_first = await measure("Echo", call_echo)
            signed = await measure("GetDownloadUrl", call_download)
            authorized = await measure("metadata AuthorizeRead", call_authorize)
            published = await measure("audit publish", call_publish)
            async with relayed_echo(e.auth_secret) as call_relay:
                relayed = await measure("Echo, two hops", call_relay)
            echo_last = await measure("Echo (again)", call_echo)
            presign_us = presign_cost_us(settings, file_ids[0])
            print(f"{'presign':<22} {presign_us:8.1f} us per call (best of 7, one core)")
            report(
                baseline=(echo_first.rate + echo_last.rate) / 2,
                signed=signed,
                authorized=authorized,
                published=published,
                relayed=relayed,
                presign_us=presign_us,
            )
        finally:
            await audit.close()
            await metadata_channel.close()
            await signer_channel.close()
            await echo_channel.close()
            await echo.stop(0)
            await signer.stop(0)


if __name__ == "__main__":
    asyncio.run(main())
