"""What the worker takes for a well-formed event: every publisher's event passes, and the ways bytes
that are not one can still decode are refused."""

from __future__ import annotations

import pytest

from filestore.processor.worker import MalformedEvent, parse_event
from filestore.v1 import events_pb2


def test_every_publishers_event_is_well_formed() -> None:
    broker = events_pb2.ObjectCreated(
        bucket="filestore",
        key="originals/acme/f1",
        size=0,  # an empty file
        etag="d41d8cd98f00b204e9800998ecf8427e",
        file_id="f1",
        tenant="acme",
        source=events_pb2.EVENT_SOURCE_BROKER,
        trace=events_pb2.TraceContext(traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01"),
    )
    broker.event_time.GetCurrentTime()
    # ReprocessFile names no bucket: the processor's own is meant.
    reprocess = events_pb2.ObjectCreated(
        key="blobs/sha256/ab/cd/abcd",
        size=7,
        file_id="f2",
        tenant="acme",
        source=events_pb2.EVENT_SOURCE_REPROCESS,
    )
    bridge = events_pb2.ObjectCreated(
        bucket="filestore",
        key="derivatives/acme/f1/thumbnail_256",
        mtime_ns=1,
        source=events_pb2.EVENT_SOURCE_SEAWEEDFS,
    )
    for event in (broker, reprocess, bridge):
        assert parse_event(event.SerializeToString()) == event


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"\x0a\x03abc", "names no object key"),
        # An unknown field inside a known sub-message counts too.
        (
            events_pb2.ObjectCreated(key="k").SerializeToString() + b"\x52\x03\xa0\x06\x01",
            "fields an ObjectCreated does not define",
        ),
        (b"\x12\x02\xc3\x28", "does not decode"),  # a key that is not UTF-8
    ],
)
def test_bytes_that_decode_into_no_event_are_malformed(data: bytes, detail: str) -> None:
    with pytest.raises(MalformedEvent, match=detail):
        parse_event(data)
