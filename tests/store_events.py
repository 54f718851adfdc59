"""What the tests of the MinIO and AWS S3 bridges share: a file whose bytes are stored and whose
upload is recorded complete but was never announced, the stores' recorded notifications
(``tests/fixtures/store_events/``) filled in with that object, and a read of what reached FILES."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from filestore.core.auth import mint_token
from filestore.core.keys import original_key
from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import (
    events_pb2,
    metadata_service_pb2,
    metadata_service_pb2_grpc,
    upload_service_pb2,
    upload_service_pb2_grpc,
)
from tests.storage import admin_storage
from tests.support import fresh_tenant, put_presigned, service_token, stack_channel

FIXTURES = Path(__file__).parent / "fixtures" / "store_events"
#: The components a bridge test needs: storage, NATS, the catalogue, the broker and the processor.
COMPONENTS = ("seaweedfs", "nats", "metadata", "upload", "processor")


def stack_config(home: Path, processor_env: dict[str, str]) -> StackConfig:
    return StackConfig(
        home=home,
        ports=StackPorts.free(),
        components=COMPONENTS,
        ready_timeout_s=60.0,
        extra_env={"processor": processor_env},
    )


@dataclass(frozen=True)
class StoredObject:
    """An uploaded file's object, as a store's notification would describe it."""

    file_id: str
    bucket: str
    key: str
    size: int
    etag: str


async def stored_but_unannounced(stack: Stack, body: bytes) -> StoredObject:
    """CreateUpload, the bytes PUT to storage, and the upload recorded complete in the catalogue the
    way the broker records it, but without the broker's announcement: as when CompleteUpload's
    publish failed (EVENT_PUBLISH_FAILED). Only the store's notification can start its processing."""
    endpoints = stack.endpoints
    tenant = fresh_tenant()
    user_token = mint_token(endpoints.auth_secret, subject="alice", tenant=tenant)
    service = service_token(stack)
    async with (
        stack_channel(endpoints, endpoints.upload_addr, token=lambda: user_token) as upload_channel,
        stack_channel(endpoints, endpoints.metadata_addr, token=lambda: service) as metadata_channel,
    ):
        upload = upload_service_pb2_grpc.UploadServiceStub(upload_channel)
        created = await upload.CreateUpload(
            upload_service_pb2.CreateUploadRequest(
                name="notes.txt", size=len(body), content_type="text/plain"
            )
        )
        response = await put_presigned(created.upload.request, body)
        assert response.status_code == 200, response.text
        metadata = metadata_service_pb2_grpc.MetadataServiceStub(metadata_channel)
        await metadata.CompleteUploadRecord(
            metadata_service_pb2.CompleteUploadRecordRequest(
                upload_id=created.upload.id, tenant=tenant, size=len(body)
            )
        )
    key = original_key(tenant, created.file.id)
    head = await asyncio.to_thread(admin_storage(stack).head_object, Bucket=endpoints.bucket, Key=key)
    return StoredObject(
        file_id=created.file.id,
        bucket=endpoints.bucket,
        key=key,
        size=int(head["ContentLength"]),
        etag=str(head["ETag"]).strip('"'),
    )


def _fixture(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return document


def minio_notification(obj: StoredObject) -> bytes:
    """MinIO's NATS target's message for a PUT of ``obj`` (the record's key query-escaped, ``/`` too)."""
    document = _fixture("minio_nats_put.json")
    document["Key"] = f"{obj.bucket}/{obj.key}"
    record = document["Records"][0]["s3"]
    record["bucket"]["name"] = obj.bucket
    record["bucket"]["arn"] = f"arn:aws:s3:::{obj.bucket}"
    record["object"].update(key=quote(obj.key, safe=""), size=obj.size, eTag=obj.etag)
    return json.dumps(document).encode()


def aws_s3_event(obj: StoredObject) -> dict[str, Any]:
    """AWS S3's event notification for a PUT of ``obj``, as SQS receives it (key form-encoded)."""
    document = _fixture("aws_s3_put.json")
    record = document["Records"][0]["s3"]
    record["bucket"]["name"] = obj.bucket
    record["bucket"]["arn"] = f"arn:aws:s3:::{obj.bucket}"
    record["object"].update(key=quote_plus(obj.key, safe="/"), size=obj.size, eTag=obj.etag)
    return document


def sns_notification(message: dict[str, Any]) -> bytes:
    """``message`` as an SQS queue subscribed to an SNS topic receives it (no raw delivery)."""
    document = _fixture("aws_sns_notification.json")
    document["Message"] = json.dumps(message)
    return json.dumps(document).encode()


def eventbridge_event(obj: StoredObject) -> bytes:
    """EventBridge's "Object Created" event for a PUT of ``obj``, as a rule targeting SQS delivers it."""
    document = _fixture("aws_eventbridge_object_created.json")
    document["resources"] = [f"arn:aws:s3:::{obj.bucket}"]
    document["detail"]["bucket"]["name"] = obj.bucket
    document["detail"]["object"].update(key=obj.key, size=obj.size, etag=obj.etag)
    return json.dumps(document).encode()


async def object_created_in_files(js: JetStreamContext, key: str) -> list[events_pb2.ObjectCreated]:
    """Every ObjectCreated the FILES stream holds for ``key`` (JetStream dropped duplicates already)."""
    subscription = await js.subscribe(
        "files.object.created", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    found = []
    try:
        while True:
            try:
                message = await subscription.next_msg(timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                break
            event = events_pb2.ObjectCreated.FromString(message.data)
            if event.key == key:
                found.append(event)
    finally:
        await subscription.unsubscribe()
    return found
