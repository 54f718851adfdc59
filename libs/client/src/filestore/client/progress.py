"""What a transfer reports while it runs, through one callback.

The callback runs on the event loop, between network writes: keep it quick. An exception it raises
stops the transfer at once, the same as a crash (an upload keeps its resume state).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Progress", "ProgressCallback", "TransferEvent"]


class TransferEvent(enum.Enum):
    #: A new upload session or download began.
    STARTED = "started"
    #: An earlier upload (or partial download) was found; ``bytes_done`` already counts it.
    RESUMED = "resumed"
    #: More bytes went out (or came in); sent once per chunk.
    BYTES = "bytes"
    #: Storage accepted a whole part (multipart) or the whole object.
    PART_SENT = "part_sent"
    #: A transient failure; the request is tried again after ``delay_s``.
    RETRYING = "retrying"
    #: A presigned URL had expired (or was about to) and a fresh one was signed.
    URL_RENEWED = "url_renewed"
    #: The upload was completed by the broker, or the download verified and in place.
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class Progress:
    event: TransferEvent
    bytes_done: int
    bytes_total: int
    #: The part concerned, for part events of a multipart upload.
    part_number: int | None = None
    #: For RETRYING: which retry this is (1-based), how long it waits, and why.
    attempt: int = 0
    delay_s: float = 0.0
    detail: str = ""


ProgressCallback = Callable[[Progress], None]


class ProgressTracker:
    """Keeps the running byte count and forwards events to the caller's callback (if any)."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self._callback = callback
        self.total = total
        self.done = 0

    def emit(
        self,
        event: TransferEvent,
        *,
        part_number: int | None = None,
        attempt: int = 0,
        delay_s: float = 0.0,
        detail: str = "",
    ) -> None:
        if self._callback is not None:
            self._callback(Progress(event, self.done, self.total, part_number, attempt, delay_s, detail))

    def advance(self, count: int, part_number: int | None = None) -> None:
        self.done += count
        self.emit(TransferEvent.BYTES, part_number=part_number)

    def rewind(self, count: int) -> None:
        """Bytes of a failed attempt no longer count: they will be sent again."""
        self.done -= count
