"""make bench-sdk: the same 1 GiB file uploaded by the SDK (filestore.client) and by boto3's
``upload_file``, to the same SeaweedFS, with the same part size and concurrency, alternating runs.

The SDK's time includes everything a real upload costs it: CreateUpload, a checksum of every part
signed into its URL (SignParts; storage verifies it), the PUTs, and CompleteUpload. boto3 talks to
storage with the stack's own credentials and its defaults otherwise. Both default to a CRC32 per
part; the second pair of lines, ``sdk-sha256`` and ``boto3-sha256`` (``ChecksumAlgorithm="SHA256"``),
shows both doing SHA-256 instead. The RESULT ratio is the defaults', as the issue asks. Objects are
deleted after each run, so storage does the same work every time.

On a small machine the upload is CPU-bound, storage included (SeaweedFS spends several CPU seconds
per GiB), so each line also shows the CPU seconds the uploading process and storage spent: figures
that the rest of the machine's load disturbs far less than the wall time.

Ends with: RESULT sdk_vs_boto3_throughput=<r> sdk_mib_s=<x>
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Literal

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from benchmarks._common import BENCH_LOG_LEVEL, load_average, temporary_stack
from filestore.client import AsyncClient, Endpoints, TransferOptions
from filestore.core.auth import mint_token
from filestore.core.keys import original_key
from filestore.server.logging import configure_logging
from filestore.stack import Stack

MIB = 1024**2
SIZE = 1024 * MIB
PART_SIZE = 16 * MIB
CONCURRENCY = 8
ROUNDS = 3  # each round: one upload by each contender, the order rotating from round to round
CONTENDERS = ("sdk", "boto3", "sdk-sha256", "boto3-sha256")


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


async def sdk_upload(
    stack: Stack, path: Path, state_dir: Path, *, part_checksum: Literal["crc32", "sha256"]
) -> tuple[float, str]:
    e = stack.endpoints
    token = mint_token(e.auth_secret, subject="bench", tenant="bench", ttl_s=24 * 3600)
    endpoints = Endpoints(
        upload=e.upload_addr, metadata=e.metadata_addr, download=e.download_addr, token=token
    )
    options = TransferOptions(
        multipart_threshold=PART_SIZE,
        part_size=PART_SIZE,
        concurrency=CONCURRENCY,
        part_checksum=part_checksum,
    )
    async with AsyncClient(endpoints, options=options, state_dir=state_dir) as client:
        started = time.perf_counter()
        result = await client.upload(path, resume=False)
        elapsed = time.perf_counter() - started
    assert result.parts_sent == SIZE // PART_SIZE, result
    return elapsed, original_key("bench", result.file.id)


def boto3_upload(client: object, bucket: str, path: Path, *, sha256: bool = False) -> tuple[float, str]:
    key = f"bench/boto3-{uuid.uuid4()}"
    extra = {"ChecksumAlgorithm": "SHA256"} if sha256 else None
    config = TransferConfig(
        multipart_threshold=PART_SIZE,
        multipart_chunksize=PART_SIZE,
        max_concurrency=CONCURRENCY,
        use_threads=True,
    )
    started = time.perf_counter()
    client.upload_file(str(path), bucket, key, Config=config, ExtraArgs=extra)  # type: ignore[attr-defined]
    return time.perf_counter() - started, key


def process_cpu_s(pid: int | None = None) -> float:
    """User plus system CPU seconds of this process (all its threads), or of process ``pid``."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def upload_once(who: str, stack: Stack, s3: object, path: Path, state_dir: Path) -> tuple[float, str]:
    bucket = stack.endpoints.bucket
    if who.startswith("sdk"):
        return await sdk_upload(
            stack, path, state_dir, part_checksum="sha256" if who == "sdk-sha256" else "crc32"
        )
    return await asyncio.to_thread(boto3_upload, s3, bucket, path, sha256=who == "boto3-sha256")


async def main() -> None:
    configure_logging(BENCH_LOG_LEVEL, service="bench")
    with tempfile.TemporaryDirectory(prefix="filestore-bench-sdk-") as scratch:
        path = Path(scratch) / "one-gib.bin"
        generate(path)
        async with temporary_stack(("seaweedfs", "nats", "metadata", "upload")) as stack:
            s3 = s3_client(stack)
            storage_pid = stack.pids["seaweedfs"]
            rates: dict[str, list[float]] = {who: [] for who in CONTENDERS}
            print(
                f"1 GiB, {PART_SIZE // MIB} MiB parts, {CONCURRENCY} in flight, {ROUNDS} rounds, order "
                "rotating\nsdk, boto3: their defaults (CRC32 per part, checked by storage); "
                "sdk-sha256, boto3-sha256: SHA-256 per part\ncpu: seconds spent by the "
                "uploading process and by storage (SeaweedFS)"
            )
            print(f"load average before: {load_average()}", flush=True)
            for round_number in range(ROUNDS):
                # Rotate who goes first, so no one always meets a warmer (or fuller) storage.
                shift = round_number % len(CONTENDERS)
                for who in CONTENDERS[shift:] + CONTENDERS[:shift]:
                    client_cpu, storage_cpu = process_cpu_s(), process_cpu_s(storage_pid)
                    elapsed, key = await upload_once(who, stack, s3, path, Path(scratch) / "state")
                    client_cpu = process_cpu_s() - client_cpu
                    storage_cpu = process_cpu_s(storage_pid) - storage_cpu
                    await asyncio.to_thread(s3.delete_object, Bucket=stack.endpoints.bucket, Key=key)  # type: ignore[attr-defined]
                    rate = SIZE / MIB / elapsed
                    rates[who].append(rate)
                    print(
                        f"round {round_number + 1} {who:<12} {elapsed:6.2f} s {rate:7.1f} MiB/s   cpu: "
                        f"client {client_cpu:5.2f} s, storage {storage_cpu:5.2f} s   load {load_average()}",
                        flush=True,
                    )
            print(f"load average after: {load_average()}")
            medians = {who: statistics.median(rates[who]) for who in CONTENDERS}
            print("median: " + ", ".join(f"{who} {rate:.1f} MiB/s" for who, rate in medians.items()))
            sdk, reference = medians["sdk"], medians["boto3"]
            print(f"sdk-sha256 vs boto3-sha256: {medians['sdk-sha256'] / medians['boto3-sha256']:.2f}")
            print(f"RESULT sdk_vs_boto3_throughput={sdk / reference:.2f} sdk_mib_s={sdk:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
