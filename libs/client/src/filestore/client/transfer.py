"""HTTP to presigned URLs: streaming PUTs of byte ranges and resumable ranged GETs, with retries.

Everything here speaks to storage only, with no credentials but the signed URLs; asking the services
for (fresh) URLs is the caller's part, through the ``sign`` callables.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import httpx

from filestore.client.errors import FailedPrecondition, IntegrityError, StorageRejected, Unavailable
from filestore.client.progress import ProgressTracker, TransferEvent
from filestore.client.retry import RetryPolicy, is_transient_status
from filestore.client.sources import ByteSource
from filestore.core.reasons import Reason
from filestore.v1 import resources_pb2

__all__ = ["MIB", "StorageTransfer", "TransferOptions", "run_bounded", "run_pipelined"]

T = TypeVar("T")
P = TypeVar("P")

MIB = 1024 * 1024
# A URL expired at storage answers 403 with an S3 error whose message says so; some storages
# word it "Request has expired", others "expired" in an X-Amz-Expires complaint.
_EXPIRED_RE = re.compile(rb"expired", re.IGNORECASE)
_S3_CODE_RE = re.compile(rb"<Code>([^<]{1,64})</Code>")
#: ``Progress.detail`` of a URL_RENEWED event caused by storage refusing the URL as expired.
EXPIRED_AT_STORAGE = "storage refused the URL as expired"
# Re-signing the same URL over and over means something else is wrong (clock skew, policy change).
_MAX_RENEWALS = 3


@dataclass(frozen=True, kw_only=True)
class TransferOptions:
    """How uploads and downloads move bytes. The defaults suit a fast local network."""

    #: Above this many bytes an upload is multipart (the broker's own default threshold).
    multipart_threshold: int = 64 * MIB
    #: Part size wanted, 5 MiB..5 GiB; 0 lets the broker choose (16 MiB). The broker may raise it.
    part_size: int = 0
    #: Parts in flight at once.
    concurrency: int = 8
    #: Bytes per read from the source and per write to the socket.
    chunk_size: int = MIB
    #: The checksum of each part signed into its URL, so storage refuses a part that changed on
    #: the way: ``"crc32"`` (what AWS SDKs send by default, cheap on both ends), ``"sha256"``
    #: (several times the CPU, on storage too) or ``"none"``. The whole file's SHA-256 is computed
    #: by the processor after the upload whichever is chosen.
    part_checksum: Literal["crc32", "sha256", "none"] = "crc32"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: A URL closer than this to its expiry is signed again before use rather than risked
    #: (negative: never early; storage's refusal of an expired URL still renews it).
    url_refresh_margin_s: float = 30.0
    #: Seconds without progress after which a request counts as failed (and is retried).
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if self.part_checksum not in ("crc32", "sha256", "none"):
            raise ValueError("part_checksum must be 'crc32', 'sha256' or 'none'")
        if self.part_size and not 5 * MIB <= self.part_size <= 5 * 1024 * MIB:
            raise ValueError("part_size must be 0 (the broker chooses) or 5 MiB..5 GiB")


class Signer(Protocol):
    """Answers a presigned request for one PUT or GET; ``renew`` asks for a freshly signed one."""

    def __call__(self, *, renew: bool) -> Awaitable[resources_pb2.PresignedRequest]: ...


def expiring(request: resources_pb2.PresignedRequest, margin_s: float, now: float | None = None) -> bool:
    """Whether the URL is past, or within ``margin_s`` of, its expiry (unknown expiry: no)."""
    if not request.HasField("expire_time"):
        return False
    current = time.time() if now is None else now
    return request.expire_time.ToSeconds() <= current + margin_s


def _storage_code(body: bytes) -> str:
    found = _S3_CODE_RE.search(body)
    return found.group(1).decode(errors="replace") if found else ""


def _retry_after_s(response: httpx.Response) -> float:
    raw = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return 0.0


class _Failure(Exception):
    """A transient failure of one attempt; ``wait_s`` is a lower bound set by the server (429)."""

    def __init__(self, cause: str, wait_s: float = 0.0) -> None:
        super().__init__(cause)
        self.cause = cause
        self.wait_s = wait_s


class _Expired(Exception):
    """Storage says the URL expired: sign a new one and try again at once."""


class StorageTransfer:
    """Moves bytes to and from presigned URLs over one pooled ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient, options: TransferOptions) -> None:
        self._http = http
        self._options = options

    async def _attempts(
        self,
        attempt: Callable[[resources_pb2.PresignedRequest], Awaitable[None]],
        sign: Signer,
        tracker: ProgressTracker,
        *,
        what: dict[str, str],
        progress_made: Callable[[], bool] = lambda: False,
    ) -> None:
        """Run ``attempt`` until it succeeds: transient failures wait (backoff, full jitter) and
        retry; an expired URL is re-signed and retried at once; anything else is raised."""
        policy = self._options.retry
        retries = renewals = 0
        renew = False
        while True:
            request = await sign(renew=renew)
            if not renew and expiring(request, self._options.url_refresh_margin_s):
                # Renewed once per attempt and then used: with a TTL shorter than the margin, a
                # fresh URL would otherwise look "expiring" forever.
                tracker.emit(TransferEvent.URL_RENEWED, part_number=_part(what), detail="about to expire")
                request = await sign(renew=True)
            renew = False
            try:
                await attempt(request)
                return
            except _Expired:
                renewals += 1
                if renewals > _MAX_RENEWALS:
                    raise StorageRejected(
                        "storage keeps refusing freshly signed URLs as expired; check the clocks",
                        reason=Reason.URL_EXPIRED,
                        metadata=what,
                    ) from None
                tracker.emit(TransferEvent.URL_RENEWED, part_number=_part(what), detail=EXPIRED_AT_STORAGE)
                renew = True
                continue
            except _Failure as failure:
                if progress_made():
                    retries = 0  # a connection that keeps moving bytes is not a dead one
                retries += 1
                if retries >= policy.max_attempts:
                    raise Unavailable(
                        f"storage unavailable after {retries} attempts: {failure.cause}",
                        reason=Reason.STORAGE_UNAVAILABLE,
                        metadata={**what, "cause": failure.cause},
                    ) from None
                delay = max(policy.delay_s(retries), failure.wait_s)
                tracker.emit(
                    TransferEvent.RETRYING,
                    part_number=_part(what),
                    attempt=retries,
                    delay_s=delay,
                    detail=failure.cause,
                )
                await asyncio.sleep(delay)

    def _refusal(self, response: httpx.Response, what: dict[str, str]) -> Exception:
        """The exception for a non-2xx answer: expired, transient, or final."""
        body = response.content
        if response.status_code == 403 and _EXPIRED_RE.search(body):
            return _Expired()
        if is_transient_status(response.status_code):
            return _Failure(f"HTTP {response.status_code}", _retry_after_s(response))
        code = _storage_code(body)
        return StorageRejected(
            f"storage refused the request: HTTP {response.status_code} {code}".rstrip(),
            metadata={**what, "status": str(response.status_code), "storage_code": code},
        )

    async def put_range(
        self,
        source: ByteSource,
        offset: int,
        length: int,
        *,
        sign: Signer,
        tracker: ProgressTracker,
        part_number: int | None = None,
    ) -> str:
        """PUT ``length`` bytes of ``source`` at ``offset``, streamed in chunks; answers the ETag."""
        chunk_size = self._options.chunk_size
        what = {"part_number": str(part_number)} if part_number is not None else {}
        etag = ""

        async def attempt(request: resources_pb2.PresignedRequest) -> None:
            nonlocal etag
            sent = 0

            async def body() -> AsyncIterator[bytes]:
                nonlocal sent
                position, end = offset, offset + length
                while position < end:
                    chunk = await asyncio.to_thread(source.read_at, position, min(chunk_size, end - position))
                    if not chunk:
                        raise _SourceShrank(position)
                    position += len(chunk)
                    sent += len(chunk)
                    yield chunk
                    tracker.advance(len(chunk), part_number)

            # The length is signed but not among the headers handed out (HTTP clients set it
            # themselves); a streamed body would otherwise go chunked and break the signature.
            headers = httpx.Headers(dict(request.headers))
            headers["Content-Length"] = str(length)
            try:
                response = await self._http.put(request.url, content=body(), headers=headers)
            except httpx.TransportError as exc:
                tracker.rewind(sent)
                raise _Failure(type(exc).__name__) from None
            if response.is_success:
                etag = response.headers.get("etag", "")
                return
            if response.status_code == 412 and part_number is None:
                # Whole-object URLs are write-once (If-None-Match: *): the object is already stored,
                # by an earlier attempt whose answer was lost. CompleteUpload checks its size and
                # checksum, so going on is safe.
                tracker.advance(length - sent, part_number)
                return
            tracker.rewind(sent)
            raise self._refusal(response, what)

        try:
            await self._attempts(attempt, sign, tracker, what=what)
        except _SourceShrank as shrank:
            raise _source_changed(shrank.position) from None
        return etag

    async def get_to_file(
        self,
        partial: Path,
        *,
        size: int,
        sha256: str,
        sign: Signer,
        tracker: ProgressTracker,
    ) -> None:
        """Fill ``partial`` up to ``size`` bytes, continuing after what it already holds with Range
        requests (also after each failed attempt); check the SHA-256 of the whole when known."""
        digest = hashlib.sha256()
        with partial.open("ab") as out:
            have = out.tell()
            if have > size:
                out.truncate(0)
                have = 0
            if have:
                await asyncio.to_thread(_hash_file_prefix, partial, have, digest)
                tracker.done = have
                tracker.emit(TransferEvent.RESUMED, detail=f"resuming at byte {have}")
            else:
                tracker.emit(TransferEvent.STARTED)
            moved = False

            async def attempt(request: resources_pb2.PresignedRequest) -> None:
                nonlocal have, digest, moved
                moved = False
                if have >= size:
                    return
                headers = {"Range": f"bytes={have}-"} if have else {}
                try:
                    async with self._http.stream("GET", request.url, headers=headers) as response:
                        if response.status_code not in (200, 206):
                            await response.aread()
                            raise self._refusal(response, {})
                        if response.status_code == 200 and have:
                            # Storage ignored the Range: start over rather than append a duplicate.
                            out.seek(0)
                            out.truncate(0)
                            tracker.rewind(have)
                            have, digest = 0, hashlib.sha256()
                        async for chunk in response.aiter_bytes(self._options.chunk_size):
                            out.write(chunk)
                            digest.update(chunk)
                            have += len(chunk)
                            moved = True
                            tracker.advance(len(chunk))
                except httpx.TransportError as exc:
                    raise _Failure(type(exc).__name__) from None
                if have < size:
                    raise _Failure("connection closed early")

            await self._attempts(attempt, sign, tracker, what={}, progress_made=lambda: moved)
            out.flush()
        if have != size or (sha256 and digest.hexdigest() != sha256):
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            raise IntegrityError(
                "the downloaded bytes do not match the file's size or SHA-256",
                metadata={"expected_size": str(size), "size": str(have)},
            )


class _SourceShrank(Exception):
    def __init__(self, position: int) -> None:
        super().__init__(position)
        self.position = position


def _source_changed(position: int) -> Exception:
    return FailedPrecondition(
        f"the file changed while it was being uploaded (it ends at byte {position} now)",
        reason=Reason.LOCAL_FILE_CHANGED,
    )


def _part(what: dict[str, str]) -> int | None:
    value = what.get("part_number")
    return int(value) if value else None


def _hash_file_prefix(path: Path, length: int, digest: hashlib._Hash) -> None:
    with path.open("rb") as handle:
        remaining = length
        while remaining:
            chunk = handle.read(min(MIB, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)


async def _run_lanes(lane: Callable[[], Coroutine[Any, Any, None]], count: int) -> None:
    """``count`` copies of ``lane`` at once. The first failure cancels the others and is raised as
    itself (not wrapped in an ExceptionGroup)."""
    lanes = [asyncio.create_task(lane()) for _ in range(count)]
    try:
        await asyncio.wait(lanes, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
    for task in lanes:
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure


async def run_bounded(items: Iterable[T], work: Callable[[T], Awaitable[None]], concurrency: int) -> None:
    """``work(item)`` for every item, at most ``concurrency`` at a time. The first failure cancels
    the rest and is raised as itself (not wrapped in an ExceptionGroup)."""
    pending = iter(items)

    async def lane() -> None:
        # One shared iterator: each lane takes the next item when it is free.
        for item in pending:
            await work(item)

    await _run_lanes(lane, concurrency)


async def run_pipelined(
    items: Iterable[T],
    prepare: Callable[[list[T]], Awaitable[Sequence[P]]],
    work: Callable[[T, P], Awaitable[None]],
    concurrency: int,
    *,
    ahead: int,
    group: int = 1,
) -> None:
    """``work(item, prepared)`` for every item, at most ``concurrency`` works at a time, while the
    next ``ahead`` items (or more) are prepared, in order, ``group`` items to a call: ``prepare``
    answers one prepared value per item it is given, in their order, and the next group is started
    as soon as fewer than ``ahead`` items are left prepared or being prepared. A lane that becomes
    free then finds its next item ready instead of leaving its connection idle while the item is
    prepared. Failures as in :func:`run_bounded`; preparations not yet used are cancelled."""
    pending = iter(items)
    # Each item with its group's preparation and its place in the group.
    ready: collections.deque[tuple[T, asyncio.Future[Sequence[P]], int]] = collections.deque()
    preparations: list[asyncio.Future[Sequence[P]]] = []
    window = max(1, ahead)  # with none prepared ahead, a free lane would find nothing to take
    size = max(1, group)

    def prepare_ahead() -> None:
        while len(ready) < window:
            batch = list(itertools.islice(pending, size))
            if not batch:
                return
            preparation = asyncio.ensure_future(prepare(batch))
            preparations.append(preparation)
            ready.extend((item, preparation, index) for index, item in enumerate(batch))

    async def lane() -> None:
        while True:
            prepare_ahead()
            if not ready:
                return
            # Lanes take items in order, whichever is free first: the last items never queue
            # behind a busy lane while another lane idles.
            item, preparation, index = ready.popleft()
            prepare_ahead()
            # Shielded: the group's other lanes await the same preparation, which a lane's own
            # cancellation must not cancel for them (the finally below cancels what is left).
            prepared = await asyncio.shield(preparation)
            await work(item, prepared[index])

    try:
        await _run_lanes(lane, concurrency)
    finally:
        for preparation in preparations:
            preparation.cancel()
        await asyncio.gather(*preparations, return_exceptions=True)
