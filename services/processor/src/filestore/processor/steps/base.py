"""What every pipeline step shares: the :class:`Step` interface, the :class:`StepOutcome` a run answers
(with the facts and derivatives the catalogue records with it), and the :class:`Run` a step works in:
the object it reads, the scratch directory the steps of one delivery share, and the plumbing that keeps
a long read or render from being redelivered (heartbeats) and the worker's memory bounded (streams)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, TypeVar

from filestore.core.errors import Unavailable
from filestore.core.reasons import Reason
from filestore.core.validation import MAX_EXTRACTED_TEXT_BYTES
from filestore.processor import media
from filestore.processor.pipeline_config import PipelineSettings, StepName
from filestore.processor.scratch import TooLarge, spool
from filestore.server.storage import ObjectHead
from filestore.v1 import resources_pb2

__all__ = [
    "RENDER_REFUSALS",
    "SETTLED",
    "Digest",
    "Heartbeat",
    "PipelineStorage",
    "Run",
    "Step",
    "StepOutcome",
    "failed",
    "passed",
    "render_refused",
    "skipped",
    "truncate_utf8",
]

T = TypeVar("T")
Heartbeat = Callable[[], Awaitable[None]]
Status = resources_pb2.FileStatus
Outcome = resources_pb2.StepOutcome
#: Outcomes a redelivery does not repeat; SKIPPED is "not applicable or refused by policy".
SETTLED: Final = frozenset({Outcome.STEP_OUTCOME_PASSED, Outcome.STEP_OUTCOME_SKIPPED})


class PipelineStorage(Protocol):
    """What the pipeline asks of storage (:class:`filestore.server.storage.ObjectStore` has it):
    reads of the object a run processes (a HEAD, one Range, whole-object streams with memory bounded
    by a chunk), a URL for the tools that read over HTTP, and derivative writes."""

    async def head(self, key: str) -> ObjectHead | None: ...
    async def read_range(self, key: str, *, start: int, length: int) -> bytes: ...
    def stream(self, key: str, *, chunk_bytes: int) -> Iterator[bytes]: ...
    def internal_get_url(self, key: str, *, expires_s: int) -> str: ...
    async def put(self, key: str, body: bytes, *, content_type: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Digest:
    sha256: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutcome:
    """What one run of a step found, and what the catalogue records with it."""

    outcome: resources_pb2.StepOutcome.ValueType
    details: Mapping[str, str] = field(default_factory=dict)
    #: The file's end when this step decides it: (QUARANTINED or FAILED, reason).
    stop: tuple[resources_pb2.FileStatus.ValueType, str] | None = None
    #: The digest and size read from storage (the integrity step).
    verified: Digest | None = None
    sniffed_content_type: str = ""
    extracted_text: str = ""
    #: Derivatives already written to storage, to be registered (file_id left empty).
    derivatives: tuple[resources_pb2.Derivative, ...] = ()

    @property
    def settled(self) -> bool:
        return self.outcome in SETTLED


def passed(**details: str) -> StepOutcome:
    return StepOutcome(outcome=Outcome.STEP_OUTCOME_PASSED, details=details)


def skipped(reason: str, **details: str) -> StepOutcome:
    return StepOutcome(outcome=Outcome.STEP_OUTCOME_SKIPPED, details={"reason": reason, **details})


def failed(**details: str) -> StepOutcome:
    """The step ran and could not make what it makes (a tool failed on the content); nothing stops."""
    return StepOutcome(outcome=Outcome.STEP_OUTCOME_FAILED, details=details)


def truncate_utf8(text: str, limit: int = MAX_EXTRACTED_TEXT_BYTES) -> str:
    """At most ``limit`` bytes of UTF-8, cut at a character boundary."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


class Step(Protocol):
    """One step of the pipeline. ``run`` may be called again for the same file (a redelivery): a
    step overwrites what it wrote before and never counts on having run."""

    @property
    def name(self) -> StepName: ...

    def applies(self, content_type: str) -> bool:
        """Whether the step runs for content of this (sniffed) type."""
        ...

    async def run(self, run: Run) -> StepOutcome: ...


def configured_for(config: PipelineSettings, step: StepName, content_type: str) -> bool:
    """The configured applicability: the steps the first matching type pattern lists."""
    return step in config.steps_for(content_type)


@dataclass
class Run:
    """One delivery of one event: where the file's bytes are, and what its steps share."""

    file: resources_pb2.File
    #: The object holding the file's bytes (a deduplicated file's shared copy, once verified).
    key: str
    heartbeat: Heartbeat
    store: PipelineStorage
    #: Bytes read from storage at a time while streaming.
    chunk_bytes: int
    #: How often a long piece of work tells JetStream the event is still in hand.
    heartbeat_interval_s: float
    sniffed: str = ""
    #: The object's ETag when the run started reading it (see ``Pipeline.process``).
    etag: str = ""
    scratch: Path | None = None
    spooled: Path | None = None

    @property
    def tenant(self) -> str:
        return self.file.tenant

    @property
    def file_id(self) -> str:
        return self.file.id

    async def beating(self, work: Awaitable[T]) -> T:
        """Await ``work`` while telling JetStream every ack_wait/3 that the event is in progress, so a
        long step is not redelivered to another worker while this one is busy."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.heartbeat_interval_s)
                if done:
                    return task.result()
                await self.heartbeat()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def blocking(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await self.beating(asyncio.to_thread(fn, *args, **kwargs))

    async def head(self) -> ObjectHead:
        """The HEAD of the object the run reads. It must be there: a missing one is retried and then
        dead-lettered, like any read storage refuses."""
        head = await self.beating(self.store.head(self.key))
        if head is None:
            raise Unavailable(f"{self.key} is not in storage", reason=Reason.STORAGE_UNAVAILABLE)
        return head

    async def digest(self) -> Digest:
        """SHA-256 and size of the object, streamed (memory bounded by one chunk)."""
        return await self.blocking(self._stream_digest)

    def _stream_digest(self) -> Digest:
        hasher = hashlib.sha256()
        size = 0
        for chunk in self.store.stream(self.key, chunk_bytes=self.chunk_bytes):
            hasher.update(chunk)
            size += len(chunk)
        return Digest(sha256=hasher.hexdigest(), size=size)

    async def spooled_original(self, *, max_bytes: int) -> Path:
        """The original in the run's scratch directory (at most ``max_bytes``), once per run."""
        if self.spooled is None:
            assert self.scratch is not None
            size = (await self.head()).size
            if size > max_bytes:
                raise TooLarge(size, max_bytes)
            chunks = self.store.stream(self.key, chunk_bytes=self.chunk_bytes)
            self.spooled = await self.blocking(spool, chunks, self.scratch / "original")
        return self.spooled


#: What stops a render (thumbnail, OCR) short of an outcome: none of them is worth a retry.
RENDER_REFUSALS: Final = (TooLarge, media.ImageTooLarge, media.ToolMissing, media.ToolFailed)


def render_refused(error: Exception) -> StepOutcome:
    """The outcome of a render that one of :data:`RENDER_REFUSALS` stopped."""
    if isinstance(error, TooLarge):
        return skipped("OBJECT_TOO_LARGE", size=str(error.size), limit=str(error.limit))
    if isinstance(error, media.ImageTooLarge):
        return skipped(
            "IMAGE_TOO_LARGE", width=str(error.width), height=str(error.height), limit=str(error.limit)
        )
    if isinstance(error, media.ToolMissing):
        return skipped("TOOL_MISSING", detail=str(error))
    return failed(reason="UNREADABLE", detail=str(error)[:500])
