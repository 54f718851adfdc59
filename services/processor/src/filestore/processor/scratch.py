"""Scratch files for the steps that need a seekable copy of an object (renderers): a private directory
per run, and a bounded copy of the object's bytes into it. Nothing here holds a whole object in memory.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["TooLarge", "scratch_directory", "spool"]


class TooLarge(Exception):
    """The object is larger than what the step may read."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes is more than the limit of {limit}")
        self.size = size
        self.limit = limit


def spool(chunks: Iterable[bytes], target: Path) -> Path:
    """Write ``chunks`` (an object's bytes, as the store streams them) to ``target``, one at a time.
    Blocking: run it in a worker thread."""
    with target.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
    return target


@contextlib.contextmanager
def scratch_directory() -> Iterator[Path]:
    """A private temp directory removed afterwards, even after an error."""
    path = Path(tempfile.mkdtemp(prefix="filestore-processor-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
