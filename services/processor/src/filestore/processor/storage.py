"""Blocking object-store access for the pipeline (run in worker threads): streaming reads, Range reads,
bounded spooling to a temp file, derivative writes. Nothing here holds a whole object in memory.

Two clients (:mod:`filestore.server.s3`): HEADs, writes and signing go through the control client (short
timeouts), reads of an object's bytes through the streaming one (a longer wait between reads). Either
way a store that does not answer ends the call with ``Unavailable(reason=Reason.STORAGE_UNAVAILABLE)``,
and the event is retried.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from filestore.core.errors import Unavailable
from filestore.core.reasons import Reason
from filestore.server import s3

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = ["ObjectStore", "TooLarge", "scratch_directory"]


class TooLarge(Exception):
    """The object is larger than what the step may read."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes is more than the limit of {limit}")
        self.size = size
        self.limit = limit


@contextlib.contextmanager
def _storage_errors(key: str) -> Iterator[None]:
    try:
        yield
    except ClientError as error:
        raise Unavailable(
            f"cannot access {key} in storage: {error}", reason=Reason.STORAGE_UNAVAILABLE
        ) from error
    except BotoCoreError as error:
        raise s3.storage_unavailable(error, key=key) from error


class ObjectStore:
    def __init__(self, client: S3Client, *, streaming: S3Client, chunk_bytes: int) -> None:
        self._client = client
        self._streaming = streaming
        self._chunk_bytes = chunk_bytes

    def head(self, bucket: str, key: str) -> int:
        with _storage_errors(key):
            return self._client.head_object(Bucket=bucket, Key=key)["ContentLength"]

    def etag(self, bucket: str, key: str) -> str:
        """The object's ETag: it changes whenever the object is written again."""
        with _storage_errors(key):
            return str(self._client.head_object(Bucket=bucket, Key=key)["ETag"])

    def read_head(self, bucket: str, key: str, size: int) -> bytes:
        """The first ``size`` bytes (one Range request)."""
        with _storage_errors(key):
            try:
                body = self._streaming.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{size - 1}")["Body"]
            except ClientError as error:
                # An empty object has no byte 0: a Range on it is unsatisfiable.
                if error.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""
                raise
            try:
                return body.read(size)
            finally:
                body.close()

    def chunks(self, bucket: str, key: str) -> Iterator[bytes]:
        """The object in ``chunk_bytes`` pieces; the connection closes when the iterator does."""
        with _storage_errors(key):
            body = self._streaming.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                yield from body.iter_chunks(self._chunk_bytes)
            finally:
                body.close()

    def spool(self, bucket: str, key: str, *, limit: int, directory: Path) -> Path:
        """Copy the object to a file in ``directory`` (renderers need a seekable file); raises TooLarge
        without reading when it is bigger than ``limit``."""
        size = self.head(bucket, key)
        if size > limit:
            raise TooLarge(size, limit)
        target = directory / "original"
        with target.open("wb") as out:
            for chunk in self.chunks(bucket, key):
                out.write(chunk)
        return target

    def put(self, bucket: str, key: str, body: bytes | IO[bytes], *, content_type: str) -> None:
        with _storage_errors(key):
            self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    def presigned_get(self, bucket: str, key: str, *, ttl_s: int = 900) -> str:
        """A short-lived URL for tools that read over HTTP with seeking (ffmpeg)."""
        with _storage_errors(key):
            url: str = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl_s
            )
            return url


@contextlib.contextmanager
def scratch_directory() -> Iterator[Path]:
    """A private temp directory removed afterwards, even after an error."""
    path = Path(tempfile.mkdtemp(prefix="filestore-processor-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
