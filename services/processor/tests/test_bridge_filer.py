"""The SeaweedFS filer notification → ObjectCreated translation, on notifications recorded from a
real filer (fixtures/seaweedfs_subscribe_metadata.json says how they were made)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from filestore.processor.bridge import (
    FilerLayout,
    entry_etag,
    object_created_from_filer,
    object_deleted_from_filer,
)
from filestore.processor.bridge._filer import filer_pb2
from filestore.server import events
from filestore.v1 import events_pb2

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def recording() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / "seaweedfs_subscribe_metadata.json").read_text())
    return document


def _responses(recording: dict[str, Any]) -> list[filer_pb2.SubscribeMetadataResponse]:
    return [
        json_format.ParseDict(raw, filer_pb2.SubscribeMetadataResponse()) for raw in recording["responses"]
    ]


def _layout(recording: dict[str, Any]) -> FilerLayout:
    return FilerLayout(buckets_dir=recording["dir_buckets"], bucket=recording["bucket"])


def _created(recording: dict[str, Any]) -> list[events_pb2.ObjectCreated]:
    layout = _layout(recording)
    return [e for r in _responses(recording) if (e := object_created_from_filer(r, layout)) is not None]


def test_only_object_versions_become_events(recording: dict[str, Any]) -> None:
    # Directories, the multipart parts and their cleanup, the delete and the tagging update are
    # dropped; the overwrite of `small` is a new version and counts.
    keys = [event.key for event in _created(recording)]
    assert keys == [
        "originals/acme/small",
        "originals/acme/big",
        "originals/acme/empty",
        "originals/acme/sp ace+é%2F",
        "originals/acme/multi",
        "originals/acme/small",
        "originals/acme/copy",
        "derivatives/acme/f1/thumb",
    ]


def test_only_the_deleted_object_becomes_a_deletion(recording: dict[str, Any]) -> None:
    # The recording deletes `empty`; the multipart parts and their folder, removed once `multi` was
    # assembled, are storage's housekeeping, not deletions of objects.
    layout = _layout(recording)
    deletions = [d for r in _responses(recording) if (d := object_deleted_from_filer(r, layout)) is not None]
    assert [(d.key, d.tenant, d.file_id) for d in deletions] == [("originals/acme/empty", "acme", "empty")]
    deleted = deletions[0]
    assert (deleted.bucket, deleted.source) == (recording["bucket"], events_pb2.EVENT_SOURCE_SEAWEEDFS)
    assert deleted.mtime_ns > 0
    assert deleted.event_time.ToNanoseconds() == deleted.mtime_ns
    # One id per deletion: the same notification replayed gives the same id, another time another.
    later = events_pb2.ObjectDeleted()
    later.CopyFrom(deleted)
    later.mtime_ns += 1
    assert events.object_deleted_msg_id(deleted) == events.object_deleted_msg_id(deleted)
    assert events.object_deleted_msg_id(later) != events.object_deleted_msg_id(deleted)


def test_etags_equal_what_s3_head_answers(recording: dict[str, Any]) -> None:
    # The bridge's and the broker's event for one object version must share a Nats-Msg-Id.
    latest = {event.key: event for event in _created(recording)}
    for key, head_etag in recording["s3_head_etags"].items():
        assert latest[key].etag == head_etag, key
        broker_event = events_pb2.ObjectCreated(bucket="filestore", key=key, etag=head_etag)
        assert events.object_created_msg_id(latest[key]) == events.object_created_msg_id(broker_event)


def test_event_fields(recording: dict[str, Any]) -> None:
    created = {(e.key, e.etag): e for e in _created(recording)}
    multi = created[("originals/acme/multi", "a5c573b350bc7577c04b3e25eedd7339-2")]
    assert multi.bucket == "filestore"
    assert multi.size == 5 * 1024 * 1024 + 4
    assert multi.source == events_pb2.EVENT_SOURCE_SEAWEEDFS
    assert multi.tenant == "acme"
    assert multi.file_id == "multi"
    assert multi.mtime_ns > 1_700_000_000 * 10**9
    assert multi.event_time.ToNanoseconds() == multi.mtime_ns
    big = next(e for e in created.values() if e.key == "originals/acme/big")
    assert big.size == 9 * 1024 * 1024
    thumb = next(e for e in created.values() if e.key == "derivatives/acme/f1/thumb")
    assert (thumb.tenant, thumb.file_id) == ("", "")  # not an original: no file reference


def test_overwrite_gets_a_new_msg_id(recording: dict[str, Any]) -> None:
    small = [e for e in _created(recording) if e.key == "originals/acme/small"]
    assert len(small) == 2
    assert events.object_created_msg_id(small[0]) != events.object_created_msg_id(small[1])


def test_other_buckets_are_ignored(recording: dict[str, Any]) -> None:
    layout = FilerLayout(buckets_dir="/buckets", bucket="other")
    assert all(object_created_from_filer(r, layout) is None for r in _responses(recording))
    # A bucket whose name extends ours is not ours either.
    layout = FilerLayout(buckets_dir="/buckets/", bucket="filestor")
    assert all(object_created_from_filer(r, layout) is None for r in _responses(recording))


def _file_response(directory: str, name: str, **entry: Any) -> filer_pb2.SubscribeMetadataResponse:
    return filer_pb2.SubscribeMetadataResponse(
        directory=directory,
        ts_ns=1_715_679_041_123_456_789,
        event_notification=filer_pb2.EventNotification(
            new_entry=filer_pb2.Entry(name=name, **entry), new_parent_path=directory
        ),
    )


def test_rename_into_the_bucket_is_a_creation() -> None:
    layout = FilerLayout(buckets_dir="/buckets", bucket="filestore")
    response = filer_pb2.SubscribeMetadataResponse(
        directory="/buckets/filestore/tmp",
        ts_ns=5,
        event_notification=filer_pb2.EventNotification(
            old_entry=filer_pb2.Entry(name="upload.bin"),
            new_entry=filer_pb2.Entry(
                name="f1", attributes=filer_pb2.FuseAttributes(file_size=3, md5=b"\x01" * 16)
            ),
            new_parent_path="/buckets/filestore/originals/acme",
        ),
    )
    event = object_created_from_filer(response, layout)
    assert event is not None
    assert (event.key, event.tenant, event.file_id) == ("originals/acme/f1", "acme", "f1")
    assert event.etag == "01" * 16


def test_etag_fallbacks_follow_seaweedfs_rules() -> None:
    one = hashlib.md5(b"a").digest()
    two = hashlib.md5(b"b").digest()
    quoted = filer_pb2.Entry(extended={"Seaweed-X-Amz-ETag": b'"abc-2"'})
    assert entry_etag(quoted) == "abc-2"
    single = filer_pb2.Entry(chunks=[filer_pb2.FileChunk(e_tag=_b64(one))])
    assert entry_etag(single) == one.hex()
    several = filer_pb2.Entry(
        chunks=[filer_pb2.FileChunk(e_tag=_b64(one)), filer_pb2.FileChunk(e_tag=two.hex())]
    )
    assert entry_etag(several) == f"{hashlib.md5(one + two).hexdigest()}-2"
    inline = filer_pb2.Entry(content=b"tiny")
    assert entry_etag(inline) == hashlib.md5(b"tiny").hexdigest()


def test_inline_content_sets_size() -> None:
    layout = FilerLayout(buckets_dir="/buckets", bucket="filestore")
    event = object_created_from_filer(_file_response("/buckets/filestore/x", "y", content=b"12345"), layout)
    assert event is not None
    assert event.size == 5


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
