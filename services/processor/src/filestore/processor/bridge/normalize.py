"""Normalizers for stores other than SeaweedFS: their "object created" notifications → ``ObjectCreated``.

* AWS S3 event notifications (the ``{"Records": [...]}`` JSON that S3 sends to SQS, SNS or Lambda).
* MinIO bucket notifications published to NATS (``{"EventName", "Key", "Records": [...]}``, records in
  the same shape as AWS's, event names prefixed with ``s3:``).

Both URL-encode object keys like an HTML form (``red flower.jpg`` → ``red+flower.jpg``; MinIO also
encodes ``/`` as ``%2F``; UTF-8 as ``%XX``), so keys are decoded with ``unquote_plus``: a literal ``+``
in a key arrives as ``%2B``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from filestore.core.errors import InvalidArgument
from filestore.core.reasons import Reason
from filestore.server.events import file_ref
from filestore.v1 import events_pb2

__all__ = ["from_aws_s3", "from_minio"]

#: Event names (after the ``s3:`` prefix MinIO adds) that create a new object version. MinIO's
#: ``ObjectCreated:PutTagging``, ``PutRetention``, ``PutLegalHold`` and ``DeleteTagging`` change
#: metadata only: the content was announced already.
_CREATES = frozenset(
    {
        "ObjectCreated:Put",
        "ObjectCreated:Post",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
    }
)
_TIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")

Payload = bytes | str | Mapping[str, Any]


def from_aws_s3(payload: Payload, *, bucket: str | None = None) -> list[events_pb2.ObjectCreated]:
    """The object creations in an AWS S3 event notification (none for ``s3:TestEvent``)."""
    document = _load(payload)
    if document.get("Event") == "s3:TestEvent":
        return []
    return _records(document, source=events_pb2.EVENT_SOURCE_AWS_S3, bucket=bucket)


def from_minio(payload: Payload, *, bucket: str | None = None) -> list[events_pb2.ObjectCreated]:
    """The object creations in a MinIO notification as its NATS target publishes it."""
    return _records(_load(payload), source=events_pb2.EVENT_SOURCE_MINIO, bucket=bucket)


def _load(payload: Payload) -> Mapping[str, Any]:
    if isinstance(payload, Mapping):
        return payload
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(
            f"the notification is not JSON: {error}", reason=Reason.BAD_NOTIFICATION
        ) from None
    if not isinstance(document, dict):
        raise InvalidArgument("the notification is not a JSON object", reason=Reason.BAD_NOTIFICATION)
    return document


def _records(
    document: Mapping[str, Any], *, source: events_pb2.EventSource.ValueType, bucket: str | None
) -> list[events_pb2.ObjectCreated]:
    records = document.get("Records")
    if not isinstance(records, list):
        raise InvalidArgument("the notification has no Records list", reason=Reason.BAD_NOTIFICATION)
    created = []
    for index, record in enumerate(records):
        event = _record(record, index, source)
        if event is not None and (bucket is None or event.bucket == bucket):
            created.append(event)
    return created


def _record(
    record: Any, index: int, source: events_pb2.EventSource.ValueType
) -> events_pb2.ObjectCreated | None:
    try:
        name = str(record["eventName"]).removeprefix("s3:")
        if name not in _CREATES:
            return None
        s3 = record["s3"]
        obj = s3["object"]
        event = events_pb2.ObjectCreated(
            bucket=str(s3["bucket"]["name"]),
            key=unquote_plus(str(obj["key"]), encoding="utf-8", errors="strict"),
            size=int(obj.get("size", 0)),
            etag=str(obj.get("eTag", "")).strip('"'),
            mtime_ns=_time_ns(str(record["eventTime"])),
            source=source,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidArgument(
            f"notification record {index} is malformed: {type(error).__name__}: {error}",
            reason=Reason.BAD_NOTIFICATION,
            metadata={"record": str(index)},
        ) from None
    if not event.key or not event.bucket:
        raise InvalidArgument(
            f"notification record {index} has no bucket or key",
            reason=Reason.BAD_NOTIFICATION,
            metadata={"record": str(index)},
        )
    event.event_time.FromNanoseconds(event.mtime_ns)
    ref = file_ref(event)
    if ref is not None:
        event.tenant, event.file_id = ref
    return event


def _time_ns(text: str) -> int:
    """RFC 3339 time → nanoseconds, keeping all nine fraction digits (``datetime`` keeps six)."""
    match = _TIME_RE.match(text)
    if match is None:
        raise ValueError(f"eventTime {text!r} is not an RFC 3339 time")
    seconds, fraction, zone = match.groups()
    moment = datetime.fromisoformat(seconds + ("+00:00" if zone == "Z" else zone))
    if moment.tzinfo is None:  # pragma: no cover - the regex always captures a zone
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + int((fraction or "").ljust(9, "0"))
