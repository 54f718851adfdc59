"""SeaweedFS filer metadata notifications → ``ObjectCreated``.

A pure translation (no I/O), so it is tested on payloads recorded from a real filer. The S3 gateway
keeps bucket ``b``'s object ``k`` at the filer path ``{dir_buckets}/b/k`` (``/buckets`` by default)
and writes in-flight multipart parts under ``{dir_buckets}/b/.uploads/<upload id>/``; only the final
object is an object creation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from filestore.processor.bridge._filer import filer_pb2
from filestore.server.events import file_ref
from filestore.v1 import events_pb2

__all__ = ["FilerLayout", "entry_etag", "object_created_from_filer", "object_deleted_from_filer"]

#: Where the S3 gateway stores the ETag it answers HEAD with (quoted or not, depending on version).
S3_ETAG_ATTRIBUTE = "Seaweed-X-Amz-ETag"
#: SeaweedFS's folder for multipart parts in flight, directly under the bucket.
MULTIPART_FOLDER = ".uploads"


@dataclass(frozen=True, slots=True)
class FilerLayout:
    """Where one bucket's objects live in the filer's namespace."""

    buckets_dir: str
    bucket: str

    @property
    def prefix(self) -> str:
        """The subscription prefix: every object of the bucket, nothing of other buckets."""
        return f"{self.buckets_dir.rstrip('/')}/{self.bucket}/"

    def key_of(self, path: str) -> str | None:
        """The object key of a filer path, or None when the path is not an object of the bucket."""
        if not path.startswith(self.prefix):
            return None
        key = path[len(self.prefix) :]
        if not key or key.split("/", 1)[0] == MULTIPART_FOLDER:
            return None
        return key


def _chunk_md5(etag: str) -> bytes:
    # Chunk ETags are base64 MD5s (older volume servers wrote hex): accept both, as SeaweedFS does.
    try:
        raw = base64.b64decode(etag, validate=True)
        if len(raw) == 16:
            return raw
    except binascii.Error:
        pass
    try:
        return bytes.fromhex(etag)
    except ValueError:
        return etag.encode()


def entry_etag(entry: filer_pb2.Entry) -> str:
    """The ETag an S3 HEAD of this entry answers, without quotes.

    It must equal what the broker's CompleteUpload reads with HEAD, or the two announcements of one
    object version get different ``Nats-Msg-Id`` values and are both processed. The S3 gateway stores
    that ETag in an extended attribute (also the ``<md5>-<parts>`` form of multipart objects); entries
    written without the gateway fall back to SeaweedFS's own rule (MD5 attribute, else the chunks').
    """
    stored = entry.extended.get(S3_ETAG_ATTRIBUTE)
    if stored:
        return stored.decode("utf-8", "replace").strip().strip('"')
    if entry.attributes.md5:
        return entry.attributes.md5.hex()
    chunks = list(entry.chunks)
    if len(chunks) == 1:
        return _chunk_md5(chunks[0].e_tag).hex()
    if chunks:
        joined = b"".join(_chunk_md5(chunk.e_tag) for chunk in chunks)
        return f"{hashlib.md5(joined).hexdigest()}-{len(chunks)}"
    if entry.content:
        return hashlib.md5(entry.content).hexdigest()
    return ""


def _entry_size(entry: filer_pb2.Entry) -> int:
    chunk_end = max((chunk.offset + chunk.size for chunk in entry.chunks), default=0)
    return max(entry.attributes.file_size, chunk_end, len(entry.content))


def object_created_from_filer(
    response: filer_pb2.SubscribeMetadataResponse, layout: FilerLayout
) -> events_pb2.ObjectCreated | None:
    """The ``ObjectCreated`` a filer notification stands for, or None (deletes, directories, multipart
    parts, other buckets, and updates that leave the object's content unchanged)."""
    notification = response.event_notification
    if not notification.HasField("new_entry"):
        return None  # a delete
    entry = notification.new_entry
    if entry.is_directory:
        return None
    # Creates and updates carry the directory in both fields; renames only in new_parent_path.
    directory = notification.new_parent_path or response.directory
    key = layout.key_of(f"{directory.rstrip('/')}/{entry.name}")
    if key is None:
        return None
    etag = entry_etag(entry)
    if notification.HasField("old_entry"):
        old = notification.old_entry
        same_place = notification.new_parent_path in ("", response.directory) and old.name == entry.name
        if same_place and not old.is_directory and etag and entry_etag(old) == etag:
            # Metadata-only update (tags, ACLs): the same object version, already announced.
            return None
    event = events_pb2.ObjectCreated(
        bucket=layout.bucket,
        key=key,
        size=_entry_size(entry),
        etag=etag,
        # The filer's log time: nanosecond precision (attributes.mtime has seconds only).
        mtime_ns=response.ts_ns,
        source=events_pb2.EVENT_SOURCE_SEAWEEDFS,
    )
    event.event_time.FromNanoseconds(response.ts_ns)
    ref = file_ref(event)
    if ref is not None:
        event.tenant, event.file_id = ref
    return event


def object_deleted_from_filer(
    response: filer_pb2.SubscribeMetadataResponse, layout: FilerLayout
) -> events_pb2.ObjectDeleted | None:
    """The ``ObjectDeleted`` a filer notification stands for, or None (creations and updates,
    directories, multipart parts cleaned up after completion or abort, other buckets)."""
    notification = response.event_notification
    if notification.HasField("new_entry") or not notification.HasField("old_entry"):
        return None
    entry = notification.old_entry
    if entry.is_directory:
        return None
    key = layout.key_of(f"{response.directory.rstrip('/')}/{entry.name}")
    if key is None:
        return None
    event = events_pb2.ObjectDeleted(
        bucket=layout.bucket, key=key, mtime_ns=response.ts_ns, source=events_pb2.EVENT_SOURCE_SEAWEEDFS
    )
    event.event_time.FromNanoseconds(response.ts_ns)
    ref = file_ref(event)
    if ref is not None:
        event.tenant, event.file_id = ref
    return event
