"""The Python SDK (filestore.client) against the real stack: single and multipart uploads, bounded
parallel parts, resume after a crash, expired part URLs signed again, ranged download resume, and
typed errors carrying the server's reason."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal, NamedTuple

import httpx
import pytest
from prometheus_client import REGISTRY

from filestore.client import (
    AsyncClient,
    Client,
    Endpoints,
    Progress,
    StorageRejected,
    TransferEvent,
    TransferOptions,
)
from filestore.client import client as sdk_client
from filestore.client.errors import InvalidArgument, NotFound
from filestore.client.transfer import EXPIRED_AT_STORAGE
from filestore.stack import Stack
from filestore.upload.app import build
from filestore.upload.settings import UploadSettings
from filestore.v1 import resources_pb2
from tests.stacks import broker_env, own_service_tls
from tests.support import endpoints_for

MIB = 1024**2
PART = 5 * MIB  # the smallest part storage and the broker allow
SIGN_PARTS_OK = {"method": "/filestore.v1.UploadService/SignParts", "code": "OK"}
READY = resources_pb2.FILE_STATUS_READY


class Interrupted(Exception):
    """Raised from a progress callback: the SDK stops as if the process had died."""


class StorageRequests:
    """An httpx client whose event hooks record every request to storage (real requests, nothing
    faked): which parts were PUT, the Range headers sent, and the most PUTs in flight at once."""

    def __init__(self) -> None:
        self.put_parts: list[int] = []
        self.ranges: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.http = httpx.AsyncClient(
            timeout=60, event_hooks={"request": [self._on_request], "response": [self._on_response]}
        )

    async def _on_request(self, request: httpx.Request) -> None:
        if request.method == "PUT":
            self.put_parts.append(int(request.url.params.get("partNumber", "0")))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        elif "range" in request.headers:
            self.ranges.append(request.headers["range"])

    async def _on_response(self, response: httpx.Response) -> None:
        if response.request.method == "PUT":
            self.in_flight -= 1


@pytest.fixture
async def storage_requests() -> AsyncIterator[StorageRequests]:
    recorder = StorageRequests()
    yield recorder
    await recorder.http.aclose()


def events(
    into: list[Progress], *, fail_when: Callable[[Progress], bool] = lambda _: False
) -> Callable[[Progress], None]:
    def record(progress: Progress) -> None:
        into.append(progress)
        if fail_when(progress):
            raise Interrupted

    return record


def partial_downloads(directory: Path) -> list[Path]:
    return list(directory.glob(".*.partial"))


def write_random(path: Path, size: int) -> bytes:
    body = os.urandom(size)
    path.write_bytes(body)
    return body


async def test_a_put_whose_answer_was_lost_is_not_sent_twice_and_the_upload_completes(
    stack: Stack, tmp_path: Path
) -> None:
    # Storage stores the object, then the answer is lost on the way back: the retry meets the
    # write-once URL's 412, which says the object is there, and the SDK goes on to complete.
    statuses: list[int] = []

    async def lose_the_first_answer(response: httpx.Response) -> None:
        if response.request.method == "PUT":
            statuses.append(response.status_code)
            if len(statuses) == 1:
                raise httpx.ReadError("connection reset after the body was stored", request=response.request)

    body = os.urandom(40_000)
    async with (
        httpx.AsyncClient(timeout=60, event_hooks={"response": [lose_the_first_answer]}) as http,
        AsyncClient(endpoints_for(stack), state_dir=tmp_path / "state", http=http) as client,
    ):
        result = await client.upload(body, name="once.bin")
        assert statuses == [200, 412]
        # Completed against what storage holds: the size and the SHA-256 it checked on the PUT.
        assert (result.file.size, result.file.sha256) == (len(body), hashlib.sha256(body).hexdigest())


async def test_a_small_file_goes_in_one_put_and_comes_back_intact(stack: Stack, tmp_path: Path) -> None:
    body = os.urandom(300_000)
    seen: list[Progress] = []
    async with AsyncClient(endpoints_for(stack), state_dir=tmp_path / "state") as client:
        result = await client.upload(body, name="notes.txt", progress=events(seen))
        assert (result.kind, result.parts_sent, result.bytes_sent) == ("single", 1, len(body))
        assert result.file.declared_content_type == "text/plain"  # guessed from the name
        assert seen[-1].event is TransferEvent.COMPLETED
        assert seen[-1].bytes_done == len(body)
        ready = await client.wait_until_processed(result.file.id)
        assert ready.status == READY
        assert ready.sha256 == hashlib.sha256(body).hexdigest()
        downloaded = await client.download(result.file.id, tmp_path)
    assert downloaded.path == tmp_path / "notes.txt"
    assert downloaded.path.read_bytes() == body


async def test_parts_go_in_parallel_but_never_more_than_the_concurrency(
    stack: Stack, tmp_path: Path, storage_requests: StorageRequests
) -> None:
    source = tmp_path / "big.bin"
    body = write_random(source, 6 * PART + 1)
    options = TransferOptions(multipart_threshold=PART, part_size=PART, concurrency=3)
    async with AsyncClient(
        endpoints_for(stack), options=options, state_dir=tmp_path / "state", http=storage_requests.http
    ) as client:
        result = await client.upload(source)
        assert (result.kind, result.parts_sent, result.parts_resumed) == ("multipart", 7, 0)
        assert sorted(storage_requests.put_parts) == list(range(1, 8))
        assert 2 <= storage_requests.most_in_flight <= 3
        ready = await client.wait_until_processed(result.file.id)
    # The processor hashed the assembled object: every part landed in its place.
    assert (ready.status, ready.sha256, ready.size) == (READY, hashlib.sha256(body).hexdigest(), len(body))
    assert not list((tmp_path / "state").glob("*.json"))  # resume state removed on completion


class Grouping(NamedTuple):
    algorithm: Literal["crc32", "sha256"]
    #: Parts to a group, ``None`` for the SDK's own (128 MiB: every part of a small file).
    group_parts: int | None
    sign_calls: int


@pytest.mark.parametrize(
    "grouping",
    [Grouping("crc32", None, 1), Grouping("sha256", 2, 4)],
    ids=["crc32-one-group", "sha256-groups-of-two"],
)
async def test_parts_are_hashed_and_signed_a_group_to_a_call(
    tmp_path: Path, own_broker: Endpoints, monkeypatch: pytest.MonkeyPatch, grouping: Grouping
) -> None:
    algorithm, group_parts, sign_calls = grouping
    if group_parts is not None:
        monkeypatch.setattr(sdk_client, "_SIGN_GROUP_BYTES", group_parts * PART)
    source = tmp_path / "big.bin"
    body = write_random(source, 6 * PART + 1)  # seven parts
    options = TransferOptions(
        multipart_threshold=PART, part_size=PART, concurrency=3, part_checksum=algorithm
    )
    signed = SignedParts()
    async with AsyncClient(own_broker, options=options, state_dir=tmp_path / "state") as client:
        result = await client.upload(source)
    assert (result.parts_sent, result.file.size) == (7, len(body))
    # Each part once, with its own checksum (storage checked each part's against its bytes, and
    # the completion each part's against storage's), in one SignParts per group.
    assert signed.since() == (sign_calls, 7)


async def test_a_second_run_after_a_crash_sends_only_the_missing_parts(
    own_broker: Endpoints, tmp_path: Path, storage_requests: StorageRequests
) -> None:
    source = tmp_path / "video.mp4"
    body = write_random(source, 3 * PART + 12_345)  # four parts
    state_dir = tmp_path / "state"
    # One part at a time so the crash point is exact: parts 1 and 2 stored, 3 and 4 not.
    options = TransferOptions(multipart_threshold=PART, part_size=PART, concurrency=1)
    endpoints = own_broker
    first: list[Progress] = []
    crash_after_part_2 = events(
        first, fail_when=lambda p: p.event is TransferEvent.PART_SENT and p.part_number == 2
    )
    async with AsyncClient(endpoints, options=options, state_dir=state_dir) as client:
        with pytest.raises(Interrupted):
            await client.upload(source, progress=crash_after_part_2)
    assert [p.part_number for p in first if p.event is TransferEvent.PART_SENT] == [1, 2]
    (state_file,) = state_dir.glob("*.json")
    assert '"parts":{"1":' in state_file.read_text()

    second: list[Progress] = []
    signed = SignedParts()
    async with AsyncClient(
        endpoints, options=options, state_dir=state_dir, http=storage_requests.http
    ) as client:
        result = await client.upload(source, progress=events(second))
        assert storage_requests.put_parts == [3, 4]  # on the wire: only the missing parts
        assert signed.since() == (1, 2)  # and signed: only them, in one call
        assert (result.parts_resumed, result.parts_sent, result.bytes_sent) == (2, 2, PART + 12_345)
        resumed = [p for p in second if p.event is TransferEvent.RESUMED]
        assert [p.bytes_done for p in resumed] == [2 * PART]
        assert second[-1].bytes_done == len(body)
        ready = await client.wait_until_processed(result.file.id)
    assert (ready.status, ready.sha256) == (READY, hashlib.sha256(body).hexdigest())
    assert not state_file.exists()


async def test_a_changed_file_is_not_resumed_into_the_old_upload(stack: Stack, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    write_random(source, 2 * PART + 1)
    options = TransferOptions(multipart_threshold=PART, part_size=PART, concurrency=1)
    endpoints = endpoints_for(stack)
    async with AsyncClient(endpoints, options=options, state_dir=tmp_path / "state") as client:
        with pytest.raises(Interrupted):
            await client.upload(
                source, progress=events([], fail_when=lambda p: p.event is TransferEvent.PART_SENT)
            )
        body = write_random(source, 2 * PART + 2)  # rewritten: new size and mtime
        seen: list[Progress] = []
        result = await client.upload(source, progress=events(seen))
        assert (result.parts_resumed, result.parts_sent) == (0, 3)
        assert not [p for p in seen if p.event is TransferEvent.RESUMED]
        ready = await client.wait_until_processed(result.file.id)
    assert ready.sha256 == hashlib.sha256(body).hexdigest()


@asynccontextmanager
async def broker_in_this_process(stack: Stack, **env: str) -> AsyncIterator[Endpoints]:
    """The stack's endpoints with a second broker of its own, in this process, so that what it
    serves is counted in this process's Prometheus registry (see :class:`SignedParts`)."""
    with own_service_tls(stack) as (serving, client_tls):
        handle = await build(UploadSettings.from_env(broker_env(stack, **serving, **env)))
        await handle.start()
        try:
            endpoints = endpoints_for(stack)
            yield dataclasses.replace(
                endpoints, upload=f"127.0.0.1:{handle.port}", tls=client_tls or endpoints.tls
            )
        finally:
            await handle.stop(0)


@pytest.fixture
async def own_broker(stack: Stack) -> AsyncIterator[Endpoints]:
    async with broker_in_this_process(stack) as endpoints:
        yield endpoints


@pytest.fixture
async def short_lived_urls_broker(stack: Stack) -> AsyncIterator[Endpoints]:
    """A broker whose presigned URLs live one second."""
    async with broker_in_this_process(stack, FILESTORE_PRESIGN_TTL_S="1") as endpoints:
        yield endpoints


def sign_parts_served() -> tuple[int, int]:
    """(SignParts calls answered OK, part URLs signed) by the brokers of this process so far, from
    their own counters (``filestore_rpc_server_handled_total``, ``filestore_presigned_urls_issued_total``)."""
    calls = REGISTRY.get_sample_value("filestore_rpc_server_handled_total", SIGN_PARTS_OK)
    urls = REGISTRY.get_sample_value("filestore_presigned_urls_issued_total", {"kind": "part"})
    return int(calls or 0), int(urls or 0)


class SignedParts:
    """What the brokers of this process have signed since this was made: (SignParts calls, part URLs)."""

    def __init__(self) -> None:
        self._before = sign_parts_served()

    def since(self) -> tuple[int, int]:
        calls, urls = sign_parts_served()
        return calls - self._before[0], urls - self._before[1]


async def test_expired_part_urls_are_signed_again_one_part_at_a_time(
    tmp_path: Path, short_lived_urls_broker: Endpoints
) -> None:
    source = tmp_path / "slow.bin"
    body = write_random(source, 2 * PART + 7)
    # No checksums: the parts use the URLs CreateUpload answered; a negative refresh margin: the SDK
    # does not renew them before use, so storage itself must refuse them as expired.
    options = TransferOptions(
        multipart_threshold=PART,
        part_size=PART,
        concurrency=1,
        part_checksum="none",
        url_refresh_margin_s=-3600,
    )
    seen: list[Progress] = []

    def outlive_the_urls(progress: Progress) -> None:
        seen.append(progress)
        if progress.event is TransferEvent.STARTED:
            # Blocks the loop on purpose: nothing else may happen until the first URLs are stale.
            time.sleep(2.5)

    signed = SignedParts()
    async with AsyncClient(short_lived_urls_broker, options=options, state_dir=tmp_path / "state") as client:
        result = await client.upload(source, progress=outlive_the_urls)
        renewed = [(p.part_number, p.detail) for p in seen if p.event is TransferEvent.URL_RENEWED]
        assert (1, EXPIRED_AT_STORAGE) in renewed
        # CreateUpload signed the three parts' URLs; each renewal signed its own part alone.
        assert signed.since() == (len(renewed), 3 + len(renewed))
        assert result.file.status == resources_pb2.FILE_STATUS_UPLOADED
        ready = await client.wait_until_processed(result.file.id)
    assert ready.sha256 == hashlib.sha256(body).hexdigest()


async def test_an_interrupted_download_resumes_with_a_range_request(
    stack: Stack, tmp_path: Path, storage_requests: StorageRequests
) -> None:
    body = os.urandom(3 * MIB + 5)
    endpoints = endpoints_for(stack)
    options = TransferOptions(chunk_size=256 * 1024)
    async with AsyncClient(endpoints, options=options, state_dir=tmp_path / "state") as client:
        uploaded = await client.upload(body, name="scan.pdf", content_type="application/pdf")
        await client.wait_until_processed(uploaded.file.id)
        target = tmp_path / "copy.pdf"
        with pytest.raises(Interrupted):
            await client.download(
                uploaded.file.id, target, progress=events([], fail_when=lambda p: p.bytes_done >= MIB)
            )
    assert not target.exists()
    (partial,) = partial_downloads(tmp_path)
    kept = partial.stat().st_size
    assert MIB <= kept < len(body)

    async with AsyncClient(endpoints, options=options, http=storage_requests.http) as client:
        result = await client.download(uploaded.file.id, target)
    assert storage_requests.ranges == [f"bytes={kept}-"]
    assert result.resumed_from == kept
    assert target.read_bytes() == body
    assert not partial.exists()


async def test_refusals_are_typed_errors_with_the_servers_reason(stack: Stack, tmp_path: Path) -> None:
    async with AsyncClient(endpoints_for(stack), state_dir=tmp_path / "state") as client:
        with pytest.raises(InvalidArgument) as bad_name:
            await client.upload(b"x", name="a\u202e.txt")  # a bidi override disguises names
        assert (bad_name.value.reason, bad_name.value.domain) == ("INVALID_NAME", "upload.filestore.v1")
        with pytest.raises(InvalidArgument) as bad_type:
            await client.upload(b"x", name="a.bin", content_type="not a type")
        assert bad_type.value.reason == "INVALID_CONTENT_TYPE"
        with pytest.raises(NotFound) as missing:
            await client.download(str(uuid.uuid4()), tmp_path)
        assert missing.value.reason == "FILE_NOT_FOUND"
        uploaded = await client.upload(b"shared with nobody", name="p.txt")
        with pytest.raises(InvalidArgument) as no_one:
            await client.share(uploaded.file.id, "")
        assert no_one.value.reason == "INVALID_PRINCIPAL"


@pytest.mark.parametrize("algorithm", ["crc32", "sha256"])
async def test_storage_refusing_a_part_is_a_typed_error(
    stack: Stack, tmp_path: Path, algorithm: Literal["crc32", "sha256"]
) -> None:
    source = tmp_path / "shrinks.bin"
    write_random(source, PART + 1)
    options = TransferOptions(
        multipart_threshold=PART, part_size=PART, concurrency=1, part_checksum=algorithm
    )
    async with AsyncClient(endpoints_for(stack), options=options, state_dir=tmp_path / "state") as client:

        def corrupt_after_hashing(progress: Progress) -> None:
            # Part 1's digest was signed already; its bytes change before they are sent.
            if (
                progress.event is TransferEvent.BYTES
                and progress.part_number == 1
                and progress.bytes_done <= MIB
            ):
                with source.open("r+b") as handle:
                    handle.seek(2 * MIB)
                    handle.write(b"\xff" * 16)

        with pytest.raises(StorageRejected) as refused:
            await client.upload(source, progress=corrupt_after_hashing)
    assert refused.value.metadata["part_number"] == "1"
    assert refused.value.metadata["status"] in ("400", "403")


def test_the_sync_client_lists_shares_and_deletes(stack: Stack, tmp_path: Path) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    owner, reader = endpoints_for(stack, tenant=tenant), endpoints_for(stack, tenant=tenant, subject="bob")
    with Client(owner, state_dir=tmp_path / "state") as client:
        ids = [client.upload(f"file {n}".encode(), name=f"doc-{n}.txt").file.id for n in range(3)]
        page, token = client.list_files_page(page_size=2, name_prefix="doc-")
        rest, end = client.list_files_page(page_size=2, page_token=token, name_prefix="doc-")
        assert ([f.id for f in page + rest], end) == (ids[::-1], "")
        ready = client.wait_until_processed(ids[0])
        assert ready.status == READY
        info = client.file_info(ids[0])
        assert {r.step for r in info.results} >= {"integrity", "scan"}
        grant = client.share(ids[0], "bob")
        assert (grant.principal, grant.permission) == ("bob", resources_pb2.PERMISSION_READ)
        with Client(reader, state_dir=tmp_path / "state") as bob:
            assert bob.download(ids[0], tmp_path / "from-alice.txt").path.read_bytes() == b"file 0"
            with pytest.raises(NotFound):
                bob.get_file(ids[1])  # not shared with bob
        assert client.delete_file(ids[1]).status == resources_pb2.FILE_STATUS_DELETED
        with pytest.raises(NotFound):
            client.get_file(ids[1])
