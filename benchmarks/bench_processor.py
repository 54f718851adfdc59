"""make bench-processor: the pipeline's memory and latency on a throwaway stack with the default pipeline
(integrity, sniff and scan gate READY; thumbnails and OCR run after it).

1. A 100 MB and a 2 GiB (less three bytes, see SIZES) object (generated while uploading, never held in
   memory here) go through the full pipeline: streamed SHA-256, a Range read for sniffing, clamd
   INSTREAM. The processor is restarted before each, and its peak RSS (VmHWM) read once the file is
   READY; the ratio shows whether memory grows with object size (it should not).
2. 50 one-megabyte JPEGs, uploaded first, then completed one at a time: the latency from the
   CompleteUpload call to the READY event on NATS.

Ends with: RESULT peak_rss_mib_2g=<m> rss_ratio_2g_vs_100m=<r> ready_p50_ms=<p50> ready_p99_ms=<p99>
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import nats
from nats.aio.msg import Msg
from PIL import Image

from benchmarks._common import percentile
from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import events_pb2, resources_pb2, upload_service_pb2, upload_service_pb2_grpc

MIB = 1024 * 1024
#: "2 GiB" is 2 GiB - 3 bytes: the largest object libclamav scans (bigger ones fail TOO_LARGE_TO_SCAN
#: without being scanned, which would measure less, not more).
SIZES = {"100m": 100 * 1000 * 1000, "2g": 2 * 1024 * MIB - 3}
JPEGS = 50
TIMEOUT_S = 1800.0


class ReadyEvents:
    def __init__(self) -> None:
        self.at: dict[str, tuple[float, int]] = {}
        self._changed = asyncio.Condition()

    async def on_message(self, message: Msg) -> None:
        event = events_pb2.FileStatusChanged.FromString(message.data)
        async with self._changed:
            self.at.setdefault(event.file_id, (time.perf_counter(), event.status))
            self._changed.notify_all()

    async def wait(self, file_id: str) -> tuple[float, int]:
        async def seen() -> tuple[float, int]:
            async with self._changed:
                await self._changed.wait_for(lambda: file_id in self.at)
                return self.at[file_id]

        return await asyncio.wait_for(seen(), TIMEOUT_S)


async def generated(size: int) -> AsyncIterator[bytes]:
    """``size`` bytes of incompressible data, one MiB at a time."""
    block = os.urandom(MIB)
    sent = 0
    while sent < size:
        piece = block[: min(MIB, size - sent)]
        # Vary each block so storage sees no repetition worth anything.
        counter = sent.to_bytes(8, "big")
        yield counter + piece[8:] if len(piece) > 8 else piece
        sent += len(piece)


def jpeg_of_about_one_mib() -> bytes:
    image = Image.frombytes("RGB", (1050, 1050), os.urandom(1050 * 1050 * 3))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92)
    return out.getvalue()


async def create(upload: upload_service_pb2_grpc.UploadServiceAsyncStub, size: int, content_type: str) -> Any:
    return await upload.CreateUpload(
        upload_service_pb2.CreateUploadRequest(
            name="bench.bin", size=size, content_type=content_type, kind=resources_pb2.UPLOAD_KIND_SINGLE
        )
    )


def peak_rss_mib(pid: int | None) -> float:
    assert pid is not None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="filestore-bench-") as home:
        config = StackConfig(
            home=Path(home),
            ports=StackPorts.free(),
            ready_timeout_s=90.0,
            extra_env={"upload": {"FILESTORE_MAX_UPLOAD_BYTES": str(5 * 1024 * MIB)}},
        )
        async with Stack(config) as stack:
            await run(stack)


async def run(stack: Stack) -> None:
    endpoints = stack.endpoints
    token = mint_token(endpoints.auth_secret, subject="bench", tenant="bench")
    channel: grpc.aio.Channel = insecure_channel(endpoints.upload_addr, token=lambda: token)
    upload = upload_service_pb2_grpc.UploadServiceStub(channel)
    ready = ReadyEvents()
    connection = await nats.connect(endpoints.nats_url)
    await connection.subscribe("files.file.ready", cb=ready.on_message)
    await connection.flush()
    rss: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as http:
            for label, size in SIZES.items():
                await stack.restart("processor")  # a fresh peak for each object
                created = await create(upload, size, "application/octet-stream")
                request = created.upload.request
                started = time.perf_counter()
                # A streamed body needs its length set: the URL signs Content-Length, and no chunking.
                headers = {**request.headers, "Content-Length": str(size)}
                put = await http.put(request.url, content=generated(size), headers=headers)
                if put.status_code != 200:
                    raise RuntimeError(
                        f"PUT {put.status_code}: {put.text[:500]} (signed {dict(request.headers)})"
                    )
                uploaded = time.perf_counter()
                await upload.CompleteUpload(
                    upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id)
                )
                done, status = await ready.wait(created.file.id)
                assert status == resources_pb2.FILE_STATUS_READY, status
                rss[label] = peak_rss_mib(stack.process("processor").pid)
                print(
                    f"{label}: {size / MIB:.0f} MiB uploaded in {uploaded - started:.1f}s, "
                    f"READY {done - uploaded:.1f}s after upload, processor peak RSS {rss[label]:.1f} MiB"
                )

            body = jpeg_of_about_one_mib()
            print(f"jpeg: {len(body) / MIB:.2f} MiB each, {JPEGS} of them")
            pending = []
            for _ in range(JPEGS):
                created = await create(upload, len(body), "image/jpeg")
                request = created.upload.request
                put = await http.put(request.url, content=body, headers=dict(request.headers))
                put.raise_for_status()
                pending.append(created)
            latencies_ms = []
            for created in pending:
                started = time.perf_counter()
                await upload.CompleteUpload(
                    upload_service_pb2.CompleteUploadRequest(upload_id=created.upload.id)
                )
                done, status = await ready.wait(created.file.id)
                assert status == resources_pb2.FILE_STATUS_READY, status
                latencies_ms.append((done - started) * 1000)
    finally:
        await connection.close()
        await channel.close()
    p50, p99 = percentile(latencies_ms, 0.5), percentile(latencies_ms, 0.99)
    ratio = rss["2g"] / rss["100m"]
    print(
        f"complete->READY over {JPEGS} JPEGs: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(latencies_ms):.1f} ms"
    )
    print(
        f"RESULT peak_rss_mib_2g={rss['2g']:.1f} rss_ratio_2g_vs_100m={ratio:.2f} "
        f"ready_p50_ms={p50:.1f} ready_p99_ms={p99:.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
