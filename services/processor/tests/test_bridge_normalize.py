"""AWS S3 and MinIO notification JSON → ObjectCreated, on payloads in the documented formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filestore.core.errors import InvalidArgument
from filestore.processor.bridge import from_aws, from_aws_eventbridge, from_aws_s3, from_minio
from filestore.server import events
from filestore.v1 import events_pb2

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_aws_put_and_multipart_become_events_and_deletes_do_not() -> None:
    created = from_aws_s3(_fixture("aws_s3_put_multipart.json"))
    assert [e.key for e in created] == [
        "originals/acme/01HXZ5R8Q3KJ7V2M4N6P8T0W1Y",
        # `+` is a space, `%2B` a plus, and the UTF-8 escapes are é and an en dash.
        "incoming/quarterly report \u2013 été 2024+.pdf",
    ]
    put, multipart = created
    assert put.bucket == "filestore-prod"
    assert put.size == 1048576
    assert put.etag == "b6d81b360a5672d80c27430f39153e2c"
    assert put.source == events_pb2.EVENT_SOURCE_AWS_S3
    assert put.mtime_ns == 1_715_678_467_415_000_000
    assert put.event_time.ToNanoseconds() == put.mtime_ns
    assert (put.tenant, put.file_id) == ("acme", "01HXZ5R8Q3KJ7V2M4N6P8T0W1Y")
    assert multipart.etag == "d41d8cd98f00b204e9800998ecf8427e-5"
    assert multipart.size == 26214400
    assert (multipart.tenant, multipart.file_id) == ("", "")


def test_aws_msg_id_matches_the_brokers_for_the_same_object() -> None:
    put = from_aws_s3(_fixture("aws_s3_put_multipart.json"))[0]
    broker = events_pb2.ObjectCreated(bucket=put.bucket, key=put.key, etag=put.etag, size=put.size)
    assert events.object_created_msg_id(put) == events.object_created_msg_id(broker)


def test_aws_test_event_has_no_objects() -> None:
    assert from_aws_s3(_fixture("aws_s3_test_event.json")) == []


def test_bucket_filter() -> None:
    assert from_aws_s3(_fixture("aws_s3_put_multipart.json"), bucket="filestore") == []
    assert len(from_aws_s3(_fixture("aws_s3_put_multipart.json"), bucket="filestore-prod")) == 2


def test_minio_query_escaped_key_with_slashes_and_unicode() -> None:
    (event,) = from_minio(_fixture("minio_nats_put.json"))
    assert event.key == "originals/globex/photos/red flower+ñ.jpg"
    assert event.bucket == "filestore"
    assert event.etag == "8f14e45fceea167a5a36dedd4bea2543"  # quotes stripped
    assert event.size == 48213
    assert event.source == events_pb2.EVENT_SOURCE_MINIO
    # All nine fraction digits survive, and equal MinIO's sequencer (its event time in hex ns).
    assert event.mtime_ns == 1_715_679_041_123_456_789
    assert event.mtime_ns == int("17CF50FF72BF1715", 16)
    assert (event.tenant, event.file_id) == ("", "")  # three segments under originals/: not our layout


def test_minio_metadata_only_events_are_not_creations() -> None:
    assert from_minio(_fixture("minio_nats_tagging.json")) == []


def test_minio_accepts_a_decoded_mapping_and_str() -> None:
    document = json.loads(_fixture("minio_nats_put.json"))
    assert from_minio(document) == from_minio(json.dumps(document))


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"EventName": "s3:ObjectCreated:Put"}',
        b'{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {}}]}',
        b'{"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "yesterday",'
        b' "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "size": 1}}}]}',
        b'{"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2024-05-14T09:21:07Z",'
        b' "s3": {"bucket": {"name": "b"}, "object": {"key": "%FF%FE", "size": 1}}}]}',
        b'{"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2024-05-14T09:21:07Z",'
        b' "s3": {"bucket": {"name": "b"}, "object": {"key": "", "size": 1}}}]}',
    ],
)
def test_malformed_notifications_are_invalid_argument(payload: bytes) -> None:
    with pytest.raises(InvalidArgument) as raised:
        from_aws_s3(payload)
    assert raised.value.reason == "BAD_NOTIFICATION"


def test_aws_eventbridge_object_created() -> None:
    (event,) = from_aws_eventbridge(_fixture("aws_eventbridge_object_created.json"))
    assert (event.bucket, event.key, event.size, event.etag) == (
        "filestore",
        "originals/acme/01HXZ5R8Q3KJ7V2M4N6P8T0W1Y",
        5,
        "b1946ac92492d2347c6235b4d2611184",
    )
    assert event.source == events_pb2.EVENT_SOURCE_AWS_S3
    assert event.mtime_ns == 1_636_675_200_000_000_000
    assert (event.tenant, event.file_id) == ("acme", "01HXZ5R8Q3KJ7V2M4N6P8T0W1Y")
    assert from_aws_eventbridge(_fixture("aws_eventbridge_object_created.json"), bucket="other") == []


def test_aws_eventbridge_other_detail_types_are_no_creations() -> None:
    document = json.loads(_fixture("aws_eventbridge_object_created.json"))
    document["detail-type"] = "Object Tags Added"
    assert from_aws_eventbridge(document) == []
    document["detail-type"], document["source"] = "Object Created", "aws.ec2"
    assert from_aws_eventbridge(document) == []


def test_aws_eventbridge_without_an_object_is_a_bad_notification() -> None:
    document = json.loads(_fixture("aws_eventbridge_object_created.json"))
    del document["detail"]["object"]
    with pytest.raises(InvalidArgument) as raised:
        from_aws_eventbridge(document)
    assert raised.value.reason == "BAD_NOTIFICATION"


def test_from_aws_reads_every_shape_sqs_receives() -> None:
    direct = from_aws(_fixture("aws_s3_put_multipart.json"))
    assert len(direct) == 2
    assert from_aws(_fixture("aws_sns_s3_put_multipart.json")) == direct
    assert from_aws(_fixture("aws_eventbridge_object_created.json")) == from_aws_eventbridge(
        _fixture("aws_eventbridge_object_created.json")
    )
    assert from_aws(_fixture("aws_s3_test_event.json")) == []


def test_from_aws_sns_envelope_with_a_bad_message_is_a_bad_notification() -> None:
    envelope = json.loads(_fixture("aws_sns_s3_put_multipart.json"))
    envelope["Message"] = "not json"
    with pytest.raises(InvalidArgument) as raised:
        from_aws(json.dumps(envelope))
    assert raised.value.reason == "BAD_NOTIFICATION"
    del envelope["Message"]
    with pytest.raises(InvalidArgument):
        from_aws(envelope)
