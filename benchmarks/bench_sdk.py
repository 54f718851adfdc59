"""make bench-sdk: the same 1 GiB file uploaded by the SDK (filestore.client) and by boto3's
``upload_file``, to the same SeaweedFS, with the same part size and concurrency, alternating runs.

The SDK's time includes everything a real upload costs it: CreateUpload, hashing and signing every
part (SignParts with the part's SHA-256), the PUTs, and CompleteUpload. boto3 talks to storage with
the stack's own credentials and its defaults otherwise (it computes a CRC32 per part). Objects are
deleted after each run, so storage does the same work every time.

Ends with: RESULT sdk_vs_boto3_throughput=<r> sdk_mib_s=<x>
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from benchmarks._common import temporary_stack
from filestore.client import AsyncClient, Endpoints, TransferOptions
from filestore.core.auth import mint_token
from filestore.core.logging import configure_logging
from filestore.stack import Stack

MIB = 1024**2
SIZE = 1024 * MIB
PART_SIZE = 16 * MIB
CONCURRENCY = 8
ROUNDS = 3  # each round: one SDK upload and one boto3 upload, in alternating order


def generate(path: Path) -> None:
    with path.open("wb") as out:
        for _ in range(SIZE // (64 * MIB)):
            out.write(os.urandom(64 * MIB))


def s3_client(stack: Stack) -> object:
    e = stack.endpoints
    return boto3.client(
        "s3",
        endpoint_url=e.s3_endpoint,
        region_name=e.s3_region,
        aws_access_key_id=e.s3_access_key,
        aws_secret_access_key=e.s3_secret_key,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=CONCURRENCY + 2),
    )


async def sdk_upload(stack: Stack, path: Path, state_dir: Path) -> tuple[float, str]:
    e = stack.endpoints
    token = mint_token(e.auth_secret, subject="bench", tenant="bench", ttl_s=24 * 3600)
    endpoints = Endpoints(
        upload=e.upload_addr, metadata=e.metadata_addr, download=e.download_addr, token=token
    )
    options = TransferOptions(multipart_threshold=PART_SIZE, part_size=PART_SIZE, concurrency=CONCURRENCY)
    async with AsyncClient(endpoints, options=options, state_dir=state_dir) as client:
        started = time.perf_counter()
        result = await client.upload(path, resume=False)
        elapsed = time.perf_counter() - started
    assert result.parts_sent == SIZE // PART_SIZE, result
    return elapsed, f"originals/bench/{result.file.id}"


def boto3_upload(client: object, bucket: str, path: Path) -> tuple[float, str]:
    key = f"bench/boto3-{uuid.uuid4()}"
    config = TransferConfig(
        multipart_threshold=PART_SIZE,
        multipart_chunksize=PART_SIZE,
        max_concurrency=CONCURRENCY,
        use_threads=True,
    )
    started = time.perf_counter()
    client.upload_file(str(path), bucket, key, Config=config)  # type: ignore[attr-defined]
    return time.perf_counter() - started, key


async def main() -> None:
    configure_logging("warning", service="bench")
    with tempfile.TemporaryDirectory(prefix="filestore-bench-sdk-") as scratch:
        path = Path(scratch) / "one-gib.bin"
        generate(path)
        async with temporary_stack(("seaweedfs", "nats", "metadata", "upload")) as stack:
            s3 = s3_client(stack)
            bucket = stack.endpoints.bucket
            rates: dict[str, list[float]] = {"sdk": [], "boto3": []}
            print(
                f"1 GiB, {PART_SIZE // MIB} MiB parts, {CONCURRENCY} in flight, {ROUNDS} rounds alternating"
            )
            for round_number in range(ROUNDS):
                # Alternate who goes first, so neither always meets a warmer (or fuller) storage.
                order = ("sdk", "boto3") if round_number % 2 == 0 else ("boto3", "sdk")
                for who in order:
                    if who == "sdk":
                        elapsed, key = await sdk_upload(stack, path, Path(scratch) / "state")
                    else:
                        elapsed, key = await asyncio.to_thread(boto3_upload, s3, bucket, path)
                    await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key=key)  # type: ignore[attr-defined]
                    rate = SIZE / MIB / elapsed
                    rates[who].append(rate)
                    print(
                        f"round {round_number + 1} {who:<6} {elapsed:6.2f} s  {rate:7.1f} MiB/s", flush=True
                    )
            sdk, reference = statistics.median(rates["sdk"]), statistics.median(rates["boto3"])
            print(f"median: sdk {sdk:.1f} MiB/s, boto3 {reference:.1f} MiB/s")
            print(f"RESULT sdk_vs_boto3_throughput={sdk / reference:.2f} sdk_mib_s={sdk:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
