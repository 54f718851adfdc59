"""The fault-injection scenario, shared by `make test` (small) and `make test-faults` (large).

Clients upload concurrently through the raw stubs while a chaos task SIGKILLs and restarts, one at a
time, every component a client's upload depends on. Each call is retried by the contract's rule
(resources.proto: UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED and RESOURCE_EXHAUSTED/`RATE_LIMITED` are
retryable, everything else is final), and every failed attempt is counted by its status, so the test
can say that the faults cost retries and nothing else. The raw stubs, not the SDK, because the SDK
retries inside and does not report each attempt's status.

The sizes come from the environment: ``FILESTORE_FAULT_UPLOADS`` (default 200),
``FILESTORE_FAULT_SESSIONS`` (concurrent multipart sessions, default 200) and
``FILESTORE_FAULT_DATABASES`` (``sqlite``, ``postgresql`` or both, comma separated; default ``sqlite``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import boto3
import grpc
import httpx
import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from PIL import Image

from filestore.core.auth import mint_token
from filestore.core.channels import insecure_channel
from filestore.core.errors import FilestoreError, error_from_rpc
from filestore.metadata.fsck import FsckOptions, FsckReport, run
from filestore.server.settings import S3Settings
from filestore.server.storage import ObjectStore, StoreConfig
from filestore.stack import Stack
from filestore.stack.probes import probe_grpc_health
from filestore.stack.process import ManagedProcess
from filestore.upload.reaper import Reaper
from filestore.v1 import (
    download_service_pb2,
    download_service_pb2_grpc,
    events_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    resources_pb2,
    upload_service_pb2,
    upload_service_pb2_grpc,
)
from tests.support import free_port

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

T = TypeVar("T")
Status = resources_pb2.FileStatus
Kind = resources_pb2.UploadKind

UPLOADS_ENV: Final = "FILESTORE_FAULT_UPLOADS"
CLIENT_SUBJECT: Final = "chaos"
SESSIONS_ENV: Final = "FILESTORE_FAULT_SESSIONS"
DATABASES_ENV: Final = "FILESTORE_FAULT_DATABASES"

#: The contract's retryable codes (resources.proto); RESOURCE_EXHAUSTED only with reason RATE_LIMITED.
RETRYABLE_CODES: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
)
#: HTTP answers from storage that say "not now" (the SDK's rule, filestore.client.retry).
RETRYABLE_HTTP: Final = frozenset({408, 429, 500, 502, 503, 504})
#: One attempt of one RPC: long enough for a publish that waits out a NATS reconnect (5 s).
ATTEMPT_TIMEOUT_S: Final = 10.0
#: How long one client keeps retrying one call before it gives up (and the test fails).
CALL_DEADLINE_S: Final = 120.0
BACKOFF_BASE_S: Final = 0.1
BACKOFF_MAX_S: Final = 2.0
#: Uploads in flight at once.
CONCURRENCY: Final = 16
#: How long a killed component stays down before it is started again.
OUTAGE_S: Final = 1.0
#: Every third upload is a PNG, which gets a thumbnail; the others are text, which gets none.
IMAGE_EVERY: Final = 3
#: Every fourth upload is a one-part multipart upload, so the broker's multipart bookkeeping (a
#: storage upload created, recorded with the upload, completed from storage's part list) meets the kills.
MULTIPART_EVERY: Final = 4
THUMBNAIL_KIND: Final = "thumbnail_256"
#: The pipeline of the fault stack: the thumbnail gates READY, so READY means "every derivative is
#: made", and OCR (seconds of tesseract per image) is left out to keep the run short.
PIPELINE_ENV: Final = {
    "FILESTORE_PIPELINE": json.dumps(
        {"image/*": ["integrity", "sniff", "scan", "thumbnail"], "*/*": ["integrity", "sniff", "scan"]}
    ),
    "FILESTORE_PIPELINE_REQUIRED": "integrity,sniff,scan,thumbnail",
    # A killed worker's events come back after this, not after the default 30 s.
    "FILESTORE_WORKER_ACK_WAIT_S": "5",
    "FILESTORE_WORKER_CONCURRENCY": "4",
}
#: Every component the chaos task kills, in order. "processor" is the stack's processor process,
#: which hosts the ProcessorService, a pipeline worker and the storage-event bridge (one process in
#: the embedded stack); "worker" is a second processor process without the bridge, so a pure worker.
CHAOS_ORDER: Final = ("metadata", "processor", "nats", "upload", "worker", "seaweedfs", "download")
MULTIPART_PART_BYTES: Final = 5 * 1024 * 1024  # the broker's (and S3's) smallest part but the last
#: Every this many sessions one has two parts (the first of the 5 MiB minimum); the rest have one.
TWO_PART_EVERY: Final = 50


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def fault_databases() -> list[str]:
    raw = os.environ.get(DATABASES_ENV, "").strip() or "sqlite"
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = set(names) - {"sqlite", "postgresql"}
    if unknown:
        raise ValueError(f"{DATABASES_ENV}: unknown database(s) {sorted(unknown)}")
    return names


# ------------------------------------------------------------------------------------- the calls


@dataclass
class CallStats:
    """What every client call cost: attempts, retried failures by status, and final failures."""

    attempts: int = 0
    retried: Counter[str] = field(default_factory=Counter)
    retried_by_call: Counter[str] = field(default_factory=Counter)
    #: Failures the contract calls final (or retries that ran out): each one fails the test.
    final: list[str] = field(default_factory=list)
    #: Retried write-once PUTs that found their object stored by an attempt whose answer was lost.
    already_stored: int = 0

    def _retry(self, call: str, status: str) -> None:
        self.retried[status] += 1
        self.retried_by_call[f"{call} {status}"] += 1

    async def rpc(self, call: str, send: Callable[[float], Awaitable[T]]) -> T:
        """``await send(timeout)`` until it answers; retryable statuses are counted and retried with
        exponential backoff and full jitter, a final status is recorded and raised."""
        deadline = time.monotonic() + CALL_DEADLINE_S
        retry = 0
        while True:
            self.attempts += 1
            try:
                return await send(ATTEMPT_TIMEOUT_S)
            except grpc.RpcError as rpc_error:
                error = error_from_rpc(rpc_error)
            status = error.code.name
            rate_limited = error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "RATE_LIMITED"
            if not (error.code in RETRYABLE_CODES or rate_limited):
                self.final.append(f"{call}: {status} {error.reason}: {error}")
                raise error
            self._retry(call, status)
            if time.monotonic() >= deadline:
                self.final.append(f"{call}: still {status} {error.reason} after {CALL_DEADLINE_S:g}s")
                raise error
            retry += 1
            await asyncio.sleep(_backoff(retry))

    async def http(
        self, call: str, send: Callable[[], Awaitable[httpx.Response]], *, write_once: bool = False
    ) -> httpx.Response:
        """The same for a presigned request to storage: transport errors and "not now" statuses are
        retried, any other answer but 2xx is final. A ``write_once`` PUT URL signs ``If-None-Match: *``
        (filestore.server.sigv4): a retry whose first attempt did store the object before its answer
        was lost gets 412, which means "already there"; CompleteUpload's HEAD then checks it."""
        deadline = time.monotonic() + CALL_DEADLINE_S
        retry = 0
        while True:
            self.attempts += 1
            try:
                response = await send()
            except httpx.TransportError as error:
                status = f"HTTP_{type(error).__name__}"
            else:
                if response.is_success:
                    return response
                if write_once and retry > 0 and response.status_code == 412:
                    self.already_stored += 1
                    return response
                if response.status_code not in RETRYABLE_HTTP:
                    self.final.append(f"{call}: HTTP {response.status_code}: {response.text[:300]}")
                    raise AssertionError(self.final[-1])
                status = f"HTTP_{response.status_code}"
            self._retry(call, status)
            if time.monotonic() >= deadline:
                self.final.append(f"{call}: still {status} after {CALL_DEADLINE_S:g}s")
                raise AssertionError(self.final[-1])
            retry += 1
            await asyncio.sleep(_backoff(retry))


def _backoff(retry: int) -> float:
    return random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(retry - 1, 16)))


# ------------------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class Body:
    name: str
    content_type: str
    data: bytes

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")


def make_body(index: int) -> Body:
    """Small, unique bodies (dedup never applies): a PNG every IMAGE_EVERY uploads, text otherwise."""
    if index % IMAGE_EVERY == 0:
        rng = random.Random(index)
        image = Image.new("RGB", (96, 64), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        image.putpixel((index % 96, (index // 96) % 64), (255 - index % 256, index % 256, 7))
        out = io.BytesIO()
        image.save(out, format="PNG")
        return Body(f"picture-{index}.png", "image/png", out.getvalue())
    text = f"fault run upload {index} {uuid.uuid4()}\n" * (1 + index % 40)
    return Body(f"note-{index}.txt", "text/plain", text.encode())


class World:
    """One tenant's view of the stack: stubs with a user's and a service's token, storage, NATS."""

    def __init__(self, stack: Stack, *, tenant: str) -> None:
        endpoints = stack.endpoints
        self.stack = stack
        self.tenant = tenant
        user = mint_token(endpoints.auth_secret, subject=CLIENT_SUBJECT, tenant=tenant)
        service = mint_token(endpoints.auth_secret, subject="service:faults", tenant="*", roles=["service"])
        self._channels: list[grpc.aio.Channel] = []
        self.upload = upload_service_pb2_grpc.UploadServiceStub(self._channel(endpoints.upload_addr, user))
        self.metadata = metadata_service_pb2_grpc.MetadataServiceStub(
            self._channel(endpoints.metadata_addr, user)
        )
        self.service_metadata = metadata_service_pb2_grpc.MetadataServiceStub(
            self._channel(endpoints.metadata_addr, service)
        )
        self.download = download_service_pb2_grpc.DownloadServiceStub(
            self._channel(endpoints.download_addr, user)
        )
        self.http = httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT_S)
        self.storage: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoints.s3_endpoint,
            region_name=endpoints.s3_region,
            aws_access_key_id=endpoints.s3_access_key,
            aws_secret_access_key=endpoints.s3_secret_key,
        )
        self.bucket = endpoints.bucket
        self.stats = CallStats()

    def _channel(self, address: str, token: str) -> grpc.aio.Channel:
        channel = insecure_channel(address, token=lambda: token)
        self._channels.append(channel)
        return channel

    async def close(self) -> None:
        await self.http.aclose()
        for channel in self._channels:
            await channel.close()

    def s3_admin_settings(self) -> S3Settings:
        return self.stack.endpoints.admin_s3_settings()

    # ---------------------------------------------------------------------------- one upload

    async def create(
        self,
        body: Body,
        *,
        kind: resources_pb2.UploadKind.ValueType = Kind.UPLOAD_KIND_UNSPECIFIED,
        part_size: int = 0,
    ) -> upload_service_pb2.CreateUploadResponse:
        # One request_id for every attempt: a retry after a lost answer gets the same upload.
        request = upload_service_pb2.CreateUploadRequest(
            name=body.name,
            size=len(body.data),
            content_type=body.content_type,
            sha256=hashlib.sha256(body.data).hexdigest(),
            kind=kind,
            part_size=part_size,
            request_id=str(uuid.uuid4()),
        )
        created: upload_service_pb2.CreateUploadResponse = await self.stats.rpc(
            "CreateUpload", lambda timeout: self.upload.CreateUpload(request, timeout=timeout)
        )
        return created

    async def put(self, call: str, presigned: resources_pb2.PresignedRequest, data: bytes) -> None:
        await self.stats.http(
            call,
            lambda: self.http.put(presigned.url, content=data, headers=dict(presigned.headers)),
            write_once=presigned.headers.get("If-None-Match") == "*",
        )

    async def complete(self, upload_id: str) -> resources_pb2.File:
        request = upload_service_pb2.CompleteUploadRequest(upload_id=upload_id, request_id=str(uuid.uuid4()))
        completed: upload_service_pb2.CompleteUploadResponse = await self.stats.rpc(
            "CompleteUpload", lambda timeout: self.upload.CompleteUpload(request, timeout=timeout)
        )
        return completed.file

    async def upload_file(self, body: Body, *, multipart: bool = False) -> str:
        """Create, PUT (one object, or one part of a multipart upload), complete; answers the file id
        once the completion is acknowledged."""
        if multipart:
            created = await self.create(body, kind=Kind.UPLOAD_KIND_MULTIPART)
            [part] = created.upload.part_urls
            await self.put("PUT part", part.request, body.data)
        else:
            created = await self.create(body)
            await self.put("PUT object", created.upload.request, body.data)
        await self.complete(created.upload.id)
        file_id: str = created.file.id
        return file_id

    async def service_file(self, file_id: str) -> resources_pb2.File:
        request = metadata_service_pb2.GetFileRequest(file_id=file_id, tenant=self.tenant)
        file: resources_pb2.File = await self.service_metadata.GetFile(request)
        return file

    async def transition(
        self, file_id: str, status: resources_pb2.FileStatus.ValueType, *, etag: str
    ) -> resources_pb2.File:
        """What the pipeline's worker does to a file (a service's call)."""
        request = metadata_service_pb2.TransitionFileRequest(
            file_id=file_id, tenant=self.tenant, status=status, etag=etag
        )
        file: resources_pb2.File = await self.service_metadata.TransitionFile(request)
        return file

    async def download_and_check(self, file_id: str, sha256: str) -> None:
        request = download_service_pb2.GetDownloadUrlRequest(file_id=file_id)
        url: download_service_pb2.DownloadUrl = await self.stats.rpc(
            "GetDownloadUrl", lambda timeout: self.download.GetDownloadUrl(request, timeout=timeout)
        )
        response = await self.stats.http("GET object", lambda: self.http.get(url.url))
        assert hashlib.sha256(response.content).hexdigest() == sha256, f"{file_id}: downloaded other bytes"

    # ------------------------------------------------------------------------------ checks

    async def statuses(self) -> dict[str, resources_pb2.FileStatus.ValueType]:
        """Every file of the tenant and its status, read page by page."""
        found: dict[str, resources_pb2.FileStatus.ValueType] = {}
        token = ""
        while True:
            page = await self._list_page(token)
            found.update((file.id, file.status) for file in page.files)
            if not page.next_page_token:
                return found
            token = page.next_page_token

    async def _list_page(self, token: str) -> metadata_service_pb2.ListFilesResponse:
        request = metadata_service_pb2.ListFilesRequest(page_size=1000, page_token=token)
        page: metadata_service_pb2.ListFilesResponse = await self.stats.rpc(
            "ListFiles", lambda timeout: self.metadata.ListFiles(request, timeout=timeout)
        )
        return page

    async def wait_all_ready(self, file_ids: Iterable[str], *, within_s: float) -> None:
        """Until every file is READY; a file that ends otherwise fails at once."""
        wanted = set(file_ids)

        async def drained() -> None:
            while True:
                statuses = await self.statuses()
                ended = {
                    f: Status.Name(statuses[f])
                    for f in wanted
                    if statuses.get(f, Status.FILE_STATUS_READY)
                    in (Status.FILE_STATUS_QUARANTINED, Status.FILE_STATUS_FAILED, Status.FILE_STATUS_DELETED)
                }
                assert not ended, f"files ended other than READY: {dict(list(ended.items())[:10])}"
                waiting = [f for f in wanted if statuses.get(f) != Status.FILE_STATUS_READY]
                if not waiting:
                    return
                await asyncio.sleep(0.5)

        try:
            await asyncio.wait_for(drained(), within_s)
        except TimeoutError:
            statuses = await self.statuses()
            left = Counter(
                Status.Name(statuses.get(f, Status.FILE_STATUS_UNSPECIFIED))
                for f in wanted
                if statuses.get(f) != Status.FILE_STATUS_READY
            )
            raise AssertionError(f"not READY after {within_s:g}s: {dict(left)}") from None

    async def ready_events(self, file_ids: set[str], *, within_s: float) -> Counter[str]:
        """READY FileStatusChanged events per file of this tenant, read from the stream through a
        JetStream consumer of our own (the contract; a core subscription can see a publish twice and
        misses what is published while it is disconnected). Reads until every file in ``file_ids`` has
        one and the processor's consumer has nothing left to process, then to the end of the stream."""
        endpoints = self.stack.endpoints
        connection = await nats.connect(endpoints.nats_url)
        seen: Counter[str] = Counter()
        try:
            js = connection.jetstream()
            subscription = await js.pull_subscribe(
                "files.file.ready",
                stream="FILES",
                config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
            )
            deadline = time.monotonic() + within_s
            while True:
                try:
                    messages = await subscription.fetch(500, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    messages = []
                for message in messages:
                    event = events_pb2.FileStatusChanged.FromString(message.data)
                    if event.tenant == self.tenant and event.status == Status.FILE_STATUS_READY:
                        seen[event.file_id] += 1
                if messages:
                    continue
                pipeline = await js.consumer_info("FILES", "processor-pipeline")
                idle = not pipeline.num_pending and not pipeline.num_ack_pending
                if idle and file_ids <= set(seen):
                    return seen
                if time.monotonic() >= deadline:
                    missing = sorted(file_ids - set(seen))
                    raise AssertionError(
                        f"{len(missing)} files have no READY event after {within_s:g}s "
                        f"(e.g. {missing[:5]}); processor consumer pending={pipeline.num_pending} "
                        f"ack_pending={pipeline.num_ack_pending}"
                    )
        finally:
            await connection.close()

    async def derivative_kinds(self, file_id: str) -> list[str]:
        request = metadata_service_pb2.ListDerivativesRequest(file_id=file_id, tenant=self.tenant)
        listed: metadata_service_pb2.ListDerivativesResponse = await self.stats.rpc(
            "ListDerivatives", lambda timeout: self.service_metadata.ListDerivatives(request, timeout=timeout)
        )
        return sorted(d.kind for d in listed.derivatives)

    def stored_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.storage.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def open_multipart_uploads(self, prefix: str) -> int:
        count = 0
        for page in self.storage.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            count += len(page.get("Uploads", []))
        return count

    async def sweep_unattached_storage_uploads(self) -> list[str]:
        """The broker reaper's sweep as it runs once its grace has passed: aborts the multipart uploads
        storage holds that no OPEN upload record holds (a CreateUpload killed between storage's
        create and BeginUpload leaves one). Answers the storage upload ids it aborted."""
        reaper = Reaper(
            metadata=self.service_metadata,
            store=ObjectStore(StoreConfig.from_settings(self.s3_admin_settings())),
            unattached_grace=timedelta(0),
        )
        return await reaper.sweep_unattached()

    async def fsck(self) -> FsckReport:
        return await run(
            FsckOptions(
                database_url=self.stack.endpoints.database_url,
                s3=self.s3_admin_settings(),
                grace=timedelta(0),
                tenants=(self.tenant,),
            )
        )


# ------------------------------------------------------------------------------------- the chaos


class Schedule:
    """When each kill happens, so that every one of them lands among uploads in flight.

    Kill k of n comes once upload number k*N/(n+1) has started; the uploads already running (up to
    CONCURRENCY) live through the outage on retries, and uploads numbered CONCURRENCY or more past
    the kill's mark wait until the killed component is back. Without that gate the uploads outran the
    chaos: a slow restart (seconds of imports on a busy machine) let the rest of the run finish
    before the next kill.
    """

    def __init__(self, *, uploads: int, kills: int) -> None:
        self.uploads = uploads
        self.marks = [uploads * k // (kills + 1) for k in range(1, kills + 1)]
        self.started = 0
        self.kills_done = 0
        self._changed = asyncio.Condition()

    async def may_start(self, index: int) -> None:
        """Wait until every kill whose gate ``index`` is behind has finished (restart included)."""
        gating = sum(1 for mark in self.marks if index >= mark + CONCURRENCY)
        async with self._changed:
            await self._changed.wait_for(lambda: self.kills_done >= gating)

    async def mark_started(self) -> None:
        async with self._changed:
            self.started += 1
            self._changed.notify_all()

    async def turn_of(self, kill: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.started >= self.marks[kill])

    async def kill_done(self) -> None:
        async with self._changed:
            self.kills_done += 1
            self._changed.notify_all()


@dataclass(frozen=True)
class Kill:
    component: str
    at_upload: int
    restart_s: float


class SecondWorker:
    """A second processor process without the bridge: a pure pipeline worker on the shared consumer."""

    def __init__(self, stack: Stack, log_dir: Path) -> None:
        first = stack.process("processor")
        env = dict(first.env)
        env.pop("FILESTORE_FILER_GRPC", None)
        env["FILESTORE_LISTEN"] = f"127.0.0.1:{free_port()}"
        env["FILESTORE_METRICS_PORT"] = str(free_port())  # the first one's port is taken
        self.address = env["FILESTORE_LISTEN"]
        self.process = ManagedProcess("worker", first.argv, log_path=log_dir / "worker.log", env=env)

    async def start(self) -> None:
        self.process.start()
        await asyncio.wait_for(self._serving(), 60)

    async def _serving(self) -> None:
        while not (await probe_grpc_health(self.address))[0]:
            assert self.process.running, f"the second worker died; see {self.process.log_path}"
            await asyncio.sleep(0.2)


async def chaos(
    stack: Stack, worker: SecondWorker, schedule: Schedule, order: Sequence[str] = CHAOS_ORDER
) -> list[Kill]:
    """Kill (SIGKILL, the whole process group) and restart each component in turn, when the
    schedule says so."""
    kills: list[Kill] = []
    for index, component in enumerate(order):
        await schedule.turn_of(index)
        at = schedule.started
        if component == "worker":
            await worker.process.kill()
        else:
            await stack.kill(component)
        # The outage itself: clients' calls fail while the component is gone, as in a crash.
        await asyncio.sleep(OUTAGE_S)
        restarted = time.monotonic()
        if component == "worker":
            await worker.start()
        else:
            await stack.restart(component)
        kills.append(Kill(component, at, time.monotonic() - restarted))
        await schedule.kill_done()
    return kills


# ------------------------------------------------------------------------------------ the scenarios


@dataclass
class FaultRun:
    #: file id -> body, for every upload whose CompleteUpload was acknowledged.
    acknowledged: dict[str, Body]
    #: Uploads that ended in a final failure (each also in ``stats.final``).
    failed: int
    kills: list[Kill]
    #: READY files downloaded (URL signed, bytes fetched and checked) while the chaos ran.
    downloads: int
    elapsed_s: float


async def uploads_under_chaos(world: World, worker: SecondWorker, *, uploads: int) -> FaultRun:
    """``uploads`` uploads, CONCURRENCY at a time, while every component is killed and restarted once,
    and READY files are downloaded as their events arrive."""
    started = time.monotonic()
    schedule = Schedule(uploads=uploads, kills=len(CHAOS_ORDER))
    slots = asyncio.Semaphore(CONCURRENCY)
    acknowledged: dict[str, Body] = {}
    failed = 0

    async def one(index: int) -> None:
        nonlocal failed
        body = make_body(index)
        await schedule.may_start(index)
        async with slots:
            await schedule.mark_started()
            try:
                file_id = await world.upload_file(body, multipart=index % MULTIPART_EVERY == 1)
            except (FilestoreError, AssertionError):
                failed += 1  # recorded in world.stats.final by the call that gave up
                return
        acknowledged[file_id] = body

    downloads, stop_downloads, downloader = await _download_ready_files(world, acknowledged)
    chaos_task = asyncio.create_task(chaos(world.stack, worker, schedule))
    try:
        await asyncio.gather(*(one(index) for index in range(uploads)))
        kills = await chaos_task
    finally:
        # On a failure, no kill may land in the middle of the stack's teardown.
        chaos_task.cancel()
        stop_downloads.set()
        await asyncio.gather(chaos_task, downloader, return_exceptions=True)
    return FaultRun(acknowledged, failed, kills, downloads[0], time.monotonic() - started)


async def _download_ready_files(
    world: World, acknowledged: dict[str, Body]
) -> tuple[list[int], asyncio.Event, asyncio.Task[None]]:
    """A reader beside the uploaders: each READY event it hears (core NATS, a trigger only: what it
    misses while NATS is down it simply does not read) is a file it signs a URL for and downloads."""
    done = [0]
    stop = asyncio.Event()
    ready: asyncio.Queue[str] = asyncio.Queue()

    async def quiet(error: Exception) -> None:
        pass  # refused reconnects while nats-server is down are the fault under test, not news

    connection = await nats.connect(
        world.stack.endpoints.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=quiet
    )

    async def heard(message: Msg) -> None:
        event = events_pb2.FileStatusChanged.FromString(message.data)
        if event.tenant == world.tenant and event.status == Status.FILE_STATUS_READY:
            ready.put_nowait(event.file_id)

    await connection.subscribe("files.file.ready", cb=heard)

    async def read() -> None:
        try:
            while not stop.is_set():
                try:
                    file_id = await asyncio.wait_for(ready.get(), 0.5)
                except TimeoutError:
                    continue
                body = acknowledged.get(file_id)
                if body is None:
                    continue  # READY before its CompleteUpload answered: the uploader has not recorded it yet
                try:
                    await world.download_and_check(file_id, hashlib.sha256(body.data).hexdigest())
                except FilestoreError:
                    continue  # recorded in world.stats.final
                done[0] += 1
        finally:
            await connection.close()

    return done, stop, asyncio.create_task(read())


@dataclass
class MultipartRun:
    file_ids: list[str]
    #: Multipart uploads storage listed while every session was held open.
    held_in_storage: int
    two_part: int
    elapsed_s: float


def multipart_body(index: int) -> Body:
    line = f"multipart session {index} {uuid.uuid4()}\n".encode()
    size = MULTIPART_PART_BYTES + 4096 if index % TWO_PART_EVERY == 0 else 512 + index % 1024
    return Body(f"session-{index}.txt", "text/plain", (line * (size // len(line) + 1))[:size])


async def hold_multipart_sessions(world: World, *, sessions: int) -> MultipartRun:
    """Open ``sessions`` multipart uploads, all held open at once, then send every part, then
    complete them all. The broker's plan puts parts at 5 MiB at least (S3's rule), so most sessions
    are one small part and one in TWO_PART_EVERY has two (5 MiB and a tail)."""
    started = time.monotonic()
    slots = asyncio.Semaphore(CONCURRENCY * 2)
    bodies = [multipart_body(index) for index in range(sessions)]

    async def bounded(work: Awaitable[T]) -> T:
        async with slots:
            return await work

    created = await asyncio.gather(
        *(
            bounded(
                world.create(
                    body,
                    kind=Kind.UPLOAD_KIND_MULTIPART,
                    part_size=MULTIPART_PART_BYTES if len(body.data) > MULTIPART_PART_BYTES else 0,
                )
            )
            for body in bodies
        )
    )
    for response in created:
        assert response.upload.kind == Kind.UPLOAD_KIND_MULTIPART
        assert response.upload.state == resources_pb2.UPLOAD_STATE_OPEN
    held = await asyncio.to_thread(world.open_multipart_uploads, f"originals/{world.tenant}/")

    async def send_parts(response: upload_service_pb2.CreateUploadResponse, body: Body) -> None:
        assert len(response.upload.part_urls) == response.upload.part_count
        for part in response.upload.part_urls:
            offset = (part.part_number - 1) * response.upload.part_size
            await world.put("PUT part", part.request, body.data[offset : offset + part.size])

    await asyncio.gather(*(bounded(send_parts(r, b)) for r, b in zip(created, bodies, strict=True)))
    await asyncio.gather(*(bounded(world.complete(r.upload.id)) for r in created))
    return MultipartRun(
        file_ids=[r.file.id for r in created],
        held_in_storage=held,
        two_part=sum(1 for r in created if r.upload.part_count == 2),
        elapsed_s=time.monotonic() - started,
    )
