"""What an upload reads from: a path, a seekable binary file object, or bytes.

Parts are read by offset, in bounded chunks, possibly by several parts at once and again on a retry,
so a source must allow random access; nothing here ever reads a whole file into memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

__all__ = [
    "ByteSource",
    "SourceIdentity",
    "UploadInput",
    "crc32_of_range",
    "open_source",
    "sha256_of_range",
]

UploadInput = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO

# Hashing reads this much at a time: large enough that hashlib releases the GIL and the loop of
# Python calls is negligible, small enough to keep memory flat.
_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SourceIdentity:
    """What makes a second run "the same upload": the file, its size and its modification time.

    Cheap (one stat), and it changes whenever the content is rewritten in place.
    """

    path: str
    size: int
    mtime_ns: int


@runtime_checkable
class ByteSource(Protocol):
    """Random-access bytes of a known size. ``read_at`` may block; callers run it in a thread."""

    @property
    def size(self) -> int: ...

    @property
    def name(self) -> str:
        """A display name: the file's base name, or empty for anonymous bytes."""
        ...

    @property
    def identity(self) -> SourceIdentity | None:
        """For files on disk, what a resumed upload must match; None means "cannot resume"."""
        ...

    def read_at(self, offset: int, length: int) -> bytes: ...

    def unchanged(self) -> bool:
        """Whether the content still looks as it did when the source was opened."""
        ...

    def close(self) -> None: ...


class _PathSource:
    def __init__(self, path: Path) -> None:
        self._path = path.resolve()
        self._fd = os.open(self._path, os.O_RDONLY)
        stat = os.fstat(self._fd)
        self._identity = SourceIdentity(str(self._path), stat.st_size, stat.st_mtime_ns)

    @property
    def size(self) -> int:
        return self._identity.size

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def identity(self) -> SourceIdentity:
        return self._identity

    def read_at(self, offset: int, length: int) -> bytes:
        # pread: no shared file position, so parts read concurrently from worker threads.
        return os.pread(self._fd, length, offset)

    def unchanged(self) -> bool:
        stat = os.stat(self._path)
        return (stat.st_size, stat.st_mtime_ns) == (self._identity.size, self._identity.mtime_ns)

    def close(self) -> None:
        os.close(self._fd)


class _BytesSource:
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = memoryview(data).cast("B")

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def name(self) -> str:
        return ""

    @property
    def identity(self) -> None:
        return None

    def read_at(self, offset: int, length: int) -> bytes:
        return bytes(self._data[offset : offset + length])

    def unchanged(self) -> bool:
        return True

    def close(self) -> None:
        self._data.release()


class _FileObjectSource:
    """A caller's open file: its own position is left alone only in the sense that we seek it; the
    lock serializes seek+read pairs from concurrent parts."""

    def __init__(self, handle: BinaryIO) -> None:
        if not handle.seekable():
            raise TypeError("upload needs a seekable binary file: parts are read by offset and on retries")
        self._handle = handle
        self._lock = threading.Lock()
        self._start = handle.tell()
        self._size = handle.seek(0, io.SEEK_END) - self._start

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        raw = getattr(self._handle, "name", "")
        return Path(raw).name if isinstance(raw, str) else ""

    @property
    def identity(self) -> None:
        return None

    def read_at(self, offset: int, length: int) -> bytes:
        with self._lock:
            self._handle.seek(self._start + offset)
            return self._handle.read(length)

    def unchanged(self) -> bool:
        with self._lock:
            return self._handle.seek(0, io.SEEK_END) - self._start == self._size

    def close(self) -> None:
        """The caller opened it; the caller closes it."""


def open_source(source: UploadInput) -> ByteSource:
    if isinstance(source, bytes | bytearray | memoryview):
        return _BytesSource(source)
    if isinstance(source, str | os.PathLike):
        return _PathSource(Path(source))
    if hasattr(source, "read") and hasattr(source, "seek"):
        return _FileObjectSource(source)
    raise TypeError(f"cannot upload a {type(source).__name__}: give a path, a binary file or bytes")


def _chunks_of_range(source: ByteSource, offset: int, length: int) -> Iterator[bytes]:
    end = offset + length
    while offset < end:
        chunk = source.read_at(offset, min(_HASH_CHUNK, end - offset))
        if not chunk:
            raise EOFError(f"the source ended at byte {offset} of {end}")
        yield chunk
        offset += len(chunk)


def sha256_of_range(source: ByteSource, offset: int, length: int) -> str:
    """Lower-case hex SHA-256 of ``length`` bytes at ``offset``, read in bounded chunks (blocking)."""
    digest = hashlib.sha256()
    for chunk in _chunks_of_range(source, offset, length):
        digest.update(chunk)
    return digest.hexdigest()


def crc32_of_range(source: ByteSource, offset: int, length: int) -> str:
    """CRC32 (IEEE, S3's ``x-amz-checksum-crc32``) of ``length`` bytes at ``offset`` as 8 lower-case
    hex digits, read in bounded chunks (blocking)."""
    crc = 0
    for chunk in _chunks_of_range(source, offset, length):
        crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"
