"""make bench-creates: the rate of multipart CreateUpload with 3,000 multipart uploads open in the
bucket, over the rate with none, measured in the same run.

A multipart create must cost the same however busy the bucket is. Storage answers a listing of
multipart uploads in time proportional to every upload open in the bucket (SeaweedFS: ~27 ms of its
CPU at 3,000), so a create that lists first gets slower as uploads accumulate; one that only asks
storage to create the upload does not.

The broker runs in this process on a throwaway stack (SeaweedFS, NATS, metadata on SQLite), its
reaper off. The phases alternate, ``ROUNDS`` times, then once more empty:

* empty: every open upload aborted, then multipart creates;
* busy: 3,000 multipart uploads opened in storage directly (under ``originals/bench-fill/``: to
  storage they are like any other upload), then the same number of creates.

Each side's rate is the mean over its phases, and the empty phases bracket the busy ones, so drift in
machine load during the run (it may be shared) favours neither side. Before each phase storage is let
settle (aborting thousands of uploads leaves it cleaning up for seconds). A phase's creates stay open
until the next phase starts, so the count only grows within a phase by its own creates (a few
hundred). Storage's CPU per create (its process's user+system time over the phase) is printed beside
each rate: unlike the rates, it does not depend on what else the machine runs.

Ends with: RESULT create_rate_3000_open_vs_empty=<ratio> creates_per_s_empty=<r>
creates_per_s_3000_open=<r> storage_cpu_ms_empty=<ms> storage_cpu_ms_3000_open=<ms>
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from benchmarks._common import BENCH_LOG_LEVEL, load_average, measure, temporary_stack
from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.core.env import Env
from filestore.core.keys import original_key
from filestore.server.logging import configure_logging
from filestore.server.settings import S3Settings
from filestore.stack import Stack
from filestore.upload.app import build
from filestore.upload.settings import UploadSettings
from filestore.v1 import resources_pb2, upload_service_pb2, upload_service_pb2_grpc

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

OPEN_UPLOADS = 3000
ROUNDS = 2
CREATES = 300
WARMUP = 30
IN_FLIGHT = 16
#: Threads opening and aborting the background uploads: setup only, not measured.
SETUP_THREADS = 16
#: Storage is settled when it used less than this share of a CPU over SETTLE_WINDOW_S: aborts leave
#: it cleaning up in the background for a while, which must not be billed to the next phase.
SETTLE_CPU_SHARE = 0.05
SETTLE_WINDOW_S = 1.0
SETTLE_LIMIT_S = 60.0
SIZE = 6 * 1024**2  # two parts of 5 MiB (S3's smallest part)
#: The tenant whose original keys the filler uploads are opened under.
FILL_TENANT = "bench-fill"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _settle(pid: int) -> None:
    """Wait until storage is idle (or SETTLE_LIMIT_S has passed)."""
    deadline = time.monotonic() + SETTLE_LIMIT_S
    while time.monotonic() < deadline:
        used = _cpu_seconds(pid)
        await asyncio.sleep(SETTLE_WINDOW_S)
        if _cpu_seconds(pid) - used < SETTLE_CPU_SHARE * SETTLE_WINDOW_S:
            return


def _operator_client(settings: S3Settings) -> S3Client:
    """The stack's storage as its operator reaches it, to open and abort the background uploads."""
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        config=Config(region_name=settings.region, s3={"addressing_style": "path"}),
    )
    return client


def _open_uploads(client: S3Client, bucket: str) -> list[tuple[str, str]]:
    """(key, upload id) of every multipart upload open in the bucket."""
    found: list[tuple[str, str]] = []
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        found.extend((upload["Key"], upload["UploadId"]) for upload in page.get("Uploads", []))
    return found


def _abort_all(client: S3Client, bucket: str) -> int:
    uploads = _open_uploads(client, bucket)

    def abort(upload: tuple[str, str]) -> None:
        key, upload_id = upload
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

    with ThreadPoolExecutor(SETUP_THREADS) as pool:
        list(pool.map(abort, uploads))
    return len(uploads)


def _fill(client: S3Client, bucket: str, count: int) -> None:
    with ThreadPoolExecutor(SETUP_THREADS) as pool:
        list(
            pool.map(
                lambda i: client.create_multipart_upload(
                    Bucket=bucket,
                    Key=original_key(FILL_TENANT, str(i)),
                    ContentType="application/octet-stream",
                ),
                range(count),
            )
        )


def _means(phases: list[tuple[float, float]]) -> tuple[float, float]:
    return sum(rate for rate, _ in phases) / len(phases), sum(ms for _, ms in phases) / len(phases)


async def main() -> None:
    configure_logging(BENCH_LOG_LEVEL, service="bench")
    async with temporary_stack(("seaweedfs", "nats", "metadata")) as stack:
        await _run(stack)


async def _run(stack: Stack) -> None:
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
    admin = _operator_client(endpoints.admin_s3_settings())
    bucket = endpoints.bucket
    storage_pid = stack.pids["seaweedfs"]
    broker = await build(settings)
    await broker.start()
    token = mint_token(endpoints.auth_secret, subject="bench", tenant="bench")
    channel = insecure_channel(f"127.0.0.1:{broker.port}", token=lambda: token)
    try:
        upload = upload_service_pb2_grpc.UploadServiceStub(channel)

        async def call_create(i: int) -> object:
            created = await upload.CreateUpload(
                upload_service_pb2.CreateUploadRequest(
                    name=f"bench-{i}.bin",
                    size=SIZE,
                    content_type="application/octet-stream",
                    kind=resources_pb2.UPLOAD_KIND_MULTIPART,
                    request_id=str(uuid.uuid4()),
                )
            )
            assert created.upload.kind == resources_pb2.UPLOAD_KIND_MULTIPART
            return created

        async def phase(name: str) -> tuple[float, float]:
            """Creates per second, and storage's CPU milliseconds per create."""
            present = len(await asyncio.to_thread(_open_uploads, admin, bucket))
            await _settle(storage_pid)
            cpu_before = _cpu_seconds(storage_pid)
            result = await measure(name, call_create, calls=CREATES, in_flight=IN_FLIGHT, warmup=WARMUP)
            storage_ms = (_cpu_seconds(storage_pid) - cpu_before) * 1000 / (CREATES + WARMUP)
            print(f"{'':<22} {present} uploads open at the start; storage CPU {storage_ms:.1f} ms per create")
            return result.rate, storage_ms

        print(f"{CREATES} multipart creates per phase (+{WARMUP} warm-up), {IN_FLIGHT} in flight, same run")
        print(f"load average before: {load_average()}")
        empty: list[tuple[float, float]] = []
        busy: list[tuple[float, float]] = []
        for _ in range(ROUNDS):
            await asyncio.to_thread(_abort_all, admin, bucket)
            empty.append(await phase("empty bucket"))
            await asyncio.to_thread(_abort_all, admin, bucket)
            await asyncio.to_thread(_fill, admin, bucket, OPEN_UPLOADS)
            busy.append(await phase(f"{OPEN_UPLOADS} open"))
        await asyncio.to_thread(_abort_all, admin, bucket)
        empty.append(await phase("empty bucket"))
        (empty_rate, empty_ms), (busy_rate, busy_ms) = _means(empty), _means(busy)
        ratio = busy_rate / empty_rate
        print(f"creates/s with {OPEN_UPLOADS} open / creates/s with none: {ratio:.2f}")
        print(f"load average after: {load_average()}")
        print(
            f"RESULT create_rate_3000_open_vs_empty={ratio:.2f} creates_per_s_empty={empty_rate:.0f}"
            f" creates_per_s_3000_open={busy_rate:.0f} storage_cpu_ms_empty={empty_ms:.1f}"
            f" storage_cpu_ms_3000_open={busy_ms:.1f}"
        )
    finally:
        await channel.close()
        await broker.stop(0)
        await asyncio.to_thread(_abort_all, admin, bucket)


if __name__ == "__main__":
    asyncio.run(main())
