"""Normalizers for stores other than SeaweedFS: their "object created" notifications → ``ObjectCreated``.

* AWS S3 event notifications (the ``{"Records": [...]}`` JSON that S3 sends to SQS, SNS or Lambda).
* AWS S3 events delivered through Amazon EventBridge (``{"detail-type": "Object Created", "source":
  "aws.s3", "detail": {...}}``), as an EventBridge rule puts them on an SQS queue.
* Either of those wrapped by SNS (``{"Type": "Notification", "Message": "<the event as a string>"}``),
  as an SQS queue subscribed to a topic receives them without raw message delivery.
* MinIO bucket notifications published to NATS (``{"EventName", "Key", "Records": [...]}``, records in
  the same shape as AWS's, event names prefixed with ``s3:``).

S3 notifications URL-encode object keys like an HTML form (``red flower.jpg`` → ``red+flower.jpg``;
MinIO also encodes ``/`` as ``%2F``; UTF-8 as ``%XX``), so keys are decoded with ``unquote_plus``: a
literal ``+`` in a key arrives as ``%2B``. AWS's EventBridge page shows no encoded example; its keys are
read the same way. Filestore's own keys (``originals/{tenant}/{file id}``) hold no character that
either reading changes, so the choice can only touch keys that are not Filestore's.
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

__all__ = ["from_aws", "from_aws_eventbridge", "from_aws_s3", "from_minio"]

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
#: EventBridge's detail type of S3's object creations (its ``detail.reason`` says how: PutObject, POST
#: Object, CopyObject, CompleteMultipartUpload; each makes a new object version). Tag and ACL changes
#: have detail types of their own.
_EVENTBRIDGE_CREATED = "Object Created"
_TIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")

Payload = bytes | str | Mapping[str, Any]


def from_aws_s3(payload: Payload, *, bucket: str | None = None) -> list[events_pb2.ObjectCreated]:
    """The object creations in an AWS S3 event notification (none for ``s3:TestEvent``)."""
    document = _load(payload)
    if document.get("Event") == "s3:TestEvent":
        return []
    return _records(document, source=events_pb2.EVENT_SOURCE_AWS_S3, bucket=bucket)


def from_aws_eventbridge(payload: Payload, *, bucket: str | None = None) -> list[events_pb2.ObjectCreated]:
    """The object creation in an S3 event as EventBridge delivers it (none for other detail types:
    deletions, restores, tags, ACLs)."""
    document = _load(payload)
    if document.get("source") != "aws.s3" or document.get("detail-type") != _EVENTBRIDGE_CREATED:
        return []
    try:
        detail = document["detail"]
        obj = detail["object"]
        event = events_pb2.ObjectCreated(
            bucket=str(detail["bucket"]["name"]),
            key=unquote_plus(str(obj["key"]), encoding="utf-8", errors="strict"),
            size=int(obj.get("size", 0)),
            etag=str(obj.get("etag", "")).strip('"'),
            mtime_ns=_time_ns(str(document["time"])),
            source=events_pb2.EVENT_SOURCE_AWS_S3,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidArgument(
            f"the EventBridge event is malformed: {type(error).__name__}: {error}",
            reason=Reason.BAD_NOTIFICATION,
        ) from None
    event = _finish(event, "the EventBridge event")
    return [event] if bucket is None or event.bucket == bucket else []


def from_aws(payload: Payload, *, bucket: str | None = None) -> list[events_pb2.ObjectCreated]:
    """The object creations in whatever AWS puts on an SQS queue for S3: an S3 event notification, an
    EventBridge event, or either of them in an SNS envelope."""
    document = _load(payload)
    if document.get("Type") == "Notification" and "TopicArn" in document:
        message = document.get("Message")
        if not isinstance(message, str):
            raise InvalidArgument("the SNS notification has no Message", reason=Reason.BAD_NOTIFICATION)
        document = _load(message)
    if "detail-type" in document:
        return from_aws_eventbridge(document, bucket=bucket)
    return from_aws_s3(document, bucket=bucket)


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
    return _finish(event, f"notification record {index}", metadata={"record": str(index)})


def _finish(
    event: events_pb2.ObjectCreated, what: str, *, metadata: dict[str, str] | None = None
) -> events_pb2.ObjectCreated:
    """Check the bucket and key, then fill in the event time and the file the key names."""
    if not event.key or not event.bucket:
        raise InvalidArgument(
            f"{what} has no bucket or key", reason=Reason.BAD_NOTIFICATION, metadata=metadata or {}
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
